"""Integrate-and-fire neurons as pure step functions over explicit state, and thin modules.

One step of a leaky integrate-and-fire neuron with input current x:

    v = beta * v + x (+ s_prev @ w_rec when recurrent)     beta = 1: integrate-and-fire
    s = spike(v - threshold)                                  surrogate gradient backward
    v = v - s * threshold  |  v * (1 - s)  |  v               reset: subtract, zero or none

The adaptive neuron raises its threshold by `adapt` times a trace b of its own spikes,
b = rho * b + (1 - rho) * s. The leaky integrator has no spike: its membrane is the output,
as a readout. A step function takes (input, state, parameters) and returns (output, new state);
the modules hold the parameters and, for recurrence, the weight; nothing else is kept between
calls.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from synaptorch.errors import ConfigError
from synaptorch.neurons.fused import lif_sequence
from synaptorch.neurons.parameters import (
    DEFAULT_ALIF,
    DEFAULT_LIF,
    ALIFParameters,
    LIFParameters,
    check_lif,
    reset_membrane,
)
from synaptorch.neurons.surrogate import spike


class LIFState(NamedTuple):
    v: Tensor  # membrane potential
    s: Tensor  # spikes of the last step


class ALIFState(NamedTuple):
    v: Tensor
    s: Tensor
    b: Tensor  # spike trace that raises the threshold


def lif_step(
    x: Tensor, state: LIFState, p: LIFParameters = DEFAULT_LIF, w_rec: Tensor | None = None
) -> tuple[Tensor, LIFState]:
    """One step: input current x (..., n) -> spikes (..., n) and the new state."""
    current = x if w_rec is None else x + state.s @ w_rec
    v = p.beta * state.v + current
    s = spike(v - p.threshold, p.surrogate, p.alpha)
    return s, LIFState(reset_membrane(v, s, p.threshold, p.reset), s)


def alif_step(
    x: Tensor, state: ALIFState, p: ALIFParameters = DEFAULT_ALIF, w_rec: Tensor | None = None
) -> tuple[Tensor, ALIFState]:
    """One step of the adaptive neuron: its threshold is lif.threshold + adapt * b."""
    q = p.lif
    current = x if w_rec is None else x + state.s @ w_rec
    v = q.beta * state.v + current
    threshold = q.threshold + p.adapt * state.b
    s = spike(v - threshold, q.surrogate, q.alpha)
    b = p.rho * state.b + (1 - p.rho) * s
    return s, ALIFState(reset_membrane(v, s, threshold, q.reset), s, b)


def li_step(x: Tensor, v: Tensor, beta: float = 0.9) -> tuple[Tensor, Tensor]:
    """Leaky integrator: v = beta * v + x is both the output and the new state."""
    v = beta * v + x
    return v, v


def _sequence(step, xs: Tensor, state) -> tuple[Tensor, object]:
    outputs = []
    for x in xs:
        out, state = step(x, state)
        outputs.append(out)
    return torch.stack(outputs), state


class LIFCell(nn.Module):
    """One step of n LIF neurons: forward(x (..., n), state=None) -> (spikes, state).

    leak=False makes integrate-and-fire neurons; recurrent=True adds a learned weight from the
    last step's spikes.
    """

    def __init__(
        self,
        n: int,
        beta: float = 0.9,
        threshold: float = 1.0,
        reset: str = "subtract",
        surrogate: str = "superspike",
        alpha: float = 10.0,
        leak: bool = True,
        recurrent: bool = False,
    ) -> None:
        super().__init__()
        self.p = LIFParameters(beta if leak else 1.0, threshold, reset, surrogate, alpha)
        check_lif(self.p)
        self.w_rec = nn.Parameter(torch.randn(n, n) / n**0.5) if recurrent else None
        self.n = n

    def initial_state(self, like: Tensor) -> LIFState:
        zeros = like.new_zeros(*like.shape[:-1], self.n)
        return LIFState(zeros, zeros)

    def forward(self, x: Tensor, state: LIFState | None = None) -> tuple[Tensor, LIFState]:
        return lif_step(x, state or self.initial_state(x), self.p, self.w_rec)


class LIF(LIFCell):
    """A whole sequence: forward(x (T, ..., n), state=None) -> (spikes (T, ..., n), final state).

    Without recurrence the time loop runs in `fused.lif_sequence`, which stores only the membrane.
    """

    def forward(self, xs: Tensor, state: LIFState | None = None) -> tuple[Tensor, LIFState]:
        if self.w_rec is None:
            spikes, v = lif_sequence(xs, self.p, None if state is None else state.v)
            return spikes, LIFState(v, spikes[-1])
        return _sequence(lambda x, s: lif_step(x, s, self.p, self.w_rec), xs, state or self.initial_state(xs[0]))


class IFCell(LIFCell):
    """Integrate-and-fire neurons, one step: LIF without leak."""

    def __init__(self, n: int, **kwargs) -> None:
        super().__init__(n, leak=False, **kwargs)


class IF(LIF):
    """Integrate-and-fire neurons over a sequence: LIF without leak."""

    def __init__(self, n: int, **kwargs) -> None:
        super().__init__(n, leak=False, **kwargs)


class ALIFCell(nn.Module):
    """One step of n adaptive LIF neurons: forward(x (..., n), state=None) -> (spikes, state)."""

    def __init__(self, n: int, adapt: float = 0.2, rho: float = 0.95, recurrent: bool = False, **lif) -> None:
        super().__init__()
        self.p = ALIFParameters(LIFParameters(**lif), adapt, rho)
        check_lif(self.p.lif)
        if not 0 <= rho <= 1:
            raise ConfigError(f"rho must be in [0, 1], got {rho}")
        self.w_rec = nn.Parameter(torch.randn(n, n) / n**0.5) if recurrent else None
        self.n = n

    def initial_state(self, like: Tensor) -> ALIFState:
        zeros = like.new_zeros(*like.shape[:-1], self.n)
        return ALIFState(zeros, zeros, zeros)

    def forward(self, x: Tensor, state: ALIFState | None = None) -> tuple[Tensor, ALIFState]:
        return alif_step(x, state or self.initial_state(x), self.p, self.w_rec)


class ALIF(ALIFCell):
    """Adaptive LIF over a sequence: forward(x (T, ..., n), state=None) -> (spikes, final state)."""

    def forward(self, xs: Tensor, state: ALIFState | None = None) -> tuple[Tensor, ALIFState]:
        return _sequence(lambda x, s: alif_step(x, s, self.p, self.w_rec), xs, state or self.initial_state(xs[0]))


class LI(nn.Module):
    """Non-spiking leaky integrator readout over a sequence: forward(x (T, ..., n), v=None) -> (v (T, ..., n), v)."""

    def __init__(self, beta: float = 0.9) -> None:
        super().__init__()
        if not 0 <= beta <= 1:
            raise ConfigError(f"beta must be in [0, 1], got {beta}")
        self.beta = beta

    def forward(self, xs: Tensor, v: Tensor | None = None) -> tuple[Tensor, Tensor]:
        v = torch.zeros_like(xs[0]) if v is None else v
        return _sequence(lambda x, v: li_step(x, v, self.beta), xs, v)
