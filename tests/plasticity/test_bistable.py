import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from synaptorch.errors import ConfigError
from synaptorch.plasticity.bistable import (
    BistableParameters,
    IFState,
    bistable_step,
    check_bistable,
    count_transitions,
    drift,
    efficacy,
    if_step,
    jump,
)

P = BistableParameters()


def test_defaults_are_the_papers():
    assert (P.leak, P.threshold, P.theta_v, P.tau_c, P.j_c) == (10.0, 1.0, 0.8, 0.06, 1.0)
    assert (P.theta_up, P.theta_down, P.a, P.b, P.theta_x, P.alpha, P.beta) == (
        (3, 13),
        (3, 4),
        0.1,
        0.1,
        0.5,
        3.5,
        3.5,
    )


def test_if_neuron_by_hand():
    # lambda dt = 10/s * 1 ms = 0.01. Neuron 0 integrates, 1 is floored at 0, 2 crosses theta and resets.
    state = IFState(torch.tensor([0.5, 0.005, 0.95]), torch.tensor([2.0, 0.0, 1.0]))
    spikes, state = if_step(torch.tensor([0.3, 0.0, 0.1]), state, P)
    decay = math.exp(-1 / 60)
    torch.testing.assert_close(spikes, torch.tensor([0.0, 0.0, 1.0]))
    torch.testing.assert_close(state.v, torch.tensor([0.79, 0.0, 0.0]))
    torch.testing.assert_close(state.c, torch.tensor([2 * decay, 0.0, decay + 1]))
    # Without input the membrane only leaks, 0.01 a step, down to the floor.
    for _ in range(100):
        _, state = if_step(torch.zeros(3), state, P)
    torch.testing.assert_close(state.v, torch.zeros(3))
    assert float(state.c[2]) == pytest.approx((decay + 1) * decay**100, rel=1e-5)


def test_if_neuron_fires_at_the_rate_of_its_drive():
    # A constant 0.05 + 0.01 a step reaches theta = 1 in 20 steps: 50 Hz. The calcium of regular spikes
    # every 20 steps swings between 1 / (exp(1/3) - 1) = 2.53 and 1 / (1 - exp(-1/3)) = 3.53 (nu tau_C = 3).
    state, count = IFState(torch.zeros(1), torch.zeros(1)), 0.0
    for _ in range(1000):
        spikes, state = if_step(torch.full((1,), 0.06), state, P)
        count += float(spikes)
    assert 48 <= count <= 50  # 20 steps a spike, but for rounding in the sums of 0.05
    assert 2.52 < float(state.c) < 3.53


def test_synapse_trace_by_hand():
    x = torch.tensor([[0.45, 0.95, 0.55, 0.02]])
    # Step 1: V = 0.9 > theta_V and C = 5 in the up window (3, 13): up jumps of 0.1 where a spike arrives
    # (inputs 0, 1, 3), then drift by 3.5/s * 1 ms = 0.0035 away from theta_X = 0.5, clipped to [0, 1].
    pre = torch.tensor([1.0, 1.0, 0.0, 1.0])
    x, n_up, n_down = bistable_step(x, pre, torch.tensor([0.9]), torch.tensor([5.0]), P)
    torch.testing.assert_close(x, torch.tensor([[0.5535, 1.0, 0.5535, 0.1165]]))
    assert (float(n_up), float(n_down)) == (3, 0)
    # Step 2: V = 0.5 <= theta_V and C = 3.5 in the down window (3, 4): down jumps of 0.1 at inputs 0 and 2.
    pre = torch.tensor([1.0, 0.0, 1.0, 0.0])
    x, n_up, n_down = bistable_step(x, pre, torch.tensor([0.5]), torch.tensor([3.5]), P)
    torch.testing.assert_close(x, torch.tensor([[0.45, 1.0, 0.45, 0.113]]))
    assert (float(n_up), float(n_down)) == (0, 2)
    # Step 3: C = 3.5 but V = 0.9: up window and high V, so up jumps; input 0 and 2 cross back.
    x, n_up, _ = bistable_step(x, torch.ones(4), torch.tensor([0.9]), torch.tensor([3.5]), P)
    torch.testing.assert_close(x, torch.tensor([[0.5535, 1.0, 0.5535, 0.2095]]))
    assert float(n_up) == 4


@pytest.mark.parametrize(
    ("v", "c"),
    [(0.9, 2.5), (0.9, 13.5), (0.5, 2.5), (0.5, 4.5), (0.5, 10.0)],
    ids=["high-V-low-C", "high-V-high-C", "low-V-low-C", "low-V-above-down-window", "low-V-up-window-only"],
)
def test_no_jump_outside_the_windows(v, c):
    x = torch.tensor([[0.3, 0.7]])
    new, n_up, n_down = jump(x, torch.ones(2), torch.tensor([v]), torch.tensor([c]), P)
    torch.testing.assert_close(new, x)
    assert float(n_up) == float(n_down) == 0


def test_presentations_sharing_the_synapses_add_their_jumps():
    x = torch.full((2, 3), 0.4)
    pre = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    v, c = torch.tensor([[0.9, 0.5], [0.9, 0.9]]), torch.tensor([[5.0, 3.5], [5.0, 5.0]])
    new, n_up, n_down = jump(x, pre, v, c, P)
    # Neuron 0 is up in both presentations, neuron 1 down in the first and up in the second.
    expected = torch.tensor([[0.6, 0.5, 0.5], [0.4, 0.5, 0.3]])
    torch.testing.assert_close(new, expected)
    assert (float(n_up), float(n_down)) == (6, 2)


def test_efficacy_and_transitions():
    p = P._replace(j_plus=0.3, j_minus=0.1)
    before, after = torch.tensor([[0.2, 0.6, 0.5, 0.9]]), torch.tensor([[0.7, 0.6, 0.51, 0.1]])
    torch.testing.assert_close(efficacy(before, p), torch.tensor([[0.1, 0.3, 0.1, 0.3]]))
    assert count_transitions(before, after, p) == 3


@settings(max_examples=60, deadline=None)
@given(
    steps=st.integers(1, 20),
    seed=st.integers(0, 2**16),
    a=st.floats(0, 1),
    b=st.floats(0, 1),
    alpha=st.floats(0, 100),
    beta=st.floats(0, 100),
)
def test_x_stays_in_zero_one(steps, seed, a, b, alpha, beta):
    p = P._replace(a=a, b=b, alpha=alpha, beta=beta)
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(3, 5, generator=generator)
    for _ in range(steps):
        pre = (torch.rand(2, 5, generator=generator) < 0.5).float()
        v, c = torch.rand(2, 3, generator=generator), 15 * torch.rand(2, 3, generator=generator)
        x, _, _ = bistable_step(x, pre, v, c, p)
        assert float(x.min()) >= 0 and float(x.max()) <= 1


@settings(max_examples=40, deadline=None)
@given(steps=st.integers(1, 400), seed=st.integers(0, 2**16))
def test_drift_of_many_steps_is_one_drift(steps, seed):
    # What lets a simulation defer the drift to the next jump: drift never crosses theta_X.
    x = torch.rand(4, 6, generator=torch.Generator().manual_seed(seed))
    stepwise = x
    for _ in range(steps):
        stepwise = drift(stepwise, P.dt, P)
    torch.testing.assert_close(stepwise, drift(x, steps * P.dt, P), atol=1e-4, rtol=0)
    assert count_transitions(x, stepwise, P) == 0


@pytest.mark.parametrize(
    "change",
    [{"dt": 0.0}, {"tau_c": -1.0}, {"a": -0.1}, {"theta_up": (13.0, 3.0)}, {"theta_x": 1.0}, {"theta_v": 1.5}],
)
def test_impossible_parameters_are_config_errors(change):
    with pytest.raises(ConfigError):
        check_bistable(P._replace(**change))
