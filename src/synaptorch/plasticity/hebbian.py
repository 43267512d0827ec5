"""Hebbian association memory with soft-bounded weights, as pure functions over explicit state.

The memory M is an m x n matrix of synapses from key neurons (rows) to value neurons (columns).
Writing the association of key k and value v (Limbacher and Legenstein, "H-Mem: Harnessing
synaptic plasticity with Hebbian memory networks", NeurIPS 2020):

    M_ij <- M_ij + g+ (w_max - M_ij) k_i v_j - g- M_ij k_i^2
    M    <- M + g+ (w_max - M) * (k v^T) - g- M * (k^2 1^T)           * elementwise

The first term potentiates synapses whose pre- and postsynaptic neurons are both active and
saturates at w_max; the second depresses every synapse of an active key neuron, so that a key
written again forgets its old value. With k, v in [0, 1] and g+ + g- <= 1 every entry of M stays
in [0, w_max]. Reading with a key returns the value neurons' input, v = M^T k.

The defaults g+ = g- = 0.01 and w_max = 1 are those of the paper's bAbI experiments and of its
TensorFlow code (github.com/IGITUGraz/H-Mem, `gamma_pos`, `gamma_neg`, `w_assoc_max`).
"""

from __future__ import annotations

import torch
from torch import Tensor

GAIN_PLUS = 0.01
GAIN_MINUS = 0.01
W_MAX = 1.0


def hebbian_write(
    memory: Tensor,
    key: Tensor,
    value: Tensor,
    gain_plus: float | Tensor = GAIN_PLUS,
    gain_minus: float | Tensor = GAIN_MINUS,
    w_max: float | Tensor = W_MAX,
    mask: Tensor | None = None,
) -> Tensor:
    """One write: memory (..., m, n), key (..., m), value (..., n) -> the new memory (..., m, n).

    Where mask (...) is False the memory comes back unchanged, so that padding steps write nothing.
    """
    k, v = key.unsqueeze(-1), value.unsqueeze(-2)  # (..., m, 1), (..., 1, n)
    new = memory + gain_plus * (w_max - memory) * (k * v) - gain_minus * memory * k.square()
    if mask is None:
        return new
    return torch.where(mask[..., None, None], new, memory)


def hebbian_read(memory: Tensor, key: Tensor) -> Tensor:
    """Read: memory (..., m, n), key (..., m) -> value M^T k (..., n)."""
    return (key.unsqueeze(-2) @ memory).squeeze(-2)


def hebbian_write_sequence(
    keys: Tensor,
    values: Tensor,
    mask: Tensor | None = None,
    memory: Tensor | None = None,
    gain_plus: float | Tensor = GAIN_PLUS,
    gain_minus: float | Tensor = GAIN_MINUS,
    w_max: float | Tensor = W_MAX,
) -> Tensor:
    """Write keys (B, T, m) and values (B, T, n) in order of T into memory (B, m, n), zero if None.

    Steps where mask (B, T) is False leave the memory unchanged. Returns the final memory.
    """
    if memory is None:
        memory = keys.new_zeros(*keys.shape[:-2], keys.shape[-1], values.shape[-1])
    for t in range(keys.shape[-2]):
        step_mask = None if mask is None else mask[..., t]
        memory = hebbian_write(memory, keys[..., t, :], values[..., t, :], gain_plus, gain_minus, w_max, step_mask)
    return memory
