import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from synaptorch import BDH, GPT, BDHConfig, GPTConfig
from synaptorch.analysis.report import build_report
from synaptorch.analysis.text import concept_pattern
from synaptorch.data.tokenizer import ByteTokenizer


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images, self.links, self.tables = [], [], 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        elif tag == "a":
            self.links.append(attrs["href"])
        elif tag == "table":
            self.tables += 1


def parse(path: Path) -> Links:
    parser = Links()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def assert_self_contained(folder: Path) -> Links:
    links = parse(folder / "report.html")
    for target in links.images + links.links:
        assert "/" not in target and ":" not in target, target  # relative, inside the folder
        assert (folder / target).is_file(), target
    assert all((folder / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for image in links.images)
    return links


def test_report_renders_with_every_image_it_links(tmp_path, make_text):
    torch.manual_seed(0)
    model = BDH(BDHConfig(n_layer=2, n_embd=16, n_head=2, n_neuron=32, dropout=0.0))
    text = make_text(1500, seed=3)
    summary = build_report(
        model, ByteTokenizer(), text, tmp_path / "report", window=64, pattern=concept_pattern(["neuron"]), baselines=2
    )
    folder = tmp_path / "report"
    links = assert_self_contained(folder)
    assert set(links.images) == {"sparsity.png", "monosemanticity.png", "degrees.png", "modularity.png", "synapses.png"}
    assert links.tables == 4
    assert json.loads((folder / "summary.json").read_text()) == summary
    assert summary["sparsity"]["tokens"] == len(text.encode())
    assert set(summary["graph"]) == {"G_x", "G_y"}
    assert len(summary["trace"]["top"]) == 5
    assert all(row["p_holm"] >= row["p"] for row in summary["trace"]["top"])
    assert "<th>p_holm</th>" in (folder / "report.html").read_text(encoding="utf-8")
    header = (folder / "graph.csv").read_text().splitlines()[0].split(",")
    assert {"in_ks", "in_lr_lognormal", "in_p_lognormal", "out_lr_lognormal", "out_p_lognormal"} <= set(header)
    assert (folder / "neurons.csv").read_text().count("\n") == 1 + 2 * 2 * 32
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_report_without_a_concept_has_no_synapse_section(tmp_path, make_text):
    model = BDH(BDHConfig(n_layer=1, n_embd=16, n_head=2, n_neuron=16, dropout=0.0))
    (tmp_path / "keep.txt").write_text("mine")
    summary = build_report(model, ByteTokenizer(), make_text(200), tmp_path, window=32, baselines=1)
    assert summary["trace"] is None
    assert "synapses.png" not in assert_self_contained(tmp_path).images
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_report_refuses_models_that_are_not_bdh(tmp_path):
    from synaptorch.errors import ConfigError

    with pytest.raises(ConfigError, match="BDH"):
        build_report(GPT(GPTConfig(n_layer=1, n_embd=16, n_head=2)), ByteTokenizer(), "some text", tmp_path, window=8)


# --- command line ---------------------------------------------------------------------------


def assert_user_error(result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment.lower() in lines[0].lower()


def test_inspect_report_command(cli, trained_run, corpus, tmp_path):
    result = cli(
        "inspect",
        "report",
        trained_run.path,
        "--text",
        corpus,
        "--out",
        tmp_path / "out",
        "--concept",
        "neuron,synapse",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["report"] == str(tmp_path / "out" / "report.html")
    assert summary["trace"]["concept_tokens"] > 0
    assert "synapses.png" in assert_self_contained(tmp_path / "out").images


def test_inspect_subcommands(cli, trained_run, corpus, tmp_path):
    sparsity = cli("inspect", "sparsity", trained_run.path, "--text", corpus, "--window", 32)
    assert sparsity.exit_code == 0, sparsity.output
    record = json.loads(sparsity.stdout)
    assert len(record["per_layer"]) == 1 and 0 < record["x"] < 1
    trace = cli("inspect", "trace", trained_run.path, "--text", corpus, "--concept-regex", r"\bfires\b", "--top", 3)
    assert trace.exit_code == 0, trace.output
    assert len(json.loads(trace.stdout)["top"]) == 3
    neurons = cli("inspect", "neurons", trained_run.path, "--text", corpus, "--csv", tmp_path / "n.csv", "--show", 4)
    assert neurons.exit_code == 0, neurons.output
    assert len(neurons.stdout.splitlines()) == 4
    assert (tmp_path / "n.csv").read_text().count("\n") == 1 + 2 * 32
    graph = cli("inspect", "graph", trained_run.path, "--baselines", 2)
    assert graph.exit_code == 0, graph.output
    assert len(json.loads(graph.stdout)["per_head"]) == 4


def test_inspect_user_errors(cli, trained_run, corpus, tmp_path):
    assert_user_error(cli("inspect", "report", tmp_path / "nope", "--text", corpus, "--out", tmp_path), "not found")
    assert_user_error(
        cli("inspect", "report", trained_run.path, "--text", tmp_path / "missing.txt", "--out", tmp_path), "not found"
    )
    (tmp_path / "empty.txt").write_text("\n")
    assert_user_error(cli("inspect", "sparsity", trained_run.path, "--text", tmp_path / "empty.txt"), "empty")
    assert_user_error(cli("inspect", "trace", trained_run.path, "--text", corpus), "concept")
    assert_user_error(
        cli("inspect", "trace", trained_run.path, "--text", corpus, "--concept", "zebra"), "does not occur"
    )
    assert_user_error(cli("inspect", "sparsity", trained_run.path, "--text", corpus, "--window", 0), "window")
    assert_user_error(cli("inspect", "graph", trained_run.path, "--keep", 2), "keep")
    before = corpus.read_bytes()
    assert_user_error(cli("inspect", "report", trained_run.path, "--text", corpus, "--out", corpus), "is a file")
    assert corpus.read_bytes() == before
    assert_user_error(cli("inspect", "graph", trained_run.path, "--baselines", 0), "baseline")
    assert_user_error(cli("inspect", "trace", trained_run.path, "--text", corpus, "--concept", "a", "--top", 0), "rank")
    holdout = cli("inspect", "trace", trained_run.path, "--text", corpus, "--concept", "a", "--holdout", 1)
    assert_user_error(holdout, "held-out")
    assert_user_error(cli("inspect", "graph", trained_run.path, "--seed", -2), "seed")
    assert_user_error(cli("inspect", "sparsity", trained_run.path, "--text", corpus, "--device", "bogus"), "device")
    assert_user_error(cli("inspect", "neurons", trained_run.path, "--text", corpus, "--show", -3), "show")
    assert_user_error(cli("inspect", "neurons", trained_run.path, "--text", corpus, "--csv", tmp_path), "folder")
    assert_user_error(
        cli("inspect", "report", trained_run.path, "--text", corpus, "--out", corpus / "report"), "not a directory"
    )


def test_a_report_that_fails_leaves_its_folder_as_it_was(cli, trained_run, corpus, tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = cli("inspect", "report", trained_run.path, "--text", corpus, "--out", out, "--concept", "zebra")
    assert_user_error(result, "does not occur")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_inspect_refuses_a_gpt_checkpoint(cli, corpus, tmp_path):
    GPT(GPTConfig(n_layer=1, n_embd=16, n_head=2)).save_pretrained(tmp_path / "gpt")
    assert_user_error(cli("inspect", "sparsity", tmp_path / "gpt", "--text", corpus), "BDH")


def test_help_of_every_inspect_command_lists_its_options(cli):
    import click

    from synaptorch.cli import main

    for name, command in main.get_command(None, "inspect").commands.items():
        result = cli("inspect", name, "--help")
        assert result.exit_code == 0
        for param in command.params:
            if isinstance(param, click.Option):
                assert all(opt in result.stdout for opt in param.opts), (name, param.opts)
            else:
                assert param.name.upper() in result.stdout


@pytest.mark.slow
def test_report_of_a_cpu_tiny_model_on_python_docs(tmp_path):
    from synaptorch.data.corpus import pydoc_text
    from synaptorch.train.config import PRESETS

    model = BDH(BDHConfig(**PRESETS["bdh"]["cpu-tiny"]["model"]))
    text = pydoc_text()[:30_000].decode("utf-8", "ignore")
    summary = build_report(
        model, ByteTokenizer(), text, tmp_path, window=128, pattern=concept_pattern(regex=r"\breturn\b")
    )
    assert summary["sparsity"]["neurons"] == 4 * 4 * 256
    assert summary["graph"]["G_x"]["edges"] == round(0.05 * 256 * 255)
    assert_self_contained(tmp_path)
