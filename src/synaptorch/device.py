"""Devices and the precision a device trains in.

On CUDA, bf16 autocast where the GPU supports it (Ampere and later); fp16 with a gradient
scaler on older GPUs, whose fp16 range needs the loss scaled to keep small gradients; fp32 on
the CPU and MPS, where reduced-precision matmuls are not faster for these models.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

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
        return "fp32" if self.dtype is None else str(self.dtype).removeprefix("torch.")


def precision_for(device: torch.device) -> Precision:
    if device.type != "cuda":
        return Precision(None, False)
    if torch.cuda.is_bf16_supported(including_emulation=False):
        return Precision(torch.bfloat16, False)
    return Precision(torch.float16, True)


def autocast_for(device: torch.device) -> AbstractContextManager:
    """The autocast context of `precision_for(device)`, or none for fp32."""
    precision = precision_for(device)
    if precision.dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=precision.dtype)
