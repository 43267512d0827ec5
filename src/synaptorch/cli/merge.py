"""`synaptorch merge`: BDH models side by side, neuron by neuron, with no training (the paper's 7.1)."""

from __future__ import annotations

import json

import click

from synaptorch.cli.options import user_errors
from synaptorch.errors import ConfigError


def _weights(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        raise ConfigError(f"--weights must be numbers separated by commas, got {text!r}") from None


@click.command("merge")
@click.argument("sources", nargs=-1, required=True)
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--weights", help="Mix of the shared embedding and readout, e.g. 0.7,0.3.  [default: equal]")
@click.option(
    "--n-layer", type=int, help="Layers of reference-code .pt sources, which do not record it.  [default: none]"
)
@user_errors
def merge_command(sources, out, weights, n_layer) -> None:
    """Merge two or more BDH checkpoints SOURCES into the new checkpoint OUT.

    Neurons are concatenated head by head and keep their RoPE frequencies; the embedding and
    readout are averaged. SOURCES may be checkpoint folders, run folders (their latest) or
    reference-code state_dict files.
    """
    from synaptorch.models.merge import merge_checkpoints

    model = merge_checkpoints(sources, out, weights=_weights(weights), n_layer=n_layer)
    c = model.config
    blocks = " + ".join(map(str, c.rope_ladders))
    click.echo(f"wrote {out}: {c.n_head} heads x {c.n_neuron} neurons ({blocks}), {c.n_params:,} parameters")
    click.echo(json.dumps({"checkpoint": str(out), "n_neuron": c.n_neuron, "rope_blocks": list(c.rope_ladders)}))
