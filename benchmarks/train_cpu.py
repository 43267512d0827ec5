"""Train the CPU preset on tiny Shakespeare for a fixed wall-clock budget; print one JSON line.

    python benchmarks/train_cpu.py                 # 10 minutes, the figure in the README
    python benchmarks/train_cpu.py --budget 60     # a quick look

The schedule follows the clock: the cosine decay ends with the budget, whatever speed the
machine keeps meanwhile. The final validation loss is measured on the whole validation split
(the last 10% of the text), in nats per byte.
"""

from __future__ import annotations

import argparse
import tempfile

from common import SHAKESPEARE, emit, parse_settings, peak_rss_mib, train_for_budget

TARGET_NATS_PER_BYTE = 1.50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(SHAKESPEARE))
    parser.add_argument("--preset", default="cpu-tiny")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds of training steps")
    parser.add_argument("--eval-interval", type=int, default=250)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a model or train setting")
    parser.add_argument("--out", help="keep the run here (its checkpoints in OUT/run); default: a temporary folder")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or tmp
        model_settings, train_settings = parse_settings(args.set)
        train_settings.setdefault("eval_interval", args.eval_interval)
        trainer = train_for_budget(out, args.budget, args.preset, "bdh", args.data, model_settings, **train_settings)
        final = trainer.evaluate(max_tokens=0)

    record = {
        "preset": args.preset,
        "settings": args.set,
        "data": args.data,
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "budget_s": args.budget,
        "train_s": round(trainer.train_seconds, 1),
        "steps": trainer.step,
        "precision": trainer.precision.name,
        "tokens": trainer.tokens_seen,
        "tokens_per_s": round(trainer.tokens_seen / trainer.train_seconds, 1),
        "val_loss_nats_per_byte": round(final["val_loss"], 4),
        "val_bpb": round(final["val_bpb"], 4),
        "target_nats_per_byte": TARGET_NATS_PER_BYTE,
        "target_met": final["val_loss"] <= TARGET_NATS_PER_BYTE,
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }
    emit("train_cpu", record)


if __name__ == "__main__":
    main()
