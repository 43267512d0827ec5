"""Turning values into spike trains, and a raster plot of spikes.

All encoders put time first: a value tensor of shape S becomes spikes of shape (steps, *S).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from synaptorch.errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _check_unit(x: Tensor, name: str) -> None:
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ConfigError(f"{name} encoding takes values in [0, 1]")


def rate_encode(x: Tensor, steps: int, generator: torch.Generator | None = None) -> Tensor:
    """Poisson (Bernoulli per step) spikes: a value in [0, 1] is the chance to fire at each step."""
    _check_unit(x, "rate")
    chance = x.expand(steps, *x.shape)
    return torch.bernoulli(chance, generator=generator)


def latency_encode(x: Tensor, steps: int) -> Tensor:
    """One spike per value, earlier for larger values: at step round((1 - x) (steps - 1)); 0 never fires."""
    _check_unit(x, "latency")
    when = torch.round((1 - x) * (steps - 1)).long()
    time = torch.arange(steps, device=x.device).view(steps, *([1] * x.dim()))
    return ((time == when) & (x > 0)).to(x.dtype)


def delta_encode(x: Tensor, threshold: float = 0.1) -> Tensor:
    """Signed spikes of change along time, x (T, ...): +1 where x rose by more than threshold since
    the last step, -1 where it fell by more; the first step compares with zero."""
    if threshold <= 0:
        raise ConfigError(f"threshold must be > 0, got {threshold}")
    change = torch.diff(x, dim=0, prepend=torch.zeros_like(x[:1]))
    return (change > threshold).to(x.dtype) - (change < -threshold).to(x.dtype)


def raster_plot(spikes: Tensor, path: str | Path | None = None, title: str = "") -> Figure:
    """Dot per spike, time across and neuron up, of spikes (T, n); returns the matplotlib Figure
    and writes a PNG when path is given."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    if spikes.dim() != 2:
        raise ConfigError(f"a raster plot takes spikes (time, neurons), got shape {tuple(spikes.shape)}")
    time, neuron = torch.nonzero(spikes.detach().cpu(), as_tuple=True)
    figure = Figure(figsize=(8, 3), layout="constrained")
    ax = figure.subplots()
    ax.scatter(time.numpy(), neuron.numpy(), s=2, marker="|", color="black")
    ax.set(xlabel="time step", ylabel="neuron", xlim=(-0.5, spikes.shape[0] - 0.5), title=title)
    ax.set_ylim(-0.5, spikes.shape[1] - 0.5)
    if path is not None:
        figure.savefig(path, dpi=110)
    return figure
