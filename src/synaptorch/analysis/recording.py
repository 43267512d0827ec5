"""Stream a long text through BDH's recurrent form and hand each layer's tensors to collectors.

The text is cut into windows of `window` tokens. Each window is read from a fresh synapse state,
as in training, where the model never saw a context longer than its block; windows go through
`forward_recurrent` a batch at a time, so memory depends on the batch and never on the text.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from synaptorch.errors import ConfigError
from synaptorch.models.bdh import BDH, BDHConfig, BDHState

# Numbers of synapse state held by one batch of windows (all layers); bounds the batch size.
STATE_BUDGET = 2**26


@dataclass
class Batch:
    """One batch of windows and what every layer computed on it."""

    ids: Tensor  # (B, T) tokens
    positions: Tensor  # (B, T) index of each token in the text
    layers: list[dict[str, Tensor]]  # per layer: residual (B, T, d); x_sparse, q, y_sparse, xy (nh, B, T, N)
    state: BDHState  # the synapse state after the windows


def check_bdh(model: nn.Module) -> BDH:
    if not isinstance(model, BDH):
        raise ConfigError(f"inspection needs a BDH model, got {getattr(model, 'architecture', type(model).__name__)}")
    return model


def default_batch_size(c: BDHConfig, window: int) -> int:
    state_per_window = c.n_layer * c.n_head * c.n_neuron * c.n_embd
    return max(1, min(16, STATE_BUDGET // state_per_window, 2**14 // window))


@torch.no_grad()
def run_batch(model: BDH, ids: Tensor, positions: Tensor) -> Batch:
    layers: list[dict[str, Tensor]] = []

    def observe(layer: int, residual: Tensor, **neurons: Tensor) -> None:
        layers.append({"residual": residual[0], **neurons})

    _, state = model.forward_recurrent(ids, observe=observe)
    return Batch(ids, positions, layers, state)


def stream(model: BDH, ids: np.ndarray, window: int, batch_size: int | None = None) -> Iterator[Batch]:
    """Batches of windows of ids (the last window may be shorter and comes alone), in text order."""
    check_bdh(model)
    if window <= 0:
        raise ConfigError(f"the window must be positive, got {window}")
    model.eval()
    batch_size = batch_size or default_batch_size(model.config, window)
    device = model.readout.device
    n_full = len(ids) // window
    for first in range(0, n_full, batch_size):
        last = min(n_full, first + batch_size)
        positions = torch.arange(first * window, last * window).view(-1, window)
        yield run_batch(model, torch.as_tensor(ids[positions.numpy()], device=device), positions)
    if len(ids) > n_full * window:
        positions = torch.arange(n_full * window, len(ids)).view(1, -1)
        yield run_batch(model, torch.as_tensor(ids[positions.numpy()], device=device), positions)
