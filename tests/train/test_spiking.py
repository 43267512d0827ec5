from itertools import pairwise

import numpy as np
import pytest
import torch

from synaptorch.errors import ConfigError, DataError
from synaptorch.models.spiking_bdh import SpikingBDH
from synaptorch.train.spiking import convert, evaluate_spiking, finetune_spiking, parse_time_steps


def test_spiking_bdh_agreement_rises_with_t(small_trained_bdh, word_salad_tokens):
    spiking = convert(small_trained_bdh, word_salad_tokens[:2048], block_size=32)
    relu, results = evaluate_spiking(
        small_trained_bdh, spiking, word_salad_tokens[12000:], steps=[1, 4, 16, 64, 256], block_size=32, max_tokens=2048
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


def test_operation_counts_follow_the_spikes(small_trained_bdh, word_salad_tokens, layer_recorder):
    block = 32
    spiking = convert(small_trained_bdh, word_salad_tokens[:1024], block_size=block)
    relu, (result,) = evaluate_spiking(
        small_trained_bdh, spiking, word_salad_tokens[12000:], [8], block_size=block, max_tokens=block
    )
    spiking.steps = 0
    idx = torch.from_numpy(word_salad_tokens[12000 : 12000 + block]).view(1, block)
    relu_activity, spike_activity = [], []
    spiking(idx, layer_recorder(relu_activity))
    spiking.steps = 8
    spiking(idx, layer_recorder(spike_activity))
    c = small_trained_bdh.config
    d, neurons, layers = c.n_embd, c.n_head * c.n_neuron, c.n_layer
    x_spikes = sum(layer["x_spikes"].sum().item() for layer in spike_activity) / block
    xy_spikes = sum(layer["xy_spikes"].sum().item() for layer in spike_activity) / block
    assert result.spikes_per_token == pytest.approx(x_spikes + xy_spikes)
    # RoPE turns the x neurons in pairs: a spike reads and writes two rows of rho.
    assert result.synaptic_ops_per_token == pytest.approx(d * (4 * x_spikes + xy_spikes))
    assert relu.macs_per_token == 3 * neurons * d * layers
    assert relu.analog_macs_per_token == 2 * neurons * d * layers + d * c.vocab_size
    active = sum((layer[p] > 0).sum().item() for layer in relu_activity for p in ("x_sparse", "xy")) / block
    assert relu.active_per_token == pytest.approx(active)
    # Touching only what is active, the ReLU model reads and writes the rows of rho where q is non-zero:
    # both rows of an active pair, but one at position 0, where RoPE does not turn.
    active_pairs = sum((lay["x_sparse"].unflatten(-1, (-1, 2)) > 0).any(-1).sum().item() for lay in relu_activity)
    q_rows = sum((layer["q"] != 0).sum().item() for layer in relu_activity)
    active_x = sum((layer["x_sparse"] > 0).sum().item() for layer in relu_activity)
    assert active_x <= q_rows <= 2 * active_pairs and q_rows > 1.5 * active_pairs
    active_xy = sum((layer["xy"] > 0).sum().item() for layer in relu_activity)
    assert relu.active_macs_per_token == pytest.approx(d * (2 * q_rows + active_xy) / block)
    # A neuron fires at most once per step.
    assert max(layer[p].max().item() for layer in spike_activity for p in ("x_spikes", "xy_spikes")) <= 8
    for layer in spike_activity:  # the rates passed on are the counts in units of the thresholds
        torch.testing.assert_close(layer["x_sparse"], layer["x_spikes"] * spiking.thresholds[0].view(-1, 1, 1, 1) / 8)


def test_fine_tuning_with_spikes_in_the_loop_lowers_the_loss_at_few_steps(small_trained_bdh, word_salad_tokens):
    spiking = convert(small_trained_bdh, word_salad_tokens[:2048], block_size=32)
    _, (before,) = evaluate_spiking(
        small_trained_bdh, spiking, word_salad_tokens[12000:], [2], block_size=32, max_tokens=1024
    )
    losses = finetune_spiking(spiking, word_salad_tokens[:12000], iterations=30, steps=2, block_size=32, lr=3e-3)
    _, (after,) = evaluate_spiking(
        small_trained_bdh, spiking, word_salad_tokens[12000:], [2], block_size=32, max_tokens=1024
    )
    assert len(losses) == 30 and all(np.isfinite(losses))
    assert after.loss < before.loss - 0.05
    assert not torch.equal(spiking.encoder_x, small_trained_bdh.encoder_x)  # the reference is left alone


def test_evaluation_and_fine_tuning_leave_the_model_as_they_found_it(small_trained_bdh, word_salad_tokens):
    spiking = convert(small_trained_bdh, word_salad_tokens[:256], block_size=32)
    spiking.steps = 16
    spiking.train()
    evaluate_spiking(small_trained_bdh, spiking, word_salad_tokens[12000:], [1, 2], block_size=32, max_tokens=64)
    assert spiking.steps == 16 and spiking.training
    spiking.eval()
    finetune_spiking(spiking, word_salad_tokens[:2000], iterations=1, steps=2, block_size=32)
    assert spiking.steps == 16 and not spiking.training


def test_bad_settings_are_refused(small_trained_bdh, word_salad_tokens):
    spiking = convert(small_trained_bdh, word_salad_tokens[:256], block_size=32)
    with pytest.raises(ConfigError, match="from 1 to"):
        evaluate_spiking(small_trained_bdh, spiking, word_salad_tokens, [0, 4], block_size=32)
    with pytest.raises(ConfigError, match="once"):
        parse_time_steps("4,8,4")
    with pytest.raises(ConfigError, match="from 1 to"):
        parse_time_steps("100000")
    with pytest.raises(ConfigError, match="block size"):
        convert(small_trained_bdh, word_salad_tokens[:256], block_size=0)
    with pytest.raises(ConfigError, match="learning rate"):
        finetune_spiking(spiking, word_salad_tokens, iterations=1, steps=2, lr=float("nan"))
    with pytest.raises(DataError, match="more than 32 tokens"):
        finetune_spiking(spiking, word_salad_tokens[:32], iterations=1, steps=2, block_size=32)
    with pytest.raises(ConfigError, match="comma-separated"):
        parse_time_steps("4,eight")
    assert parse_time_steps("1,8,64") == [1, 8, 64]
    with pytest.raises(DataError, match="calibration"):
        convert(small_trained_bdh, word_salad_tokens[:10], block_size=32)
    with pytest.raises(ConfigError, match="fine-tuning"):
        finetune_spiking(spiking, word_salad_tokens, iterations=1, steps=0)
    with pytest.raises(ConfigError, match="percentile"):
        SpikingBDH.from_relu(small_trained_bdh).calibrate(torch.zeros(1, 8, dtype=torch.long), percentile=0)
