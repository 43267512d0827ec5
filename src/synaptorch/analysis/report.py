"""One pass over a text, the weights' graph, and a self-contained HTML report of them all.

The report folder gets PNG figures, CSV tables (neurons.csv, synapses.csv, graph.csv),
summary.json and report.html, which links the figures by relative paths and inlines the tables;
it needs nothing but the folder. Files are written under temporary names and renamed.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from synaptorch.analysis.graph import GraphStats, communities_by_origin, degrees, graph_stats, neuron_graphs
from synaptorch.analysis.neurons import NeuronCollector, NeuronSelectivity, write_csv
from synaptorch.analysis.plots import plot_degrees, plot_modularity, plot_monosemanticity, plot_sparsity, plot_synapses
from synaptorch.analysis.recording import check_bdh, stream
from synaptorch.analysis.sparsity import Sparsity, SparsityCounter
from synaptorch.analysis.synapses import trace_concept
from synaptorch.analysis.text import EncodedText, encode_text
from synaptorch.data.tokenizer import Tokenizer
from synaptorch.errors import ConfigError
from synaptorch.io import atomic_write_bytes


@dataclass
class Activity:
    encoded: EncodedText
    sparsity: Sparsity
    selectivity: NeuronSelectivity


def measure_activity(
    model: nn.Module, tokenizer: Tokenizer, text: str, window: int, top_k: int = 5, batch_size: int | None = None
) -> Activity:
    """Sparsity and neuron selectivity of model over text, in one streamed pass."""
    c = check_bdh(model).config
    encoded = encode_text(tokenizer, text)
    counter = SparsityCounter(c.n_layer, c.n_head, c.n_neuron)
    neurons = NeuronCollector(c.n_layer, c.n_head, c.n_neuron, c.vocab_size, top_k)
    for batch in stream(model, encoded.ids, window, batch_size):
        counter.update(batch)
        neurons.update(batch)
    return Activity(encoded, counter.result(), neurons.result())


def measure_graphs(model: nn.Module, keep: float, seed: int, baselines: int) -> tuple[dict, dict]:
    """{(matrix, head): GraphStats} and {(matrix, head): (in-degrees, out-degrees)}."""
    graphs = neuron_graphs(model, keep)
    stats = {key: graph_stats(graph, seed, baselines) for key, graph in graphs.items()}
    return stats, {key: degrees(graph) for key, graph in graphs.items()}


# Columns of graph.csv per side (in, out) and the PowerLaw field each shows.
POWER_LAW_COLUMNS = {
    "alpha": "alpha",
    "xmin": "x_min",
    "ks": "ks",
    "tail": "n_tail",
    "lr_lognormal": "lr_lognormal",
    "p_lognormal": "p_lognormal",
}


def graph_rows(stats: dict[tuple[str, int], GraphStats]) -> list[dict]:
    rows = []
    for (name, head), s in sorted(stats.items()):
        record = s.to_dict()
        fits = {side: record.pop(f"{side}_power_law") for side in ("in", "out")}
        row = {"matrix": f"G_{name}", "head": head, **record}
        for side, fit in fits.items():
            for column, field in POWER_LAW_COLUMNS.items():
                row[f"{side}_{column}"] = None if fit is None else fit[field]
        rows.append(row)
    return rows


def graph_summary(rows: list[dict]) -> dict:
    """Per matrix, the means over heads."""
    summary = {}
    for matrix in sorted({r["matrix"] for r in rows}):
        mine = [r for r in rows if r["matrix"] == matrix]

        def mean(key: str, rows=mine) -> float | None:
            values = [r[key] for r in rows if r[key] is not None]
            return round(float(np.mean(values)), 4) if values else None

        summary[matrix] = {
            key: mean(key) for key in ("edges", "modularity", "baseline_mean", "baseline_std", "in_alpha", "out_alpha")
        }
    return summary


def most_monosemantic(rows: list[dict], n: int = 20, min_rate: float = 0.001) -> list[dict]:
    active = [r for r in rows if r["total_activation"] > 0 and (r["firing_rate"] or 0) >= min_rate]
    return sorted(active, key=lambda r: -r["monosemanticity"])[:n]


def _table(rows: list[dict], columns: list[str] | None = None) -> str:
    if not rows:
        return "<p>(none)</p>"
    columns = columns or list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value)
    return str(value)


STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:12px;margin:0.5em 0}td,th{border:1px solid #ccc;padding:2px 6px}
th{background:#eee}td{font-family:monospace;white-space:pre-wrap;max-width:520px}img{max-width:100%}"""


def render_html(title: str, sections: list[tuple[str, str]]) -> str:
    body = "".join(f"<h2>{html.escape(name)}</h2>\n{content}\n" for name, content in sections)
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head>\n<body><h1>{html.escape(title)}</h1>\n{body}</body></html>\n"
    )


def _image(name: str, alt: str) -> str:
    return f"<p><img src='{html.escape(name)}' alt='{html.escape(alt)}'></p>"


def build_report(
    model: nn.Module,
    tokenizer: Tokenizer,
    text: str,
    out: str | Path,
    *,
    window: int,
    pattern: re.Pattern | None = None,
    keep: float = 0.05,
    top: int = 10,
    holdout: float = 0.3,
    seed: int = 0,
    baselines: int = 5,
    title: str = "BDH inspection",
    origins: list[int] | None = None,
) -> dict:
    """Write the report into folder out (created if needed) and return its summary.

    origins, for a merged model, names each neuron's source model (`Inspection.origins`): the
    report then says how the communities of the neuron graph split by origin."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file; the report needs a folder")
    # Everything is measured before the first file is written: a concept missing from the text or a
    # bad setting leaves the folder as it was.
    trace = None if pattern is None else trace_concept(model, tokenizer, text, pattern, window, top, holdout)
    activity = measure_activity(model, tokenizer, text, window)
    stats, degree_sequences = measure_graphs(model, keep, seed, baselines)
    rows_of_graphs = graph_rows(stats)
    by_origin = None if origins is None else communities_by_origin(model, origins, keep, seed)

    neuron_rows = activity.selectivity.rows(activity.encoded, tokenizer, activity.sparsity.x_rate)
    write_csv(neuron_rows, out / "neurons.csv")
    write_csv(rows_of_graphs, out / "graph.csv")
    if trace is not None:
        write_csv(trace.rows(), out / "synapses.csv")

    plot_sparsity(activity.sparsity, out / "sparsity.png")
    plot_monosemanticity(activity.selectivity, out / "monosemanticity.png")
    plot_degrees(degree_sequences, out / "degrees.png")
    plot_modularity(stats, out / "modularity.png")
    if trace is not None:
        plot_synapses(trace, out / "synapses.png")

    mono = activity.selectivity.monosemanticity[activity.selectivity.mass > 0]
    summary = {
        "report": str(out / "report.html"),
        "sparsity": activity.sparsity.summary(),
        "sparsity_per_layer": [
            {k: v for k, v in layer.items() if not k.endswith("per_head")} for layer in activity.sparsity.per_layer()
        ],
        "monosemanticity_median": round(float(mono.median()), 4) if mono.numel() else None,
        "graph": graph_summary(rows_of_graphs),
        "graph_keep": keep,
        "trace": None if trace is None else trace.summary(),
        "merged_origins": None if by_origin is None else {k: v for k, v in by_origin.items() if k != "heads"},
    }
    atomic_write_bytes(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode("utf-8"))

    c = model.config
    sections = [
        (
            "Model and text",
            f"<p>BDH: {c.n_layer} layers, d = {c.n_embd}, {c.n_head} heads x {c.n_neuron} neurons. "
            f"{len(activity.encoded):,} tokens, read in windows of {window} tokens, each from a fresh state.</p>",
        ),
        (
            "Sparsity",
            _image("sparsity.png", "firing per layer and per neuron")
            + _table(activity.sparsity.per_layer())
            + "<p>x, y: share of non-zero entries of x_sparse and y_sparse; never / always: neurons "
            "that fired on no token / on every token.</p>",
        ),
        (
            "Neurons",
            _image("monosemanticity.png", "monosemanticity of active neurons")
            + "<p>Monosemanticity: share of a neuron's activation mass (sum of its x_sparse) on its top "
            "token; lift: that share over the token's share of the text. The 20 most monosemantic "
            "neurons firing on at least 0.1% of tokens; all neurons in <a href='neurons.csv'>neurons.csv</a>.</p>"
            + _table(most_monosemantic(neuron_rows)),
        ),
        (
            "Neuron graph",
            f"<p>G_x = E_h Dx_h and G_y = E_h Dy_h per head; edges: the top {keep:.1%} of off-diagonal "
            "entries, positive ones. Modularity of a Louvain partition against degree-preserving "
            f"rewirings ({baselines} seeds, mean and std). Degrees: discrete power-law fit from x_min on "
            "(alpha, KS distance to the tail, tail size) and its log-likelihood ratio against a lognormal, "
            "lr_lognormal (positive: the power law fits better) with the p of its sign. "
            "<a href='graph.csv'>graph.csv</a></p>"
            + _image("modularity.png", "modularity against the baseline")
            + _image("degrees.png", "degree distributions")
            + _table(rows_of_graphs),
        ),
    ]
    if by_origin is not None:
        sections.append(
            (
                "Neurons by origin",
                f"<p>A merged model: each head holds the neurons of {len(set(origins))} source models side by "
                "side. Louvain communities of each head's G_x graph, their modularity and that of the "
                "partition by origin; purity: the share of neurons whose community's majority comes from "
                "their own source; chance: the same communities under shuffled origins.</p>"
                + _table(by_origin["heads"]),
            )
        )
    if trace is not None:
        sections.append(
            (
                "Synapses of the concept",
                f"<p>Concept <code>{html.escape(trace.concept)}</code>: {trace.concept_tokens:,} of "
                f"{trace.tokens:,} tokens of the ranking part. Held-out sentences: {trace.sentences_with} "
                f"with the concept, {trace.sentences_without} without. Score: mean growth of the synapse on "
                "concept tokens minus elsewhere, the residual dimension in units of its RMS. U: pairs (with, "
                "without) where the sentence with the concept grows the synapse more; r = 2U/(n1 n2) - 1, "
                "+1 when every sentence with the concept is above every one without. p: two-sided "
                f"Mann-Whitney p of the synapse alone; p_holm: Holm-adjusted over the {len(trace.synapses)} "
                "synapses tested, the one to read. <a href='synapses.csv'>synapses.csv</a></p>"
                + _image("synapses.png", "held-out growth of the top synapses")
                + _table(trace.rows()),
            )
        )
    atomic_write_bytes(out / "report.html", render_html(title, sections).encode("utf-8"))
    return summary
