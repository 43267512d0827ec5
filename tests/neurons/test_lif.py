import pytest
import torch

from synaptorch.errors import ConfigError
from synaptorch.neurons import (
    ALIF,
    IF,
    LI,
    LIF,
    ALIFCell,
    LIFCell,
    LIFParameters,
    LIFState,
    lif_step,
)


def constant(value, steps=4, n=1):
    return torch.full((steps, n), value)


@pytest.mark.parametrize(
    ("reset", "spikes", "final_v"),
    [
        # beta 0.5, input 0.6: v = 0.6, 0.9, 1.05 -> spike, then 0.05 / 0 / 1.05 before step 4.
        ("subtract", [0, 0, 1, 0], 0.5 * 0.05 + 0.6),
        ("zero", [0, 0, 1, 0], 0.6),
        ("none", [0, 0, 1, 1], 0.5 * 1.05 + 0.6),
    ],
)
def test_lif_trace_by_hand(reset, spikes, final_v):
    spikes_out, state = LIF(1, beta=0.5, reset=reset)(constant(0.6))
    assert spikes_out[:, 0].tolist() == spikes
    assert state.v.item() == pytest.approx(final_v)


def test_integrate_and_fire_does_not_leak():
    # v = 0.4, 0.8, 1.2 -> spike, 0.2 + 0.4 = 0.6, 1.0 (not above the threshold), 1.4 -> spike
    spikes, state = IF(1)(constant(0.4, steps=6))
    assert spikes[:, 0].tolist() == [0, 0, 1, 0, 0, 1]
    assert state.v.item() == pytest.approx(0.4)


def test_recurrent_weight_feeds_back_the_last_spikes():
    cell = LIFCell(2, beta=1.0, recurrent=True)
    with torch.no_grad():
        cell.w_rec.copy_(torch.tensor([[0.0, 0.7], [0.0, 0.0]]))  # neuron 0 excites neuron 1
    state = cell.initial_state(torch.zeros(1, 2))
    s1, state = cell(torch.tensor([[1.5, 0.5]]), state)  # neuron 0 fires, neuron 1 at 0.5
    s2, state = cell(torch.tensor([[0.0, 0.0]]), state)  # neuron 1 gets 0.7: 1.2 -> fires
    assert s1.tolist() == [[1.0, 0.0]] and s2.tolist() == [[0.0, 1.0]]


def test_adaptive_threshold_rises_with_spikes():
    # beta 1, input 1.2, adapt 1, rho 0.5: the threshold is 1 + b, b = 0.5 b + 0.5 s.
    # step 1: v 1.2 > 1 -> spike, v 0.2, b 0.5; step 2: v 1.4 < 1.5; step 3: v 2.6 > 1.25 -> spike
    spikes, state = ALIF(1, adapt=1.0, rho=0.5, beta=1.0)(constant(1.2, steps=3))
    assert spikes[:, 0].tolist() == [1, 0, 1]
    assert state.b.item() == pytest.approx(0.25 * 0.5 + 0.5)
    assert state.v.item() == pytest.approx(2.6 - 1.25)


def test_leaky_integrator_is_a_smoothed_input():
    v, last = LI(beta=0.5)(constant(1.0, steps=3))
    assert v[:, 0].tolist() == [1.0, 1.5, 1.75] and last.item() == 1.75


def test_sequence_module_equals_stepping_the_cell():
    xs = torch.rand(7, 3, 5) * 0.8
    cell, seq = ALIFCell(5, recurrent=True), ALIF(5, recurrent=True)
    cell.load_state_dict(seq.state_dict())
    state, outs = None, []
    for x in xs:
        out, state = cell(x, state)
        outs.append(out)
    spikes, final = seq(xs)
    assert torch.equal(torch.stack(outs), spikes) and torch.equal(state.v, final.v)
    assert spikes.sum() > 0


def test_step_function_is_pure():
    state = LIFState(torch.tensor([0.5]), torch.tensor([0.0]))
    p = LIFParameters(beta=0.5)
    first = lif_step(torch.tensor([0.9]), state, p)
    again = lif_step(torch.tensor([0.9]), state, p)
    assert state.v.item() == 0.5
    assert torch.equal(first[0], again[0]) and torch.equal(first[1].v, again[1].v)


def test_gradients_reach_the_input_through_the_surrogate():
    x = (torch.rand(20, 4, 8) * 0.5).requires_grad_()
    spikes, _ = LIF(8, surrogate="arctan", alpha=2.0)(x)
    spikes.sum().backward()
    assert spikes.sum() > 0 and x.grad.abs().sum() > 0 and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("bad", [{"beta": 1.5}, {"reset": "soft"}, {"surrogate": "heaviside"}])
def test_impossible_parameters_are_refused(bad):
    with pytest.raises(ConfigError):
        LIF(4, **bad)
