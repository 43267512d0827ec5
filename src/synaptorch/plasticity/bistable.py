"""Bistable spike-driven synapses with a calcium-gated stop-learning rule, and their neuron, as pure
functions over explicit state (Brader, Senn and Fusi, "Learning real-world stimuli in a neural network
with spike-driven synaptic dynamics", Neural Computation 19, 2007; the same rule in silicon: Mitra, Fusi
and Indiveri, "Real-time classification of complex patterns using spike-based learning in neuromorphic
VLSI", IEEE TBioCAS 3, 2009).

Neuron, integrate-and-fire with a constant leak and a floor, and its calcium variable:

    dV/dt = -lambda + I(t)        V >= 0;  V >= theta: spike, V <- 0
    dC/dt = -C / tau_C + J_C sum_k delta(t - t_k)        t_k the neuron's own spikes

Synapse from input j to output neuron i, internal variable X in [0, 1]; at each presynaptic spike

    X <- X + a    if V > theta_V   and theta_up_low   < C < theta_up_high
    X <- X - b    if V <= theta_V  and theta_down_low < C < theta_down_high

and between spikes X drifts to one of its two stable states,

    dX/dt = +alpha  if X > theta_X,  -beta  otherwise,   X clipped to [0, 1],

so that a synapse is binary on long time scales: its efficacy is J+ if X > theta_X, else J-. A synapse
makes a transition when its state X > theta_X flips. Since C is a low-passed copy of the postsynaptic
rate (C ~ nu tau_C J_C), the windows of C stop learning when the output neuron already fires far above
(C > theta_up_high) or far below (C < theta_down_low) the rates of the windows.

Discretisation with step dt (Euler, but the calcium decays exactly by exp(-dt / tau_C)): in a step the
presynaptic spikes arrive, the jumps are gated by V and C as they were before the step's input, then X
drifts by alpha dt or beta dt and is clipped; the neuron integrates its input, leaks by lambda dt, is
floored at 0, and spikes and resets where it reaches theta. The model has no refractory period.

Defaults (`BistableParameters`), the values of the parameter table of Brader et al. 2007: lambda =
10 theta/s, theta = 1, theta_V = 0.8 theta, tau_C = 60 ms, J_C = 1, calcium windows (3, 13) J_C up and
(3, 4) J_C down (postsynaptic rates of about 50-217 Hz and 50-67 Hz), a = b = 0.1, theta_X = 0.5,
alpha = beta = 3.5/s. The efficacies J+ = 0.2 theta and J- = 0 are this module's choice: the paper
sets them for each network, and only their difference relative to the inhibition of the network
matters (`synaptorch.local.stoplearn` chooses them for its tasks). dt = 1 ms is the usual choice of such
simulations, short against the 60 ms of the calcium and the 100 ms the leak takes to empty V.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from synaptorch.errors import ConfigError


class BistableParameters(NamedTuple):
    dt: float = 1e-3  # s
    leak: float = 10.0  # lambda, theta per second
    threshold: float = 1.0  # theta
    tau_c: float = 0.06  # s
    j_c: float = 1.0  # calcium jump per postsynaptic spike
    theta_v: float = 0.8  # depolarisation that separates up from down jumps
    theta_up: tuple[float, float] = (3.0, 13.0)  # calcium window of up jumps, open interval
    theta_down: tuple[float, float] = (3.0, 4.0)  # calcium window of down jumps, open interval
    a: float = 0.1  # up jump
    b: float = 0.1  # down jump
    theta_x: float = 0.5  # the synapse is potentiated above it
    alpha: float = 3.5  # drift up per second, above theta_x
    beta: float = 3.5  # drift down per second, at or below theta_x
    j_plus: float = 0.2  # efficacy of a potentiated synapse, in units of theta
    j_minus: float = 0.0  # efficacy of a depressed synapse


DEFAULT_BISTABLE = BistableParameters()


class IFState(NamedTuple):
    v: Tensor  # membrane potential, >= 0
    c: Tensor  # calcium


def check_bistable(p: BistableParameters) -> None:
    """Raise ConfigError for parameters that make no sense: non-positive times, empty windows, X out of [0, 1]."""
    for name in ("dt", "leak", "threshold", "tau_c"):
        if not getattr(p, name) > 0:
            raise ConfigError(f"{name} must be positive, got {getattr(p, name)}")
    for name in ("j_c", "a", "b", "alpha", "beta"):
        if not getattr(p, name) >= 0:
            raise ConfigError(f"{name} must be non-negative, got {getattr(p, name)}")
    for name in ("theta_up", "theta_down"):
        low, high = getattr(p, name)
        if not low < high:
            raise ConfigError(f"{name} must be an interval (low, high) with low < high, got {(low, high)}")
    if not 0 < p.theta_x < 1:
        raise ConfigError(f"theta_x must be in (0, 1), got {p.theta_x}")
    if not 0 <= p.theta_v <= p.threshold:
        raise ConfigError(f"theta_v must be in [0, threshold], got {p.theta_v}")


def if_step(current: Tensor, state: IFState, p: BistableParameters = DEFAULT_BISTABLE) -> tuple[Tensor, IFState]:
    """One step dt: input current (..., n) in units of theta per step -> spikes (..., n) and the new state.

    V <- max(0, V + I - lambda dt);  spike where V >= theta, and there V <- 0
    C <- C exp(-dt / tau_C) + J_C spike
    """
    v = (state.v + current - p.leak * p.dt).clamp(min=0.0)
    spikes = (v >= p.threshold).to(v.dtype)
    v = v * (1.0 - spikes)
    c = state.c * math.exp(-p.dt / p.tau_c) + p.j_c * spikes
    return spikes, IFState(v, c)


def jump_gates(v: Tensor, c: Tensor, p: BistableParameters = DEFAULT_BISTABLE) -> tuple[Tensor, Tensor]:
    """Where a presynaptic spike would make an up and a down jump: two bool tensors shaped like v and c."""
    up = (v > p.theta_v) & (c > p.theta_up[0]) & (c < p.theta_up[1])
    down = (v <= p.theta_v) & (c > p.theta_down[0]) & (c < p.theta_down[1])
    return up, down


def jump(
    x: Tensor, pre_spikes: Tensor, v: Tensor, c: Tensor, p: BistableParameters = DEFAULT_BISTABLE
) -> tuple[Tensor, Tensor, Tensor]:
    """The jumps of the synapses x (n_out, n_in) at presynaptic spikes, clipped to [0, 1].

    pre_spikes (..., n_in) are 0/1, v and c (..., n_out) the postsynaptic membrane and calcium when the
    spikes arrive. Leading dimensions are presentations that share the synapses: their jumps add up.
    Returns the new x and the numbers of up and down jumps (pairs of a presynaptic spike and a gated
    postsynaptic neuron, summed over the leading dimensions).
    """
    up, down = jump_gates(v, c, p)
    up, down = up.to(x.dtype).reshape(-1, x.shape[0]), down.to(x.dtype).reshape(-1, x.shape[0])
    pre = pre_spikes.to(x.dtype).reshape(-1, x.shape[1])
    n_pre = pre.sum(-1)
    x = (x + (p.a * up - p.b * down).T @ pre).clamp(0.0, 1.0)
    return x, up.sum(-1) @ n_pre, down.sum(-1) @ n_pre


def drift(x: Tensor, seconds: float, p: BistableParameters = DEFAULT_BISTABLE) -> Tensor:
    """The drift of x over `seconds` without presynaptic spikes, clipped to [0, 1].

    The drift carries X away from theta_X, so its direction never changes between two jumps and any
    number of drift steps add up to one: a simulation may defer the drift to the next jump.
    """
    return (x + torch.where(x > p.theta_x, p.alpha * seconds, -p.beta * seconds)).clamp(0.0, 1.0)


def bistable_step(
    x: Tensor, pre_spikes: Tensor, v: Tensor, c: Tensor, p: BistableParameters = DEFAULT_BISTABLE
) -> tuple[Tensor, Tensor, Tensor]:
    """One step dt of the synapses x (n_out, n_in): `jump` at the presynaptic spikes, then `drift` for dt.

    Returns the new x and the numbers of up and down jumps, as `jump` does.
    """
    x, n_up, n_down = jump(x, pre_spikes, v, c, p)
    return drift(x, p.dt, p), n_up, n_down


def potentiated(x: Tensor, p: BistableParameters = DEFAULT_BISTABLE) -> Tensor:
    """The binary state of the synapses: True where X > theta_X."""
    return x > p.theta_x


def efficacy(x: Tensor, p: BistableParameters = DEFAULT_BISTABLE) -> Tensor:
    """The synaptic efficacies: J+ where X > theta_X, J- elsewhere."""
    return torch.where(potentiated(x, p), p.j_plus, p.j_minus).to(x.dtype)


def count_transitions(before: Tensor, after: Tensor, p: BistableParameters = DEFAULT_BISTABLE) -> int:
    """How many synapses changed their binary state between two snapshots of X."""
    return int((potentiated(before, p) != potentiated(after, p)).sum())
