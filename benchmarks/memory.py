"""Peak memory of one training step (batch of one sequence) against sequence length, BDH and GPT.

    python benchmarks/memory.py               # 128 to 4096 tokens
    python benchmarks/memory.py --quick       # 128 and 512
    python benchmarks/memory.py --device cuda

Each measurement runs in a fresh process, so the peak of one does not hide the next. On the CPU
the figure is the growth of the peak resident memory over the memory held after building the
model; on CUDA it is the peak of allocated memory over the memory allocated before the step.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch

from synaptorch.device import pick_device
from synaptorch.registry import model_class
from synaptorch.train.config import build_run_config

from common import MODELS_MEASURED, current_rss_mib, emit, peak_rss_mib, training_step


def one_step_peak_mib(architecture: str, preset: str, seq_len: int, device: torch.device) -> float:
    config = build_run_config(preset, architecture=architecture).model
    model = model_class(architecture)(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    idx = torch.randint(0, config.vocab_size, (1, seq_len + 1), device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        before = current_rss_mib()
    training_step(model, optimizer, idx)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    return peak_rss_mib() - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq-lens", default="128,256,512,1024,2048,4096")
    parser.add_argument("--quick", action="store_true", help="128 and 512 only")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--child", nargs=3, metavar=("ARCH", "PRESET", "SEQ_LEN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = pick_device(args.device)
    if args.child:
        architecture, preset, seq_len = args.child
        print(json.dumps({"peak_mib": one_step_peak_mib(architecture, preset, int(seq_len), device)}))
        return

    seq_lens = [128, 512] if args.quick else [int(s) for s in args.seq_lens.split(",")]
    rows = []
    for architecture, preset in MODELS_MEASURED:
        for seq_len in seq_lens:
            command = [sys.executable, __file__, "--device", str(device), "--child", architecture, preset, str(seq_len)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                peak = None  # out of memory, most likely: recorded as missing rather than guessed
            else:
                peak = round(json.loads(done.stdout.splitlines()[-1])["peak_mib"], 1)
            rows.append({"model": f"{architecture}:{preset}", "seq_len": seq_len, "peak_step_mib": peak})
    emit("memory", {"device": str(device), "batch": 1, "rows": rows})


if __name__ == "__main__":
    main()
