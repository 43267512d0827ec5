"""Devices and the precision a device trains in.

`--precision auto` takes bf16 autocast where it pays: on CUDA where the GPU supports bf16
(Ampere and later), else fp16 with a gradient scaler, whose narrow range needs the loss scaled
to keep small gradients; on the CPU only where it has bf16 instructions (AVX512-BF16 or AMX)
and a timed training step of the model itself runs faster in bf16, so that auto never takes a
slower path than fp32. Autocast only lowers the precision of the products: weights, optimizer
state and BDH's synapse state stay in float32.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from synaptorch.errors import ConfigError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def check_device_spec(spec: object) -> str:
    """`spec` if it names a device synaptorch can use (auto, cpu, cuda, cuda:N, mps), else a ConfigError."""
    if not isinstance(spec, str):
        raise ConfigError(f"device must be a string ({', '.join(DEVICE_CHOICES)} or cuda:N), got {spec!r}")
    index = spec.removeprefix("cuda:")
    if spec in DEVICE_CHOICES or (index != spec and index.isdigit()):
        return spec
    raise ConfigError(f"unknown device {spec!r}; use {', '.join(DEVICE_CHOICES)} or cuda:N")


def pick_device(spec: str) -> torch.device:
    """The torch device for `spec`; one that this machine lacks is a ConfigError."""
    spec = check_device_spec(spec)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {spec} asked for, but torch sees no CUDA device")
        device = torch.device(spec)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return device
    if spec == "mps" and not (torch.backends.mps.is_available()):
        raise ConfigError("--device mps asked for, but torch sees no MPS device")
    return torch.device(spec)


@dataclass(frozen=True)
class Precision:
    """How a device runs the forward pass: autocast dtype (None: fp32) and whether to scale the loss."""

    dtype: torch.dtype | None
    scale_loss: bool

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]


FP32 = Precision(None, False)
BF16 = Precision(torch.bfloat16, False)
FP16 = Precision(torch.float16, True)
PRECISIONS = {p.name: p for p in (FP32, BF16, FP16)}
PRECISION_CHOICES = ("auto", *PRECISIONS)

# bf16 must beat fp32 by this factor for auto to take it, so that timing noise cannot turn a tie
# into a path that is slower in the long run.
BF16_MARGIN = 0.85


def check_precision_spec(spec: object) -> str:
    """`spec` if it names a precision (auto, fp32, bf16, fp16), else a ConfigError."""
    if spec not in PRECISION_CHOICES:
        raise ConfigError(f"unknown precision {spec!r}; use {', '.join(PRECISION_CHOICES)}")
    return spec


def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU has bf16 dot-product instructions (AVX512-BF16 or AMX), from the kernel's
    flags where Linux lists them, else from torch's own detection."""
    try:
        flags = next(line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")).split()
    except (OSError, StopIteration):
        detect = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in detect)
    return "avx512_bf16" in flags or "amx_bf16" in flags


def check_precision(device: torch.device, spec: str) -> str:
    """`spec` if it names a precision that `device` can run, else a ConfigError."""
    spec = check_precision_spec(spec)
    if device.type == "cuda":
        if spec == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
            raise ConfigError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no bf16; use fp16 or fp32")
        return spec
    if spec == "fp16":
        raise ConfigError(f"--precision fp16 needs a CUDA device, not {device.type}; use bf16 or fp32")
    if spec == "bf16" and not (device.type == "cpu" and cpu_has_bf16()):
        lacking = "this CPU has neither AVX512-BF16 nor AMX" if device.type == "cpu" else f"not on {device.type}"
        raise ConfigError(f"--precision bf16: {lacking}; use fp32")
    return spec


def precision_for(device: torch.device, spec: str = "auto", bf16_pays: Callable[[], bool] | None = None) -> Precision:
    """The precision `spec` means on `device`; one the device cannot run is a ConfigError.

    On a CPU with bf16 instructions `auto` asks `bf16_pays` (a `bf16_probe` of the model to run)
    whether bf16 is faster there; without one it stays in fp32.
    """
    spec = check_precision(device, spec)
    if spec != "auto":
        return PRECISIONS[spec]
    if device.type == "cuda":
        return BF16 if torch.cuda.is_bf16_supported(including_emulation=False) else FP16
    has_bf16 = device.type == "cpu" and cpu_has_bf16()
    return BF16 if has_bf16 and bf16_pays is not None and bf16_pays() else FP32


def autocast_for(device: torch.device, precision: Precision | None = None) -> AbstractContextManager:
    """The autocast context of `precision` (by default `precision_for(device)`: bf16 or fp16 on
    CUDA, fp32 elsewhere), or none for fp32."""
    precision = precision or precision_for(device)
    if precision.dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=precision.dtype)


_PROBED: dict[Hashable, bool] = {}


def bf16_probe(model: nn.Module, idx: Tensor) -> Callable[[], bool]:
    """Whether a forward and backward pass of `model` on `idx` runs faster under bf16 autocast than
    in fp32: a probe for `precision_for` on the CPU, timed once per process for each model
    configuration, input shape and thread count.

    The pass runs in eval mode, so that it draws no dropout from the random generators, and leaves
    no gradients behind. The products of a small model are too small for bf16 to pay back its
    casts, and BDH spends part of its step in elementwise work, so the step is timed, not a matmul.
    """

    def probe() -> bool:
        config = getattr(model, "config", None)
        key = (type(model).__qualname__, repr(config), tuple(idx.shape), idx.device, torch.get_num_threads())
        if key not in _PROBED:
            _PROBED[key] = _bf16_faster(model, idx)
        return _PROBED[key]

    return probe


def _bf16_faster(model: nn.Module, idx: Tensor) -> bool:
    """Whether the pass is faster in bf16 by BF16_MARGIN: the best of three timings of each,
    taken in turn after a warm-up of each, so that a burst of load elsewhere slows both alike."""
    was_training = model.training
    model.eval()
    best = {FP32: float("inf"), BF16: float("inf")}
    try:
        for round_ in range(4):
            for precision in best:
                start = time.perf_counter()
                with autocast_for(idx.device, precision):
                    logits = model(idx)
                logits.float().square().mean().backward()
                if round_:
                    best[precision] = min(best[precision], time.perf_counter() - start)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return best[BF16] < BF16_MARGIN * best[FP32]
