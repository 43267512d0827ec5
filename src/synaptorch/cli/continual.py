"""`synaptorch continual train`: one network learns permuted image tasks in sequence, by one of the
continual-learning methods of `synaptorch.continual`, and is scored on every task after each."""

from __future__ import annotations

import json
from pathlib import Path

import click

from synaptorch.cli.local import image_data_option, parse_settings
from synaptorch.cli.options import user_errors
from synaptorch.continual import METHODS


@click.group("continual")
def continual_command() -> None:
    """Continual learning on permuted image tasks: HLOP against fine-tuning, EWC, GPM and joint training."""


@continual_command.command("train")
@click.option("--method", required=True, type=click.Choice(METHODS), help="Continual-learning method.")
@image_data_option()
@click.option("--tasks", "n_tasks", default=10, show_default=True, type=int, help="Permuted tasks, learnt in order.")
@click.option("--spiking", is_flag=True, help="LIF neurons with surrogate gradients instead of ReLU.")
@click.option("--epochs", type=int, help="Epochs per task.  [default: 1]")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the permutations, weights and batches.")
@click.option("--train-limit", type=int, metavar="N", help="The first N training images of each task.  [default: all]")
@click.option("--test-limit", type=int, metavar="N", help="The first N test images of each task.  [default: all]")
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="NAME=VALUE",
    help="Any other field of ContinualConfig, e.g. --set ewc_lambda=1000 --set hidden=[400,400]; repeat for several.  "
    "[default: none]",
)
@click.option("--out", required=True, metavar="RUN", help="Run folder for result.json; must not hold one.")
@user_errors
def train_command(method, data, n_tasks, spiking, epochs, seed, train_limit, test_limit, settings, out) -> None:
    """Learn the tasks in order; ends with a JSON line of acc, bwt and the task-by-task accuracy matrix."""
    from synaptorch.continual import ContinualConfig, permuted_tasks, train_continual
    from synaptorch.errors import ConfigError
    from synaptorch.fields import check_values
    from synaptorch.io import atomic_write_text, check_folder_path, make_folder

    out = Path(out)
    check_folder_path(out, "run folder")
    if (out / "result.json").exists():
        raise ConfigError(f"{out} already holds a result ({out / 'result.json'}); choose another run folder")
    overrides = parse_settings(settings) | {"spiking": spiking, "seed": seed}
    if epochs is not None:
        overrides["epochs"] = epochs
    config = ContinualConfig(**check_values(ContinualConfig, overrides, "continual config"))
    tasks = permuted_tasks(data, n_tasks, seed, train_limit, test_limit)
    result = train_continual(method, tasks, config)
    record = {
        "method": method,
        "data": str(data),
        "tasks": n_tasks,
        "spiking": spiking,
        "acc": round(result.acc, 4),
        "bwt": round(result.bwt, 4),
        "accuracy": [[round(a, 4) for a in row] for row in result.accuracy],
        "seconds": round(result.seconds, 1),
    }
    make_folder(out)
    atomic_write_text(out / "result.json", json.dumps({**result.to_dict(), **record}, indent=2) + "\n")
    click.echo(json.dumps(record))
