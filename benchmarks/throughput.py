"""Training and inference throughput of BDH and GPT against sequence length, and their FLOPs
utilisation: achieved model FLOP/s over the machine's dense matmul peak, measured in the same run.

    python benchmarks/throughput.py            # sequence lengths 128 to 4096, a few minutes
    python benchmarks/throughput.py --quick    # 128 and 512, under a minute
    python benchmarks/throughput.py --device cuda

Model FLOPs per token come from the architecture (`flops_per_token` of each config, forward;
a training step counts 3x; attention counts the positions a token sees under the causal mask,
not work spent on masked scores; BDH's attention counts the cheaper of its parallel and chunked
forms). The peak is the best single large square matmul: fp32 on the
CPU, bf16 on CUDA, matching the precision the models run in there by default.

Then BDH trains in fp32 and under bf16 autocast, steps of the two taken in turn in one process so
that load elsewhere on the machine slows both alike: the cpu-tiny preset and a wider BDH (d = 256,
4 heads x 2,048 neurons), each on 16 sequences of 128 tokens, with their MFU against the fp32 and
the bf16 matmul peak, the ratio of their training tokens/s (`bf16_speedup`) and what
`--precision auto` chooses for each (`precision_auto`).
"""

from __future__ import annotations

import argparse
import functools
import time

import torch

from synaptorch.device import BF16, FP32, autocast_for, bf16_probe, pick_device, precision_for
from synaptorch.models.bdh import BDH, BDHConfig
from synaptorch.registry import model_class
from synaptorch.train.config import build_run_config

from common import MODELS_MEASURED, best_seconds, emit, matmul_peak_flops, sync, training_step

# The preset's width, and one where every product is 2 x 8 times larger, which bf16 speeds up more.
PRECISION_MODELS = {
    "cpu-tiny": build_run_config("cpu-tiny").model,
    "wide": BDHConfig(n_layer=4, n_embd=256, n_head=4, n_neuron=2048, dropout=0.0),
}
PRECISION_BATCH = (16, 128)  # sequences x tokens: the cpu-tiny preset's micro-batch


def seconds_per_call(fn, device: torch.device, min_seconds: float, min_calls: int = 2) -> float:
    """Mean time of `fn()` after one warm-up call, over at least min_calls and min_seconds."""
    fn()
    sync(device)
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < min_seconds:
        fn()
        calls += 1
    sync(device)
    return (time.perf_counter() - start) / calls


def measure(architecture: str, preset: str, seq_len: int, tokens_per_batch: int, device, min_seconds: float) -> dict:
    config = build_run_config(preset, architecture=architecture).model
    torch.manual_seed(0)
    model = model_class(architecture)(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = max(1, tokens_per_batch // seq_len)
    idx = torch.randint(0, config.vocab_size, (batch, seq_len + 1), device=device)

    @torch.no_grad()
    def forward() -> None:
        with autocast_for(device):
            model(idx[:, :-1])

    tokens = batch * seq_len
    flops = config.flops_per_token(seq_len)
    model.train()
    train_s = seconds_per_call(lambda: training_step(model, optimizer, idx), device, min_seconds)
    model.eval()
    infer_s = seconds_per_call(forward, device, min_seconds)
    return {
        "model": f"{architecture}:{preset}",
        "seq_len": seq_len,
        "batch": batch,
        "flops_per_token": flops,
        "train_tokens_per_s": round(tokens / train_s, 1),
        "train_flops_per_s": 3 * flops * tokens / train_s,
        "infer_tokens_per_s": round(tokens / infer_s, 1),
        "infer_flops_per_s": flops * tokens / infer_s,
    }


def compare_precisions(
    name: str, config: BDHConfig, device: torch.device, rounds: int, peaks: dict[str, float]
) -> tuple[list[dict], float, str]:
    """Rows of training throughput in fp32 and bf16, the bf16 / fp32 ratio of tokens/s, and the
    precision `auto` takes for this model and batch."""
    torch.manual_seed(0)
    model = BDH(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch, seq_len = PRECISION_BATCH
    idx = torch.randint(0, config.vocab_size, (batch, seq_len + 1), device=device)
    auto = precision_for(device, "auto", bf16_probe(model, idx[:, :-1]))
    steps = {p.name: functools.partial(training_step, model, optimizer, idx, p) for p in (FP32, BF16)}
    seconds = best_seconds(steps, rounds, calls=1)
    tokens, flops = batch * seq_len, 3 * config.flops_per_token(seq_len)
    rows = []
    for precision, s in seconds.items():
        flops_per_s = flops * tokens / s
        row = {"model": f"bdh:{name}", "precision": precision, "seq_len": seq_len, "batch": batch}
        row["train_tokens_per_s"] = round(tokens / s, 1)
        row["train_flops_per_s"] = round(flops_per_s / 1e9, 2)
        row.update({f"train_mfu_{peak}_peak": round(flops_per_s / rate, 4) for peak, rate in peaks.items()})
        rows.append(row)
    return rows, round(seconds["fp32"] / seconds["bf16"], 3), auto.name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq-lens", default="128,256,512,1024,2048,4096")
    parser.add_argument("--tokens-per-batch", type=int, default=2048)
    parser.add_argument("--min-seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--quick", action="store_true", help="128 and 512 only, short timings")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision-rounds", type=int, default=3, help="timed steps of each precision")
    args = parser.parse_args()
    seq_lens = [128, 512] if args.quick else [int(s) for s in args.seq_lens.split(",")]
    min_seconds = 0.3 if args.quick else args.min_seconds
    device = pick_device(args.device)

    peak, peak_dtype = matmul_peak_flops(device)
    rows = []
    for architecture, preset in MODELS_MEASURED:
        for seq_len in seq_lens:
            row = measure(architecture, preset, seq_len, args.tokens_per_batch, device, min_seconds)
            row["train_mfu"] = round(row["train_flops_per_s"] / peak, 4)
            row["infer_mfu"] = round(row["infer_flops_per_s"] / peak, 4)
            row["train_flops_per_s"] = round(row["train_flops_per_s"] / 1e9, 2)  # GFLOP/s from here on
            row["infer_flops_per_s"] = round(row["infer_flops_per_s"] / 1e9, 2)
            rows.append(row)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    peaks = {name: peak if str(t) == peak_dtype else matmul_peak_flops(device, t)[0] for name, t in dtypes.items()}
    rounds = 2 if args.quick else args.precision_rounds
    precision_rows, speedup, auto = [], {}, {}
    for name, config in PRECISION_MODELS.items():
        model_rows, speedup[name], auto[name] = compare_precisions(name, config, device, rounds, peaks)
        precision_rows += model_rows
    record = {
        "device": str(device),
        "matmul_peak_gflops": round(peak / 1e9, 1),
        "peak_dtype": peak_dtype,
        "matmul_peaks_gflops": {name: round(rate / 1e9, 1) for name, rate in peaks.items()},
        "flops_unit": "GFLOP/s",
        "rows": rows,
        "precision_rows": precision_rows,
        "bf16_speedup": speedup,
        "precision_auto": auto,
    }
    emit("throughput", record)


if __name__ == "__main__":
    main()
