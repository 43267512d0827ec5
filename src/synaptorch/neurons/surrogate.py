"""Spike functions: a step forward and a smooth stand-in for its derivative backward.

Each is a `torch.autograd.Function` taking `(x, alpha)`, with x = v - threshold and alpha the
sharpness of the surrogate. `spike(x, "superspike", alpha)` picks one by name. All but `biper`
fire when x > 0; `biper` is the periodic binary function of BiPer, a square wave forward and the
derivative of a sine backward.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from synaptorch.errors import ConfigError


def _step_function(name: str, derivative: Callable[[Tensor, float], Tensor], doc: str) -> type:
    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x: Tensor, alpha: float) -> Tensor:
            ctx.save_for_backward(x)
            ctx.alpha = alpha
            return (x > 0).to(x.dtype)

        @staticmethod
        def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
            (x,) = ctx.saved_tensors
            return grad * derivative(x, ctx.alpha), None

    Spike.__name__ = Spike.__qualname__ = name
    Spike.__doc__ = doc
    return Spike


def superspike_derivative(x: Tensor, alpha: float) -> Tensor:
    return 1 / (alpha * x.abs() + 1) ** 2


def sigmoid_derivative(x: Tensor, alpha: float) -> Tensor:
    s = torch.sigmoid(alpha * x)
    return alpha * s * (1 - s)


def arctan_derivative(x: Tensor, alpha: float) -> Tensor:
    return (alpha / 2) / (1 + (math.pi / 2 * alpha * x) ** 2)


def triangle_derivative(x: Tensor, alpha: float) -> Tensor:
    return alpha * (1 - alpha * x.abs()).clamp_min(0)


def straight_through_derivative(x: Tensor, alpha: float) -> Tensor:
    return torch.ones_like(x)


# ReSTE's constants: the power law holds for |x| in (RESTE_FLAT * RESTE_RANGE, RESTE_RANGE]; closer
# to zero it is held at its value there, so that it stays finite.
RESTE_RANGE = 1.5
RESTE_FLAT = 0.1


def reste_derivative(x: Tensor, alpha: float) -> Tensor:
    """Derivative of the power function (1 + sign(x) |x / t|^(1/alpha)) / 2, alpha >= 1 the order."""
    t = RESTE_RANGE
    magnitude = (x.abs() / t).clamp(min=RESTE_FLAT)
    slope = magnitude ** (1 / alpha - 1) / (2 * alpha * t)
    return torch.where(x.abs() <= t, slope, torch.zeros_like(x))


SuperSpike = _step_function(
    "SuperSpike", superspike_derivative, "Fast sigmoid surrogate (SuperSpike): 1 / (alpha |x| + 1)^2."
)
SigmoidSpike = _step_function("SigmoidSpike", sigmoid_derivative, "Derivative of sigmoid(alpha x): alpha s (1 - s).")
ArcTanSpike = _step_function(
    "ArcTanSpike", arctan_derivative, "Derivative of arctan(pi alpha x / 2) / pi + 1/2, which integrates to 1."
)
TriangleSpike = _step_function(
    "TriangleSpike", triangle_derivative, "Triangle of height alpha and half-width 1 / alpha, area 1."
)
StraightThroughSpike = _step_function(
    "StraightThroughSpike", straight_through_derivative, "Straight-through estimator: the gradient passes unchanged."
)
ReSTESpike = _step_function(
    "ReSTESpike",
    reste_derivative,
    "Rectified straight-through estimator (ReSTE): the derivative of a power function of order alpha,"
    " zero beyond |x| = 1.5.",
)


def biper_derivative(x: Tensor, alpha: float) -> Tensor:
    return (alpha / 2) * torch.cos(alpha * x)


def biper_forward(x: Tensor, alpha: float) -> Tensor:
    return (torch.sin(alpha * x) > 0).to(x.dtype)


class BiPerSpike(torch.autograd.Function):
    """Periodic binary function (BiPer): square wave (sin(alpha x) > 0) forward, derivative of
    (1 + sin(alpha x)) / 2 backward."""

    @staticmethod
    def forward(ctx, x: Tensor, alpha: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return biper_forward(x, alpha)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        return grad * biper_derivative(x, ctx.alpha), None


# The derivative each surrogate uses backward, for kernels that run the time loop themselves.
DERIVATIVES: dict[str, Callable[[Tensor, float], Tensor]] = {
    "superspike": superspike_derivative,
    "sigmoid": sigmoid_derivative,
    "arctan": arctan_derivative,
    "triangle": triangle_derivative,
    "ste": straight_through_derivative,
    "reste": reste_derivative,
    "biper": biper_derivative,
}

SURROGATES: dict[str, type[torch.autograd.Function]] = {
    "superspike": SuperSpike,
    "sigmoid": SigmoidSpike,
    "arctan": ArcTanSpike,
    "triangle": TriangleSpike,
    "ste": StraightThroughSpike,
    "reste": ReSTESpike,
    "biper": BiPerSpike,
}


def spike(x: Tensor, surrogate: str = "superspike", alpha: float = 10.0) -> Tensor:
    """Spikes (0 or 1, x's dtype) where x = v - threshold crosses zero, with the named surrogate."""
    try:
        function = SURROGATES[surrogate]
    except KeyError:
        raise ConfigError(f"unknown surrogate {surrogate!r}; one of {', '.join(SURROGATES)}") from None
    return function.apply(x, alpha)
