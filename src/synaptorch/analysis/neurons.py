"""Neuron-level selectivity: what each neuron responds to, and how much it sticks to one token.

A neuron's activation is its x_sparse value, relu(x Dx): what it takes from the residual stream
at a token. Its activation mass on a token type is the sum of its activations over the
occurrences of that token type in the text.

Monosemanticity of a neuron: the share of its activation mass that goes to its top token type
(1 when it fires on a single token type, 1/k when spread evenly over k types). Lift: that share
over the top token type's share of the text, so that a neuron firing on every space of a text
where a sixth of the tokens are spaces has a share of 1/6 but a lift of 1.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from synaptorch.analysis.recording import Batch
from synaptorch.analysis.text import EncodedText
from synaptorch.data.tokenizer import Tokenizer
from synaptorch.io import atomic_write_bytes


def _rank_keys(values: Tensor, positions: Tensor) -> Tensor:
    """int64 keys that order activations by value and equal values by position, earlier first, so
    the top contexts do not depend on how the text was cut into batches (at layer 0 a neuron's
    activation depends on the token alone, and ties are the rule). The bits of a non-negative
    float32 order as the float does; an empty slot (position -1) ranks below everything."""
    keys = (values.float().contiguous().view(torch.int32).long() << 32) | (2**32 - 1 - positions)
    return torch.where(positions < 0, -1, keys)


class NeuronCollector:
    """Running activation mass per neuron and token type, and each neuron's top-k activations."""

    def __init__(self, n_layer: int, n_head: int, n_neuron: int, vocab_size: int, top_k: int = 5) -> None:
        self.shape = (n_layer, n_head, n_neuron)
        n = n_layer * n_head * n_neuron
        self.mass = torch.zeros(n, vocab_size, dtype=torch.float64)
        self.token_counts = torch.zeros(vocab_size, dtype=torch.int64)
        self.top_values = torch.zeros(top_k, n)
        self.top_positions = torch.full((top_k, n), -1, dtype=torch.int64)
        self.top_k = top_k

    def update(self, batch: Batch) -> None:
        # (n_layer, nh, B, T, N) -> (B T, n_layer nh N), neurons in (layer, head, index) order
        acts = torch.stack([t["x_sparse"] for t in batch.layers]).cpu()
        acts = acts.permute(2, 3, 0, 1, 4).reshape(batch.ids.numel(), -1)
        ids = batch.ids.reshape(-1).cpu()
        self.mass.index_add_(1, ids, acts.T.double())
        self.token_counts += torch.bincount(ids, minlength=self.token_counts.numel())
        positions = batch.positions.reshape(-1, 1).expand_as(acts)
        chunk = _rank_keys(acts, positions).topk(min(self.top_k, acts.shape[0]), dim=0).indices
        values = torch.cat([self.top_values, acts.gather(0, chunk)])
        positions = torch.cat([self.top_positions, positions.gather(0, chunk)])
        best = _rank_keys(values, positions).topk(self.top_k, dim=0).indices
        self.top_values = values.gather(0, best)
        self.top_positions = positions.gather(0, best)

    def result(self) -> NeuronSelectivity:
        total = self.mass.sum(1)
        top_mass, top_token = self.mass.max(1)
        share = torch.where(total > 0, top_mass / total.clamp_min(1e-30), torch.zeros_like(total))
        frequency = self.token_counts.double() / max(int(self.token_counts.sum()), 1)
        lift = torch.where(total > 0, share / frequency[top_token].clamp_min(1e-30), torch.zeros_like(total))
        return NeuronSelectivity(self.shape, share, lift, top_token, total, self.top_values, self.top_positions)


@dataclass
class NeuronSelectivity:
    shape: tuple[int, int, int]  # n_layer, n_head, N
    monosemanticity: Tensor  # (n,) share of the activation mass on the top token type
    lift: Tensor  # (n,)
    top_token: Tensor  # (n,) token id
    mass: Tensor  # (n,) total activation
    top_values: Tensor  # (k, n) largest activations, largest first
    top_positions: Tensor  # (k, n) token positions of those, -1 where the neuron fired fewer times

    def neuron(self, flat: int) -> tuple[int, int, int]:
        _, n_head, n_neuron = self.shape
        layer, rest = divmod(flat, n_head * n_neuron)
        return layer, *divmod(rest, n_neuron)

    def rows(self, encoded: EncodedText, tokenizer: Tokenizer, firing_rate: Tensor | None = None) -> list[dict]:
        """One row per neuron, (layer, head, index) order; firing_rate (n_layer, nh, N) adds a column."""
        rates = None if firing_rate is None else firing_rate.reshape(-1)
        rows = []
        for flat in range(self.mass.numel()):
            layer, head, index = self.neuron(flat)
            active = self.mass[flat] > 0
            contexts = [
                f"{encoded.snippet(int(p))} ({v:.2f})"
                for v, p in zip(self.top_values[:, flat].tolist(), self.top_positions[:, flat].tolist(), strict=True)
                if p >= 0 and v > 0
            ]
            row = {
                "layer": layer,
                "head": head,
                "neuron": index,
                "firing_rate": None if rates is None else round(rates[flat].item(), 6),
                "total_activation": round(self.mass[flat].item(), 4),
                "top_token": repr(tokenizer.decode([int(self.top_token[flat])])) if active else "",
                "monosemanticity": round(self.monosemanticity[flat].item(), 4),
                "lift": round(self.lift[flat].item(), 3),
                "top_contexts": " | ".join(contexts),
            }
            rows.append(row)
        return rows


def write_csv(rows: list[dict], path: str | Path) -> Path:
    path = Path(path)
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=list(rows[0]) if rows else [])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, table.getvalue().encode("utf-8"))
    return path
