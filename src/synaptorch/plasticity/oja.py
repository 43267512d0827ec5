"""Oja's subspace rule, and the projections it learns, as pure functions over explicit state.

k lateral neurons read n presynaptic neurons through the rows of H (k x n). For a batch of
activities x (B, n), y = H x (per row, y = x H^T as (B, k)) and the subspace rule (Oja 1989, "Neural
networks, principal components, and subspaces", Int. J. Neural Systems 1(1)) is

    dH = y (x - H^T y)^T / B         = (x H^T)^T (x - x H^T H) / B   (k, n)
    dH <- clip(dH, -c, c)
    b  <- m b + (1 - m) dH           momentum as a running mean of the updates
    H  <- H + lr b                   only the rows >= frozen_rows change

Its stable fixed points are the H whose rows are an orthonormal basis of the span of the top k
eigenvectors of E[x x^T] (the second moment, not the covariance: x is not centred), so that
H^T H becomes the orthogonal projection onto the principal subspace of the inputs. With the
first rows frozen, the free rows see the residual x - H^T H x of the frozen ones and learn the
principal subspace of what the frozen rows leave unexplained.

Hebbian learning based orthogonal projection (HLOP; Xiao et al. 2024, "Hebbian learning based
orthogonal projection for continual learning of spiking neural networks", ICLR) learns such an H
per layer from the inputs of past tasks and replaces a layer's input x by x - H^T H x in its
weight gradient (`project_out`), so that later updates leave the layer's response to old inputs
unchanged. The defaults are those of its code (github.com/pkuxmq/HLOP-SNN, modules/hlop_module.py):
updates clipped to +-10, momentum 0.9 as the running mean above, 5 iterations per batch; the
learning rate (0.001 for the input layer, 0.01 for hidden layers there) has no default here.

`subspace_energy` and `projection_error` say how good a learnt H is: the fraction of the inputs'
energy ||x||^2 inside its row space, and ||H H^T - I||_F, zero when the rows are orthonormal.
"""

from __future__ import annotations

import torch
from torch import Tensor

from synaptorch.errors import ConfigError

MOMENTUM = 0.9
CLIP = 10.0
ITERATIONS = 5
RANK_TOLERANCE = 1e-6  # singular values below this times the largest span no direction


def oja_subspace_step(
    H: Tensor,
    x: Tensor,
    lr: float,
    frozen_rows: int = 0,
    momentum_buffer: Tensor | None = None,
    momentum: float = MOMENTUM,
    clip: float | None = CLIP,
) -> tuple[Tensor, Tensor]:
    """One step of the subspace rule: H (k, n), x (B, n) -> (new H, new momentum buffer), both (k, n).

    The rows below `frozen_rows` and their momentum come back unchanged; `momentum_buffer` None
    is a buffer of zeros, `clip` None no clipping.
    """
    if not 0 <= frozen_rows <= H.shape[0]:
        raise ConfigError(f"frozen_rows must be in [0, {H.shape[0]}], got {frozen_rows}")
    if not 0 <= momentum < 1:
        raise ConfigError(f"momentum must be in [0, 1), got {momentum}")
    buffer = torch.zeros_like(H) if momentum_buffer is None else momentum_buffer
    y = x @ H.T  # (B, k)
    # The residual of all rows, frozen ones included, so that the free rows learn what they miss.
    dH = y[:, frozen_rows:].T @ (x - y @ H) / x.shape[0]  # (k - frozen, n)
    if clip is not None:
        dH = dH.clamp(-clip, clip)
    free = momentum * buffer[frozen_rows:] + (1 - momentum) * dH
    new_buffer = torch.cat([buffer[:frozen_rows], free])
    new_H = torch.cat([H[:frozen_rows], H[frozen_rows:] + lr * free])
    return new_H, new_buffer


def orthonormal_basis(H: Tensor, tolerance: float = RANK_TOLERANCE) -> Tensor:
    """Orthonormal rows (r, n) spanning the row space of H (k, n), r its numerical rank."""
    if H.shape[0] == 0:
        return H.new_zeros(0, H.shape[1])
    _, s, vh = torch.linalg.svd(H, full_matrices=False)
    return vh[s > tolerance * s[0]] if s[0] > 0 else H.new_zeros(0, H.shape[1])


def orthogonal_rows(k: int, n: int, existing: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
    """k orthonormal rows (k, n), random, orthogonal to the row space of `existing` (m, n).

    The reference code initialises the new rows with `torch.nn.init.orthogonal_`, orthonormal among
    themselves only; removing the old rows' span as well is this library's choice, so that the new
    rows start in the part of the input space the old ones leave free.
    """
    old = orthonormal_basis(existing) if existing is not None else torch.zeros(0, n)
    if k < 0 or k + old.shape[0] > n:
        raise ConfigError(f"cannot add {k} orthogonal rows in {n} dimensions to {old.shape[0]} independent ones")
    if k == 0:
        return torch.zeros(0, n, dtype=old.dtype)
    draw = torch.randn(n, k, generator=generator, dtype=old.dtype)  # columns
    draw = draw - old.T @ (old @ draw)
    q, r = torch.linalg.qr(draw)
    # Signs of R's diagonal make the draw uniform over orthonormal frames (Mezzadri 2007).
    return (q * torch.sign(torch.diagonal(r))).T.contiguous()


def project_out(x: Tensor, H: Tensor) -> Tensor:
    """x - x H^T H: x (..., n) less its projection onto the rows of H (k, n), exact for orthonormal rows."""
    return x - (x @ H.T) @ H


def subspace_energy(H: Tensor, x: Tensor, orthonormalize: bool = True) -> float:
    """The fraction of the energy ||x||_F^2 of inputs x (B, n) that the rows of H (k, n) capture.

    orthonormalize=True: ||x Q^T||^2 / ||x||^2 with Q an orthonormal basis of H's row space, the
    energy of the subspace itself. False: 1 - ||x - x H^T H||^2 / ||x||^2, the energy that the
    projection with H as it is removes; the two agree when H's rows are orthonormal.
    """
    total = x.square().sum()
    if total == 0:
        return 0.0
    if orthonormalize:
        return float((x @ orthonormal_basis(H).T).square().sum() / total)
    return float(1 - project_out(x, H).square().sum() / total)


def projection_error(H: Tensor) -> float:
    """||H H^T - I_k||_F for H (k, n): zero exactly when the rows are orthonormal, so H^T H a projection."""
    return float(torch.linalg.matrix_norm(H @ H.T - torch.eye(H.shape[0], dtype=H.dtype, device=H.device)))
