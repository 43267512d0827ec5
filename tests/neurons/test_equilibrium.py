import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from synaptorch.neurons.equilibrium import (
    equilibrium_gradient,
    equilibrium_rate,
    implicit_equilibrium,
    simulate_if,
    solve_fixed_point,
)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-2.0, 3.0), min_size=1, max_size=16), st.floats(0.25, 4.0))
def test_if_neurons_at_a_constant_current_fire_at_the_equilibrium_rate(currents, threshold):
    current = torch.tensor(currents, dtype=torch.float64)
    steps = 2000
    rates = simulate_if(lambda _: current, current.shape, steps, threshold)
    # The membrane stays in [0, threshold) while the neuron keeps up, so the rate is off by < 1 / T.
    torch.testing.assert_close(rates, equilibrium_rate(current, threshold), atol=1.01 / steps, rtol=0)


def _feedback_layer(n: int = 6, seed: int = 0):
    """A layer that feeds its own rates back: F(a) = W a + U x, W small enough to contract."""
    generator = torch.Generator().manual_seed(seed)
    w = 0.25 * torch.randn(n, n, generator=generator, dtype=torch.float64) / n**0.5
    u = torch.randn(n, 4, generator=generator, dtype=torch.float64)
    x = 0.6 * torch.randn(4, generator=generator, dtype=torch.float64) + 0.3
    return w, u, x


def test_if_neurons_that_feed_back_their_spikes_settle_at_the_fixed_point():
    w, u, x = _feedback_layer()
    threshold = 1.5
    steps = 4000
    rates = simulate_if(lambda spikes: w @ spikes + u @ x, (6,), steps, threshold)
    equilibrium = solve_fixed_point(lambda a: equilibrium_rate(w @ a + u @ x, threshold), torch.zeros(6, dtype=w.dtype))
    assert equilibrium.sum() > 0 and (equilibrium < 1).any()  # the case is not all silent or saturated
    torch.testing.assert_close(rates, equilibrium, atol=20 / steps, rtol=0)


def test_the_implicit_gradient_matches_finite_differences_of_the_fixed_point():
    w, u, x = _feedback_layer(seed=1)
    threshold = 1.2
    readout = torch.linspace(-1, 1, 6, dtype=torch.float64)

    def loss_of(w: torch.Tensor, x: torch.Tensor, implicit: bool = False) -> torch.Tensor:
        def g(a: torch.Tensor) -> torch.Tensor:
            return equilibrium_rate(w @ a + u @ x, threshold)

        state = solve_fixed_point(g, torch.zeros(6, dtype=w.dtype), max_iterations=200, tol=1e-14)
        return readout @ (implicit_equilibrium(g, state, max_iterations=200, tol=1e-14) if implicit else state)

    w_param, x_param = w.clone().requires_grad_(), x.clone().requires_grad_()
    loss_of(w_param, x_param, implicit=True).backward()
    eps = 1e-6

    def numeric(f, param: torch.Tensor) -> torch.Tensor:
        grad = torch.zeros(param.numel(), dtype=param.dtype)
        for i in range(param.numel()):
            step = torch.zeros(param.numel(), dtype=param.dtype)
            step[i] = eps
            grad[i] = (f(param + step.view_as(param)) - f(param - step.view_as(param))) / (2 * eps)
        return grad.view_as(param)

    torch.testing.assert_close(x_param.grad, numeric(lambda x_: loss_of(w, x_), x), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(w_param.grad, numeric(lambda w_: loss_of(w_, x), w), atol=1e-6, rtol=1e-5)
    # The feedback matters: backpropagating through one application of g at a*, as if the
    # state were a constant, gives another gradient.
    state = solve_fixed_point(lambda a: equilibrium_rate(w @ a + u @ x, threshold), torch.zeros(6, dtype=w.dtype))
    x_once = x.clone().requires_grad_()
    (readout @ equilibrium_rate(w @ state + u @ x_once, threshold)).backward()
    assert (x_once.grad - x_param.grad).abs().max() > 1e-3


def test_the_equilibrium_gradient_passes_the_spikes_forward_and_the_clamp_backward():
    current = torch.tensor([-0.5, 0.3, 0.7, 1.4], requires_grad=True)
    measured = torch.tensor([0.0, 0.25, 0.75, 1.0])
    out = equilibrium_gradient(measured, current, threshold=2.0)
    assert torch.equal(out.detach(), measured)
    out.sum().backward()
    assert current.grad.tolist() == pytest.approx([0.0, 0.5, 0.5, 0.5])
    current.grad = None
    equilibrium_gradient(measured, current * 3, threshold=2.0).sum().backward()  # 2.1 is past the threshold
    assert current.grad.tolist() == pytest.approx([0.0, 1.5, 0.0, 0.0])
