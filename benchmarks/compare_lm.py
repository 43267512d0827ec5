"""BDH against GPT on tiny Shakespeare for the same wall-clock budget, one after the other.

    python benchmarks/compare_lm.py                      # 10 minutes each, the README's figures
    python benchmarks/compare_lm.py --quick              # 15 seconds each
    python benchmarks/compare_lm.py --gpt-preset cpu-tiny-flops --plot compare.png

Both models see the same batches in the same order (same seed, same data, same block and
batch size, unless `--bdh-set`/`--gpt-set` change them) from the same trainer, each for the same
wall-clock budget with its schedule following the clock; `train_s` is the seconds each trained.
Points of the curves score 16,384 evenly spaced validation tokens; the final loss scores the
whole validation split. Prints one JSON line with, for each model, its validation
loss curve against tokens and against seconds of training steps, and the final validation loss
on the whole validation split; `--plot` writes both curves.
"""

from __future__ import annotations

import argparse
import tempfile
import textwrap
from pathlib import Path

from synaptorch.checkpoint import read_metrics

from common import SHAKESPEARE, emit, parse_settings, save_figure, train_for_budget


def run_model(
    architecture: str, preset: str, budget: float, eval_interval: int, data: str, device: str, settings: list[str]
) -> dict:
    model_settings, train_settings = parse_settings(settings)
    overrides = {"eval_interval": eval_interval, "eval_tokens": 16384, "device": device, **train_settings}
    with tempfile.TemporaryDirectory() as tmp:
        trainer = train_for_budget(tmp, budget, preset, architecture, data, model_settings, **overrides)
        records = read_metrics(Path(tmp) / "run")
        final = trainer.evaluate(max_tokens=0)
    curve = [
        {k: r[k] for k in ("step", "tokens", "train_s")} | {"val_loss": round(r["val_loss"], 4)}
        for r in records
        if "val_loss" in r
    ]
    config = trainer.run.model
    return {
        "model": architecture,
        "preset": preset,
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "train_flops_per_token": 3 * config.flops_per_token(trainer.cfg.block_size),
        "settings": settings,
        "precision": trainer.precision.name,
        "steps": trainer.step,
        "tokens": trainer.tokens_seen,
        "train_s": round(trainer.train_seconds, 1),
        "tokens_per_s": round(trainer.tokens_seen / trainer.train_seconds, 1),
        "final_val_loss": round(final["val_loss"], 4),
        "curve": curve,
    }


def plot(results: list[dict], path: str) -> None:
    def draw(fig):
        by_tokens, by_time = fig.subplots(1, 2, sharey=True)
        for r in results:
            # Wrapped, so that a long list of settings does not squeeze the axes beside the legend.
            settings = "\n" + textwrap.fill(", ".join(r["settings"]), 44) if r["settings"] else ""
            label = f"{r['model']} {r['preset']} ({r['parameters'] / 1e6:.2f}M params){settings}"
            by_tokens.plot([p["tokens"] / 1e6 for p in r["curve"]], [p["val_loss"] for p in r["curve"]], label=label)
            by_time.plot([p["train_s"] for p in r["curve"]], [p["val_loss"] for p in r["curve"]], label=label)
        by_tokens.set(xlabel="training tokens (millions)", ylabel="validation loss (nats per byte)")
        by_time.set(xlabel="seconds of training")
        by_time.legend(loc="upper right")
        fig.suptitle("tiny Shakespeare, same trainer, same batches")

    save_figure(path, draw, size=(10, 4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=600.0, help="seconds of training steps per model")
    parser.add_argument("--quick", action="store_true", help="15 seconds per model")
    parser.add_argument("--bdh-preset", default="cpu-tiny")
    parser.add_argument("--gpt-preset", default="cpu-tiny", help="cpu-tiny (same parameters) or cpu-tiny-flops")
    parser.add_argument("--eval-interval", type=int, default=100)
    parser.add_argument("--data", default=str(SHAKESPEARE))
    parser.add_argument("--device", default="auto")
    for model in ("bdh", "gpt"):
        parser.add_argument(f"--{model}-set", action="append", default=[], metavar="NAME=VALUE", help="a setting")
    parser.add_argument("--plot", help="write the curves to this PNG")
    args = parser.parse_args()
    budget, eval_interval = (15.0, 10) if args.quick else (args.budget, args.eval_interval)

    results = [
        run_model("bdh", args.bdh_preset, budget, eval_interval, args.data, args.device, args.bdh_set),
        run_model("gpt", args.gpt_preset, budget, eval_interval, args.data, args.device, args.gpt_set),
    ]
    if args.plot:
        plot(results, args.plot)
    emit("compare_lm", {"budget_s": budget, "results": results})


if __name__ == "__main__":
    main()
