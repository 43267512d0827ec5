"""`synaptorch info` and `synaptorch convert`: what a checkpoint holds, and checkpoints from elsewhere."""

from __future__ import annotations

import json

import click

from synaptorch.cli.options import user_errors


@click.command("info")
@click.argument("checkpoint")
@user_errors
def info_command(checkpoint) -> None:
    """Config, parameter count and training state of a checkpoint (or a run's latest)."""
    from synaptorch.checkpoint import describe_checkpoint

    for key, value in describe_checkpoint(checkpoint).items():
        click.echo(f"{key:<{18 if key.startswith('model.') else 12}} {value}")


@click.command("convert")
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("dst", type=click.Path(file_okay=False))
@click.option("--n-layer", default=6, show_default=True, type=int, help="Layers of the reference model.")
@user_errors
def convert_command(src, dst, n_layer) -> None:
    """Convert a checkpoint of the reference BDH code (a torch state_dict .pt) into DST."""
    from synaptorch.models.reference import convert_reference_checkpoint

    model = convert_reference_checkpoint(src, dst, n_layer=n_layer)
    click.echo(f"wrote {dst}: {model.config.n_params:,} parameters, {json.dumps(model.config.to_dict())}")
