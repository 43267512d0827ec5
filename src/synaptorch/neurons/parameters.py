"""Parameters of the integrate-and-fire neurons and their reset, shared by the step functions and
the fused kernel."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from synaptorch.errors import ConfigError
from synaptorch.neurons.surrogate import SURROGATES

RESETS = ("subtract", "zero", "none")


class LIFParameters(NamedTuple):
    beta: float = 0.9  # membrane decay per step; 1.0 is a non-leaky integrate-and-fire neuron
    threshold: float = 1.0
    reset: str = "subtract"  # subtract, zero or none
    surrogate: str = "superspike"
    alpha: float = 10.0  # sharpness of the surrogate


class ALIFParameters(NamedTuple):
    lif: LIFParameters = LIFParameters()
    adapt: float = 0.2  # threshold increase per unit of spike trace
    rho: float = 0.95  # decay of the spike trace per step


DEFAULT_LIF = LIFParameters()
DEFAULT_ALIF = ALIFParameters()


def check_lif(p: LIFParameters) -> None:
    if not 0 <= p.beta <= 1:
        raise ConfigError(f"beta must be in [0, 1], got {p.beta}")
    if p.reset not in RESETS:
        raise ConfigError(f"reset must be one of {', '.join(RESETS)}, got {p.reset!r}")
    if p.surrogate not in SURROGATES:
        raise ConfigError(f"surrogate must be one of {', '.join(SURROGATES)}, got {p.surrogate!r}")


def reset_membrane(v: Tensor, s: Tensor, threshold: Tensor | float, reset: str) -> Tensor:
    if reset == "subtract":
        return v - s * threshold
    if reset == "zero":
        return v * (1 - s)
    return v
