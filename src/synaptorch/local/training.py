"""Training and scoring the learning rules of `synaptorch.local` on image sets, with checkpoints.

A run folder holds `metrics.jsonl` (one record per epoch) and `checkpoint/`, a folder of
`config.json` (the rule, its config, the data and the result) and `model.safetensors` (every
parameter and buffer of the model). The rule's model learns with `train_batch` on shuffled
batches; nothing here computes a gradient, so whatever crosses or does not cross a layer is the
rule's own.

Peak training memory is measured the same way for every rule: `PeakTensorMemory` counts every
tensor allocated from the model's construction through its first `MEMORY_STEPS` batches
(parameters, gradients, optimiser state, activations, temporaries), not the data set. The
working memory is that peak less what the model keeps between batches (its parameters, buffers
and optimiser state): the memory that learning itself needs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor, nn
from tqdm import tqdm

from synaptorch.data.images import flat_images, load_image_rows, load_image_set
from synaptorch.errors import CheckpointError, ConfigError
from synaptorch.fields import check_values
from synaptorch.io import (
    atomic_write_text,
    check_run_folder,
    load_safetensors,
    make_folder,
    read_json,
    write_folder_atomically,
)
from synaptorch.local import RULES
from synaptorch.local.base import accuracy
from synaptorch.local.memory import MIB, PeakTensorMemory
from synaptorch.version import __version__

CHECKPOINT = "checkpoint"
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
METRICS = "metrics.jsonl"
FORMAT = "synaptorch-local"
MEMORY_STEPS = 3


@dataclass
class ImageSplits:
    """A data set as float rows in [0, 1] (N, D) with long labels (N,)."""

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor

    @property
    def n_inputs(self) -> int:
        return self.train_x.shape[1]

    @property
    def n_classes(self) -> int:
        return int(max(self.train_y.max(), self.test_y.max())) + 1


def load_splits(data: str | Path, train_limit: int | None = None) -> ImageSplits:
    """Both splits of a named image set or an IDX folder; `train_limit` keeps the first N training images."""
    if train_limit is not None and train_limit <= 0:
        raise ConfigError(f"the training subset must hold at least one image, got {train_limit}")
    train_x, train_y, test_x, test_y = load_image_rows(data)
    name = str(data) if not Path(data).exists() else str(Path(data).resolve())
    return ImageSplits(name, train_x[:train_limit], train_y[:train_limit], test_x, test_y)


def check_rule(rule: str) -> None:
    if rule not in RULES:
        raise ConfigError(f"unknown rule {rule!r}; choose {', '.join(RULES)}")


def make_config(rule: str, n_inputs: int, n_classes: int, overrides: dict | None = None) -> object:
    """The rule's config for data of this shape, with `overrides` (checked against its fields) applied."""
    check_rule(rule)
    config_class = RULES[rule].config_class
    values = check_values(config_class, dict(overrides or {}), f"{rule} config")
    return config_class(**{"n_inputs": n_inputs, "n_classes": n_classes, **_tuples(values)})


def _tuples(values: dict) -> dict:
    """Lists (of JSON, or of a command line) as the tuples that frozen configs hold."""
    return {name: tuple(value) if isinstance(value, list) else value for name, value in values.items()}


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    return list(torch.randperm(n, generator=generator).split(batch_size))


def _append(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def train_rule(
    rule: str,
    data: str | Path | ImageSplits = "fashion-mnist",
    out: str | Path | None = None,
    *,
    overrides: dict | None = None,
    train_limit: int | None = None,
    progress: bool = True,
) -> tuple[nn.Module, dict]:
    """Train `rule` (a key of `RULES`) on an image set; returns the model and the result record.

    `overrides` sets fields of the rule's config (its `epochs` and `batch_size` among them).
    The record holds `test_accuracy`, `train_seconds` (the batches only, no evaluation) and
    `peak_memory_mib`, with whatever the rule's model reports per epoch. With `out`, the run
    folder gets `metrics.jsonl` and the checkpoint; it is checked before any work.
    """
    check_rule(rule)
    out = check_run_folder(out) if out is not None else None
    splits = data if isinstance(data, ImageSplits) else load_splits(data, train_limit)
    config = make_config(rule, splits.n_inputs, splits.n_classes, overrides)
    metrics = None
    if out is not None:
        make_folder(out)
        metrics = out / METRICS
        atomic_write_text(metrics, "")
    shuffle = torch.Generator().manual_seed(config.seed)
    n_train = len(splits.train_x)
    batches_per_epoch = -(-n_train // config.batch_size)
    total = config.epochs * batches_per_epoch
    train_seconds, done = 0.0, 0
    memory = PeakTensorMemory()
    start = time.perf_counter()
    with memory:
        model = RULES[rule].model_class(config)
    train_seconds += time.perf_counter() - start
    bar = tqdm(total=total, desc=f"{rule} training", unit="batch", disable=not progress, leave=False)
    for epoch in range(config.epochs):
        sums: dict[str, float] = {}
        epoch_start = time.perf_counter()
        for index in _batches(n_train, config.batch_size, shuffle):
            x, y = splits.train_x[index], splits.train_y[index]
            if done < MEMORY_STEPS:
                with memory:
                    figures = model.train_batch(x, y, done / total)
            else:
                figures = model.train_batch(x, y, done / total)
            done += 1
            for key, value in figures.items():
                sums[key] = sums.get(key, 0.0) + value
            bar.update()
            if figures:
                bar.set_postfix({key: f"{value:.3g}" for key, value in list(figures.items())[:3]})
        seconds = time.perf_counter() - epoch_start
        train_seconds += seconds
        record = {"epoch": epoch + 1, "seconds": round(seconds, 2)}
        record.update({key: value / batches_per_epoch for key, value in sums.items()})
        if metrics is not None:
            _append(metrics, record)
    bar.close()
    model.eval()
    result = {
        "rule": rule,
        "data": splits.name,
        "train_images": n_train,
        "epochs": config.epochs,
        "test_accuracy": round(accuracy(model, splits.test_x, splits.test_y), 4),
        "train_seconds": round(train_seconds, 1),
        "peak_memory_mib": round(memory.peak_mib, 2),
        "working_memory_mib": round((memory.peak_bytes - persistent_bytes(model)) / MIB, 2),
        "threads": torch.get_num_threads(),
    }
    if out is not None:
        save_checkpoint(out / CHECKPOINT, rule, model, {"data": splits.name, "result": result})
        result["checkpoint"] = str(out / CHECKPOINT)
    return model, result


def persistent_bytes(model: nn.Module) -> int:
    """Bytes of what a model keeps between batches: parameters, buffers and the state of its optimisers."""
    tensors = list(model.state_dict().values())
    for value in vars(model).values():
        if isinstance(value, torch.optim.Optimizer):
            tensors += [t for state in value.state.values() for t in state.values() if isinstance(t, Tensor)]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def save_checkpoint(folder: str | Path, rule: str, model: nn.Module, extra: dict) -> Path:
    """`config.json` (the rule, its config, `extra`) and `model.safetensors`, written as one folder, atomically."""
    meta = {
        "format": FORMAT,
        "version": __version__,
        "rule": rule,
        "config": dataclasses.asdict(model.config),
        **extra,
    }

    def write(tmp: Path) -> None:
        save_file({name: t.detach().contiguous().cpu() for name, t in model.state_dict().items()}, tmp / WEIGHTS)
        (tmp / CONFIG).write_text(json.dumps(meta, indent=2) + "\n")

    return write_folder_atomically(folder, write)


def checkpoint_folder(path: str | Path) -> Path:
    """The checkpoint folder itself, or the one inside a run folder."""
    path = Path(path)
    if not (path / CONFIG).is_file() and (path / CHECKPOINT / CONFIG).is_file():
        return path / CHECKPOINT
    return path


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict]:
    """The model of a checkpoint (or run) folder, in eval mode, and its config.json; weights from safetensors only."""
    folder = checkpoint_folder(path)
    if not (folder / CONFIG).is_file():
        raise CheckpointError(f"checkpoint not found: no {CONFIG} in {folder}")
    meta = read_json(folder / CONFIG)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{folder} is not a checkpoint of a local learning rule (no format {FORMAT!r})")
    rule = meta.get("rule")
    if rule not in RULES:
        raise CheckpointError(f"{folder / CONFIG}: unknown rule {rule!r}")
    try:
        config_class = RULES[rule].config_class
        config = config_class(**_tuples(check_values(config_class, meta["config"], f"{folder / CONFIG}")))
        model = RULES[rule].model_class(config)
    except (KeyError, TypeError, ConfigError) as exc:
        raise CheckpointError(f"{folder / CONFIG} is damaged: {exc}") from None
    try:
        model.load_state_dict(load_safetensors(folder / WEIGHTS))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{folder / WEIGHTS} does not fit the model of {CONFIG}: {first}") from None
    return model.eval(), meta


def evaluate_checkpoint(path: str | Path, data: str | Path = "fashion-mnist") -> dict:
    """Test accuracy of a checkpoint on the test split of `data`, which must have the inputs it was trained on."""
    model, meta = load_checkpoint(path)
    images, labels = load_image_set(data, "test")
    x = flat_images(images)
    if x.shape[1] != model.config.n_inputs:
        raise ConfigError(
            f"--data {data} has {x.shape[1]} inputs per image; the model was trained on {model.config.n_inputs}"
        )
    if int(labels.max()) >= model.config.n_classes:
        raise ConfigError(
            f"--data {data} has label {int(labels.max())}; the model knows {model.config.n_classes} classes"
        )
    return {
        "rule": meta["rule"],
        "data": str(data),
        "test_images": len(x),
        "test_accuracy": round(accuracy(model, x, labels.long()), 4),
    }
