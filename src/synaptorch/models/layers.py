"""The layers without weights that BDH and GPT share: rotary position embedding and layer norm."""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor


# Compiled models call this as a graph break at the start of their forward, which lets them take the
# cached table as an input instead of tracing the table's construction into every call.
@torch.compiler.disable
def rope_phasors(
    dims: int | tuple[int, ...], theta: float, start: int, length: int, device: torch.device | str = "cpu"
) -> Tensor:
    """Unit complex numbers (length, sum(dims)/2) for positions start..start+length.

    A block of dim features rotates its pair k by e^{i t / theta**(2k/dim)}; several blocks (a
    tuple of dims) each follow their own ladder of frequencies, side by side, which is how a BDH
    merged from models with N_a and N_b neurons keeps every neuron's rotation.

    The phase is reduced modulo one turn in float64 on the CPU, so position 16384 is as exact as
    position 0 and every form of the model, on every device, sees bit-identical rotations for the
    same position. Each set of arguments is built once and then served from a cache, so the
    tensor returned is shared and must not be modified in place.
    """
    blocks = (dims,) if isinstance(dims, int) else tuple(dims)
    return _cached_phasors(blocks, float(theta), start, length, torch.device(device))


# Training asks for one or two lengths from position 0 again and again, generation for a new block
# of positions now and then. A table of the paper's N = 8192 neurons and 1024 positions takes
# 32 MiB, so the cache keeps only a few; building one again costs milliseconds.
@functools.lru_cache(maxsize=4)
def _cached_phasors(blocks: tuple[int, ...], theta: float, start: int, length: int, device: torch.device) -> Tensor:
    # Built outside inference mode, so that a table first asked for there can still be saved for backward.
    with torch.inference_mode(False):
        position = torch.arange(start, start + length, dtype=torch.float64)
        turns_per_step = torch.cat(
            [theta ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim) / (2 * math.pi) for dim in blocks]
        )
        angle = (torch.outer(position, turns_per_step) % 1.0) * (2 * math.pi)
        return torch.polar(torch.ones_like(angle), angle).to(torch.complex64).to(device)


def rope(v: Tensor, phasors: Tensor) -> Tensor:
    """Rotate adjacent pairs (2k, 2k+1) of the last dimension of v (..., T, dim) by phasors (T, dim/2)."""
    if v.dtype in (torch.float32, torch.float64) and not torch.compiler.is_compiling():
        # One complex multiply reads and writes v once, forward and backward; compiled code fuses
        # the real form below instead, and half precision has no complex type to lean on.
        rotated = torch.view_as_complex(v.unflatten(-1, (-1, 2))) * phasors.to(v.dtype.to_complex())
        return torch.view_as_real(rotated).flatten(-2)
    pairs = v.unflatten(-1, (-1, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    cos, sin = phasors.real.to(v.dtype), phasors.imag.to(v.dtype)
    return torch.stack((even * cos - odd * sin, odd * cos + even * sin), dim=-1).flatten(-2)


def layer_norm(x: Tensor) -> Tensor:
    """Layer norm over the last dimension without gain or bias, as BDH uses it everywhere."""
    return F.layer_norm(x, x.shape[-1:])
