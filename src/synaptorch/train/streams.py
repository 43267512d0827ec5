"""Training and scoring BDH on streams of text, its synapse state carried from window to window.

The paper trains BDH so (Kosowski et al. 2025, appendix B.1-B.2): consecutive minibatches continue
the same text and "each model maintains a recurrent state, carried across minibatches", with
truncated backpropagation through time. Here each row of the global batch reads its own
contiguous stream of the training split, from an evenly spaced offset, one window of block_size
tokens per step. The synapse state rho of each row and layer that the window leaves is the next
window's initial state, detached: the gradient of a step stays inside its window (the
truncation), while the forward pass sees all the stream has written.

A stream is cut into documents of `reset` tokens, at whose starts the state restarts empty and
RoPE positions count from 0 again: a model learns contexts of that length, the length at which
`stream_losses` scores it. All rows are at the same place in their documents, so a micro-batch of
rows shares one position.

Consecutive steps then read the same few places of the text, an order that trains worse than
random windows do (benchmarks/README.md, long_context.py). As the state restarts at every
document anyway, a row may read its documents in any order: `shuffle_seed` takes them in an order
drawn from the seed, each document still whole.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from synaptorch.device import Precision, autocast_for
from synaptorch.errors import ConfigError, DataError
from synaptorch.models.bdh import BDH, BDHState
from synaptorch.train.distributed import SINGLE, World


@dataclass(frozen=True)
class StreamLayout:
    """Where each row of the global batch reads, at every step.

    Row r reads documents r * n_docs // rows, then the following ones (wrapping round the split),
    each in `windows_per_doc` windows of block_size tokens. With `shuffle_seed` the documents are
    numbered in an order drawn from it instead of the text's.
    """

    block_size: int
    rows: int
    windows_per_doc: int
    n_docs: int
    shuffle_seed: int | None = None

    @classmethod
    def of(cls, n_tokens: int, block_size: int, rows: int, reset: int, shuffle_seed: int | None = None) -> StreamLayout:
        """The layout of streams over n_tokens tokens; reset 0 makes each row's share of the split one document."""
        if reset % block_size:
            raise ConfigError(f"--carry-reset {reset} must be a multiple of --block-size {block_size}")
        n_windows = (n_tokens - 1) // block_size  # a window needs its next token as the last target
        windows_per_doc = reset // block_size if reset else n_windows // rows
        if windows_per_doc < 1 or n_windows < windows_per_doc:
            raise DataError(
                f"the training split's {n_tokens:,} tokens hold no stream of {reset or rows * block_size} tokens "
                f"for each of {rows} rows; lower --carry-reset or the batch"
            )
        return cls(block_size, rows, windows_per_doc, n_windows // windows_per_doc, shuffle_seed)

    @functools.cached_property
    def document_order(self) -> np.ndarray:
        """The documents of the split in the order the rows read them."""
        if self.shuffle_seed is None:
            return np.arange(self.n_docs)
        return np.random.default_rng(self.shuffle_seed).permutation(self.n_docs)

    def starts(self, step: int) -> list[int]:
        """The token offset of each row's window at `step`."""
        doc, window = divmod(step, self.windows_per_doc)
        order = self.document_order
        return [
            (int(order[(r * self.n_docs // self.rows + doc) % self.n_docs]) * self.windows_per_doc + window)
            * self.block_size
            for r in range(self.rows)
        ]

    def position(self, step: int) -> int:
        """The position in its document of every row's window at `step`; 0 restarts the state."""
        return (step % self.windows_per_doc) * self.block_size


class CarriedState:
    """The synapse state of every row of the global batch and every layer, between steps.

    Each process updates the rows it trains; `gathered` gives all of them to every process.
    """

    def __init__(self, model: nn.Module, rows: int, device: torch.device) -> None:
        self.rho = model.initial_state(rows, device=device).rho  # per layer (rows, nh, N, d)
        self.position = 0

    def read(self, rows: Sequence[int], position: int) -> BDHState:
        """The state the window of `rows` at `position` starts from; position 0 starts empty."""
        if position == 0:
            return BDHState([torch.zeros_like(rho[list(rows)]) for rho in self.rho], 0)
        return BDHState([rho[list(rows)] for rho in self.rho], position)

    def write(self, rows: Sequence[int], state: BDHState) -> None:
        """Keep the state `rows` ended with, cut from the graph: the truncation of backpropagation."""
        for carried, rho in zip(self.rho, state.rho, strict=True):
            carried[list(rows)] = rho.detach().to(carried.dtype)
        self.position = state.position

    def gathered(self, world: World, mine: Sequence[int]) -> list[Tensor]:
        """Every row's state on every process, from each process's `mine` rows."""
        if not world.distributed:
            return [rho.clone() for rho in self.rho]
        import torch.distributed as dist

        mask = torch.zeros(self.rho[0].shape[0], dtype=torch.bool, device=self.rho[0].device)
        mask[list(mine)] = True
        full = []
        for rho in self.rho:
            t = torch.where(mask[:, None, None, None], rho, torch.zeros_like(rho))
            dist.all_reduce(t)
            full.append(t)
        return full

    def state_dict(self, world: World, mine: Sequence[int]) -> dict:
        return {"rho": [t.cpu() for t in self.gathered(world, mine)], "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        saved = state["rho"]
        if len(saved) != len(self.rho) or any(s.shape != t.shape for s, t in zip(saved, self.rho, strict=True)):
            raise ConfigError("the checkpoint's carried synapse states do not fit this run's model and batch")
        self.rho = [s.to(t.device, t.dtype) for s, t in zip(saved, self.rho, strict=True)]
        self.position = state["position"]


def document_starts(n_tokens: int, doc_len: int, max_tokens: int = 0) -> np.ndarray:
    """Starts of the non-overlapping documents of doc_len + 1 tokens (the last a target only) that
    scoring reads; with max_tokens, evenly spaced documents of about that many tokens in all,
    always the same ones."""
    n_docs = (n_tokens - 1) // doc_len
    if n_docs < 1:
        raise DataError(f"need more than {doc_len} tokens to evaluate pieces of {doc_len}, have {n_tokens}")
    starts = np.arange(n_docs) * doc_len
    if max_tokens and n_docs * doc_len > max_tokens:
        keep = max(1, max_tokens // doc_len)
        starts = starts[np.linspace(0, n_docs - 1, keep).round().astype(np.int64)]
    return starts


@torch.no_grad()
def stream_losses(
    model: nn.Module,
    tokens: np.ndarray,
    doc_len: int,
    window: int,
    batch_size: int,
    device: torch.device,
    max_tokens: int = 0,
    world: World = SINGLE,
    precision: Precision | None = None,
) -> tuple[np.ndarray, int]:
    """Mean next-token loss (nats) at each position 0 .. doc_len - 1 of the documents of
    `document_starts`, read as streams in windows of `window` tokens, the synapse state carried
    from one window to the next; and the number of documents. The processes of `world` read
    their shares of the documents and add them up."""
    was_training = model.training
    model.eval()
    starts = world.part(document_starts(len(tokens), doc_len, max_tokens))
    total = torch.zeros(doc_len, dtype=torch.float64, device=device)
    try:
        for i in range(0, len(starts), batch_size):
            rows = np.stack([tokens[s : s + doc_len + 1].astype(np.int64) for s in starts[i : i + batch_size]])
            batch = torch.from_numpy(rows).to(device)
            state = None
            for begin in range(0, doc_len, window):
                end = min(begin + window, doc_len)
                with autocast_for(device, precision):
                    logits, state = model.forward_recurrent(batch[:, begin:end], state)
                loss = F.cross_entropy(
                    logits.float().flatten(0, 1), batch[:, begin + 1 : end + 1].flatten(), reduction="none"
                )
                total[begin:end] += loss.view(len(rows), -1).sum(0).double()
    finally:
        model.train(was_training)
    n_docs = len(starts)
    if world.distributed:
        import torch.distributed as dist

        counts = torch.tensor([float(n_docs)], dtype=torch.float64, device=device)
        dist.all_reduce(total)
        dist.all_reduce(counts)
        n_docs = int(counts.item())
    return (total / max(n_docs, 1)).cpu().numpy(), n_docs


def bucket_means(per_position: np.ndarray, edges: Sequence[int]) -> dict[str, float]:
    """Mean of per-position losses in the buckets [edges[i], edges[i + 1]), named like "0-128" or
    "2k-8k"; the last bucket is cut, and named, at the end of the positions."""
    means = {}
    for lo, hi in itertools.pairwise(edges):
        if lo < len(per_position):
            hi = min(hi, len(per_position))
            means[f"{_short(lo)}-{_short(hi)}"] = float(per_position[lo:hi].mean())
    return means


def _short(n: int) -> str:
    return f"{n // 1024}k" if n >= 1024 and n % 1024 == 0 else str(n)


class RecurrentForward(nn.Module):
    """`model.forward_recurrent` as a module's forward, for DistributedDataParallel, which
    synchronises gradients only of computations made through a module's call."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, idx: Tensor, state: BDHState) -> tuple[Tensor, BDHState]:
        return self.model.forward_recurrent(idx, state)


def check_carry(model: nn.Module, flag: str = "--carry-state") -> None:
    """Refuse `flag` for a model without BDH's synapse state."""
    if not isinstance(model, BDH):
        raise ConfigError(f"{flag} needs a model with a synapse state (BDH), not {model.architecture}")
