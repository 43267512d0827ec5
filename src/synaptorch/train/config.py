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
from synaptorch.registry import ARCHITECTURES, model_class


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
    recompute: bool = False  # recompute each layer in the backward pass instead of storing it
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


DEFAULT_ARCHITECTURE = "bdh"
DEFAULT_PRESET = "cpu-tiny"

_CPU_TRAIN = {"batch_size": 16, "block_size": 128, "max_steps": 1500, "lr": 3e-3, "min_lr": 3e-4}
_GPU_TRAIN = {"batch_size": 32, "block_size": 512, "max_steps": 3000, "lr": 1e-3, "min_lr": 1e-4}

# Presets per architecture. A GPT preset named like a BDH one has about the same number of
# parameters; the `-flops` one has about the same training FLOPs per token at the preset's block
# size (BDH reuses its weights in every layer, so equal parameters mean unequal compute).
PRESETS: dict[str, dict[str, dict]] = {
    "bdh": {
        # About ten minutes on a 2-core CPU; the main job of the README. 458,752 parameters.
        "cpu-tiny": {
            "model": {"n_layer": 4, "n_embd": 128, "n_head": 4, "n_neuron": 256, "dropout": 0.0},
            "train": _CPU_TRAIN,
        },
        # The configuration of the BDH paper: 25,296,896 parameters; wants a GPU.
        "paper-25m": {
            "model": {"n_layer": 6, "n_embd": 256, "n_head": 4, "n_neuron": 8192, "dropout": 0.1},
            "train": _GPU_TRAIN,
        },
    },
    "gpt": {
        # 467,808 parameters (BDH cpu-tiny: 458,752).
        "cpu-tiny": {"model": {"n_layer": 4, "n_embd": 96, "n_head": 4, "dropout": 0.0}, "train": _CPU_TRAIN},
        # 3.90 MFLOP per token forward at 128 tokens (BDH cpu-tiny: 4.00); 1.8M parameters.
        "cpu-tiny-flops": {"model": {"n_layer": 9, "n_embd": 128, "n_head": 4, "dropout": 0.0}, "train": _CPU_TRAIN},
        # 25.3M parameters (BDH paper-25m: 25.3M).
        "paper-25m": {"model": {"n_layer": 8, "n_embd": 512, "n_head": 8, "dropout": 0.1}, "train": _GPU_TRAIN},
        # 394 MFLOP per token forward at 512 tokens (BDH paper-25m: 406); 189M parameters.
        "paper-25m-flops": {
            "model": {"n_layer": 15, "n_embd": 1024, "n_head": 16, "dropout": 0.1},
            "train": _GPU_TRAIN,
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
    architecture: str | None = None,
) -> RunConfig:
    """Merge preset, TOML file and overrides (None values are ignored) into validated configs.

    The architecture is `architecture`, else the TOML file's, else bdh. The preset is `preset`,
    else the TOML file's `preset`, else `default_preset`.
    """
    toml: dict = {}
    if toml_path is not None:
        toml = _read_toml(toml_path)
        extra = sorted(set(toml) - {"preset", "architecture", "model", "train"})
        if extra:
            raise ConfigError(f"{toml_path}: unknown table(s) {', '.join(extra)}; expected [model] and [train]")
    architecture = architecture or toml.get("architecture", DEFAULT_ARCHITECTURE)
    if architecture not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}")
    preset = preset or toml.get("preset") or default_preset
    layers: list[dict] = []
    if preset is not None:
        if preset not in PRESETS[architecture]:
            known = ", ".join(PRESETS[architecture])
            raise ConfigError(f"unknown preset {preset!r} for {architecture}; known: {known}")
        layers.append(PRESETS[architecture][preset])
    layers.append(toml)
    layers.append(
        {
            "model": {k: v for k, v in (model_overrides or {}).items() if v is not None},
            "train": {k: v for k, v in (train_overrides or {}).items() if v is not None},
        }
    )
    model: dict = {}
    train: dict = {}
    for layer in layers:
        model.update(layer.get("model", {}))
        train.update(layer.get("train", {}))
    config_class = model_class(architecture).config_class
    model_config = config_class.from_dict(_checked(config_class, model, "model"))
    return RunConfig(architecture, model_config, TrainConfig.from_dict(train))


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
