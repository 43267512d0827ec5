"""`synaptorch eval` and `synaptorch spike-eval`: score checkpoints on a corpus."""

from __future__ import annotations

import json

import click

from synaptorch.cli.options import apply, device_option, user_errors
from synaptorch.inference import SPLITS
from synaptorch.models.spiking_bdh import GRADIENTS
from synaptorch.train.spiking import METHODS


def corpus_options(command):
    """The corpus scored and its split."""
    return apply(
        command,
        [
            click.option(
                "--data",
                default="pydoc",
                show_default=True,
                help="Corpus: pydoc, pystdlib, shakespeare, a file or folder.",
            ),
            click.option(
                "--split",
                type=click.Choice(SPLITS),
                default="val",
                show_default=True,
                help="Part of the corpus to score.",
            ),
            click.option("--val-fraction", default=0.1, show_default=True, type=float, help="Share kept for val."),
        ],
    )


def window_options(command):
    """How the corpus is cut into windows and batches."""
    return apply(
        command,
        [
            click.option("--block-size", type=int, help="Window length.  [default: the training block size, else 128]"),
            click.option("--batch-size", default=16, show_default=True, type=int, help="Windows per batch."),
        ],
    )


@click.command("eval")
@click.option("--checkpoint", required=True, help="Checkpoint folder, or a run folder (its latest checkpoint).")
@corpus_options
@click.option("--tokenizer", help="tokenizer.json to use instead of the checkpoint's own.  [default: the checkpoint's]")
@window_options
@click.option("--max-tokens", default=0, show_default=True, type=int, help="Score at most this many tokens (0: all).")
@device_option()
@user_errors
def eval_command(checkpoint, data, split, val_fraction, tokenizer, block_size, batch_size, max_tokens, device) -> None:
    """Loss (nats per token) and bits per byte of a checkpoint on a corpus; ends with a JSON line."""
    from synaptorch.inference import evaluate_checkpoint

    record = evaluate_checkpoint(
        checkpoint, data, split, val_fraction, tokenizer, block_size, batch_size, max_tokens, device
    )
    click.echo(json.dumps(record))


@click.command("spike-eval")
@click.argument("checkpoint")
@click.option("--steps", default="1,2,4,8,16,32,64", show_default=True, help="Time steps per token, comma-separated.")
@corpus_options
@window_options
@click.option(
    "--max-tokens", default=16384, show_default=True, type=int, help="Score at most this many tokens (0: all)."
)
@click.option(
    "--calibration-tokens",
    default=4096,
    show_default=True,
    type=int,
    help="Tokens from the start of the training split that set the thresholds.",
)
@click.option(
    "--percentile", default=99.9, show_default=True, type=float, help="Threshold: this percentile of the activations."
)
@click.option(
    "--finetune-steps",
    default=0,
    show_default=True,
    type=int,
    help="First train this many steps with the spiking neurons in the loop.",
)
@click.option(
    "--finetune-seconds",
    default=0.0,
    show_default=True,
    type=float,
    help="Or train for this many seconds (with --finetune-steps too, whichever ends first).",
)
@click.option(
    "--finetune-method",
    type=click.Choice(METHODS),
    default="surrogate",
    show_default=True,
    help="surrogate gradients, equilibrium rates, TKS (time steps teach each other), distill (a teacher).",
)
@click.option(
    "--finetune-gradient",
    type=click.Choice(GRADIENTS),
    help="Gradient of tks and distill.  [default: equilibrium]",
)
@click.option("--finetune-t", default=4, show_default=True, type=int, help="Time steps per token while fine-tuning.")
@click.option("--finetune-lr", default=3e-4, show_default=True, type=float, help="Learning rate of the fine-tuning.")
@click.option("--teacher", help="distill: a teacher `synaptorch distill` takes.  [default: the ReLU model]")
@click.option(
    "--teacher-cache",
    help="distill: folder of the teacher's top-k cache, filled first if missing.  [default: the teacher run live]",
)
@click.option("--distill-alpha", default=0.5, show_default=True, type=float, help="distill: weight of the data.")
@click.option("--distill-tau", default=1.0, show_default=True, type=float, help="distill: temperature.")
@device_option()
@user_errors
def spike_eval_command(checkpoint, steps, **options) -> None:
    """Run a BDH checkpoint with integrate-and-fire neurons for T steps per token, against its ReLU neurons.

    Prints the ReLU model's figures, a row per T (loss, accuracy, agreement with the ReLU model's
    next token, KL to it, spikes and synaptic operations per token, the distance of the rates
    from their equilibrium, energy per token) and a JSON line.
    """
    from synaptorch.inference import spike_eval_checkpoint
    from synaptorch.train.spiking import parse_time_steps

    outcome = spike_eval_checkpoint(checkpoint, parse_time_steps(steps), **options)
    if outcome.finetune_losses:
        losses, done = outcome.finetune_losses, outcome.record["finetune"]
        click.echo(
            f"fine-tuned {len(losses)} steps at T = {options['finetune_t']} ({done['method']}, {done['seconds']} s): "
            f"train loss {losses[0]:.4f} -> {losses[-1]:.4f}"
        )
    relu = outcome.relu
    click.echo(
        f"ReLU model: loss {relu.loss:.4f}, accuracy {relu.accuracy:.4f}, {relu.active_per_token:,.0f} active "
        f"neurons/token, {relu.macs_per_token:,.0f} MACs/token in the synapses spikes replace "
        f"({relu.active_macs_per_token:,.0f} touching only active neurons), "
        f"{relu.analog_macs_per_token:,.0f} analog MACs/token in both, {relu.energy_pj_per_token / 1e6:.2f} uJ/token"
    )
    header = ("T", "loss", "accuracy", "agreement", "KL", "spikes/tok", "ops/tok", "ops/MACs", "eq. gap", "uJ/tok")
    widths = (5, 8, 9, 10, 9, 11, 11, 8, 8, 7)
    click.echo(" ".join(f"{name:>{width}}" for name, width in zip(header, widths, strict=True)))
    for r in outcome.results:
        click.echo(
            f"{r.steps:>5} {r.loss:>8.4f} {r.accuracy:>9.4f} {r.agreement:>10.4f} {r.kl:>9.5f} "
            f"{r.spikes_per_token:>11,.0f} {r.synaptic_ops_per_token:>11,.0f} "
            f"{r.synaptic_ops_per_token / relu.macs_per_token:>8.3f} {r.equilibrium_gap:>8.4f} "
            f"{r.energy_pj_per_token / 1e6:>7.2f}"
        )
    click.echo(json.dumps(outcome.record))
