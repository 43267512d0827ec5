"""`synaptorch babi`: the bAbI question-answering tasks; `generate` writes a task's files offline."""

from __future__ import annotations

import click

from synaptorch.cli.options import user_errors
from synaptorch.data.babi_generator import GENERATED_TASKS, SIZES, TEST_QUESTIONS, write_babi
from synaptorch.errors import ConfigError


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
