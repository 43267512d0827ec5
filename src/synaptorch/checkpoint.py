"""Checkpoint folders: `config.json` + `model.safetensors` (+ `trainer.pt`) (+ `tokenizer.json`).

Folders are written under a temporary name and renamed into place, so a crash or a bad input
never leaves a half-written checkpoint or destroys an existing one. Nothing is unpickled:
weights come from safetensors and trainer state is read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from synaptorch import __version__
from synaptorch.data.tokenizer import BYTES, ByteTokenizer, HFTokenizer, load_tokenizer
from synaptorch.errors import CheckpointError, ConfigError
from synaptorch.models import MODELS

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
TRAINER = "trainer.pt"
TOKENIZER = "tokenizer.json"
STEP_PREFIX = "step-"


def check_folder_path(folder: str | Path, option: str) -> None:
    """Refuse, before any work is done, a path that cannot become a folder: it or a parent is a file."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{option} {folder} exists and is not a folder")
    blocking = next((p for p in folder.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise ConfigError(f"{option} {folder} cannot be made: {blocking} is a file")


def write_folder_atomically(folder: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_folder)` and then move the finished folder to `folder`.

    An existing `folder` is replaced only after the new one is complete.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write(tmp)
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old{os.getpid()}")
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _write_model_files(
    folder: Path, model: nn.Module, tokenizer: ByteTokenizer | HFTokenizer | None, extra: dict
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
    tensors = {name: t.detach().contiguous().cpu() for name, t in model.state_dict().items()}
    save_file(tensors, folder / WEIGHTS)
    (folder / CONFIG).write_text(json.dumps(meta, indent=2) + "\n")


def save_model(
    model: nn.Module,
    folder: str | Path,
    tokenizer: ByteTokenizer | HFTokenizer | None = None,
    trainer_state: dict | None = None,
    **extra,
) -> Path:
    """Write a checkpoint folder atomically; `extra` goes into config.json."""

    def write(tmp: Path) -> None:
        _write_model_files(tmp, model, tokenizer, extra)
        if trainer_state is not None:
            torch.save(trainer_state, tmp / TRAINER)

    return write_folder_atomically(folder, write)


def read_meta(folder: str | Path) -> dict:
    folder = Path(folder)
    path = folder / CONFIG
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint not found: {folder}")
    if not path.is_file():
        raise CheckpointError(f"{folder} is not a synaptorch checkpoint (no {CONFIG})")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"corrupt {path}: {exc}") from None
    if not isinstance(meta, dict) or "architecture" not in meta or "model" not in meta:
        raise CheckpointError(f"{path} is not a synaptorch config (no architecture/model)")
    if meta["architecture"] not in MODELS:
        raise CheckpointError(f"{folder} holds a {meta['architecture']!r} model; known: {', '.join(sorted(MODELS))}")
    return meta


def load_model(folder: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    folder = resolve_checkpoint(folder)
    meta = read_meta(folder)
    model_class = MODELS[meta["architecture"]]
    try:
        config = model_class.config_class.from_dict(meta["model"])
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{folder / CONFIG}: {exc}") from None
    try:
        tensors = load_file(folder / WEIGHTS)
    except FileNotFoundError:
        raise CheckpointError(f"{folder} has no {WEIGHTS}") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"corrupt or truncated {folder / WEIGHTS}: {exc}") from None
    model = model_class(config)
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


def load_checkpoint_tokenizer(folder: str | Path) -> ByteTokenizer | HFTokenizer:
    folder = resolve_checkpoint(folder)
    name = read_meta(folder).get("tokenizer", BYTES)
    return load_tokenizer(BYTES if name == BYTES else folder / TOKENIZER)


def load_trainer_state(folder: str | Path) -> dict:
    path = Path(folder) / TRAINER
    if not path.is_file():
        raise CheckpointError(f"{folder} has no {TRAINER}; it cannot be resumed")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        raise CheckpointError(f"corrupt or untrusted {path}: {type(exc).__name__}") from None


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
