"""Loss by position in contexts of 8,192 tokens: BDH trained on windows, BDH trained with its synapse
state carried across batches, and GPT.

    python benchmarks/long_context.py                          # 300 s per model and corpus
    python benchmarks/long_context.py --quick                  # 20 s each, contexts of 1,024
    python benchmarks/long_context.py --plot docs/long_context.png --samples samples.md
    python benchmarks/long_context.py --bdh-set 'state_decay=[0.96875, 0.984375, 0.9921875, 0.99609375]'

For each corpus (tiny Shakespeare and pydoc) three cpu-tiny models train for the same wall-clock
budget, their schedules following the clock: `bdh_window`, BDH on random 128-token windows (the
default training); `bdh_carried`, the same model with --carry-state (each batch row reads its
own stream, the synapse state carried from step to step and restarted every --context tokens);
`gpt`, GPT cpu-tiny on 128-token windows. `--bdh-set` changes the model of both BDH runs,
`--carried-set` the training of `bdh_carried` (`carry_shuffle=true`, `carry_reset=1024`). Then
the validation split is cut into documents of --context tokens, each read from its start. BDH
reads a document as one stream, in windows of 128 tokens with the state carried
(`synaptorch.train.streams.stream_losses`). GPT slides its own
window of 128 over it in strides of 64, so every position is scored with at least 64 tokens
before it (all of them below 128). The JSON line holds the mean loss (nats per token, bytes
here) in the position buckets 0-128, 128-512, 512-2k and 2k-8k, averaged over the corpora in
`models` and per corpus in `by_corpus`, and the targets: with carried state the 2k-8k loss at or
below the 0-128 loss, at least 0.1 below the window-trained model's 2k-8k loss, and the 0-128
loss no more than 0.02 above the window-trained model's. `--samples` writes a 2,000-byte sample
of each model of the first corpus, each from a fresh state.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from synaptorch.data.corpus import load_corpus
from synaptorch.data.tokenizer import load_tokenizer
from synaptorch.models.sampling import filter_logits
from synaptorch.train.streams import bucket_means, document_starts, stream_losses

from common import SHAKESPEARE, emit, parse_settings, save_figure, train_for_budget

EDGES = (0, 128, 512, 2048, 8192)
WINDOW = 128
MODELS = {  # name: (architecture, training overrides)
    "bdh_window": ("bdh", {}),
    "bdh_carried": ("bdh", {"carry_state": True}),
    "gpt": ("gpt", {}),
}


@torch.no_grad()
def sliding_losses(model, tokens: np.ndarray, doc_len: int, max_docs: int, stride: int = WINDOW // 2) -> np.ndarray:
    """Mean loss at each position of the documents, a window of WINDOW tokens sliding by `stride`:
    the first window scores all its positions, each later one its last `stride`."""
    model.eval()
    starts = document_starts(len(tokens), doc_len, max_docs * doc_len)
    docs = torch.from_numpy(np.stack([tokens[s : s + doc_len + 1].astype(np.int64) for s in starts]))
    total = np.zeros(doc_len)
    for end in range(WINDOW, doc_len + 1, stride):
        logits = model(docs[:, end - WINDOW : end])
        scored = slice(0, WINDOW) if end == WINDOW else slice(WINDOW - stride, WINDOW)
        targets = docs[:, end - WINDOW + 1 : end + 1]
        loss = F.cross_entropy(logits[:, scored].flatten(0, 1), targets[:, scored].flatten(), reduction="none")
        total[end - WINDOW + scored.start : end - WINDOW + scored.stop] += loss.view(len(docs), -1).sum(0).numpy()
    return total / len(docs)


@torch.no_grad()
def sample(model, tokenizer, n_bytes: int, seed: int, window: int | None) -> str:
    """A continuation of a newline from a fresh state; with `window`, the model sees only its last tokens."""
    generator = torch.Generator().manual_seed(seed)
    ids = tokenizer.encode("\n")
    state = None
    logits, state = (None, None) if window else model.forward_recurrent(torch.tensor([ids]), None)
    while len(tokenizer.decode(ids[1:]).encode()) < n_bytes:
        if window:
            logits = model(torch.tensor([ids[-window:]]))
        probs = torch.softmax(filter_logits(logits[0, -1], temperature=0.8, top_k=50), -1)
        token = int(torch.multinomial(probs, 1, generator=generator))
        ids.append(token)
        if not window:
            logits, state = model.forward_recurrent(torch.tensor([[token]]), state)
    return tokenizer.decode(ids[1:])


def plot(path: str, curves: dict[str, dict[str, np.ndarray]]) -> None:
    def draw(figure) -> None:
        axes = figure.subplots(1, len(curves), squeeze=False)[0]
        for ax, (corpus, by_model) in zip(axes, curves.items(), strict=True):
            for name, per_position in by_model.items():
                edges = np.unique(np.geomspace(1, len(per_position), 40).astype(int))
                centres = [(a + b) / 2 for a, b in itertools.pairwise(edges)]
                means = [per_position[a:b].mean() for a, b in itertools.pairwise(edges)]
                ax.plot(centres, means, label=name)
            ax.set(xscale="log", xlabel="position in the context", ylabel="loss (nats per token)", title=corpus)
            ax.axvline(WINDOW, color="grey", ls=":", lw=1)
            ax.legend(fontsize=8)

    save_figure(path, draw, size=(5 * len(curves), 4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=300.0, help="Seconds of training per model and corpus.")
    parser.add_argument("--context", type=int, default=8192, help="Tokens per document scored.")
    parser.add_argument("--max-docs", type=int, default=12, help="Documents scored per corpus.")
    parser.add_argument("--corpora", default=f"shakespeare={SHAKESPEARE},pydoc=pydoc")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--bdh-set", action="append", default=[], metavar="NAME=VALUE", help="A model setting of both BDH models."
    )
    parser.add_argument(
        "--carried-set", action="append", default=[], metavar="NAME=VALUE", help="A training setting of bdh_carried."
    )
    parser.add_argument("--quick", action="store_true", help="20 s per model, contexts of 1,024, 2 documents.")
    parser.add_argument("--plot", help="Write a PNG of loss against position.")
    parser.add_argument("--samples", help="Write a 2,000-byte sample of each model (first corpus) to this file.")
    args = parser.parse_args()
    if args.quick:
        args.budget, args.context, args.max_docs = 20.0, 1024, 2
    torch.set_num_threads(args.threads)
    corpora = dict(item.split("=", 1) for item in args.corpora.split(","))
    names = args.models.split(",")
    bdh_settings, _ = parse_settings(args.bdh_set)
    _, carried_settings = parse_settings(args.carried_set)

    by_corpus: dict[str, dict[str, dict[str, float]]] = {}
    training: dict[str, dict[str, dict]] = {}
    curves: dict[str, dict[str, np.ndarray]] = {}
    samples: dict[str, str] = {}
    tokenizer = load_tokenizer("bytes")
    with tempfile.TemporaryDirectory() as tmp:
        for c, (corpus_name, data) in enumerate(corpora.items()):
            val = load_corpus(data, tokenizer).split("val")
            by_corpus[corpus_name], training[corpus_name], curves[corpus_name] = {}, {}, {}
            for name in names:
                architecture, overrides = MODELS[name]
                if overrides.get("carry_state"):
                    overrides = {**overrides, "carry_reset": args.context, **carried_settings}
                out = Path(tmp) / f"{corpus_name}-{name}"
                model_settings = bdh_settings if architecture == "bdh" else {}
                trainer = train_for_budget(
                    out, args.budget, "cpu-tiny", architecture, data, model_settings, eval_interval=10**9, **overrides
                )
                model = trainer.model.eval()
                if architecture == "bdh":
                    per_position, _ = stream_losses(
                        model, val, args.context, WINDOW, 4, torch.device("cpu"), args.max_docs * args.context
                    )
                else:
                    per_position = sliding_losses(model, val, args.context, args.max_docs)
                curves[corpus_name][name] = per_position
                by_corpus[corpus_name][name] = {k: round(v, 4) for k, v in bucket_means(per_position, EDGES).items()}
                training[corpus_name][name] = {
                    "steps": trainer.step,
                    "tokens": trainer.tokens_seen,
                    "train_s": round(trainer.train_seconds, 1),
                    "precision": trainer.precision.name,
                }
                if c == 0 and args.samples:
                    window = WINDOW if architecture == "gpt" else None
                    samples[name] = sample(model, tokenizer, 2000, seed=0, window=window)

    buckets = list(next(iter(next(iter(by_corpus.values())).values())))
    models = {
        name: {b: round(float(np.mean([by_corpus[c][name][b] for c in by_corpus])), 4) for b in buckets}
        for name in names
    }
    record = {
        "budget_s": args.budget,
        "bdh_settings": args.bdh_set,
        "carried_settings": args.carried_set,
        "context": args.context,
        "max_docs": args.max_docs,
        "models": models,
        "by_corpus": by_corpus,
        "training": training,
    }
    if {"bdh_window", "bdh_carried"} <= set(names):
        carried, window, first, last = models["bdh_carried"], models["bdh_window"], buckets[0], buckets[-1]
        record["targets"] = {
            "carried_long_at_or_below_its_start": carried[last] <= carried[first],
            "carried_long_below_window_long_by_0.1": carried[last] <= window[last] - 0.1,
            "carried_start_within_0.02_of_window_start": carried[first] <= window[first] + 0.02,
        }
    if args.plot:
        plot(args.plot, curves)
    if args.samples:
        text = "".join(f"## {name}\n\n```text\n{s}\n```\n\n" for name, s in samples.items())
        Path(args.samples).write_text(text)
    emit("long_context", record)


if __name__ == "__main__":
    main()
