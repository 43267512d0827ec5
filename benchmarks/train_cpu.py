"""Train the CPU preset on tiny Shakespeare for a fixed wall-clock budget; print one JSON line.

    python benchmarks/train_cpu.py                 # 10 minutes, the figure in the README
    python benchmarks/train_cpu.py --budget 60     # a quick look

The step count is set from a short timing of the first steps so that the cosine schedule ends
with the budget. The final validation loss is measured on the whole validation split (the last
10% of the text), in nats per byte.
"""

from __future__ import annotations

import argparse
import tempfile

from common import SHAKESPEARE, emit, peak_rss_mib, train_for_budget

TARGET_NATS_PER_BYTE = 1.75


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(SHAKESPEARE))
    parser.add_argument("--preset", default="cpu-tiny")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds of training steps")
    parser.add_argument("--eval-interval", type=int, default=250)
    parser.add_argument("--out", help="keep the run here (its checkpoints in OUT/run); default: a temporary folder")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or tmp
        trainer = train_for_budget(out, args.budget, args.preset, data=args.data, eval_interval=args.eval_interval)
        final = trainer.evaluate(max_tokens=0)

    record = {
        "preset": args.preset,
        "data": args.data,
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "budget_s": args.budget,
        "train_s": round(trainer.train_seconds, 1),
        "steps": trainer.step,
        "planned_steps": trainer.cfg.max_steps,
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
