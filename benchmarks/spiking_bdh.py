"""A trained BDH run with integrate-and-fire neurons against its ReLU neurons, for T steps per token.

    python benchmarks/spiking_bdh.py --checkpoint runs/bdh --plot docs/spiking_bdh.png
    python benchmarks/spiking_bdh.py --train-seconds 300     # train cpu-tiny on tiny Shakespeare first

For each T: next-token loss and accuracy on the data, agreement with the ReLU model's next token,
KL(ReLU || spiking), spikes per token, and the synaptic operations the spikes drive against the
multiply-accumulates the ReLU model spends on the same synapses (see src/synaptorch/models/spiking_bdh.py).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from synaptorch.checkpoint import load_for_inference, resolve_checkpoint
from synaptorch.data.corpus import load_corpus
from synaptorch.train.spiking import as_records, convert, evaluate_spiking, finetune_spiking, parse_time_steps

from common import SHAKESPEARE, emit, save_figure, train_for_budget


def plot(path: str, relu: dict, rows: list[dict]) -> None:
    steps = [r["steps"] for r in rows]

    def draw(figure) -> None:
        left, right = figure.subplots(1, 2)
        left.plot(steps, [r["agreement"] for r in rows], "o-", label="agreement with the ReLU model")
        left.plot(steps, [r["accuracy"] for r in rows], "s-", label="next-token accuracy")
        left.axhline(relu["accuracy"], color="grey", ls="--", label="ReLU model accuracy")
        left.set(xscale="log", xlabel="time steps per token T", ylim=(0, 1.02))
        left.legend(fontsize=8)
        right.plot(steps, [r["synaptic_ops_per_token"] for r in rows], "o-", label="spiking: synaptic operations")
        right.axhline(relu["macs_per_token"], color="grey", ls="--", label="ReLU: multiply-accumulates (dense)")
        right.axhline(relu["active_macs_per_token"], color="grey", ls=":", label="ReLU: active neurons only")
        right.set(xscale="log", yscale="log", xlabel="time steps per token T", ylabel="operations per token")
        right.legend(fontsize=8)

    save_figure(path, draw, size=(10, 4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="BDH checkpoint or run folder; without it, --train-seconds trains one.")
    parser.add_argument("--train-seconds", type=float, default=300, help="Budget of the cpu-tiny run on Shakespeare.")
    parser.add_argument("--data", help="Corpus to score.  [default: the one the checkpoint was trained on]")
    parser.add_argument("--steps", default="1,2,4,8,16,32,64,128")
    parser.add_argument("--max-tokens", type=int, default=16384, help="Validation tokens scored.")
    parser.add_argument("--calibration-tokens", type=int, default=4096)
    parser.add_argument("--percentile", type=float, default=99.9)
    parser.add_argument("--finetune-steps", type=int, default=0, help="Then train with spikes in the loop, and again.")
    parser.add_argument("--finetune-t", type=int, default=4)
    parser.add_argument("--plot", help="Write a PNG of agreement and operations against T.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.checkpoint:
            folder = resolve_checkpoint(args.checkpoint)
        else:
            folder = train_for_budget(tmp, args.train_seconds, data=SHAKESPEARE).last_checkpoint
        loaded = load_for_inference(folder, architecture="bdh")
        model, meta = loaded.model, loaded.meta
        data = args.data or meta["train"]["data"]
        corpus = load_corpus(data, loaded.tokenizer, meta["train"]["val_fraction"])
        train, val = corpus.split("train"), corpus.split("val")
        block_size, steps = loaded.block_size, parse_time_steps(args.steps)
        start = time.perf_counter()
        spiking = convert(model, train[: args.calibration_tokens], block_size, args.percentile)
        relu, results = evaluate_spiking(model, spiking, val, steps, block_size, max_tokens=args.max_tokens)
        seconds = time.perf_counter() - start
        finetuned = None
        if args.finetune_steps:
            start = time.perf_counter()
            losses = finetune_spiking(spiking, train, args.finetune_steps, args.finetune_t, block_size)
            _, after = evaluate_spiking(model, spiking, val, steps, block_size, max_tokens=args.max_tokens)
            finetuned = {
                "steps": args.finetune_steps,
                "t": args.finetune_t,
                "train_loss_first_last": [round(losses[0], 4), round(losses[-1], 4)],
                "spiking": as_records(relu, after)["spiking"],
                "seconds": round(time.perf_counter() - start, 1),
            }
    records = as_records(relu, results)
    if args.plot:
        plot(args.plot, records["relu"], records["spiking"])
    report = {
        "checkpoint": args.checkpoint or f"cpu-tiny trained {args.train_seconds:g} s on tiny Shakespeare",
        "data": str(data),
        "percentile": args.percentile,
        **records,
        "seconds": round(seconds, 1),
        "finetuned": finetuned,
    }
    emit("spiking_bdh", report)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
