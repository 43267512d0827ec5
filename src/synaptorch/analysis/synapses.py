"""Synapse tracing: which of BDH's Hebbian synapses grow when a concept appears in the text.

In the recurrent form each layer keeps, per head, a synapse state rho (N x d) between its
neurons and the residual stream, written at every token t as rho += rope(x_sparse_t)^T x_t.
A synapse is one entry (layer, head, neuron i, residual dimension k). RoPE turns each neuron
pair by an angle that grows with the absolute position, so the raw entries of rho swing with the
position of the text; the growth of a synapse at token t is therefore taken in the neurons'
own frame, x_sparse_t[i] * x_t[k], the write before the rotation (and what a read at the same
position gets back). Rotated and summed over a window it is exactly the model's rho.

Ranking: the text is cut into blocks at line ends and a share of them, spread over the text, is
set aside. On the other blocks a synapse's score is its mean growth at tokens of the concept
minus its mean growth at the other tokens, with the residual dimension k measured in units of
its root mean square over the text: a few dimensions carry large values at every token, and
their synapses would otherwise lead the ranking on magnitude alone. (Dividing by each synapse's
own spread instead would give every synapse that moves with the concept alone the same score,
however faint its neuron.)

Selectivity: the blocks set aside are cut into sentences and lines, each read from a fresh
state. A sentence's value for a synapse is the synapse's mean growth per token over it, and the
sentences with the concept are compared with those without by a Mann-Whitney U test (first
sample: with the concept). The top synapses are tested together, so each raw p-value comes with
its Holm-adjusted one: a synapse whose adjusted p is below a level is selective at that level
with the family-wise error over all synapses tested held to it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor, nn

from synaptorch.analysis.recording import Batch, check_bdh, default_batch_size, run_batch, stream
from synaptorch.analysis.stats import holm, mann_whitney_u, round_for_report
from synaptorch.analysis.text import EncodedText, concept_mask, encode_text, sentence_spans, split_held_out
from synaptorch.data.tokenizer import Tokenizer
from synaptorch.errors import ConfigError, DataError
from synaptorch.models.bdh import BDH


class ConceptGrowth:
    """Sums of every synapse's growth at concept tokens and at all tokens, and of the square of every
    residual dimension, over a streamed text."""

    def __init__(self, n_layer: int, n_head: int, n_neuron: int, n_embd: int, mask: np.ndarray) -> None:
        self.mask = torch.as_tensor(mask, dtype=torch.float32)
        self.concept_sum = torch.zeros(n_layer, n_head, n_neuron, n_embd, dtype=torch.float64)
        self.total_sum = torch.zeros_like(self.concept_sum)
        self.residual_squares = torch.zeros(n_layer, n_embd, dtype=torch.float64)
        self.concept_tokens = 0
        self.tokens = 0

    def update(self, batch: Batch) -> None:
        concept = self.mask[batch.positions]  # (B, T)
        self.concept_tokens += int(concept.sum())
        self.tokens += concept.numel()
        for layer, tensors in enumerate(batch.layers):
            x_sparse, residual = tensors["x_sparse"].cpu(), tensors["residual"].cpu()
            growth_in_concept = torch.einsum("hbtn,btd->hnd", x_sparse * concept[None, :, :, None], residual)
            self.concept_sum[layer] += growth_in_concept.double()
            self.total_sum[layer] += torch.einsum("hbtn,btd->hnd", x_sparse, residual).double()
            self.residual_squares[layer] += residual.double().square().sum((0, 1))

    def scores(self) -> Tensor:
        """(n_layer, nh, N, d): mean growth at concept tokens minus mean growth at the others, the
        residual dimension in units of its root mean square."""
        if self.concept_tokens == 0:
            raise DataError("the concept does not occur in the text")
        if self.concept_tokens == self.tokens:
            raise DataError("every token of the text belongs to the concept; nothing to compare with")
        outside = (self.total_sum - self.concept_sum) / (self.tokens - self.concept_tokens)
        difference = self.concept_sum / self.concept_tokens - outside
        rms = (self.residual_squares / self.tokens).sqrt().clamp_min(1e-12)
        return difference / rms[:, None, None, :]


@dataclass(frozen=True)
class Synapse:
    layer: int
    head: int
    neuron: int
    dim: int


def top_synapses(scores: Tensor, k: int) -> list[tuple[Synapse, float]]:
    values, flat = scores.flatten().topk(min(k, scores.numel()))
    layer, head, neuron, dim = np.unravel_index(flat.numpy(), tuple(scores.shape))
    return [
        (Synapse(int(layer[n]), int(head[n]), int(neuron[n]), int(dim[n])), float(values[n]))
        for n in range(len(values))
    ]


@torch.no_grad()
def sentence_growth(
    model: BDH, encoded: EncodedText, spans: list[tuple[int, int]], synapses: list[Synapse], batch_size: int = 16
) -> np.ndarray:
    """(sentences, synapses): each synapse's mean growth per token over each sentence, every
    sentence read from a fresh state (padded on the right, which a causal model never sees)."""
    values = np.zeros((len(spans), len(synapses)))
    layer = torch.tensor([s.layer for s in synapses])
    head = torch.tensor([s.head for s in synapses])
    neuron = torch.tensor([s.neuron for s in synapses])
    dim = torch.tensor([s.dim for s in synapses])
    device = model.readout.device
    for first in range(0, len(spans), batch_size):
        chunk = spans[first : first + batch_size]
        length = max(b - a for a, b in chunk)
        ids = torch.zeros(len(chunk), length, dtype=torch.long)
        valid = torch.zeros(len(chunk), length)
        for row, (a, b) in enumerate(chunk):
            ids[row, : b - a] = torch.as_tensor(encoded.ids[a:b])
            valid[row, : b - a] = 1
        batch = run_batch(model, ids.to(device), torch.zeros_like(ids))
        x_sparse = torch.stack([t["x_sparse"] for t in batch.layers]).cpu()  # (L, nh, B, T, N)
        residual = torch.stack([t["residual"] for t in batch.layers]).cpu()  # (L, B, T, d)
        pre = x_sparse[layer, head, :, :, neuron]  # (S, B, T)
        post = residual[layer, :, :, dim]  # (S, B, T)
        growth = (pre * post * valid).sum(-1) / valid.sum(-1)  # (S, B)
        values[first : first + len(chunk)] = growth.T.numpy()
    return values


@dataclass
class TracedSynapse:
    layer: int
    head: int
    neuron: int
    dim: int
    score: float  # mean growth at concept tokens minus elsewhere (residual in RMS units), ranking part
    mean_with: float  # held-out sentences with the concept: mean growth per token
    mean_without: float
    u: float
    p: float  # two-sided, of this synapse alone
    p_holm: float  # Holm-adjusted over all synapses of the trace
    rank_biserial: float


@dataclass
class Trace:
    concept: str
    concept_tokens: int
    tokens: int
    sentences_with: int
    sentences_without: int
    synapses: list[TracedSynapse]
    values_with: np.ndarray  # (sentences with, synapses)
    values_without: np.ndarray

    def rows(self) -> list[dict]:
        return [{k: round_for_report(k, v, 6) for k, v in asdict(s).items()} for s in self.synapses]

    def summary(self) -> dict:
        return {
            "concept": self.concept,
            "concept_tokens": self.concept_tokens,
            "tokens": self.tokens,
            "sentences_with": self.sentences_with,
            "sentences_without": self.sentences_without,
            "synapses_tested": len(self.synapses),
            "selective_at_0.05": sum(s.p_holm < 0.05 for s in self.synapses),  # family-wise, by Holm
            "top": self.rows()[:5],
        }


def _spread(items: list, most: int) -> list:
    """At most `most` of items, evenly spaced over the list, so a long text is sampled throughout."""
    if len(items) <= most:
        return items
    return [items[i * len(items) // most] for i in range(most)]


def trace_concept(
    model: nn.Module,
    tokenizer: Tokenizer,
    text: str,
    pattern: re.Pattern,
    window: int,
    top: int = 10,
    holdout: float = 0.3,
    max_sentences: int = 400,
    batch_size: int | None = None,
) -> Trace:
    """Rank synapses by their growth on the concept over 1 - holdout of the text, then test the top
    ones on the sentences of the rest."""
    c = check_bdh(model).config
    if not 0 < holdout < 1:
        raise ConfigError(f"the held-out share must be in (0, 1), got {holdout}")
    if top < 1:
        raise ConfigError(f"the number of synapses to rank must be positive, got {top}")
    ranking_text, held_out_text = split_held_out(text, holdout)
    if not ranking_text.strip() or not held_out_text.strip():
        raise DataError("the text is too short, or has too few lines, to set a part aside for the selectivity test")
    ranking = encode_text(tokenizer, ranking_text)
    growth = ConceptGrowth(c.n_layer, c.n_head, c.n_neuron, c.n_embd, concept_mask(ranking, pattern))
    for batch in stream(model, ranking.ids, window, batch_size):
        growth.update(batch)
    ranked = top_synapses(growth.scores(), top)

    held_out = encode_text(tokenizer, held_out_text)
    mask = concept_mask(held_out, pattern)
    spans = sentence_spans(held_out, window)
    with_concept = _spread([s for s in spans if mask[s[0] : s[1]].any()], max_sentences)
    without_concept = _spread([s for s in spans if not mask[s[0] : s[1]].any()], max_sentences)
    if len(with_concept) < 2 or len(without_concept) < 2:
        raise DataError(
            f"the held-out part has {len(with_concept)} sentences with the concept and {len(without_concept)} "
            "without; it needs at least 2 of each (a longer text, or a larger held-out share)"
        )
    synapses = [s for s, _ in ranked]
    batch_size = batch_size or default_batch_size(c, window)
    values_with = sentence_growth(model, held_out, with_concept, synapses, batch_size)
    values_without = sentence_growth(model, held_out, without_concept, synapses, batch_size)
    tests = [mann_whitney_u(values_with[:, n], values_without[:, n]) for n in range(len(ranked))]
    adjusted = holm([test.p for test in tests])
    traced = [
        TracedSynapse(
            **asdict(synapse),
            score=score,
            mean_with=float(values_with[:, n].mean()),
            mean_without=float(values_without[:, n].mean()),
            u=test.u,
            p=test.p,
            p_holm=float(adjusted[n]),
            rank_biserial=test.rank_biserial,
        )
        for n, ((synapse, score), test) in enumerate(zip(ranked, tests, strict=True))
    ]
    return Trace(
        pattern.pattern,
        growth.concept_tokens,
        growth.tokens,
        len(with_concept),
        len(without_concept),
        traced,
        values_with,
        values_without,
    )
