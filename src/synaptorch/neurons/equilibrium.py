"""Equilibrium rates of integrate-and-fire neurons, and training through them (SpikingBERT).

After Bal and Sengupta (SpikingBERT, AAAI 2024), who follow Xiao et al. (IDE, NeurIPS 2021).
An IF neuron without leak, threshold V_th, reset by subtraction, driven by currents I_t, has

    u_{t+1} = u_t + I_t - V_th s_t,   so   a_T = (1/T) sum_t s_t = (mean_t I_t - (u_T - u_0) / T) / V_th.

The membrane stays below V_th while the neuron can keep up and a neuron spikes at most once per
step, so as T grows the average rate a_T tends to the equilibrium

    a* = clamp(F(a*) / V_th, 0, 1),

F being the mean current as a function of the rates: F = I for a constant current, F(a) = W a + b
for a layer that feeds its own spikes back (the case that needs a fixed point).

Training goes through that equilibrium instead of through surrogate gradients of every step: the
forward pass runs the spikes (their rates stand for a*) and the backward pass differentiates
a* = g(a*) = clamp(F(a*, theta) / V_th, 0, 1). Without feedback da*/dI = 1 / V_th on
0 < I < V_th and 0 elsewhere: plain backpropagation. With feedback, implicitly:

    dL/dtheta = w^T dg/dtheta at a*,   w = dL/da* + J^T w,   J = dg/da at a*,

the linear equation for w solved by fixed-point iteration. The seed solves it with Broyden's
method in 30 iterations; the same 30 bound the iterations here, which converge wherever the
forward fixed point does (the spectral radius of J is then below 1).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

# Backward (and forward) solves, from SpikingBERT's 30 Broyden iterations.
MAX_ITERATIONS = 30


def equilibrium_rate(current: Tensor, threshold: float | Tensor = 1.0) -> Tensor:
    """a* = clamp(current / V_th, 0, 1): the rate IF neurons held at `current` tend to."""
    return (current / threshold).clamp(0, 1)


@torch.no_grad()
def simulate_if(
    drive: Callable[[Tensor], Tensor],
    shape: torch.Size | tuple[int, ...],
    steps: int,
    threshold: float = 1.0,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Average rates of IF neurons over `steps` steps (membranes from 0, reset by subtraction).

    drive(spikes of the step before) -> the input current of this step, so a layer may feed its
    own spikes back; `lambda s: current` holds them at a constant current.
    """
    v, spikes, total = (torch.zeros(shape, dtype=dtype) for _ in range(3))
    for _ in range(steps):
        v = v + drive(spikes)
        spikes = (v >= threshold).to(v.dtype)
        v = v - threshold * spikes
        total = total + spikes
    return total / steps


def equilibrium_gradient(rate: Tensor, current: Tensor, threshold: float | Tensor = 1.0) -> Tensor:
    """`rate` (measured spike rates) forward; backward, the gradient of the equilibrium of `current`.

    For neurons whose current does not depend on their own output: plain backpropagation through
    a* = clamp(current / V_th, 0, 1), no surrogate and no loop over the steps.
    """
    equilibrium = equilibrium_rate(current, threshold)
    return equilibrium + (rate - equilibrium).detach()


@torch.no_grad()
def solve_fixed_point(
    f: Callable[[Tensor], Tensor], start: Tensor, max_iterations: int = MAX_ITERATIONS, tol: float = 1e-6
) -> Tensor:
    """Iterate z = f(z) from `start` until the step is below `tol` (relative) or the iterations run out."""
    z = start
    for _ in range(max_iterations):
        nxt = f(z)
        done = (nxt - z).norm() <= tol * (1 + z.norm())
        z = nxt
        if done:
            break
    return z


def implicit_equilibrium(
    g: Callable[[Tensor], Tensor], state: Tensor, max_iterations: int = MAX_ITERATIONS, tol: float = 1e-6
) -> Tensor:
    """g(state) with the gradient of the fixed point a* = g(a*) by implicit differentiation.

    g(a) = clamp(F(a) / V_th, 0, 1) closes over the layer's weights and inputs. `state` stands for
    a*: the measured rates of a spiking run or `solve_fixed_point(g, ...)`. The backward pass
    solves w = dL/da* + J^T w by fixed-point iteration and sends w through one application of g,
    so no step of the forward solve or of the spikes is stored.
    """
    state = state.detach()
    out = g(state)
    if not out.requires_grad:
        return out
    at = state.clone().requires_grad_()
    with torch.enable_grad():
        again = g(at)

    def backward(grad: Tensor) -> Tensor:
        def step(w: Tensor) -> Tensor:
            (jtw,) = torch.autograd.grad(again, at, w, retain_graph=True)
            return jtw + grad

        return solve_fixed_point(step, grad, max_iterations, tol)

    out.register_hook(backward)
    return out
