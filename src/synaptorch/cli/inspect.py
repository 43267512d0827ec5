"""`synaptorch inspect ...`: sparsity, Hebbian synapses, neurons and the neuron graph of a BDH checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import click

from synaptorch.cli.options import apply, device_option, user_errors
from synaptorch.inference import concept as concept_of
from synaptorch.inference import load_inspection


@click.group("inspect")
def inspect_command() -> None:
    """Look inside a BDH checkpoint: sparsity, Hebbian synapses, neurons and the neuron graph."""


def text_options(command):
    return apply(
        command,
        [
            click.argument("checkpoint"),
            click.option("--text", "text_file", required=True, help="Text file to read the model's activity on."),
            click.option(
                "--window",
                type=int,
                help="Tokens per window, each read from a fresh synapse state.  [default: the training block size]",
            ),
            device_option("cpu"),
        ],
    )


def concept_options(command):
    return apply(
        command,
        [
            click.option(
                "--concept", help="The concept as comma-separated words (whole words, any case).  [default: none]"
            ),
            click.option("--concept-regex", help="The concept as a regular expression over the text.  [default: none]"),
        ],
    )


@inspect_command.command()
@text_options
@concept_options
@click.option("--out", required=True, help="Folder for report.html, the PNG figures, CSV tables and summary.json.")
@click.option("--keep", default=0.05, show_default=True, help="Share of neuron pairs kept as graph edges.")
@click.option("--top", default=10, show_default=True, help="Synapses to rank and test for the concept.")
@click.option("--holdout", default=0.3, show_default=True, help="Share of the text kept for the selectivity test.")
@click.option("--baselines", default=5, show_default=True, help="Rewired graphs in the modularity baseline.")
@click.option("--seed", default=0, show_default=True, help="Seed of Louvain and of the rewiring.")
@user_errors
def report(checkpoint, text_file, window, device, concept, concept_regex, out, keep, top, holdout, baselines, seed):
    """Write an HTML report of a checkpoint on a text into --out; prints a JSON summary line.

    Without a concept the report has no synapse section.
    """
    from synaptorch.analysis.report import build_report

    seen = load_inspection(checkpoint, text_file, window, device)
    model, tokenizer, text, window = seen.model, seen.tokenizer, seen.text, seen.window
    pattern = concept_of(concept, concept_regex, required=False)
    summary = build_report(
        model,
        tokenizer,
        text,
        out,
        window=window,
        pattern=pattern,
        keep=keep,
        top=top,
        holdout=holdout,
        seed=seed,
        baselines=baselines,
        title=f"BDH inspection of {checkpoint} on {Path(text_file).name}",
        origins=seen.origins,
    )
    click.echo(json.dumps(summary))


@inspect_command.command()
@text_options
@user_errors
def sparsity(checkpoint, text_file, window, device):
    """Share of firing neurons per layer and head over a text, and never/always active neurons (JSON)."""
    from synaptorch.analysis.report import measure_activity

    seen = load_inspection(checkpoint, text_file, window, device)
    model, tokenizer, text, window = seen.model, seen.tokenizer, seen.text, seen.window
    result = measure_activity(model, tokenizer, text, window).sparsity
    click.echo(json.dumps({**result.summary(), "per_layer": result.per_layer()}))


@inspect_command.command()
@text_options
@concept_options
@click.option("--top", default=10, show_default=True, help="Synapses to rank and test.")
@click.option("--holdout", default=0.3, show_default=True, help="Share of the text kept for the selectivity test.")
@user_errors
def trace(checkpoint, text_file, window, device, concept, concept_regex, top, holdout):
    """The synapses that grow most on a concept, tested on held-out sentences (JSON)."""
    from synaptorch.analysis.synapses import trace_concept

    seen = load_inspection(checkpoint, text_file, window, device)
    model, tokenizer, text, window = seen.model, seen.tokenizer, seen.text, seen.window
    pattern = concept_of(concept, concept_regex, required=True)
    result = trace_concept(model, tokenizer, text, pattern, window, top, holdout)
    click.echo(json.dumps({**result.summary(), "top": result.rows()}))


@inspect_command.command()
@text_options
@click.option("--csv", "csv_path", help="Write the table of every neuron to this CSV file.  [default: none]")
@click.option("--show", default=20, show_default=True, help="Most monosemantic neurons to print.")
@user_errors
def neurons(checkpoint, text_file, window, device, csv_path, show):
    """Each neuron's top tokens and contexts and its monosemanticity; prints the most monosemantic."""
    from synaptorch.inference import inspect_neurons

    for row in inspect_neurons(checkpoint, text_file, window, device, csv_path, show):
        click.echo(
            f"L{row['layer']} h{row['head']} n{row['neuron']:<5} mono {row['monosemanticity']:.3f} "
            f"lift {row['lift']:>7.2f} top {row['top_token']:<8} {row['top_contexts'].split(' | ')[0]}"
        )


@inspect_command.command()
@click.argument("checkpoint")
@click.option("--keep", default=0.05, show_default=True, help="Share of neuron pairs kept as edges.")
@click.option("--baselines", default=5, show_default=True, help="Rewired graphs in the modularity baseline.")
@click.option("--seed", default=0, show_default=True, help="Seed of Louvain and of the rewiring.")
@user_errors
def graph(checkpoint, keep, baselines, seed):
    """Degree power laws and modularity of the neuron graphs E Dx and E Dy per head (JSON)."""
    from synaptorch.analysis.report import graph_rows, graph_summary, measure_graphs

    seen = load_inspection(checkpoint, None, 1, "cpu")
    rows = graph_rows(measure_graphs(seen.model, keep, seed, baselines)[0])
    record = {"keep": keep, "summary": graph_summary(rows), "per_head": rows}
    if seen.origins is not None:
        from synaptorch.analysis.graph import communities_by_origin

        record["merged_origins"] = communities_by_origin(seen.model, seen.origins, keep, seed)
    click.echo(json.dumps(record))
