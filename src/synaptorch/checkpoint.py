"""Checkpoint folders: `config.json` + `model.safetensors` (+ `trainer.pt`) (+ `tokenizer.json`).

Folders are written through `synaptorch.io.write_folder_atomically`, so a crash or a bad input
never leaves a half-written checkpoint or destroys an existing one. Nothing is unpickled:
weights come from safetensors and trainer state is read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from synaptorch.data.tokenizer import BYTES, ByteTokenizer, HFTokenizer, Tokenizer, load_tokenizer
from synaptorch.errors import CheckpointError, ConfigError, DataError
from synaptorch.io import load_safetensors, load_torch_state, read_json, write_folder_atomically
from synaptorch.registry import ARCHITECTURES, model_class
from synaptorch.version import __version__

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
TRAINER = "trainer.pt"
TOKENIZER = "tokenizer.json"
STEP_PREFIX = "step-"
METRICS = "metrics.jsonl"
# The window length inference uses for a checkpoint saved without a training config
# (`save_pretrained`, `convert`): the block size of the default training preset.
DEFAULT_BLOCK_SIZE = 128


def _write_model_files(
    folder: Path, model: nn.Module, tokenizer: Tokenizer | None, extra: dict, weights: dict[str, Tensor] | None = None
) -> None:
    tokenizer = tokenizer or ByteTokenizer()
    meta = {
        "synaptorch_version": __version__,
        "architecture": model.architecture,
        "model": model.config.to_dict(),
        "tokenizer": tokenizer.name,
        **extra,
    }
    if isinstance(tokenizer, HFTokenizer):
        shutil.copyfile(tokenizer.path, folder / TOKENIZER)
    weights = model.state_dict() if weights is None else weights
    tensors = {name: t.detach().contiguous().cpu() for name, t in weights.items()}
    save_file(tensors, folder / WEIGHTS)
    (folder / CONFIG).write_text(json.dumps(meta, indent=2) + "\n")


def save_model(
    model: nn.Module,
    folder: str | Path,
    tokenizer: Tokenizer | None = None,
    trainer_state: dict | None = None,
    weights: dict[str, Tensor] | None = None,
    **extra,
) -> Path:
    """Write a checkpoint folder atomically and durably; `extra` goes into config.json.

    `weights` replaces the model's own state dict, as the gathered weights of a sharded model do.
    """

    def write(tmp: Path) -> None:
        _write_model_files(tmp, model, tokenizer, extra, weights)
        if trainer_state is not None:
            torch.save(trainer_state, tmp / TRAINER)

    return write_folder_atomically(folder, write)


def read_meta(folder: str | Path) -> dict:
    """The config.json of a checkpoint folder, checked to name a known architecture."""
    folder = Path(folder)
    path = folder / CONFIG
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint not found: {folder}")
    if not path.is_file():
        raise CheckpointError(f"{folder} is not a synaptorch checkpoint (no {CONFIG})")
    meta = read_json(path)
    if not isinstance(meta, dict) or "architecture" not in meta or "model" not in meta:
        raise CheckpointError(f"{path} is not a synaptorch config (no architecture/model)")
    if meta["architecture"] not in ARCHITECTURES:
        raise CheckpointError(
            f"{folder} holds a {meta['architecture']!r} model; known: {', '.join(sorted(ARCHITECTURES))}"
        )
    return meta


def load_model(folder: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """The model of a checkpoint folder (or of a run folder's latest checkpoint), on `map_location`."""
    folder = resolve_checkpoint(folder)
    meta = read_meta(folder)
    cls = model_class(meta["architecture"])
    try:
        config = cls.config_class.from_dict(meta["model"])
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{folder / CONFIG}: {exc}") from None
    if not (folder / WEIGHTS).is_file():
        raise CheckpointError(f"{folder} has no {WEIGHTS}")
    tensors = load_safetensors(folder / WEIGHTS)
    model = cls(config)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in tensors.items()}
    if expected != found:
        raise CheckpointError(f"{folder / WEIGHTS} does not match {CONFIG}: {_describe_mismatch(expected, found)}")
    model.load_state_dict(tensors)
    return model.to(map_location)


def _describe_mismatch(expected: dict, found: dict) -> str:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        return f"missing {missing[:3]}, unexpected {unexpected[:3]}"
    name = next(n for n in expected if expected[n] != found[n])
    return f"{name} has shape {found[name]}, expected {expected[name]}"


def load_checkpoint_tokenizer(folder: str | Path) -> Tokenizer:
    folder = resolve_checkpoint(folder)
    name = read_meta(folder).get("tokenizer", BYTES)
    return load_tokenizer(BYTES if name == BYTES else folder / TOKENIZER)


def load_trainer_state(folder: str | Path) -> dict:
    path = Path(folder) / TRAINER
    if not path.is_file():
        raise CheckpointError(f"{folder} has no {TRAINER}; it cannot be resumed")
    return load_torch_state(path)


@dataclass
class LoadedCheckpoint:
    """A checkpoint ready for inference: its model in eval mode, tokenizer and window length."""

    folder: Path
    meta: dict
    model: nn.Module
    tokenizer: Tokenizer
    block_size: int  # the training block size, else DEFAULT_BLOCK_SIZE

    @property
    def architecture(self) -> str:
        return self.meta["architecture"]


def load_for_inference(
    path: str | Path,
    device: str | torch.device = "cpu",
    tokenizer: str | Path | None = None,
    architecture: str | None = None,
) -> LoadedCheckpoint:
    """Load a checkpoint (or a run folder's latest) for generation, evaluation or analysis.

    `tokenizer` replaces the checkpoint's own; `architecture` refuses any other. The model's
    vocabulary must match the tokenizer's.
    """
    folder = resolve_checkpoint(path)
    meta = read_meta(folder)
    if architecture is not None and meta["architecture"] != architecture:
        raise ConfigError(f"{folder} holds a {meta['architecture']} model; this needs {architecture}")
    model = load_model(folder, map_location=device).eval()
    tok = load_tokenizer(tokenizer) if tokenizer is not None else load_checkpoint_tokenizer(folder)
    check_vocab(model, tok)
    block_size = meta.get("train", {}).get("block_size", DEFAULT_BLOCK_SIZE)
    return LoadedCheckpoint(folder, meta, model, tok, block_size)


def check_vocab(model: nn.Module, tokenizer: Tokenizer) -> None:
    if model.config.vocab_size != tokenizer.vocab_size:
        raise DataError(
            f"vocabulary mismatch: the model has {model.config.vocab_size} tokens, the tokenizer {tokenizer.vocab_size}"
        )


def step_checkpoints(run_folder: str | Path) -> list[Path]:
    """The finished `step-NNNNNNN` checkpoints of a run, oldest first."""
    run_folder = Path(run_folder)
    if not run_folder.is_dir():
        return []
    found = [p for p in run_folder.iterdir() if p.name.startswith(STEP_PREFIX) and (p / CONFIG).is_file()]
    return sorted(found, key=lambda p: p.name)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder itself, or a run folder, meaning its latest checkpoint."""
    path = Path(path)
    if (path / CONFIG).is_file():
        return path
    steps = step_checkpoints(path)
    if steps:
        return steps[-1]
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    raise CheckpointError(f"{path} is not a synaptorch checkpoint (no {CONFIG})")


def describe_checkpoint(path: str | Path) -> dict[str, str]:
    """What `synaptorch info` prints: the folder, config, parameter count and training state."""
    folder = resolve_checkpoint(path)
    meta = read_meta(folder)
    model = load_model(folder)
    info = {
        "checkpoint": str(folder),
        "architecture": meta["architecture"],
        "parameters": f"{sum(p.numel() for p in model.parameters()):,}",
        "tokenizer": meta.get("tokenizer", BYTES),
    }
    info.update({f"model.{key}": str(value) for key, value in meta["model"].items()})
    if "step" in meta:
        corpus = meta.get("corpus", {})
        info["step"] = str(meta["step"])
        info["tokens seen"] = f"{meta.get('tokens_seen', 0):,}"
        info["corpus"] = f"{corpus.get('name', '?')} (sha256 {corpus.get('sha256', '?')[:12]})"
        info["resumable"] = "yes" if (folder / TRAINER).is_file() else "no"
    evals = [r for r in read_metrics(folder.parent) if "val_loss" in r and r["step"] <= meta.get("step", 0)]
    if evals:
        info["val loss"] = f"{evals[-1]['val_loss']:.4f} nats/token at step {evals[-1]['step']}"
    return info


def read_metrics(run_folder: str | Path) -> list[dict]:
    """The records of a run's metrics.jsonl, skipping a line that a crash cut short."""
    path = Path(run_folder) / METRICS
    records = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
