import random

import numpy as np
import pytest
import torch

from synaptorch.analysis.recording import stream
from synaptorch.analysis.synapses import ConceptGrowth, Synapse, trace_concept
from synaptorch.analysis.text import concept_pattern, split_held_out
from synaptorch.data.tokenizer import ByteTokenizer
from synaptorch.errors import DataError
from synaptorch.models.layers import rope, rope_phasors

WORDS = ["the", "neuron", "fires", "and", "synapse", "grows", "between", "two", "cells"]


def sentences(n: int, seed: int) -> str:
    """Sentences of random words; every third one holds the word 'qq'."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(8)]
        if i % 3 == 0:
            words.insert(rng.randrange(8), "qq")
        lines.append(" ".join(words) + ".")
    return "\n".join(lines) + "\n"


def test_tracing_recovers_the_planted_synapse(planted_model):
    text = sentences(90, seed=0)
    trace = trace_concept(planted_model, ByteTokenizer(), text, concept_pattern(["qq"]), window=64, top=5, holdout=0.4)
    first = trace.synapses[0]
    assert Synapse(first.layer, first.head, first.neuron, first.dim) == Synapse(0, 1, 2, 3)
    assert first.score > 2 * trace.synapses[1].score
    # Held out: every sentence with 'qq' grows it, no sentence without does.
    assert trace.sentences_with >= 10 and trace.sentences_without >= 20
    assert first.u == trace.sentences_with * trace.sentences_without
    assert first.rank_biserial == 1
    assert first.p < 1e-5
    # Holm multiplies the smallest of the 5 p-values by 5, and never lowers one.
    assert first.p_holm == pytest.approx(min(1.0, 5 * min(s.p for s in trace.synapses)))
    assert all(s.p_holm >= s.p for s in trace.synapses)
    summary = trace.summary()
    assert summary["synapses_tested"] == 5 and summary["selective_at_0.05"] >= 1
    assert summary["top"][0]["p_holm"] > 0  # small p-values keep their digits
    assert first.mean_without == 0 and first.mean_with > 0.1
    kept, _ = split_held_out(text, 0.4)
    assert trace.concept_tokens == 2 * kept.count("qq")


def test_growth_in_the_neurons_frame_rotates_into_the_models_synapse_state(planted_model):
    # The growth summed over a window and turned by RoPE at each position is the state rho itself.
    ids = np.frombuffer(b"the qq neuron fires qq and", dtype=np.uint8).astype(np.int64)
    (batch,) = list(stream(planted_model, ids, window=len(ids)))
    layer = batch.layers[0]
    c = planted_model.config
    phasors = rope_phasors(c.n_neuron, c.rope_theta, 0, len(ids), "cpu")
    rotated = rope(layer["x_sparse"], phasors)  # (nh, 1, T, N)
    rho = torch.einsum("hbtn,btd->bhnd", rotated, layer["residual"])
    assert torch.allclose(rho, batch.state.rho[0], atol=1e-5)
    assert torch.equal(layer["q"], rotated)


def test_concept_growth_is_the_difference_of_means(planted_model):
    text = "qq the qq neuron"
    ids = np.frombuffer(text.encode(), dtype=np.uint8).astype(np.int64)
    mask = np.array([ch == "q" for ch in text])
    growth = ConceptGrowth(1, 2, 4, 8, mask)
    for batch in stream(planted_model, ids, window=5, batch_size=2):
        growth.update(batch)
    scores = growth.scores()
    # Recompute directly from one parallel read of the whole text in windows of 5.
    per_token = []
    for batch in stream(planted_model, ids, window=5, batch_size=1):
        layer = batch.layers[0]
        per_token.append(torch.einsum("hbtn,btd->bthnd", layer["x_sparse"], layer["residual"]).flatten(0, 1))
    per_token = torch.cat(per_token).double()
    concept = torch.as_tensor(mask)
    difference = per_token[concept].mean(0) - per_token[~concept].mean(0)
    residual = torch.cat([b.layers[0]["residual"].flatten(0, 1) for b in stream(planted_model, ids, window=16)])
    rms = residual.double().square().mean(0).sqrt()
    assert torch.allclose(scores[0], difference / rms)


def test_tracing_errors_are_user_errors(planted_model):
    text = sentences(60, seed=1)
    with pytest.raises(DataError, match="does not occur"):
        trace_concept(planted_model, ByteTokenizer(), text, concept_pattern(["absent"]), window=32)
    lines = text.replace("qq", "").splitlines()
    only_at_start = "\n".join(["qq " + line for line in lines[:5]] + lines[5:])  # no block set aside has it
    with pytest.raises(DataError, match="held-out"):
        trace_concept(planted_model, ByteTokenizer(), only_at_start, concept_pattern(["qq"]), window=32)
    with pytest.raises(DataError, match="too short"):
        trace_concept(planted_model, ByteTokenizer(), "qq the neuron. " * 30, concept_pattern(["qq"]), window=32)
