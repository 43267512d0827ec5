"""Per-token latency and memory of generation against context length; print one JSON line.

    python benchmarks/generate.py                          # cpu-tiny sized model, random weights
    python benchmarks/generate.py --checkpoint runs/bdh    # a trained model

For each context length the prompt is prefilled in chunks, then `--tokens` new tokens are
generated one recurrent step at a time. BDH keeps the context in a synapse matrix of fixed
size, so latency and memory should not depend on the context length: `latency_spread` is the
slowest median latency over the fastest, and `rss_spread` the same for resident memory.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from synaptorch import BDH
from synaptorch.models.sampling import stream_tokens
from synaptorch.train.config import build_run_config

from common import current_rss_mib, machine


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
    model.eval()
    contexts = [int(c) for c in args.contexts.split(",")]
    vocab = model.config.vocab_size

    latencies: dict[int, list[float]] = {c: [] for c in contexts}
    rss: dict[int, list[float]] = {c: [] for c in contexts}
    for _ in range(args.repeats):
        for context in contexts:
            prompt = torch.randint(0, vocab, (1, context))
            tokens = stream_tokens(model, prompt, args.tokens + 1, temperature=1.0, seed=0)
            next(tokens)  # the prefill and the first token
            start = time.perf_counter()
            for _ in tokens:
                now = time.perf_counter()
                latencies[context].append(now - start)
                start = now
            rss[context].append(current_rss_mib())

    state = model.initial_state(1)
    per_context = {
        str(c): {
            "ms_per_token": round(1000 * statistics.median(latencies[c]), 4),
            "tokens_per_s": round(1 / statistics.median(latencies[c]), 1),
            "rss_mib": round(statistics.median(rss[c]), 1),
        }
        for c in contexts
    }
    medians = [statistics.median(latencies[c]) for c in contexts]
    rss_medians = [statistics.median(rss[c]) for c in contexts]
    record = {
        "benchmark": "generate",
        "model": model.config.to_dict(),
        "state_mib": round(sum(r.numel() * r.element_size() for r in state.rho) / 2**20, 3),
        "contexts": per_context,
        "latency_spread": round(max(medians) / min(medians), 3),
        "rss_spread": round(max(rss_medians) / min(rss_medians), 3),
        "flat_within_20_percent": max(medians) / min(medians) <= 1.2 and max(rss_medians) / min(rss_medians) <= 1.2,
        "machine": machine(),
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
