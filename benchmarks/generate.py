"""Per-token latency and memory of BDH generation against context length; print one JSON line.

    python benchmarks/generate.py                          # cpu-tiny sized model, random weights
    python benchmarks/generate.py --checkpoint runs/bdh    # a trained model

For each context length the prompt is prefilled in chunks, then `--tokens` new tokens are
generated one recurrent step at a time. BDH keeps the context in a synapse matrix of fixed
size, so latency and memory should not depend on the context length: `latency_spread` is the
slowest median latency over the fastest, and `rss_spread` the same for resident memory.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from synaptorch import BDH
from synaptorch.models.sampling import prefill, stream_tokens
from synaptorch.train.config import build_run_config

from common import current_rss_mib, emit


def state_mib(state) -> float:
    """Size of a recurrent state (BDH synapses or a GPT key/value cache): every tensor in it."""
    tensors = [t for value in vars(state).values() if isinstance(value, list) for t in value]
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


@torch.no_grad()
def measure_generation(model: nn.Module, contexts: list[int], tokens: int, repeats: int) -> dict:
    """Per context length: median seconds per new token, state size and resident memory.

    Latency: one generator per context, prefilled, then served round-robin ten tokens at a time,
    so that slow drifts of a shared machine fall on every context alike. Memory: contexts in
    increasing order, each prefilled alone, then the state and the resident memory are read.
    """
    model.eval()
    device = next(model.parameters()).device
    prompts = {c: torch.randint(0, model.config.vocab_size, (1, c), device=device) for c in contexts}
    memory = {}
    for context in contexts:
        _, state = prefill(model, prompts[context])
        memory[context] = (state_mib(state), current_rss_mib())
        del state

    latencies: dict[int, list[float]] = {c: [] for c in contexts}
    for _ in range(repeats):
        streams = {c: stream_tokens(model, prompts[c], tokens + 1, temperature=1.0, seed=0) for c in contexts}
        for stream in streams.values():
            next(stream)  # the prefill and the first token
        for _ in range(0, tokens, 10):
            for context, stream in streams.items():
                for _ in range(10):
                    start = time.perf_counter()
                    next(stream, None)
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    latencies[context].append(time.perf_counter() - start)
        del streams
    per_context = {
        str(c): {
            "ms_per_token": round(1000 * statistics.median(latencies[c]), 4),
            "tokens_per_s": round(1 / statistics.median(latencies[c]), 1),
            "state_mib": round(memory[c][0], 3),
            "rss_mib": round(memory[c][1], 1),
        }
        for c in contexts
    }
    ms = [v["ms_per_token"] for v in per_context.values()]
    mib = [v["rss_mib"] for v in per_context.values()]
    return {
        "contexts": per_context,
        "latency_spread": round(max(ms) / min(ms), 3),
        "rss_spread": round(max(mib) / min(mib), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a trained checkpoint; default: the preset's shape, random weights")
    parser.add_argument("--preset", default="cpu-tiny")
    parser.add_argument("--contexts", default="256,1024,4096,16384")
    parser.add_argument("--tokens", type=int, default=200, help="new tokens timed per context")
    parser.add_argument("--repeats", type=int, default=3, help="passes over all contexts; medians are taken")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = BDH.from_pretrained(args.checkpoint) if args.checkpoint else BDH(build_run_config(args.preset).model)
    result = measure_generation(model, [int(c) for c in args.contexts.split(",")], args.tokens, args.repeats)
    record = {
        "model": model.config.to_dict(),
        **result,
        "flat_within_20_percent": result["latency_spread"] <= 1.2 and result["rss_spread"] <= 1.2,
    }
    emit("generate", record)


if __name__ == "__main__":
    main()
