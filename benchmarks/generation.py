"""Per-token latency and resident memory of generation against context length, BDH and GPT.

    python benchmarks/generation.py                       # contexts 256 to 16384
    python benchmarks/generation.py --quick               # 256 and 1024
    python benchmarks/generation.py --plot generation.png

BDH carries a fixed-size synapse state from token to token; GPT carries a key/value cache that
grows with the context. Both models have the shape of their cpu-tiny presets (about the same
number of parameters) and random weights: speed does not depend on what the weights are.
"""

from __future__ import annotations

import argparse

import torch

from generate import measure_generation
from synaptorch.registry import model_class
from synaptorch.train.config import build_run_config

from common import emit, save_figure


def plot(results: dict, path: str) -> None:
    def draw(fig):
        latency, memory = fig.subplots(1, 2)
        for name, result in results.items():
            contexts = [int(c) for c in result["contexts"]]
            latency.plot(contexts, [v["ms_per_token"] for v in result["contexts"].values()], "o-", label=name)
            memory.plot(contexts, [v["rss_mib"] for v in result["contexts"].values()], "o-", label=name)
        for ax in (latency, memory):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("context length (tokens)")
        latency.set_ylabel("ms per new token (median)")
        memory.set_ylabel("resident memory (MiB)")
        latency.legend()
        fig.suptitle("generation cost against context length")

    save_figure(path, draw, size=(10, 4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", default="256,1024,4096,16384")
    parser.add_argument("--tokens", type=int, default=100, help="new tokens timed per context")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="contexts 256 and 1024, 20 tokens")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--plot", help="write latency and memory against context to this PNG")
    args = parser.parse_args()
    contexts = [256, 1024] if args.quick else [int(c) for c in args.contexts.split(",")]
    tokens, repeats = (20, 1) if args.quick else (args.tokens, args.repeats)

    results = {}
    for architecture in ("bdh", "gpt"):
        torch.manual_seed(0)
        model = model_class(architecture)(build_run_config("cpu-tiny", architecture=architecture).model)
        results[architecture] = measure_generation(model.to(args.device), contexts, tokens, repeats)
    if args.plot:
        plot(results, args.plot)
    emit("generation", {"results": results})


if __name__ == "__main__":
    main()
