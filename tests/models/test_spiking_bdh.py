import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from synaptorch.models.spiking_bdh import SpikingBDH, integrate_and_fire


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


def test_zero_steps_is_the_relu_model(small_trained_bdh, word_salad_tokens):
    idx = torch.from_numpy(word_salad_tokens[:96]).view(3, 32)
    spiking = SpikingBDH.from_relu(small_trained_bdh, steps=0)
    torch.testing.assert_close(spiking(idx), small_trained_bdh(idx), atol=1e-5, rtol=1e-5)
    spiking_out, spiking_state = spiking.forward_recurrent(idx[:, :20])
    relu_out, relu_state = small_trained_bdh.forward_recurrent(idx[:, :20])
    torch.testing.assert_close(spiking_out, relu_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        spiking.step(idx[:, 20], spiking_state)[0],
        small_trained_bdh.step(idx[:, 20], relu_state)[0],
        atol=1e-5,
        rtol=1e-5,
    )


def test_the_closed_form_count_without_gradients_is_the_step_loop():
    current = torch.rand(20000) * 1.4 - 0.2
    for steps in (1, 3, 8, 64):
        for v_init in (0.0, 0.5, 0.9):
            with torch.no_grad():
                closed = integrate_and_fire(current, steps, v_init)
            loop = integrate_and_fire(current.clone().requires_grad_(), steps, v_init).detach()
            assert torch.equal(closed, loop), (steps, v_init)


def test_calibration_ignores_dropout(small_trained_bdh, word_salad_tokens):
    idx = torch.from_numpy(word_salad_tokens[:64]).view(2, 32)
    spiking = SpikingBDH.from_relu(small_trained_bdh)
    spiking.drop.p = 0.5
    spiking.train()
    first, second = spiking.calibrate(idx), spiking.calibrate(idx)
    assert torch.equal(first, second) and spiking.training


def test_spiking_parallel_and_recurrent_forms_agree(small_trained_bdh, word_salad_tokens):
    idx = torch.from_numpy(word_salad_tokens[:64]).view(2, 32)
    spiking = SpikingBDH.from_relu(small_trained_bdh, steps=8).eval()
    spiking.calibrate(idx)
    logits = spiking(idx)
    out, state = spiking.forward_recurrent(idx[:, :20])
    last, _ = spiking.step(idx[:, 20], state)
    torch.testing.assert_close(out, logits[:, :20], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(last, logits[:, 20], atol=1e-4, rtol=1e-4)


def test_calibration_at_percentile_100_takes_the_largest_activation(
    small_trained_bdh, word_salad_tokens, layer_recorder
):
    idx = torch.from_numpy(word_salad_tokens[:64]).view(2, 32)
    spiking = SpikingBDH.from_relu(small_trained_bdh, steps=0)
    activity = []
    spiking(idx, layer_recorder(activity))
    thresholds = spiking.calibrate(idx, percentile=100)
    for p, population in enumerate(("x", "xy")):
        key = {"x": "x_sparse", "xy": "xy"}[population]
        largest = torch.stack([layer[key] for layer in activity]).amax(dim=(0, 2, 3, 4))  # per head
        torch.testing.assert_close(thresholds[p], largest)
    assert torch.all(spiking.calibrate(idx, percentile=50) < thresholds)


def test_without_clipping_the_spiking_model_converges_to_the_relu_model(small_trained_bdh, word_salad_tokens):
    idx = torch.from_numpy(word_salad_tokens[:64]).view(2, 32)
    spiking = SpikingBDH.from_relu(small_trained_bdh).eval()
    spiking.calibrate(idx, percentile=100)
    errors = []
    for steps in (16, 128, 1024):
        spiking.steps = steps
        errors.append((spiking(idx) - small_trained_bdh(idx)).abs().max().item())
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.05


def test_surrogate_gradients_reach_the_weights(small_trained_bdh, word_salad_tokens):
    idx = torch.from_numpy(word_salad_tokens[:66]).view(2, 33)
    spiking = SpikingBDH.from_relu(small_trained_bdh, steps=4).train()
    spiking.calibrate(idx[:, :-1])
    loss = F.cross_entropy(spiking(idx[:, :-1]).flatten(0, 1), idx[:, 1:].flatten())
    loss.backward()
    for name in ("encoder_x", "encoder_y", "decoder"):
        grad = getattr(spiking, name).grad
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_observers_see_the_spike_counts_in_both_forms(small_trained_bdh, word_salad_tokens, layer_recorder):
    idx = torch.from_numpy(word_salad_tokens[:64]).view(2, 32)
    spiking = SpikingBDH.from_relu(small_trained_bdh, steps=8).eval()
    spiking.calibrate(idx)
    c = spiking.config
    parallel, recurrent = [], []
    with torch.no_grad():
        spiking(idx, observe=layer_recorder(parallel))
        spiking.forward_recurrent(idx, observe=layer_recorder(recurrent))
    for layer in parallel + recurrent:
        x_current = (layer["residual"].view(-1, c.n_embd) @ spiking.encoder_x).view(c.n_head, 2, 32, -1)
        x_current = x_current / spiking.thresholds[0].view(-1, 1, 1, 1)
        assert torch.equal(layer["x_spikes"], integrate_and_fire(x_current, 8))
        for p, (rate, counts) in enumerate(((layer["x_sparse"], layer["x_spikes"]), (layer["xy"], layer["xy_spikes"]))):
            assert torch.equal(counts, counts.round()) and counts.min() >= 0 and counts.max() <= 8
            assert torch.equal(counts * (spiking.thresholds[p].view(-1, 1, 1, 1) / 8), rate)
