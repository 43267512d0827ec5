"""Training throughput on one process against several under torchrun, and the memory of tokenizing a large corpus.

    python benchmarks/distributed.py                            # 60 steps per setting and a 2 GiB corpus
    python benchmarks/distributed.py --quick                    # 12 steps and a 0.05 GiB corpus
    python benchmarks/distributed.py --device cuda --nproc 4    # 1 GPU against 4, under torchrun
    python benchmarks/distributed.py --corpus-gib 0             # the training part only

Training: `synaptorch train` of the preset (BDH cpu-tiny) on tiny Shakespeare for `--steps`
steps, with no evaluation but the final one, in each setting. On the CPU: one process with one
thread (OMP_NUM_THREADS=1), one process with torch's default threads, and `--nproc` processes
under `python -m torch.distributed.run --standalone`, each with the machine's cores divided among
them (one thread each on 2 cores). On CUDA: one process on one GPU against `--nproc` processes,
one GPU each. Every setting trains on the same global batch, so the processes only divide the
work. Tokens/s is measured from metrics.jsonl: the tokens of the steps after the first logged
record (the warm-up) over their seconds of training (evaluations and checkpoints excluded). The
scaling efficiency is tokens/s of the processes over nproc times that of one process with one
thread (one GPU on CUDA); the speed-up is over the best single-process setting.

Corpus: a folder of `--corpus-gib` GiB of text (tiny Shakespeare repeated, in files of at most
256 MiB, written in pieces) is tokenized with the byte tokenizer by `load_corpus` in a fresh
process with an empty SYNAPTORCH_CACHE. The figures are that process's peak resident memory
(VmHWM of /proc/self/status; ru_maxrss would carry the parent's peak across exec), its resident
memory after the imports, and the seconds the call took. The corpus and its cache (about twice
`--corpus-gib` on the disk of the temporary folder) are deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import SHAKESPEARE, emit

FILE_BYTES = 256 << 20  # the most one generated corpus file holds
WRITE_BYTES = 8 << 20  # generated text is written in pieces of about this size
EVAL_TOKENS = 16384  # the final evaluation only checks that the settings trained alike; it is not timed
OUTPUT_TAIL = 3000  # characters of a failed command's output shown in the error


def run_command(command: list[str], env: dict[str, str]) -> float:
    """Run a command to its end; returns its wall seconds, or raises with the end of its output."""
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-OUTPUT_TAIL:]
        raise RuntimeError(f"{' '.join(command)} exited with {done.returncode}:\n{output}")
    return time.perf_counter() - start


def default_threads(env: dict[str, str]) -> int:
    """The threads torch takes in a fresh process with this environment."""
    done = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.split()[-1])


def measured_throughput(out: Path) -> dict:
    """Tokens/s of a finished run from its metrics.jsonl, after the first logged record."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    logged = [r for r in records if "tokens_per_s" in r]
    if len(logged) < 2:
        raise RuntimeError(f"{out / 'metrics.jsonl'} has {len(logged)} logged steps; at least 2 are needed")
    first, last = logged[0], logged[-1]
    tokens, seconds = last["tokens"] - first["tokens"], last["train_s"] - first["train_s"]
    final = [r for r in records if "val_loss" in r]
    return {
        "tokens_per_s": round(tokens / seconds, 1),
        "measured_steps": last["step"] - first["step"],
        "measured_tokens": tokens,
        "measured_train_s": round(seconds, 3),
        "tokens_per_step": last["tokens"] // last["step"],
        "final_val_loss": round(final[-1]["val_loss"], 4) if final else None,
    }


def train_setting(args, tmp: Path, name: str, processes: int, threads: int | None, env: dict[str, str]) -> dict:
    """One training run of the setting: `processes` under torchrun if more than one, `threads`
    per process (None: torch's default)."""
    out = tmp / "runs" / name
    env = dict(env)
    if threads is None:
        env.pop("OMP_NUM_THREADS", None)
    else:
        env["OMP_NUM_THREADS"] = str(threads)
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    train = [
        *("-m", "synaptorch", "train", "--preset", args.preset, "--data", str(args.data), "--out", str(out)),
        *("--device", args.device, "--max-steps", str(args.steps), "--eval-interval", str(args.steps + 1)),
        *("--log-interval", str(args.log_interval), "--eval-tokens", str(EVAL_TOKENS)),
        *("--sample-tokens", "0", "--quiet"),
    ]
    if args.batch_size:
        train += ["--batch-size", str(args.batch_size)]
    if args.grad_accum:
        train += ["--grad-accum", str(args.grad_accum)]
    wall_s = run_command(launcher + train, env)
    return {
        "processes": processes,
        "threads_per_process": threads if threads is not None else default_threads(env),
        **measured_throughput(out),
        "wall_s": round(wall_s, 1),
    }


def measure_training(args, tmp: Path) -> dict:
    env = {**os.environ, "SYNAPTORCH_CACHE": str(tmp / "cache")}  # shared: the corpus is tokenized once
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)  # a benchmark started under torchrun must not make its single runs a world
    cores = os.cpu_count() or 1
    if args.device == "cuda":
        # On GPUs the threads do not carry the work: torch's default, and torchrun's for its workers.
        runs = {"single": train_setting(args, tmp, "single", 1, None, env)}
        runs["distributed"] = train_setting(args, tmp, "distributed", args.nproc, 1, env)
        baseline = best_single = runs["single"]
    else:
        runs = {
            "single_1_thread": train_setting(args, tmp, "single_1_thread", 1, 1, env),
            "single_default_threads": train_setting(args, tmp, "single_default_threads", 1, None, env),
            # torchrun would set OMP_NUM_THREADS=1 for its workers; the cores divided is said outright.
            "distributed": train_setting(args, tmp, "distributed", args.nproc, max(1, cores // args.nproc), env),
        }
        baseline = runs["single_1_thread"]
        best_single = max(runs["single_1_thread"], runs["single_default_threads"], key=lambda r: r["tokens_per_s"])
    distributed = runs["distributed"]["tokens_per_s"]
    return {
        "preset": args.preset,
        "data": str(args.data),
        "steps": args.steps,
        "log_interval": args.log_interval,
        "runs": runs,
        "scaling_efficiency": round(distributed / (args.nproc * baseline["tokens_per_s"]), 3),
        "speedup_over_best_single": round(distributed / best_single["tokens_per_s"], 3),
    }


def generate_corpus(folder: Path, n_bytes: int) -> int:
    """Write `n_bytes` of tiny Shakespeare repeated into files of at most FILE_BYTES; returns the file count."""
    folder.mkdir(parents=True)
    text = SHAKESPEARE.read_bytes()
    block = text * max(1, WRITE_BYTES // len(text))
    n_files = max(2, math.ceil(n_bytes / FILE_BYTES))
    for i in range(n_files):
        size = n_bytes // n_files + (i < n_bytes % n_files)
        with open(folder / f"part-{i:03d}.txt", "wb") as f:
            while size > 0:
                piece = block[:size]
                f.write(piece)
                size -= len(piece)
    return n_files


# Run in a fresh process: its peak resident memory is that of the imports and the tokenizing alone.
TOKENIZE = """
import json, sys, time

def status_mib(key):
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(key + ":"))
    return int(line.split()[1]) / 1024

from synaptorch.data.corpus import load_corpus
from synaptorch.data.tokenizer import ByteTokenizer

after_imports = status_mib("VmRSS")
start = time.perf_counter()
corpus = load_corpus(sys.argv[1], ByteTokenizer())
seconds = time.perf_counter() - start
print(json.dumps({
    "tokens": len(corpus.tokens),
    "seconds": seconds,
    "rss_after_imports_mib": after_imports,
    "peak_rss_mib": status_mib("VmHWM"),
    "rss_after_mib": status_mib("VmRSS"),
}))
"""


def measure_corpus(gib: float, tmp: Path) -> dict:
    n_bytes = int(gib * 2**30)
    folder = tmp / "corpus"
    start = time.perf_counter()
    n_files = generate_corpus(folder, n_bytes)
    generate_s = time.perf_counter() - start
    env = {**os.environ, "SYNAPTORCH_CACHE": str(tmp / "corpus-cache")}
    done = subprocess.run(
        [sys.executable, "-c", TOKENIZE, str(folder)], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"tokenizing the corpus failed:\n{(done.stdout + done.stderr)[-OUTPUT_TAIL:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "gib": gib,
        "bytes": n_bytes,
        "files": n_files,
        "tokenizer": "bytes",
        "tokens": result["tokens"],
        "generate_s": round(generate_s, 1),
        "seconds": round(result["seconds"], 1),
        "mib_per_s": round(n_bytes / 2**20 / result["seconds"], 1),
        "rss_after_imports_mib": round(result["rss_after_imports_mib"], 1),
        "peak_rss_mib": round(result["peak_rss_mib"], 1),
        "peak_over_imports_mib": round(result["peak_rss_mib"] - result["rss_after_imports_mib"], 1),
        "rss_after_mib": round(result["rss_after_mib"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(SHAKESPEARE), help="training corpus")
    parser.add_argument("--preset", default="cpu-tiny")
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per setting")
    parser.add_argument("--log-interval", type=int, default=10, help="steps between the records measured")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--nproc", type=int, help="processes under torchrun  [default: 2 on the CPU, every GPU]")
    parser.add_argument("--batch-size", type=int, help="sequences per micro-batch  [default: the preset's]")
    parser.add_argument("--grad-accum", type=int, help="micro-batches per step  [default: the preset's]")
    parser.add_argument("--corpus-gib", type=float, default=2.0, help="size of the generated corpus (0: none)")
    parser.add_argument("--quick", action="store_true", help="12 steps logged every 4 and a 0.05 GiB corpus")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.log_interval, args.corpus_gib = 12, 4, 0.05
    if args.steps < 2 * args.log_interval:
        parser.error("--steps must cover at least two --log-interval records: the first one is the warm-up")
    if args.nproc is None:
        if args.device == "cuda":
            import torch

            args.nproc = torch.cuda.device_count()
        else:
            args.nproc = 2
    if args.nproc < 2:
        parser.error(f"--nproc must be at least 2 (got {args.nproc}; on CUDA, the GPUs this machine has)")
    if not SHAKESPEARE.is_file():
        parser.error(f"{SHAKESPEARE} is missing; the benchmarks need ../shared beside the checkout")

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="synaptorch-distributed-") as name:
        tmp = Path(name)
        record = {"device": args.device, "nproc": args.nproc, **measure_training(args, tmp)}
        if args.corpus_gib > 0:
            record["corpus"] = measure_corpus(args.corpus_gib, tmp)
    record["wall_s"] = round(time.perf_counter() - start, 1)
    emit("distributed", record)


if __name__ == "__main__":
    main()
