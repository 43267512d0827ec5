"""Merging two specialists of one base, as the BDH paper's 7.1 does; prints one JSON line.

    python benchmarks/merge.py                       # the figures in the README (about 15 minutes)
    python benchmarks/merge.py --base-steps 100 --tune-steps 50 --joint-steps 20   # a quick look

A base BDH (cpu-tiny) learns the pydoc reference text; two copies of it continue, one on tiny
Shakespeare, one on the Python source of the standard library (`pystdlib`); `synaptorch merge`
puts their neurons side by side with no training. Every model is scored on the validation split
(the last 10%) of each corpus, in nats per byte. The merged model is then fine-tuned for
`--joint-steps` steps on the training text of both specialists, in equal parts, and scored again.

Targets, on each specialist's corpus: the merged model within 0.15 nats of that corpus's
specialist and closer to it than to the other specialist; after the joint fine-tune within 0.05.
The merged model's neuron graph G_x (analysis.graph) is split into Louvain communities, and the
record says how purely they follow the neurons' origin.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import SHAKESPEARE, emit

MERGED_WITHIN = 0.15
JOINT_WITHIN = 0.05
BASE = "pydoc"
SPECIALISTS = {"shakespeare": str(SHAKESPEARE), "python": "pystdlib"}


def train(out: Path, steps: int, **settings):
    """Train one run of the cpu-tiny preset; returns its last checkpoint."""
    from synaptorch.train.config import build_run_config
    from synaptorch.train.trainer import Trainer

    overrides = {"max_steps": steps, "eval_interval": steps, "eval_tokens": 16384, "warmup_steps": 50, **settings}
    run = build_run_config("cpu-tiny", train_overrides=overrides)
    trainer = Trainer(run, out, progress=False)
    try:
        trainer.fit()
    finally:
        trainer.close()
    return trainer.last_checkpoint


def joint_corpus(folder: Path, corpora: dict[str, str]) -> Path:
    """A folder corpus of the specialists' training text, equal parts of each: each corpus's first
    90% (its training split under the byte tokenizer), cut to the length of the shortest."""
    from synaptorch.data.corpus import read_corpus

    texts = {name: read_corpus(spec) for name, spec in corpora.items()}
    length = min(int(0.9 * len(t)) for t in texts.values())
    folder.mkdir()
    for name, text in texts.items():
        (folder / f"{name}.txt").write_bytes(text[:length])
    return folder


def scores(checkpoint: Path, corpora: dict[str, str], max_tokens: int) -> dict[str, float]:
    from synaptorch.inference import evaluate_checkpoint

    return {
        name: round(evaluate_checkpoint(checkpoint, spec, max_tokens=max_tokens, device="cpu")["loss"], 4)
        for name, spec in corpora.items()
    }


def origin_communities(checkpoint: Path, seed: int = 0) -> dict:
    """Louvain communities of the merged model's G_x graph, per head, against the neurons' origin."""
    from synaptorch.analysis.graph import communities_by_origin
    from synaptorch.checkpoint import load_model, read_meta

    model = load_model(checkpoint)
    sizes = [source["neurons"] for source in read_meta(checkpoint)["merged_from"]]
    origins = [i for i, n in enumerate(sizes) for _ in range(n)]
    return communities_by_origin(model, origins, seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-steps", type=int, default=1000)
    parser.add_argument("--tune-steps", type=int, default=500)
    parser.add_argument("--joint-steps", type=int, default=100)
    parser.add_argument("--tune-lr", type=float, default=1e-3, help="peak learning rate of the fine-tunes")
    parser.add_argument("--eval-tokens", type=int, default=65536, help="validation tokens per corpus (0: all)")
    parser.add_argument("--base", help="start from this base checkpoint instead of training one")
    parser.add_argument("--out", help="keep the runs here; default: a temporary folder")
    args = parser.parse_args()

    from synaptorch.models.merge import merge_checkpoints

    corpora = {BASE: BASE, **SPECIALISTS}
    tune = {"lr": args.tune_lr, "min_lr": args.tune_lr / 10}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        base = Path(args.base) if args.base else train(root / "base", args.base_steps, data=BASE)
        specialists = {
            name: train(root / name, args.tune_steps, data=spec, init_from=str(base), **tune)
            for name, spec in SPECIALISTS.items()
        }
        merged = root / "merged"
        merge_checkpoints(list(specialists.values()), merged)
        joint = train(
            root / "joint",
            args.joint_steps,
            data=str(joint_corpus(root / "joint-data", SPECIALISTS)),
            init_from=str(merged),
            warmup_steps=10,
            **tune,
        )
        models = {"base": base, **{f"{n}_specialist": c for n, c in specialists.items()}, "merged": merged}
        models["merged_joint"] = joint
        losses = {name: scores(ckpt, corpora, args.eval_tokens) for name, ckpt in models.items()}
        graph = origin_communities(merged)

    targets = {}
    for corpus, other in (("shakespeare", "python"), ("python", "shakespeare")):
        own, rival = losses[f"{corpus}_specialist"][corpus], losses[f"{other}_specialist"][corpus]
        merged_gap = losses["merged"][corpus] - own
        joint_gap = losses["merged_joint"][corpus] - own
        targets[corpus] = {
            "merged_minus_specialist": round(merged_gap, 4),
            "joint_minus_specialist": round(joint_gap, 4),
            "closer_to_own_specialist": abs(losses["merged"][corpus] - own) < abs(losses["merged"][corpus] - rival),
            "merged_met": merged_gap <= MERGED_WITHIN,
            "joint_met": joint_gap <= JOINT_WITHIN,
        }
    emit(
        "merge",
        {
            "steps": {
                "base": args.base or args.base_steps,
                "specialists": args.tune_steps,
                "joint": args.joint_steps,
            },
            "tune_lr": args.tune_lr,
            "eval_tokens": args.eval_tokens,
            "val_loss_nats_per_byte": losses,
            "targets": targets,
            "target_merged_within": MERGED_WITHIN,
            "target_joint_within": JOINT_WITHIN,
            "merged_graph": graph,
            "published": {"fr_en_merged": 0.40, "fr_en_french_specialist": 0.36, "fr_en_portuguese": 0.76},
        },
    )


if __name__ == "__main__":
    main()
