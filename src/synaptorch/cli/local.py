"""`synaptorch local`: learning rules without backpropagation across layers, on image sets; `train`
trains a rule into a run folder and `eval` scores its checkpoint."""

from __future__ import annotations

import json
from collections.abc import Callable

import click

from synaptorch.cli.options import user_errors
from synaptorch.errors import ConfigError
from synaptorch.local import RULES


def image_data_option(lead: str = "") -> Callable:
    """--data: a named image set or a folder of MNIST-style IDX files; `lead` starts its help."""
    return click.option(
        "--data",
        default="fashion-mnist",
        show_default=True,
        metavar="NAME|DIR",
        help=f"{lead}fashion-mnist (the Debian package dataset-fashion-mnist) or a folder of the four MNIST-style "
        "IDX files.",
    )


def parse_layers(text: str) -> tuple[int, ...]:
    """'1000,1000' -> (1000, 1000); anything but positive integers is a ConfigError."""
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"--layers {text!r} is not a comma-separated list of widths, e.g. 1000,1000") from None
    if any(width <= 0 for width in widths):
        raise ConfigError(f"--layers {text!r}: every width must be positive")
    return widths


def parse_settings(pairs: tuple[str, ...]) -> dict:
    """('lr=0.03', 'negatives=random') -> {'lr': 0.03, 'negatives': 'random'}: JSON values, else strings."""
    settings = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise ConfigError(f"--set {pair!r} is not NAME=VALUE")
        try:
            settings[name] = json.loads(text)
        except json.JSONDecodeError:
            settings[name] = text
    return settings


@click.group("local")
def local_command() -> None:
    """Local learning rules on image sets (IDX files): Forward-Forward and its relatives, against backpropagation."""


@local_command.command("train")
@click.option(
    "--rule",
    required=True,
    type=click.Choice(list(RULES)),
    help="; ".join(f"{name}: {entry.summary}" for name, entry in RULES.items()) + ".",
)
@image_data_option()
@click.option("--layers", metavar="W,W,...", help="Hidden-layer widths.  [default: the rule's, e.g. 1000,1000,1000]")
@click.option("--epochs", type=int, help="Passes over the training images.  [default: the rule's]")
@click.option("--batch-size", type=int, help="Images per update.  [default: the rule's]")
@click.option("--seed", type=int, help="Seed of the weights, the negatives and the order of images.  [default: 0]")
@click.option("--train-limit", type=int, metavar="N", help="Train on the first N training images only.  [default: all]")
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="NAME=VALUE",
    help="Any other field of the rule's config, e.g. --set lr=0.03 --set negatives=random; repeat for several.  "
    "[default: none]",
)
@click.option("--quiet", is_flag=True, help="No progress bar on stderr.")
@click.option(
    "--out", required=True, metavar="RUN", help="Run folder for metrics.jsonl and the checkpoint; must not hold one."
)
@user_errors
def train_command(rule, data, layers, epochs, batch_size, seed, train_limit, settings, quiet, out) -> None:
    """Train a rule; ends with a JSON line of test_accuracy, train_seconds and peak_memory_mib."""
    from synaptorch.local.training import train_rule

    overrides = parse_settings(settings)
    for name, value in (("layers", layers and parse_layers(layers)), ("epochs", epochs), ("batch_size", batch_size)):
        if value is not None:
            overrides[name] = value
    if seed is not None:
        overrides["seed"] = seed
    _, result = train_rule(rule, data, out, overrides=overrides, train_limit=train_limit, progress=not quiet)
    click.echo(json.dumps(result))


@local_command.command("eval")
@click.option(
    "--checkpoint", required=True, metavar="RUN", help="Run folder of `local train`, or its checkpoint folder."
)
@image_data_option("The image set whose test split to score: ")
@user_errors
def eval_command(checkpoint, data) -> None:
    """Test accuracy of a checkpoint, as a JSON line."""
    from synaptorch.local.training import evaluate_checkpoint

    click.echo(json.dumps(evaluate_checkpoint(checkpoint, data)))
