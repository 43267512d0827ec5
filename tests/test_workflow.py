"""The research workflow of docs/workflow.md end to end, each time from one checkpoint: train or
distil, run as spikes, inspect; and a merge of two specialists fine-tuned from one base."""

import json
from pathlib import Path

import pytest

from synaptorch.checkpoint import read_meta

STUDENT = ("--n-layer", "2", "--n-embd", "32", "--n-head", "2", "--n-neuron", "64", "--dropout", "0")
RUN = (
    *("--batch-size", "4", "--block-size", "32", "--warmup-steps", "2", "--eval-tokens", "512"),
    *("--device", "cpu", "--sample-tokens", "0", "--quiet"),
)


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def spikes_and_report(cli, checkpoint: Path, text: Path, out: Path) -> tuple[dict, dict]:
    spiked = cli("spike-eval", checkpoint, "--data", text, "--steps", "4,32", "--max-tokens", 256)
    assert spiked.exit_code == 0, spiked.output
    report = cli("inspect", "report", checkpoint, "--text", text, "--out", out, "--baselines", 1)
    assert report.exit_code == 0, report.output
    assert (out / "report.html").is_file() and (out / "graph.csv").is_file()
    return last_json(spiked.stdout), last_json(report.stdout)


@pytest.mark.slow
def test_distil_from_smollm2_then_spike_and_inspect_the_student(cli, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 40)
    distilled = cli(
        "distill", "--teacher", "smollm2", "--data", text, "--cache", tmp_path / "cache", "--context", 64,
        *STUDENT, *RUN, "--out", tmp_path / "student", "--max-steps", 6, "--eval-interval", 6,
    )  # fmt: skip
    assert distilled.exit_code == 0, distilled.output
    checkpoint = Path(last_json(distilled.stdout)["checkpoint"])
    assert read_meta(checkpoint)["model"]["vocab_size"] == 49152  # SmolLM2's tokenizer

    spiked, summary = spikes_and_report(cli, checkpoint, text, tmp_path / "report")
    by_steps = {r["steps"]: r for r in spiked["spiking"]}
    assert by_steps[32]["agreement"] >= by_steps[4]["agreement"] - 0.05  # more time steps, closer to the ReLU
    assert 0 < summary["sparsity"]["x"] < 1
    assert summary["merged_origins"] is None


@pytest.mark.slow
def test_merge_two_specialists_then_spike_and_inspect_where_their_neurons_sit(cli, make_text, tmp_path):
    texts = {}
    for name, seed in (("base", 0), ("left", 1), ("right", 2)):
        texts[name] = tmp_path / f"{name}.txt"
        texts[name].write_text(make_text(n_words=3000, seed=seed))
    base = tmp_path / "base"
    trained = cli("train", "--out", base, "--data", texts["base"], *STUDENT, *RUN, "--max-steps", 30)
    assert trained.exit_code == 0, trained.output
    for name in ("left", "right"):
        tuned = cli("train", "--out", tmp_path / name, "--data", texts[name], "--init-from", base, *RUN,
                    "--max-steps", 20, "--lr", "1e-3")  # fmt: skip
        assert tuned.exit_code == 0, tuned.output
    merged = cli("merge", tmp_path / "left", tmp_path / "right", tmp_path / "merged")
    assert merged.exit_code == 0, merged.output
    assert last_json(merged.stdout)["rope_blocks"] == [64, 64]

    spiked, summary = spikes_and_report(cli, tmp_path / "merged", texts["left"], tmp_path / "report")
    assert [r["steps"] for r in spiked["spiking"]] == [4, 32]
    origins = summary["merged_origins"]
    assert origins["communities"] >= 1 and 0.5 <= origins["purity"] <= 1.0
    assert "Neurons by origin" in (tmp_path / "report" / "report.html").read_text()
    graph = cli("inspect", "graph", tmp_path / "merged", "--baselines", 1)
    assert graph.exit_code == 0, graph.output
    assert len(json.loads(graph.stdout)["merged_origins"]["heads"]) == 2
