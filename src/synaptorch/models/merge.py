"""Merging BDH models by putting their neurons side by side (the BDH paper, section 7.1).

BDH's neurons are independent particles: a head's n neurons are n columns of Dx and of Dy and n
rows of E, and nothing else in the model is indexed by neuron. Models fine-tuned from one base
merge without training into a model whose heads hold the neurons of all of them:

    Dx_h = [Dx_h^(1) | Dx_h^(2) | ...]      (d, N_1 + N_2 + ...) per head
    Dy_h = [Dy_h^(1) | Dy_h^(2) | ...]
    E_h  = [E_h^(1) ; E_h^(2) ; ...]        (N_1 + N_2 + ..., d) per head
    embedding, readout = sum_i w_i * W^(i)   weights w_i summing to 1, equal by default

E is stored head-major, (n_head * N, d), so its rows are concatenated head by head: a plain
concatenation of the whole matrices would put the second model's neurons under the wrong heads.

Every neuron keeps the RoPE frequency it was trained with: a head's neurons are listed in the
merged config's `rope_blocks`, one block per source model (or several, for a source that was
itself merged), each rotated by its own ladder theta^(-2k/n) over its n neurons.

Two properties follow from the layer norms on the attention read and on the decoder output:
merging a model with itself gives its own logits (doubling every neuron doubles a and y, and the
layer norms cancel the factor, up to their epsilon, which matters only for activations far
smaller than a trained model's), and merging it with a model whose neurons never fire (Dx = 0)
does too (silent neurons add nothing to scores, to a or to y).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch

from synaptorch.errors import CheckpointError, ConfigError
from synaptorch.models.bdh import BDH, BDHConfig

# Settings that must agree: the merged model has one residual stream, vocabulary, depth, head
# layout and RoPE base, and each source's weights only make sense in its own.
MUST_AGREE = {
    "n_embd": "width d",
    "vocab_size": "vocabulary",
    "n_layer": "number of layers",
    "n_head": "number of heads",
    "rope_theta": "RoPE base",
    "state_decay": "fading of the synapse state",
}


def merge_weights(count: int, weights: Sequence[float] | None) -> list[float]:
    """The mixing weights of the shared tensors, normalised to sum to 1; equal by default."""
    if count < 2:
        raise ConfigError(f"merging needs at least two models, got {count}")
    if weights is None:
        return [1.0 / count] * count
    weights = [float(w) for w in weights]
    if len(weights) != count:
        raise ConfigError(f"--weights gives {len(weights)} weights for {count} models")
    if any(not w >= 0 for w in weights) or sum(weights) <= 0:
        raise ConfigError(f"--weights must be non-negative with a positive sum, got {weights}")
    total = sum(weights)
    return [w / total for w in weights]


def check_mergeable(configs: Sequence[BDHConfig], names: Sequence[str] | None = None) -> None:
    """Refuse models whose residual stream, vocabulary, depth, heads, RoPE base or state decay differ."""
    names = list(names) if names is not None else [f"model {i + 1}" for i in range(len(configs))]
    first = configs[0]
    for name, config in zip(names[1:], configs[1:], strict=True):
        for field, label in MUST_AGREE.items():
            if getattr(config, field) != getattr(first, field):
                raise ConfigError(
                    f"cannot merge: {names[0]} and {name} differ in {label} "
                    f"({field} {getattr(first, field)} and {getattr(config, field)})"
                )


def merged_config(configs: Sequence[BDHConfig]) -> BDHConfig:
    """The config of the merged model: the sources' neurons side by side, each block its ladder."""
    check_mergeable(configs)
    blocks = tuple(n for c in configs for n in c.rope_ladders)
    return dataclasses.replace(configs[0], n_neuron=sum(blocks), rope_blocks=blocks)


@torch.no_grad()
def merge(models: Sequence[BDH], weights: Sequence[float] | None = None) -> BDH:
    """One BDH holding the neurons of all `models`, its embedding and readout their weighted mean."""
    if not all(isinstance(m, BDH) for m in models):
        kinds = sorted({type(m).__name__ for m in models})
        raise ConfigError(f"only BDH models merge (their neurons are independent), got {', '.join(kinds)}")
    mix = merge_weights(len(models), weights)
    config = merged_config([m.config for m in models])
    nh, d = config.n_head, config.n_embd
    merged = BDH(config)
    merged.encoder_x.copy_(torch.cat([m.encoder_x.float() for m in models], dim=2))  # (nh, d, sum N)
    merged.encoder_y.copy_(torch.cat([m.encoder_y.float() for m in models], dim=2))
    per_head = [m.decoder.float().view(nh, m.config.n_neuron, d) for m in models]
    merged.decoder.copy_(torch.cat(per_head, dim=1).view(nh * config.n_neuron, d))  # head-major rows
    merged.embed.weight.copy_(sum(w * m.embed.weight.float() for w, m in zip(mix, models, strict=True)))
    merged.readout.copy_(sum(w * m.readout.float() for w, m in zip(mix, models, strict=True)))
    return merged


def neuron_origins(configs: Sequence[BDHConfig]) -> list[int]:
    """For each neuron of a head of the merged model, the index of the source model it came from."""
    return [i for i, c in enumerate(configs) for _ in range(c.n_neuron)]


def _load_source(path: Path, n_layer: int | None) -> tuple[BDH, str]:
    """A source's model and its tokenizer's identity: a checkpoint folder, or a reference .pt file."""
    from synaptorch.checkpoint import TOKENIZER, load_model, read_meta, resolve_checkpoint
    from synaptorch.models.reference import load_reference_checkpoint

    if path.is_file():
        if n_layer is None:
            raise ConfigError(f"{path} is a reference checkpoint, which does not record its depth: give --n-layer")
        return load_reference_checkpoint(path, n_layer=n_layer), "bytes"
    folder = resolve_checkpoint(path)
    meta = read_meta(folder)
    if meta["architecture"] != BDH.architecture:
        raise ConfigError(f"{folder} holds a {meta['architecture']} model; only BDH models merge")
    tokenizer = meta.get("tokenizer", "bytes")
    if (folder / TOKENIZER).is_file():
        tokenizer = hashlib.sha256((folder / TOKENIZER).read_bytes()).hexdigest()
    return load_model(folder), tokenizer


def merge_checkpoints(
    sources: Sequence[str | Path],
    out: str | Path,
    weights: Sequence[float] | None = None,
    n_layer: int | None = None,
) -> BDH:
    """Merge the BDH checkpoints (or reference .pt files) `sources` into the new checkpoint folder `out`."""
    from synaptorch.checkpoint import load_checkpoint_tokenizer, resolve_checkpoint, save_model

    out = Path(out)
    if out.exists():
        raise CheckpointError(f"{out} already exists; choose a new folder")
    paths = [Path(s) for s in sources]
    mix = merge_weights(len(paths), weights)
    loaded = [_load_source(p, n_layer) for p in paths]
    models = [model for model, _ in loaded]
    check_mergeable([m.config for m in models], [str(p) for p in paths])
    for path, (_, tokenizer) in zip(paths[1:], loaded[1:], strict=True):
        if tokenizer != loaded[0][1]:
            raise ConfigError(f"cannot merge: {paths[0]} and {path} use different tokenizers")
    merged = merge(models, mix)
    tokenizer = None if paths[0].is_file() else load_checkpoint_tokenizer(resolve_checkpoint(paths[0]))
    origins = [{"source": str(p.resolve()), "neurons": m.config.n_neuron} for p, m in zip(paths, models, strict=True)]
    save_model(merged, out, tokenizer=tokenizer, merged_from=origins, merge_weights=mix)
    return merged
