"""The `synaptorch` command line: a module per group of verbs, each verb a thin layer over the library.

Every user error (a `SynaptorchError`) ends as one line on stderr and exit code 2. The verbs'
modules are imported only when one of them runs, so `synaptorch --help` does not import torch.
"""

from __future__ import annotations

import importlib
import sys
from typing import NoReturn

import click

# verb -> (module, one line of help for `synaptorch --help`)
COMMANDS = {
    "train": ("synaptorch.cli.train", "Train a language model; prints validation loss as it goes and a sample."),
    "distill": ("synaptorch.cli.train", "Train a student on the data and on a teacher's next-token distributions."),
    "generate": ("synaptorch.cli.generate", "Stream a continuation of a prompt from a checkpoint."),
    "eval": ("synaptorch.cli.evaluate", "Loss and bits per byte of a checkpoint on a corpus (JSON)."),
    "spike-eval": ("synaptorch.cli.evaluate", "Run a BDH checkpoint with integrate-and-fire neurons against its ReLU."),
    "info": ("synaptorch.cli.checkpoints", "Config, parameter count and training state of a checkpoint."),
    "convert": ("synaptorch.cli.checkpoints", "Convert a checkpoint of the reference BDH code."),
    "merge": ("synaptorch.cli.merge", "Merge BDH models by putting their neurons side by side, no training."),
    "inspect": ("synaptorch.cli.inspect", "Look inside a BDH checkpoint: sparsity, synapses, neurons, graph."),
    "babi": ("synaptorch.cli.babi", "bAbI question answering: generate the tasks, train and score models."),
    "local": ("synaptorch.cli.local", "Learning rules without backpropagation (Forward-Forward and others) on images."),
    "continual": (
        "synaptorch.cli.continual",
        "Learn image tasks in sequence without forgetting: HLOP, EWC, GPM, baselines.",
    ),
}


class LazyGroup(click.Group):
    """A group whose commands are imported when they run; `--help` lists them from COMMANDS.

    A usage error (an unknown option, a value of the wrong type or out of its choices) is one
    line on stderr and exit code 2, as every other user error.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()} (see --help)", err=True)
            code = 2
        except click.Abort:
            click.echo("aborted", err=True)
            code = 1
        except SystemExit as exc:  # a user error, its line already on stderr
            code = exc.code
        if isinstance(code, str):
            click.echo(code, err=True)
            code = 1
        _exit(code or 0)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module = importlib.import_module(COMMANDS[name][0])
        return getattr(module, name.replace("-", "_") + "_command")

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, help) for name, (_, help) in COMMANDS.items()])


def _exit(code: int) -> NoReturn:
    """Exit with `code`; a process of a torchrun launch leaves its process group first."""
    distributed = sys.modules.get("synaptorch.train.distributed")  # imported only by the verbs that use it
    if distributed is not None:
        distributed.exit_worker(code)
    sys.exit(code)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="synaptorch")
def main() -> None:
    """synaptorch: brain-inspired learning on PyTorch (BDH, the Dragon Hatchling)."""
