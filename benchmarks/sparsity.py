"""How sparsely BDH's neurons fire, and below which density one-token generation should use it.

    python benchmarks/sparsity.py --checkpoint runs/bdh         # density of a trained model too
    python benchmarks/sparsity.py --quick

- density: per layer, the share of neurons firing in x_sparse, in y_sparse and in their product,
  over the last --tokens bytes of the text (tiny Shakespeare's validation end by default).
- crossover: for one layer of generation at a few model widths, milliseconds per token of the
  dense step against the step that touches only active neurons, at controlled densities; the
  threshold is the highest density at which the sparse step is still faster.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from synaptorch.checkpoint import load_for_inference
from synaptorch.models.bdh import BDH, BDHConfig
from synaptorch.models.bdh_generation import _generation_layers
from synaptorch.models.layers import rope

from common import SHAKESPEARE, best_seconds, emit

WIDTHS = {"cpu-tiny": (4, 256, 128), "mid": (4, 2048, 256), "paper-25m": (4, 8192, 256)}  # heads, N, d
DENSITIES = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5)


def best_ms(fn, calls: int) -> float:
    return 1e3 * best_seconds({"fn": fn}, rounds=3, calls=calls)["fn"]


def layer_density(checkpoint: str, text: str, tokens: int) -> list[dict]:
    loaded = load_for_inference(checkpoint, architecture="bdh")
    ids = loaded.tokenizer.encode(text)[-tokens:]
    activity = loaded.model.neuron_density(torch.tensor([ids]))
    return [{"layer": i, **{k: round(v, 4) for k, v in layer.items()}} for i, layer in enumerate(activity)]


@torch.no_grad()
def crossover(heads: int, neurons: int, width: int, calls: int) -> dict:
    torch.manual_seed(0)
    model = BDH(BDHConfig(n_layer=1, n_embd=width, n_head=heads, n_neuron=neurons, dropout=0.0)).eval()
    rho = torch.randn(1, heads, neurons, width) * 0.01
    x = F.layer_norm(torch.randn(1, width), (width,))
    phasors = model._phasors_at(100, "cpu")
    encoder_x, weights = model._encoder_x_flat(), (model.encoder_y, model.decoder)
    dense = best_ms(lambda: _generation_layers(x, phasors, [rho], encoder_x, *weights), calls)
    rows = []
    for density in DENSITIES:
        mask = torch.rand(heads * neurons) < density

        def sparse(mask=mask) -> None:
            x_sparse = F.relu(x @ encoder_x) * mask
            model._sparse_neurons(x[0], x_sparse[0], rope(x_sparse, phasors)[0], rho[0])

        rows.append({"density": density, "dense_ms": round(dense, 3), "sparse_ms": round(best_ms(sparse, calls), 3)})
    faster = [r["density"] for r in rows if r["sparse_ms"] < r["dense_ms"]]
    return {"heads": heads, "neurons": neurons, "width": width, "rows": rows, "sparse_below": max(faster, default=0.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="checkpoint or run folder whose neuron density to measure")
    parser.add_argument("--data", default=str(SHAKESPEARE))
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--quick", action="store_true", help="fewer timed calls, two widths")
    args = parser.parse_args()

    record: dict = {}
    if args.checkpoint:
        with open(args.data, encoding="utf-8", errors="replace") as f:
            text = f.read()
        record["checkpoint"] = args.checkpoint
        record["density"] = layer_density(args.checkpoint, text, args.tokens)
    widths = dict(list(WIDTHS.items())[:2]) if args.quick else WIDTHS
    calls = 5 if args.quick else 20
    record["crossover"] = {name: crossover(*shape, calls=calls) for name, shape in widths.items()}
    emit("sparsity", record)


if __name__ == "__main__":
    main()
