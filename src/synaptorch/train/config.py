"""Training configuration, named presets and TOML files.

Precedence, lowest first: the preset, the TOML file, command-line flags.
A TOML file has a `[model]` table (fields of the model config) and a `[train]` table
(fields of `TrainConfig`), and may name a preset with a top-level `preset = "..."`.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from synaptorch.errors import ConfigError
from synaptorch.models import MODELS


@dataclass(frozen=True)
class TrainConfig:
    data: str = "pydoc"
    tokenizer: str = "bytes"
    val_fraction: float = 0.1
    batch_size: int = 16
    block_size: int = 128
    grad_accum: int = 1
    max_steps: int = 1000
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0 disables clipping
    eval_interval: int = 200
    eval_tokens: int = 65536  # validation tokens per evaluation during training; 0 = all
    log_interval: int = 10
    keep_last: int = 2
    seed: int = 1337
    device: str = "auto"
    compile: bool = False
    max_time: float = 0.0  # seconds; stop early (with a checkpoint) once exceeded; 0 = no limit

    def __post_init__(self) -> None:
        positive = ("batch_size", "block_size", "grad_accum", "max_steps", "eval_interval", "log_interval", "keep_last")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("warmup_steps", "eval_tokens"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0 or not 0 <= self.min_lr <= self.lr:
            raise ConfigError(f"need lr > 0 and 0 <= min_lr <= lr, got lr={self.lr}, min_lr={self.min_lr}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.weight_decay < 0 or self.grad_clip < 0 or self.max_time < 0:
            raise ConfigError("weight_decay, grad_clip and max_time must be >= 0")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"device must be auto, cpu or cuda, got {self.device!r}")

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        return cls(**_checked(cls, values, "train"))

    def to_dict(self) -> dict:
        return asdict(self)


def _checked(cls, values: dict, section: str) -> dict:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown {section} setting(s): {', '.join(unknown)}")
    return values


DEFAULT_PRESET = "cpu-tiny"
PRESETS: dict[str, dict] = {
    # About ten minutes on a 2-core CPU; the main job of the README.
    "cpu-tiny": {
        "architecture": "bdh",
        "model": {"n_layer": 4, "n_embd": 128, "n_head": 4, "n_neuron": 256, "dropout": 0.0},
        "train": {"batch_size": 16, "block_size": 128, "max_steps": 1500, "lr": 3e-3, "min_lr": 3e-4},
    },
    # The configuration of the BDH paper: 25,296,896 parameters; wants a GPU.
    "paper-25m": {
        "architecture": "bdh",
        "model": {"n_layer": 6, "n_embd": 256, "n_head": 4, "n_neuron": 8192, "dropout": 0.1},
        "train": {
            "batch_size": 32,
            "block_size": 512,
            "max_steps": 3000,
            "lr": 1e-3,
            "min_lr": 1e-4,
            "weight_decay": 0.1,
        },
    },
}


@dataclass(frozen=True)
class RunConfig:
    architecture: str
    model: object  # the model's config dataclass
    train: TrainConfig


def build_run_config(
    preset: str | None = None,
    toml_path: str | Path | None = None,
    model_overrides: dict | None = None,
    train_overrides: dict | None = None,
    default_preset: str | None = None,
) -> RunConfig:
    """Merge preset, TOML file and overrides (None values are ignored) into validated configs.

    The preset is `preset`, else the TOML file's `preset`, else `default_preset`.
    """
    layers: list[dict] = []
    if toml_path is not None:
        toml = _read_toml(toml_path)
        preset = preset or toml.pop("preset", None)
        toml.pop("preset", None)
        extra = sorted(set(toml) - {"architecture", "model", "train"})
        if extra:
            raise ConfigError(f"{toml_path}: unknown table(s) {', '.join(extra)}; expected [model] and [train]")
        layers.append(toml)
    preset = preset or default_preset
    base = {"architecture": "bdh", "model": {}, "train": {}}
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        layers.insert(0, PRESETS[preset])
    layers.append(
        {
            "model": {k: v for k, v in (model_overrides or {}).items() if v is not None},
            "train": {k: v for k, v in (train_overrides or {}).items() if v is not None},
        }
    )
    for layer in layers:
        base["architecture"] = layer.get("architecture", base["architecture"])
        base["model"] = {**base["model"], **layer.get("model", {})}
        base["train"] = {**base["train"], **layer.get("train", {})}
    if base["architecture"] not in MODELS:
        raise ConfigError(f"unknown architecture {base['architecture']!r}; known: {', '.join(MODELS)}")
    config_class = MODELS[base["architecture"]].config_class
    model = config_class.from_dict(_checked(config_class, base["model"], "model"))
    return RunConfig(base["architecture"], model, TrainConfig.from_dict(base["train"]))


def with_vocab(run: RunConfig, vocab_size: int) -> RunConfig:
    return replace(run, model=replace(run.model, vocab_size=vocab_size))


def _read_toml(path: str | Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML in {path}: {exc}") from None
