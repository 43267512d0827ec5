"""Training configuration, named presets and TOML files.

Precedence, lowest first: the preset, the TOML file, command-line flags.
A TOML file has a `[model]` table (fields of the model config) and a `[train]` table
(fields of `TrainConfig`), and may name a preset with a top-level `preset = "..."`.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from synaptorch.device import check_device_spec, check_precision_spec
from synaptorch.errors import ConfigError
from synaptorch.fields import check_positive_ints, check_values, setting
from synaptorch.registry import ARCHITECTURES, model_class

SCHEDULES = ("cosine", "linear")


@dataclass(frozen=True)
class TrainConfig:
    data: str = setting("pydoc", "Corpus: pydoc or pystdlib (embedded), shakespeare, a text file or a folder of them.")
    tokenizer: str = setting("bytes", "'bytes' or a tokenizer.json file.")
    val_fraction: float = setting(0.1, "Share of the corpus (its end) kept for validation.")
    batch_size: int = setting(16, "Sequences per micro-batch.")
    block_size: int = setting(128, "Tokens per training sequence.")
    grad_accum: int = setting(1, "Micro-batches per optimizer step.")
    max_steps: int = setting(1000, "Optimizer steps; the cosine schedule ends here.", on_resume=True)
    lr: float = setting(3e-3, "Peak learning rate.")
    min_lr: float = setting(3e-4, "Learning rate at the end of the cosine decay.")
    warmup_steps: int = setting(100, "Linear warm-up steps.")
    schedule: str = setting("cosine", "Decay after the warm-up, from lr to min_lr at max_steps: cosine or linear.")
    weight_decay: float = setting(0.1, "AdamW weight decay of matrices.")
    beta1: float = setting(0.9, "AdamW beta1.")
    beta2: float = setting(0.95, "AdamW beta2.")
    grad_clip: float = setting(1.0, "Clip the gradient norm to this (0: off).")
    agc: float = setting(
        0.0, "Adaptive gradient clipping: clip each unit's gradient to this ratio of its weight norm (0: off)."
    )
    carry_state: bool = setting(
        False, "BDH: each batch row reads its own stream and carries its synapse state from step to step."
    )
    carry_reset: int = setting(
        8192, "With --carry-state: a row's synapse state restarts every this many tokens (0: at its stream's end)."
    )
    carry_shuffle: bool = setting(
        False,
        "With --carry-state: rows read the documents of --carry-reset tokens in an order drawn from the seed, "
        "each document whole, instead of the text's order.",
    )
    detach_kv: bool = setting(False, "BDH: no backpropagation through the attention's keys and values.")
    eval_interval: int = setting(200, "Evaluate and save a checkpoint every K steps.", on_resume=True)
    eval_tokens: int = setting(65536, "Validation tokens per evaluation (0: the whole split).", on_resume=True)
    log_interval: int = setting(10, "Write train loss to metrics.jsonl every K steps.", on_resume=True)
    keep_last: int = setting(2, "Checkpoints kept in the run folder.", on_resume=True)
    seed: int = setting(1337, "Seed of weights, dropout and data order.")
    device: str = setting("auto", "auto, cpu, cuda, cuda:N or mps (bf16 autocast on CUDA where supported).", True)
    precision: str = setting(
        "auto",
        "auto, fp32, bf16 or fp16 (CUDA, with a scaled loss): the autocast of the forward pass; auto takes bf16 "
        "where it is faster (CUDA with bf16; a CPU with AVX512-BF16 or AMX, timed), fp16 on older GPUs.",
        on_resume=True,
    )
    compile: bool = setting(False, "torch.compile the model.", on_resume=True)
    recompute: bool = setting(False, "Recompute layers in the backward pass: less memory, more time.", True)
    fsdp: bool = setting(
        False, "With several processes, shard weights, gradients and optimizer state among them (FSDP2).", True
    )
    max_time: float = setting(0.0, "Stop after this many seconds, with a checkpoint (0: no limit).", on_resume=True)
    time_schedule: bool = setting(
        False, "With --max-time: the decay ends at --max-time seconds, not at --max-steps (a wall-clock budget)."
    )
    init_from: str | None = setting(
        None, "Fine-tune: start from this checkpoint's weights, model and tokenizer, with a fresh optimizer."
    )

    def __post_init__(self) -> None:
        positive = ("batch_size", "block_size", "grad_accum", "max_steps", "eval_interval", "log_interval", "keep_last")
        check_positive_ints(self, positive)
        for name in ("warmup_steps", "eval_tokens", "carry_reset"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0 or not 0 <= self.min_lr <= self.lr:
            raise ConfigError(f"need lr > 0 and 0 <= min_lr <= lr, got lr={self.lr}, min_lr={self.min_lr}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.weight_decay < 0 or self.grad_clip < 0 or self.agc < 0 or self.max_time < 0:
            raise ConfigError("weight_decay, grad_clip, agc and max_time must be >= 0")
        if self.time_schedule and not self.max_time:
            raise ConfigError("time_schedule follows --max-time: give it a budget in seconds")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.carry_state and self.carry_reset % self.block_size:
            raise ConfigError(f"carry_reset {self.carry_reset} must be a multiple of block_size {self.block_size}")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        check_device_spec(self.device)
        check_precision_spec(self.precision)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        return cls(**check_values(cls, values, "train"))

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_ARCHITECTURE = "bdh"
DEFAULT_PRESET = "cpu-tiny"

_CPU_TRAIN = {"batch_size": 16, "block_size": 128, "max_steps": 1500, "lr": 3e-3, "min_lr": 3e-4}
_GPU_TRAIN = {"batch_size": 32, "block_size": 512, "max_steps": 3000, "lr": 1e-3, "min_lr": 1e-4}

# Presets per architecture. A GPT preset named like a BDH one has about the same number of
# parameters; the `-flops` one has about the same training FLOPs per token at the preset's block
# size (BDH reuses its weights in every layer, so equal parameters mean unequal compute).
PRESETS: dict[str, dict[str, dict]] = {
    "bdh": {
        # Three to six minutes on a 2-core CPU; the main job of the README. 458,752 parameters.
        "cpu-tiny": {
            "model": {"n_layer": 4, "n_embd": 128, "n_head": 4, "n_neuron": 256, "dropout": 0.0},
            "train": _CPU_TRAIN,
        },
        # The configuration of the BDH paper: 25,296,896 parameters; wants a GPU.
        "paper-25m": {
            "model": {"n_layer": 6, "n_embd": 256, "n_head": 4, "n_neuron": 8192, "dropout": 0.1},
            "train": _GPU_TRAIN,
        },
        # The paper's own training (its appendix B.1-B.2): consecutive minibatches continue the
        # same text with the synapse state carried across them, 2048-token sequences, linear
        # warm-up over 1000 steps and linear decay to 1e-4, weight decay 0.1, adaptive gradient
        # clipping. The clipping ratio 0.01 is the default of AGC's paper (Brock et al. 2021).
        "paper-25m-stateful": {
            "model": {"n_layer": 6, "n_embd": 256, "n_head": 4, "n_neuron": 8192, "dropout": 0.1},
            "train": {
                "batch_size": 8,
                "block_size": 2048,
                "max_steps": 10000,
                "lr": 1e-3,
                "min_lr": 1e-4,
                "warmup_steps": 1000,
                "schedule": "linear",
                "weight_decay": 0.1,
                "grad_clip": 0.0,
                "agc": 0.01,
                "carry_state": True,
                "carry_reset": 0,
            },
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


@dataclass(frozen=True)
class RunRequest:
    """What a user asked of a run: a preset, a TOML file and flags, before they are merged.

    `model` and `train` hold the settings given explicitly (TOML file and flags, flags winning):
    a new run merges them over the preset, a resumed run over its saved settings.
    """

    architecture: str | None = None
    preset: str | None = None
    toml_path: str | Path | None = None
    model: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)

    def given(self, default_architecture: str = DEFAULT_ARCHITECTURE) -> tuple[str | None, str | None, dict, dict]:
        """Architecture, preset, model and train settings of the TOML file and the flags; model
        settings are checked against the config of `default_architecture` where none is given."""
        toml = _read_toml(self.toml_path) if self.toml_path is not None else {}
        extra = sorted(set(toml) - {"preset", "architecture", "model", "train"})
        if extra:
            raise ConfigError(f"{self.toml_path}: unknown key(s) {', '.join(extra)}; expected [model] and [train]")
        for name in ("architecture", "preset"):
            if name in toml and not isinstance(toml[name], str):
                raise ConfigError(f"{self.toml_path}: {name} must be a string, got {toml[name]!r}")
        for table in ("model", "train"):
            if not isinstance(toml.get(table, {}), dict):
                raise ConfigError(f"{self.toml_path}: [{table}] must be a table, got {table} = {toml[table]!r}")
        architecture = self.architecture or toml.get("architecture")
        if architecture is not None and architecture not in ARCHITECTURES:
            raise ConfigError(f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}")
        # The file's values are checked even where a flag overrides them: the file is wrong all the same.
        check_values(TrainConfig, toml.get("train", {}), "train")
        config_class = model_class(architecture or default_architecture).config_class
        check_values(config_class, toml.get("model", {}), "model")
        model = {**toml.get("model", {}), **{k: v for k, v in self.model.items() if v is not None}}
        train = {**toml.get("train", {}), **{k: v for k, v in self.train.items() if v is not None}}
        check_values(TrainConfig, train, "train")
        return architecture, self.preset or toml.get("preset"), model, train


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
    request = RunRequest(architecture, preset, toml_path, model_overrides or {}, train_overrides or {})
    return new_run_config(request, default_preset)


def new_run_config(request: RunRequest, default_preset: str | None = DEFAULT_PRESET) -> RunConfig:
    """The configuration of a new run: the preset, then the TOML file, then the flags."""
    architecture, preset, model, train = request.given()
    architecture = architecture or DEFAULT_ARCHITECTURE
    preset = preset or default_preset
    base: dict = {"model": {}, "train": {}}
    if preset is not None:
        if preset not in PRESETS[architecture]:
            known = ", ".join(PRESETS[architecture])
            raise ConfigError(f"unknown preset {preset!r} for {architecture}; known: {known}")
        base = PRESETS[architecture][preset]
    base_model = base["model"]
    if train.get("init_from") is not None:
        architecture, base_model, train = _fine_tuned(architecture, request.architecture, model, train)
    config_class = model_class(architecture).config_class
    model_config = config_class.from_dict({**base_model, **model})
    return RunConfig(architecture, model_config, TrainConfig.from_dict({**base["train"], **train}))


def _fine_tuned(architecture: str, asked: str | None, model: dict, train: dict) -> tuple[str, dict, dict]:
    """A run that starts from `init_from`: its architecture, model settings and tokenizer, which
    the given settings may not contradict (dropout aside, which only acts in training)."""
    from synaptorch.checkpoint import TOKENIZER, read_meta, resolve_checkpoint

    folder = resolve_checkpoint(train["init_from"])
    meta = read_meta(folder)
    if asked is not None and asked != meta["architecture"]:
        raise ConfigError(f"--init-from {folder} holds a {meta['architecture']} model, not {asked}")
    for name, value in model.items():
        if name != "dropout" and meta["model"].get(name) != value:
            flag = f"--{name.replace('_', '-')}"
            saved = meta["model"].get(name)
            raise ConfigError(f"{flag} {value!r} contradicts --init-from {folder}, whose model has {saved!r}")
    tokenizer = "bytes" if meta.get("tokenizer", "bytes") == "bytes" else str(folder.resolve() / TOKENIZER)
    train = {"tokenizer": tokenizer, **train, "init_from": str(folder.resolve())}
    return meta["architecture"], meta["model"], train


def resumed_run_config(meta: dict, request: RunRequest) -> RunConfig:
    """The configuration of a resumed run: its saved settings, with those given again applied.

    Only the run's length and where and how it runs and is observed may change (`on_resume`: a
    device or compile change can still change floating-point rounding); any other given setting
    must equal the saved one. `data` may name a moved copy of the corpus and
    `tokenizer` a copy of the saved one: the trainer compares their content.
    """
    architecture, preset, model, train = request.given(default_architecture=meta["architecture"])
    if preset is not None:
        raise ConfigError(
            "a resumed run keeps its saved settings: a preset (--preset, or a config file's) means nothing there"
        )
    if architecture is not None and architecture != meta["architecture"]:
        raise ConfigError(f"the run trains {meta['architecture']}, not {architecture}")
    saved_model = meta["model"]
    for name, value in model.items():
        if saved_model.get(name) != value:
            flag = f"--{name.replace('_', '-')}"
            raise ConfigError(f"{flag} cannot change on resume: the run has {saved_model.get(name)!r}")
    saved = TrainConfig.from_dict(meta["train"])
    changeable = {f.name for f in fields(TrainConfig) if f.metadata["on_resume"]} | {"data", "tokenizer"}
    for name, value in train.items():
        if name not in changeable and getattr(saved, name) != value:
            raise ConfigError(
                f"--{name.replace('_', '-')} cannot change on resume: the run was trained with "
                f"{getattr(saved, name)!r}; start a new run to change it"
            )
    config_class = model_class(meta["architecture"]).config_class
    return RunConfig(meta["architecture"], config_class.from_dict(saved_model), replace(saved, **train))


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
