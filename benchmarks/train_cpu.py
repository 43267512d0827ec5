"""Train the CPU preset on tiny Shakespeare for a fixed wall-clock budget; print one JSON line.

    python benchmarks/train_cpu.py                 # 10 minutes, the figure in the README
    python benchmarks/train_cpu.py --budget 60     # a quick look

The step count is set from a short timing of the first steps so that the cosine schedule ends
with the budget; `max_time` stops the run at the budget in any case. The final validation loss
is measured on the whole validation split (the last 10% of the text), in nats per byte.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

from synaptorch.train.config import build_run_config
from synaptorch.train.trainer import Trainer

from common import SHAKESPEARE, machine, peak_rss_mib

TARGET_NATS_PER_BYTE = 1.75


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(SHAKESPEARE))
    parser.add_argument("--preset", default="cpu-tiny")
    parser.add_argument("--budget", type=float, default=600.0, help="training seconds")
    parser.add_argument("--eval-interval", type=int, default=250)
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        overrides = {"data": args.data, "eval_interval": args.eval_interval, "max_time": args.budget}
        probe = Trainer(build_run_config(args.preset, train_overrides=overrides), f"{tmp}/probe", progress=False)
        probe.train_step()  # first step pays one-off costs
        start = time.perf_counter()
        for _ in range(8):
            probe.train_step()
        seconds_per_step = (time.perf_counter() - start) / 8
        # Evaluations and checkpoints take about 5% of the budget.
        max_steps = max(1, int(0.95 * args.budget / seconds_per_step))
        run = build_run_config(args.preset, train_overrides={**overrides, "max_steps": max_steps})
        trainer = Trainer(run, f"{tmp}/run", progress=args.progress)
        start = time.perf_counter()
        trainer.fit()
        train_seconds = time.perf_counter() - start
        final = trainer.evaluate(max_tokens=0)

    record = {
        "benchmark": "train_cpu",
        "preset": args.preset,
        "data": args.data,
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "budget_s": args.budget,
        "train_s": round(train_seconds, 1),
        "steps": trainer.step,
        "planned_steps": max_steps,
        "tokens": trainer.tokens_seen,
        "tokens_per_s": round(trainer.tokens_seen / train_seconds, 1),
        "val_loss_nats_per_byte": round(final["val_loss"], 4),
        "val_bpb": round(final["val_bpb"], 4),
        "target_nats_per_byte": TARGET_NATS_PER_BYTE,
        "target_met": final["val_loss"] <= TARGET_NATS_PER_BYTE,
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "machine": machine(),
    }
    print(json.dumps(record))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
