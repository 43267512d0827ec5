import csv

import pytest
import torch

from synaptorch.analysis.neurons import write_csv
from synaptorch.analysis.report import measure_activity
from synaptorch.data.tokenizer import ByteTokenizer

TEXT = "aaaaaabbbccd"


def test_top_tokens_and_monosemanticity_of_a_hand_built_model(one_hot_model):
    activity = measure_activity(one_hot_model, ByteTokenizer(), TEXT, window=5, batch_size=2, top_k=3)
    selectivity = activity.selectivity
    rows = selectivity.rows(activity.encoded, ByteTokenizer(), activity.sparsity.x_rate)
    by_neuron = {(r["layer"], r["head"], r["neuron"]): r for r in rows}
    assert len(rows) == 2 * 2 * 4
    # Head 0 neuron 1 fires on 'a' only: all its mass on one token, a token that is half the text.
    a_neuron = by_neuron[1, 0, 1]
    assert a_neuron["top_token"] == "'a'"
    assert a_neuron["monosemanticity"] == 1.0
    assert a_neuron["lift"] == pytest.approx(2.0)
    assert a_neuron["firing_rate"] == 0.5
    assert a_neuron["top_contexts"].count("[a]") == 3
    # Head 1 neuron 2 fires alike on 'a' (6 times) and 'd' (once): 6/7 of its mass on 'a'.
    assert by_neuron[0, 1, 2]["monosemanticity"] == pytest.approx(6 / 7, abs=1e-4)
    # Head 1 neuron 1 fires on everything with the same value; 'a' is half the text.
    assert by_neuron[0, 1, 1]["monosemanticity"] == pytest.approx(0.5)
    assert by_neuron[0, 1, 1]["lift"] == pytest.approx(1.0)
    silent = by_neuron[0, 1, 0]
    assert silent["total_activation"] == 0 and silent["top_token"] == "" and silent["top_contexts"] == ""
    # The only 'd' is the last byte: its neuron's one context ends the text.
    assert by_neuron[0, 0, 0]["top_contexts"].startswith("aaaaaabbbcc[d]")


def test_top_contexts_do_not_depend_on_how_the_text_is_streamed(one_hot_model):
    text = "abcd dcba " * 20
    results = [
        measure_activity(one_hot_model, ByteTokenizer(), text, window=w, batch_size=b).selectivity
        for w, b in [(7, 3), (200, 1)]
    ]
    assert torch.allclose(results[0].mass, results[1].mass)
    assert torch.equal(results[0].top_values, results[1].top_values)
    # Every 'a' activates its neuron alike: of equal activations the earliest positions are kept.
    assert torch.equal(results[0].top_positions, results[1].top_positions)
    assert results[0].top_positions[:, 1].tolist() == [0, 8, 10, 18, 20]  # neuron 1 fires on "a" (97 % 4 = 1)


def test_top_contexts_of_a_random_model_do_not_depend_on_batching(small_model):
    text = "the neuron fires and the synapse grows between two cells\n" * 6
    results = [
        measure_activity(small_model, ByteTokenizer(), text, window=32, batch_size=b).selectivity for b in (1, 5)
    ]
    torch.testing.assert_close(results[0].top_values, results[1].top_values)
    assert torch.equal(results[0].top_positions, results[1].top_positions)


def test_the_table_round_trips_through_csv(one_hot_model, tmp_path):
    activity = measure_activity(one_hot_model, ByteTokenizer(), TEXT, window=12)
    rows = activity.selectivity.rows(activity.encoded, ByteTokenizer(), activity.sparsity.x_rate)
    path = write_csv(rows, tmp_path / "neurons.csv")
    with path.open(newline="", encoding="utf-8") as f:
        read = list(csv.DictReader(f))
    assert len(read) == len(rows)
    assert read[5]["top_contexts"] == rows[5]["top_contexts"]
    assert float(read[5]["monosemanticity"]) == rows[5]["monosemanticity"]
