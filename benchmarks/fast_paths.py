"""BDH's fast paths against its naive forms, measured in one run: training step, memory, generation.

    python benchmarks/fast_paths.py            # about 5 minutes on 2 CPU cores
    python benchmarks/fast_paths.py --quick    # under a minute, smaller figures

- train: one AdamW step of the cpu-tiny preset at sequence length 512 (batches of 2048 tokens),
  the naive parallel form (T x T scores) against the chunked form, alternating rounds; model
  FLOPs utilisation against the dense matmul peak measured in the same run; 1 and 2 threads.
- chunk_sizes: the attention alone, forward and backward, at 4096 tokens, against chunk length.
- memory: one training step of cpu-tiny's batch (16 sequences) at sequence length 4096 in a child
  process whose address space is capped at 8 GiB: naive, chunked, chunked with recomputation.
- generate: milliseconds per token at contexts 256 to 16384, the naive recurrent loop
  (`forward_recurrent` one token at a time) against `step`, eager and compiled.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from synaptorch.models.bdh import BDH
from synaptorch.train.config import build_run_config

from common import best_seconds, emit, matmul_peak_flops, peak_rss_mib, training_step

GIB = 2**30


def cpu_tiny() -> BDH:
    torch.manual_seed(0)
    return BDH(build_run_config("cpu-tiny", architecture="bdh").model)


def measure_training(seq_len: int, tokens_per_batch: int, rounds: int, peak: float) -> dict:
    model = cpu_tiny().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = max(1, tokens_per_batch // seq_len)
    idx = torch.randint(0, model.config.vocab_size, (batch, seq_len + 1))

    def step_with(attention: str):
        def run() -> None:
            model.attention = attention
            training_step(model, optimizer, idx)

        return run

    rows = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        seconds = best_seconds({"naive": step_with("naive"), "chunked": step_with("chunked")}, rounds, 2)
        for name, s in seconds.items():
            flops = 3 * model.config.flops_per_token(seq_len) * batch * seq_len / s
            rows[f"{name}_{threads}t"] = {
                "ms_per_step": round(1e3 * s, 1),
                "tokens_per_s": round(batch * seq_len / s),
                "gflops": round(flops / 1e9, 1),
                "mfu": round(flops / peak, 3),
            }
    torch.set_num_threads(2)
    best = min((r["ms_per_step"], k) for k, r in rows.items() if k.startswith("chunked"))[1]
    naive = min((r["ms_per_step"], k) for k, r in rows.items() if k.startswith("naive"))[1]
    return {
        "seq_len": seq_len,
        "batch": batch,
        "rows": rows,
        "speedup": round(rows[naive]["ms_per_step"] / rows[best]["ms_per_step"], 2),
        "chunked_mfu": rows[best]["mfu"],
    }


def measure_chunk_sizes(seq_len: int, chunk_sizes: tuple[int, ...], rounds: int) -> dict[str, float]:
    """Milliseconds of the attention alone, forward and backward, at cpu-tiny's shapes, per chunk length."""
    from synaptorch.models.linear_attention import auto_chunk_size, causal_linear_attention

    c = build_run_config("cpu-tiny", architecture="bdh").model
    q = torch.randn(1, c.n_head, seq_len, c.n_neuron).relu_().requires_grad_()
    x = torch.randn(1, 1, seq_len, c.n_embd, requires_grad=True)
    grad = torch.randn(1, c.n_head, seq_len, c.n_embd)
    variants = {
        str(chunk): lambda chunk=chunk: causal_linear_attention(q, x, chunk).backward(grad) for chunk in chunk_sizes
    }
    ms = {name: round(1e3 * s, 1) for name, s in best_seconds(variants, rounds, 2).items()}
    return {"seq_len": seq_len, "ms": ms, "auto": auto_chunk_size(seq_len, c.n_neuron, c.n_embd)}


def memory_child(attention: str, recompute: bool, batch: int, seq_len: int) -> dict:
    """Runs in a child process: one training step under an 8 GiB address-space cap."""
    resource.setrlimit(resource.RLIMIT_AS, (8 * GIB, 8 * GIB))
    model = cpu_tiny().train()
    model.attention, model.recompute = attention, recompute
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    idx = torch.randint(0, model.config.vocab_size, (batch, seq_len + 1))
    start = time.perf_counter()
    training_step(model, optimizer, idx)
    return {"seconds": round(time.perf_counter() - start, 1), "peak_rss_mib": round(peak_rss_mib())}


def measure_memory(batch: int, seq_len: int) -> list[dict]:
    rows = []
    for attention, recompute in (("naive", False), ("chunked", False), ("chunked", True)):
        command = [sys.executable, __file__, "--memory-child", attention, str(int(recompute)), str(batch), str(seq_len)]
        done = subprocess.run(command, capture_output=True, text=True)
        row = {"attention": attention, "recompute": recompute, "batch": batch, "seq_len": seq_len}
        if done.returncode == 0:
            row.update(fits_8gib=True, **json.loads(done.stdout.splitlines()[-1]))
        else:
            row.update(fits_8gib=False, error=(done.stderr.strip().splitlines() or ["?"])[-1][:120])
        rows.append(row)
    return rows


def measure_generation(contexts: list[int], tokens: int, rounds: int) -> dict:
    """All contexts and forms are timed in turn, so that drift of the machine falls on all alike."""
    model = cpu_tiny().eval()
    prompt = torch.randint(0, model.config.vocab_size, (1, max(contexts)))
    token = torch.tensor([7])
    forms = ("naive_loop", "step", "step_compiled")
    rows = []
    with torch.no_grad():
        states = {(c, form): model.forward_recurrent(prompt[:, :c])[1] for c in contexts for form in forms}

        def run(context: int, form: str) -> None:
            key = (context, form)
            if form == "naive_loop":
                states[key] = model.forward_recurrent(token[:, None], states[key])[1]
            else:
                model.compile_step(form == "step_compiled")
                model.step(token, states[key])

        variants = {(c, form): lambda c=c, form=form: run(c, form) for c in contexts for form in forms}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            seconds = best_seconds(variants, rounds, tokens)
            for c in contexts:
                rows.append({"context": c, "threads": threads, **{f: round(1e3 * seconds[c, f], 3) for f in forms}})
    torch.set_num_threads(2)
    at = {(r["context"], r["threads"]): r for r in rows}
    best = {c: min((at[c, t] for t in (1, 2)), key=lambda r: r["step_compiled"]) for c in contexts}
    naive = {c: min(at[c, t]["naive_loop"] for t in (1, 2)) for c in contexts}
    probe = 4096 if 4096 in contexts else contexts[-1]
    latencies = [best[c]["step_compiled"] for c in contexts]
    return {
        "unit": "ms per token",
        "rows": rows,
        "speedup_at": probe,
        "speedup": round(naive[probe] / best[probe]["step_compiled"], 2),
        "latency_spread": round(max(latencies) / min(latencies), 3),
        "median_ms": round(statistics.median(latencies), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short timings, memory at 1024 tokens")
    parser.add_argument("--memory-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        attention, recompute, batch, seq_len = args.memory_child
        print(json.dumps(memory_child(attention, recompute == "1", int(batch), int(seq_len))))
        return

    peak, _ = matmul_peak_flops(torch.device("cpu"))
    record = {"matmul_peak_gflops": round(peak / 1e9, 1)}
    if args.quick:
        record["train"] = measure_training(512, 2048, rounds=2, peak=peak)
        record["chunk_sizes"] = measure_chunk_sizes(1024, (32, 64, 128), rounds=1)
        record["memory"] = measure_memory(batch=4, seq_len=1024)
        record["generate"] = measure_generation([256, 4096], tokens=20, rounds=2)
    else:
        record["train"] = measure_training(512, 2048, rounds=5, peak=peak)
        record["chunk_sizes"] = measure_chunk_sizes(4096, (32, 64, 128, 256, 512), rounds=3)
        record["memory"] = measure_memory(batch=16, seq_len=4096)
        record["generate"] = measure_generation([256, 1024, 4096, 16384], tokens=100, rounds=5)
    emit("fast_paths", record)


if __name__ == "__main__":
    main()
