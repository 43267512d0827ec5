from itertools import pairwise

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from synaptorch.errors import ConfigError, DataError
from synaptorch.models.bdh import BDH, BDHConfig
from synaptorch.models.spiking_bdh import (
    SpikingBDH,
    convert,
    evaluate_spiking,
    finetune_spiking,
    integrate_and_fire,
    parse_time_steps,
)


def recorder(records: list[dict]):
    """An observer that keeps every layer's tensors."""
    return lambda layer, **tensors: records.append(tensors)


CONFIG = BDHConfig(n_layer=2, n_embd=32, n_head=2, n_neuron=64, dropout=0.0)


@pytest.fixture(scope="module")
def text_tokens(make_text) -> np.ndarray:
    return np.frombuffer(make_text(3000).encode(), dtype=np.uint8).astype(np.int64)


@pytest.fixture(scope="module")
def trained_bdh(text_tokens) -> BDH:
    """A small BDH trained for a few seconds on the word salad, so its predictions are confident."""
    torch.manual_seed(0)
    model = BDH(CONFIG)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    train = torch.from_numpy(text_tokens[:12000])
    for _ in range(120):
        starts = torch.randint(len(train) - 33, (8,), generator=generator)
        batch = torch.stack([train[s : s + 33] for s in starts.tolist()])
        loss = F.cross_entropy(model(batch[:, :-1]).flatten(0, 1), batch[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 2.0  # well below the 5.5 of a uniform guess over bytes
    return model.eval()


def test_integrate_and_fire_matches_a_hand_computed_trace():
    # T = 4, membrane from 0.5: 0.2 -> 0.7 0.9 1.1* 0.3 (one spike); 0.7 -> 1.2* 0.9 1.6* 1.3* (three);
    # 1.5 fires every step; negative and zero currents never reach the threshold.
    counts = integrate_and_fire(torch.tensor([-0.5, 0.0, 0.2, 0.7, 1.5]), steps=4)
    assert counts.tolist() == [0, 0, 1, 3, 4]


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 64), st.lists(st.floats(-2, 3, allow_nan=False), min_size=1, max_size=20))
def test_rate_is_the_current_rounded_to_one_of_t_levels(steps, currents):
    z = torch.tensor(currents, dtype=torch.float64)
    counts = integrate_and_fire(z, steps)
    assert torch.all((counts - steps * z.clamp(0, 1)).abs() <= 0.5 + 1e-9)


def test_zero_steps_is_the_relu_model(trained_bdh, text_tokens):
    idx = torch.from_numpy(text_tokens[:96]).view(3, 32)
    spiking = SpikingBDH.from_relu(trained_bdh, steps=0)
    torch.testing.assert_close(spiking(idx), trained_bdh(idx), atol=1e-5, rtol=1e-5)


def test_spiking_parallel_and_recurrent_forms_agree(trained_bdh, text_tokens):
    idx = torch.from_numpy(text_tokens[:64]).view(2, 32)
    spiking = SpikingBDH.from_relu(trained_bdh, steps=8).eval()
    spiking.calibrate(idx)
    logits = spiking(idx)
    out, state = spiking.forward_recurrent(idx[:, :20])
    last, _ = spiking.step(idx[:, 20], state)
    torch.testing.assert_close(out, logits[:, :20], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(last, logits[:, 20], atol=1e-4, rtol=1e-4)


def test_calibration_at_percentile_100_takes_the_largest_activation(trained_bdh, text_tokens):
    idx = torch.from_numpy(text_tokens[:64]).view(2, 32)
    spiking = SpikingBDH.from_relu(trained_bdh, steps=0)
    activity = []
    spiking(idx, recorder(activity))
    thresholds = spiking.calibrate(idx, percentile=100)
    for p, population in enumerate(("x", "xy")):
        key = {"x": "x_sparse", "xy": "xy"}[population]
        largest = torch.stack([layer[key] for layer in activity]).amax(dim=(0, 2, 3, 4))  # per head
        torch.testing.assert_close(thresholds[p], largest)
    assert torch.all(spiking.calibrate(idx, percentile=50) < thresholds)


def test_spiking_bdh_agreement_rises_with_t(trained_bdh, text_tokens):
    spiking = convert(trained_bdh, text_tokens[:2048], block_size=32)
    relu, results = evaluate_spiking(
        trained_bdh, spiking, text_tokens[12000:], steps=[1, 4, 16, 64, 256], block_size=32, max_tokens=2048
    )
    agreement = [r.agreement for r in results]
    kl = [r.kl for r in results]
    assert agreement[0] < agreement[1] < agreement[2] <= agreement[3] <= agreement[4]
    assert agreement[-1] > 0.95
    assert all(a > b for a, b in pairwise(kl))
    assert results[-1].loss == pytest.approx(relu.loss, abs=0.05)
    assert results[0].loss > relu.loss + 0.1  # one step per token is a coarse model
    spikes = [r.spikes_per_token for r in results]
    assert all(b > a for a, b in pairwise(spikes))  # rate coding: more steps, more spikes


def test_without_clipping_the_spiking_model_converges_to_the_relu_model(trained_bdh, text_tokens):
    idx = torch.from_numpy(text_tokens[:64]).view(2, 32)
    spiking = SpikingBDH.from_relu(trained_bdh).eval()
    spiking.calibrate(idx, percentile=100)
    errors = []
    for steps in (16, 128, 1024):
        spiking.steps = steps
        errors.append((spiking(idx) - trained_bdh(idx)).abs().max().item())
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.05


def test_operation_counts_follow_the_spikes(trained_bdh, text_tokens):
    block = 32
    spiking = convert(trained_bdh, text_tokens[:1024], block_size=block)
    relu, (result,) = evaluate_spiking(
        trained_bdh, spiking, text_tokens[12000:], [8], block_size=block, max_tokens=block
    )
    spiking.steps = 0
    idx = torch.from_numpy(text_tokens[12000 : 12000 + block]).view(1, block)
    relu_activity, spike_activity = [], []
    spiking(idx, recorder(relu_activity))
    spiking.steps = 8
    spiking(idx, recorder(spike_activity))
    d, neurons, layers = CONFIG.n_embd, CONFIG.n_head * CONFIG.n_neuron, CONFIG.n_layer
    x_spikes = sum(layer["x_spikes"].sum().item() for layer in spike_activity) / block
    xy_spikes = sum(layer["xy_spikes"].sum().item() for layer in spike_activity) / block
    assert result.spikes_per_token == pytest.approx(x_spikes + xy_spikes)
    assert result.synaptic_ops_per_token == pytest.approx(d * (2 * x_spikes + xy_spikes))
    assert relu.macs_per_token == 3 * neurons * d * layers
    assert relu.analog_macs_per_token == 2 * neurons * d * layers + d * CONFIG.vocab_size
    active = sum((layer[p] > 0).sum().item() for layer in relu_activity for p in ("x_sparse", "xy")) / block
    assert relu.active_per_token == pytest.approx(active)
    # A neuron fires at most once per step.
    assert max(layer[p].max().item() for layer in spike_activity for p in ("x_spikes", "xy_spikes")) <= 8
    for layer in spike_activity:  # the rates passed on are the counts in units of the thresholds
        torch.testing.assert_close(layer["x_sparse"], layer["x_spikes"] * spiking.thresholds[0].view(-1, 1, 1, 1) / 8)


def test_surrogate_gradients_reach_the_weights(trained_bdh, text_tokens):
    idx = torch.from_numpy(text_tokens[:66]).view(2, 33)
    spiking = SpikingBDH.from_relu(trained_bdh, steps=4).train()
    spiking.calibrate(idx[:, :-1])
    loss = F.cross_entropy(spiking(idx[:, :-1]).flatten(0, 1), idx[:, 1:].flatten())
    loss.backward()
    for name in ("encoder_x", "encoder_y", "decoder"):
        grad = getattr(spiking, name).grad
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_fine_tuning_with_spikes_in_the_loop_lowers_the_loss_at_few_steps(trained_bdh, text_tokens):
    spiking = convert(trained_bdh, text_tokens[:2048], block_size=32)
    _, (before,) = evaluate_spiking(trained_bdh, spiking, text_tokens[12000:], [2], block_size=32, max_tokens=1024)
    losses = finetune_spiking(spiking, text_tokens[:12000], iterations=30, steps=2, block_size=32, lr=3e-3)
    _, (after,) = evaluate_spiking(trained_bdh, spiking, text_tokens[12000:], [2], block_size=32, max_tokens=1024)
    assert len(losses) == 30 and all(np.isfinite(losses))
    assert after.loss < before.loss - 0.05
    assert not torch.equal(spiking.encoder_x, trained_bdh.encoder_x)  # the reference is left alone


def test_bad_settings_are_refused(trained_bdh, text_tokens):
    spiking = convert(trained_bdh, text_tokens[:256], block_size=32)
    with pytest.raises(ConfigError, match="positive"):
        evaluate_spiking(trained_bdh, spiking, text_tokens, [0, 4], block_size=32)
    with pytest.raises(ConfigError, match="comma-separated"):
        parse_time_steps("4,eight")
    assert parse_time_steps("1,8,64") == [1, 8, 64]
    with pytest.raises(DataError, match="calibration"):
        convert(trained_bdh, text_tokens[:10], block_size=32)
    with pytest.raises(ConfigError, match="fine-tuning"):
        finetune_spiking(spiking, text_tokens, iterations=1, steps=0)
    with pytest.raises(ConfigError, match="percentile"):
        SpikingBDH.from_relu(trained_bdh).calibrate(torch.zeros(1, 8, dtype=torch.long), percentile=0)
