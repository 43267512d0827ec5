"""Single-shot image-symbol association (the H-Mem paper's first task) on Fashion-MNIST: H-Mem
against an LSTM, trained and tested at each delay.

    python benchmarks/association.py                      # delays 0, 10, 40; 6 to 16 min on 2 shared CPU cores
    python benchmarks/association.py --quick              # delays 0 and 40, short runs, about 2 min
    python benchmarks/association.py --steps 3000 --delays 0,40 --data FOLDER
    python benchmarks/association.py --threads 1          # faster where other jobs share the cores

Needs Fashion-MNIST: the Debian package dataset-fashion-mnist, or --data with a folder of its four
IDX files. First an image encoder is fitted to the classes of the training images, then frozen
and shared by both models (`synaptorch.memory.association`). For each delay, H-Mem and the LSTM
start from the same seed and train on the same fresh sequences of training images, then are
tested on the same sequences of test images. As in the reference code, each delay is a model
of its own. Target: H-Mem loses at most 5 points of accuracy from delay 0 to delay 40.
"""

from __future__ import annotations

import argparse
import time

import torch

from synaptorch.data.images import load_fashion_mnist
from synaptorch.memory.association import (
    AssociationTask,
    AssociationTrainConfig,
    HMemAssociation,
    ImageEncoder,
    LSTMAssociation,
    evaluate_association,
    pretrain_encoder,
    train_association,
)

from common import emit

MODELS = {"hmem": HMemAssociation, "lstm": LSTMAssociation}
TARGET_DROP = 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--delays", default="0,10,40", help="noise frames after each pair, comma-separated")
    parser.add_argument("--steps", type=int, default=1000, help="training batches per model and delay")
    parser.add_argument("--test-sequences", type=int, default=1000, help="test sequences per model and delay")
    parser.add_argument("--encoder-steps", type=int, default=1000, help="batches of 128 images to fit the encoder")
    parser.add_argument("--data", default=None, help="folder of the Fashion-MNIST IDX files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="delays 0 and 40, 60 steps, 300 test sequences")
    args = parser.parse_args()
    if args.quick:
        args.delays, args.steps, args.test_sequences, args.encoder_steps = "0,40", 60, 300, 200
    delays = [int(d) for d in args.delays.split(",")]
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    start = time.perf_counter()
    train_images, train_labels = load_fashion_mnist("train", args.data)
    test_images, test_labels = load_fashion_mnist("test", args.data)
    torch.manual_seed(args.seed)
    encoder = ImageEncoder()
    head = pretrain_encoder(encoder, train_images, train_labels, args.encoder_steps, seed=args.seed)
    encoder.requires_grad_(False)
    with torch.no_grad():
        predicted = head(encoder(test_images.float().unsqueeze(1) / 255)).argmax(-1)
    encoder_accuracy = (predicted == test_labels).float().mean().item()
    encoder_s = time.perf_counter() - start
    print(f"encoder: {args.encoder_steps} steps, {encoder_s:.1f} s, test accuracy {encoder_accuracy:.4f}", flush=True)

    config = AssociationTrainConfig()
    accuracy: dict[str, dict[str, float]] = {name: {} for name in MODELS}
    train_s: dict[str, dict[str, float]] = {name: {} for name in MODELS}
    for delay in delays:
        for name, model_class in MODELS.items():
            torch.manual_seed(args.seed)
            model = model_class(encoder)
            task = AssociationTask(train_images, train_labels, delay=delay, seed=args.seed)
            begin = time.perf_counter()
            losses = train_association(model, task, args.steps, config)
            train_s[name][str(delay)] = round(time.perf_counter() - begin, 1)
            test_task = AssociationTask(test_images, test_labels, delay=delay)
            accuracy[name][str(delay)] = evaluate_association(model, test_task, args.test_sequences, seed=args.seed)
            print(
                f"delay {delay:3d} {name}: final loss {sum(losses[-20:]) / len(losses[-20:]):.3f}, "
                f"test accuracy {accuracy[name][str(delay)]:.4f}, {train_s[name][str(delay)]} s",
                flush=True,
            )

    record = {
        "task": f"3 pairs, delays {delays}, Fashion-MNIST",
        "steps": args.steps,
        "batch_size": config.batch_size,
        "test_sequences": args.test_sequences,
        "encoder_steps": args.encoder_steps,
        "encoder_test_accuracy": round(encoder_accuracy, 4),
        "accuracy": accuracy,
        "train_s": train_s,
    }
    if {0, 40} <= set(delays):
        drop = accuracy["hmem"]["0"] - accuracy["hmem"]["40"]
        record |= {"hmem_drop_0_to_40": round(drop, 4), "target_drop": TARGET_DROP, "target_met": drop <= TARGET_DROP}
    record["total_s"] = round(time.perf_counter() - start, 1)
    emit("association", record)


if __name__ == "__main__":
    main()
