"""`synaptorch generate`: stream a continuation from a checkpoint."""

from __future__ import annotations

import click

from synaptorch.cli.options import device_option, user_errors


@click.command("generate")
@click.option("--checkpoint", required=True, help="Checkpoint folder, or a run folder (its latest checkpoint).")
@click.option("--prompt", default="\n", show_default=repr("\n"), help="Text to continue.")
@click.option("--max-new-tokens", default=500, show_default=True, type=int, help="Tokens to sample.")
@click.option("--temperature", default=0.8, show_default=True, type=float, help="0 is greedy.")
@click.option("--top-k", default=0, show_default=True, type=int, help="Keep the k most likely tokens (0: all).")
@click.option("--top-p", default=1.0, show_default=True, type=float, help="Nucleus sampling mass (1: off).")
@click.option("--seed", type=int, help="Seed for reproducible samples.  [default: a fresh one]")
@device_option()
@click.option("--compile", "compile_step", is_flag=True, help="BDH: compile the per-token step (a one-off cost).")
@user_errors
def generate_command(checkpoint, prompt, max_new_tokens, temperature, top_k, top_p, seed, device, compile_step):
    """Stream a continuation of --prompt; memory and time per token do not grow with context."""
    from synaptorch.inference import stream_text

    pieces = stream_text(checkpoint, prompt, max_new_tokens, temperature, top_k, top_p, seed, device, compile_step)
    first = next(pieces)  # the checks and the model load happen before the prompt is echoed
    click.echo(prompt + first, nl=False)
    for piece in pieces:
        click.echo(piece, nl=False)
    click.echo()
