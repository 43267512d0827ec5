"""`synaptorch babi`: the bAbI question-answering tasks; `generate` writes a task's files offline,
`train` trains a model of `synaptorch.memory` on them and `eval` scores its checkpoint."""

from __future__ import annotations

import json

import click

from synaptorch.cli.options import user_errors
from synaptorch.data.babi_generator import GENERATED_TASKS, SIZES, TEST_QUESTIONS, write_babi
from synaptorch.errors import ConfigError
from synaptorch.memory import MODELS


@click.group("babi")
def babi_command() -> None:
    """The bAbI question-answering tasks (Weston et al. 2015, v1.2)."""


@babi_command.command("generate")
@click.option("--task", required=True, metavar="N", help=f"Task number: {', '.join(map(str, GENERATED_TASKS))}.")
@click.option(
    "--size",
    default="1k",
    show_default=True,
    metavar="|".join(SIZES),
    help=f"Training questions: {' or '.join(SIZES)} (the test has 1,000).",
)
@click.option(
    "--seed", default=0, show_default=True, type=int, help="Seed of the stories; the same seed, the same files."
)
@click.option("--out", required=True, metavar="DIR", help="Folder for qa{N}_{name}_train.txt and _test.txt.")
@user_errors
def generate_command(task: str, size: str, seed: int, out: str) -> None:
    """Write a task's training and test files in the published format; prints a line per file."""
    if not task.strip().isdigit():
        raise ConfigError(f"--task {task!r} is not a task number")
    paths = write_babi(int(task), size, seed, out)
    for path, n_questions in zip(paths, (SIZES[size], TEST_QUESTIONS), strict=True):
        click.echo(f"wrote {path}: {n_questions:,} questions")


@babi_command.command("train")
@click.option("--model", "kind", required=True, metavar="|".join(MODELS), help="Model to train.")
@click.option(
    "--task",
    type=int,
    metavar="N",
    help="bAbI task 1-20: its files in --data, else generated (seed 0) into the cache, once; generated tasks: "
    f"{', '.join(map(str, GENERATED_TASKS))}.  [default: none; give --train and --test instead]",
)
@click.option(
    "--size",
    default="1k",
    show_default=True,
    metavar="|".join(SIZES),
    help="With --task: training questions, 1k or 10k (the test has 1,000).",
)
@click.option(
    "--data",
    metavar="DIR",
    help="With --task: a folder of qa{N}_{name}_{train,test}.txt files or the published tasks_1-20_v1-2 tree.  "
    "[default: the generated files]",
)
@click.option(
    "--train",
    "train_files",
    multiple=True,
    metavar="FILE",
    help="Instead of --task: a bAbI training file, or a folder of _train.txt files; repeat for several.  "
    "[default: none]",
)
@click.option(
    "--test",
    "test_files",
    multiple=True,
    metavar="FILE",
    help="With --train: a bAbI test file, or a folder of _test.txt files; repeat for several.  [default: none]",
)
@click.option("--epochs", type=int, help="Training epochs.  [default: the model's reference training, e.g. 100]")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the weights and the order of examples.")
@click.option("--quiet", is_flag=True, help="No progress bar nor first line on stderr.")
@click.option(
    "--out", required=True, metavar="RUN", help="Run folder for metrics.jsonl and the checkpoint; must not hold one."
)
@user_errors
def train_command(kind, task, size, data, train_files, test_files, epochs, seed, quiet, out) -> None:
    """Train a model on a bAbI task or files, keeping the epoch of best validation accuracy (the
    last 10% of the training questions); ends with a JSON line of its test accuracy."""
    from synaptorch.memory.training import (
        check_model_kind,
        check_run_folder,
        reference_training,
        task_files,
        train_babi,
    )

    check_model_kind(kind)
    if epochs is not None:
        reference_training(kind, epochs=epochs)  # refuses a non-positive count before any work
    check_run_folder(out)
    if task is not None and (train_files or test_files):
        raise ConfigError("give either --task or --train and --test, not both")
    if task is None and not (train_files and test_files):
        raise ConfigError("give --task N, or --train FILE and --test FILE")
    if task is None and (data is not None or size != "1k"):
        raise ConfigError("--data and --size go with --task")
    if task is not None:
        train_files, test_files = task_files(task, size, data)
    run = train_babi(kind, train_files, test_files, out, epochs=epochs, seed=seed, progress=not quiet)
    click.echo(json.dumps(run.summary()))


@babi_command.command("eval")
@click.option(
    "--checkpoint", required=True, metavar="RUN", help="Run folder of `babi train`, or its checkpoint folder."
)
@click.option(
    "--test",
    "test_files",
    required=True,
    multiple=True,
    metavar="FILE",
    help="A bAbI test file, or a folder of _test.txt files; repeat for several.",
)
@user_errors
def eval_command(checkpoint, test_files) -> None:
    """Accuracy of a checkpoint on bAbI test files, overall and per task; unknown words are counted. A JSON line."""
    from synaptorch.memory.training import evaluate, load_checkpoint

    loaded = load_checkpoint(checkpoint)
    result = evaluate(loaded, test_files)
    training = loaded.meta.get("training", {})
    record = {
        "model": loaded.meta["model_kind"],
        **result.summary(),
        "val_accuracy": training.get("val_accuracy"),
        "best_epoch": training.get("best_epoch"),
        "epochs": training.get("epochs"),
        "checkpoint": str(loaded.folder),
    }
    click.echo(json.dumps(record))
