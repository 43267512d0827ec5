"""How sparsely BDH's neurons fire: per layer and head, and per neuron over a whole text."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from synaptorch.analysis.recording import Batch


@dataclass
class Sparsity:
    """Firing rates of every neuron over `tokens` tokens: the share of tokens where it is non-zero."""

    tokens: int
    x_rate: Tensor  # (n_layer, n_head, N) in x_sparse
    y_rate: Tensor  # (n_layer, n_head, N) in y_sparse

    def per_layer(self) -> list[dict]:
        """Per layer, the share of non-zero entries of x_sparse and y_sparse, overall and per head."""
        return [
            {
                "layer": layer,
                "x": round(self.x_rate[layer].mean().item(), 6),
                "y": round(self.y_rate[layer].mean().item(), 6),
                "x_per_head": [round(v, 6) for v in self.x_rate[layer].mean(-1).tolist()],
                "y_per_head": [round(v, 6) for v in self.y_rate[layer].mean(-1).tolist()],
                "x_never": int((self.x_rate[layer] == 0).sum()),
                "x_always": int((self.x_rate[layer] == 1).sum()),
                "y_never": int((self.y_rate[layer] == 0).sum()),
                "y_always": int((self.y_rate[layer] == 1).sum()),
            }
            for layer in range(self.x_rate.shape[0])
        ]

    def summary(self) -> dict:
        n = self.x_rate.numel()
        return {
            "tokens": self.tokens,
            "neurons": n,
            "x": round(self.x_rate.mean().item(), 6),
            "y": round(self.y_rate.mean().item(), 6),
            "x_never_active": int((self.x_rate == 0).sum()),
            "x_always_active": int((self.x_rate == 1).sum()),
            "y_never_active": int((self.y_rate == 0).sum()),
            "y_always_active": int((self.y_rate == 1).sum()),
        }


class SparsityCounter:
    """Counts, per neuron, the tokens on which it fires; memory does not grow with the text."""

    def __init__(self, n_layer: int, n_head: int, n_neuron: int) -> None:
        self.x_counts = torch.zeros(n_layer, n_head, n_neuron, dtype=torch.int64)
        self.y_counts = torch.zeros(n_layer, n_head, n_neuron, dtype=torch.int64)
        self.tokens = 0

    def update(self, batch: Batch) -> None:
        self.tokens += batch.ids.numel()
        for layer, tensors in enumerate(batch.layers):
            self.x_counts[layer] += (tensors["x_sparse"] > 0).sum((1, 2)).cpu()
            self.y_counts[layer] += (tensors["y_sparse"] > 0).sum((1, 2)).cpu()

    def result(self) -> Sparsity:
        tokens = max(self.tokens, 1)
        return Sparsity(self.tokens, self.x_counts.double() / tokens, self.y_counts.double() / tokens)
