"""Gradient projection onto the complement of past inputs: a Hebbian subspace (HLOP) or an SVD basis (GPM).

A linear map z = W x with W (out, n) has the weight gradient sum_b g_b x_b^T = G^T X over a
batch (G (B, out) the output gradients, X (B, n) the inputs; over time steps too for a spiking
layer). With H (k, n) the learnt rows, replacing X by the projected inputs X - X H^T H gives

    G^T (X - X H^T H) = G^T X - (G^T X) H^T H = dW - dW H^T H,

so projecting the inputs inside the backward pass and projecting the finished gradient are the
same; this module does the latter (`project_gradient`), which needs no custom autograd function,
works for any module whose weight multiplies its inputs, and leaves the input gradient and the
forward pass untouched. When H's rows are orthonormal, H^T H = P is the orthogonal projection
onto their span S, and for any v in S the update dW - dW P changes W v by (dW - dW P) v = 0:
the layer's response to inputs of S stays as it was. For a matrix applied as x @ E (E (n, out)),
the inputs index E's first axis and the projection acts from the left, E's gradient - P E's
gradient (`input_dim=0`).

`HebbianProjector` learns H with Oja's subspace rule (`synaptorch.plasticity.oja`), task by task:
`add_rows` opens new rows orthogonal to the old, `learn` runs the rule on them, `freeze` turns
them into the past tasks' subspace that `project_gradient` removes. `SVDProjector` is the
exact counterpart of Gradient Projection Memory (GPM; Saha et al. 2021, "Gradient projection
memory for continual learning", ICLR): it keeps the top left singular vectors of each task's
input matrix, up to an energy threshold, as orthonormal rows.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from synaptorch.errors import ConfigError
from synaptorch.plasticity.oja import (
    CLIP,
    ITERATIONS,
    MOMENTUM,
    oja_subspace_step,
    orthogonal_rows,
    projection_error,
    subspace_energy,
)


def project_gradient(grad: Tensor, basis: Tensor, input_dim: int = -1) -> Tensor:
    """The weight gradient less its component along the rows of `basis` (k, n) on the input axis.

    grad (out, n) with input_dim -1 (an nn.Linear weight): grad - (grad B^T) B; grad (n, out)
    with input_dim 0: grad - B^T (B grad).
    """
    if basis.shape[0] == 0:
        return grad
    if input_dim in (-1, grad.dim() - 1):
        return grad - (grad @ basis.T) @ basis
    if input_dim == 0:
        return grad - basis.T @ (basis @ grad)
    raise ConfigError(f"input_dim must be 0 or -1 for a weight matrix, got {input_dim}")


class HebbianProjector:
    """Lateral rows H (k, n) over n inputs, learnt by Oja's subspace rule; the frozen rows are the past.

    `lr` is the rule's learning rate (HLOP's code: 0.001 on image inputs, 0.01 on hidden layers);
    `iterations`, `momentum` and `clip` default to that code's 5, 0.9 and 10.
    """

    def __init__(
        self,
        n_inputs: int,
        lr: float,
        iterations: int = ITERATIONS,
        momentum: float = MOMENTUM,
        clip: float | None = CLIP,
        generator: torch.Generator | None = None,
    ) -> None:
        if n_inputs <= 0 or lr <= 0 or iterations <= 0:
            raise ConfigError(f"n_inputs, lr and iterations must be positive, got {n_inputs}, {lr}, {iterations}")
        self.n_inputs, self.lr, self.iterations = n_inputs, lr, iterations
        self.momentum, self.clip, self.generator = momentum, clip, generator
        self.weight = torch.zeros(0, n_inputs)  # H (k, n)
        self.buffer = torch.zeros(0, n_inputs)  # momentum of the rule, per row
        self.frozen = 0

    @property
    def basis(self) -> Tensor:
        """The frozen rows (frozen, n): the subspace of past tasks that gradients are kept out of."""
        return self.weight[: self.frozen]

    def add_rows(self, k: int) -> int:
        """Open up to k new free rows, orthonormal and orthogonal to the old; returns how many fit in n."""
        k = max(0, min(k, self.n_inputs - self.weight.shape[0]))
        new = orthogonal_rows(k, self.n_inputs, self.weight, self.generator).to(self.weight)
        self.weight = torch.cat([self.weight, new])
        self.buffer = torch.cat([self.buffer, torch.zeros_like(new)])
        return k

    def learn(self, x_batches: Tensor | Iterable[Tensor]) -> None:
        """`iterations` steps of the rule on the free rows per batch x (B, n); one tensor is one batch."""
        if self.frozen == self.weight.shape[0]:
            return
        for x in [x_batches] if isinstance(x_batches, Tensor) else x_batches:
            x = x.detach().to(self.weight)
            for _ in range(self.iterations):
                self.weight, self.buffer = oja_subspace_step(
                    self.weight, x, self.lr, self.frozen, self.buffer, self.momentum, self.clip
                )

    def freeze(self) -> None:
        """Make every row part of the past: later `learn` calls change only rows added afterwards."""
        self.frozen = self.weight.shape[0]

    def project_gradient(self, weight_grad: Tensor, input_dim: int = -1) -> Tensor:
        return project_gradient(weight_grad, self.basis.to(weight_grad), input_dim)

    def energy(self, x: Tensor, orthonormalize: bool = True) -> float:
        """Fraction of ||x||^2 (x (B, n)) in the frozen rows' span (`subspace_energy`)."""
        return subspace_energy(self.basis, x.to(self.weight), orthonormalize)

    def projection_error(self) -> float:
        """||H H^T - I||_F of the frozen rows."""
        return projection_error(self.basis)


class SVDProjector:
    """An orthonormal basis (r, n) of past inputs grown by GPM's rule, from the SVD of each task's inputs."""

    def __init__(self, n_inputs: int) -> None:
        self.n_inputs = n_inputs
        self.basis = torch.zeros(0, n_inputs)

    def update(self, x: Tensor, threshold: float) -> int:
        """Add the directions of inputs x (N, n) needed to reach `threshold` of their energy; returns how many.

        As in GPM: with R = x^T (n, N) and U the basis so far, the residual R - U^T U R has the
        singular values s_i; the fewest k with ||U R||^2 + sum_{i<=k} s_i^2 >= threshold ||R||^2
        add the top k left singular vectors. The first task is the case of an empty U.
        """
        if not 0 < threshold <= 1:
            raise ConfigError(f"the GPM threshold must be in (0, 1], got {threshold}")
        x = x.detach().to(self.basis)
        total = x.square().sum()
        residual = x - (x @ self.basis.T) @ self.basis  # (N, n), its rows R's columns
        kept = total - residual.square().sum()
        if total == 0 or kept >= threshold * total:
            return 0
        _, s, vh = torch.linalg.svd(residual, full_matrices=False)
        reached = kept + torch.cumsum(s.square(), 0)
        k = int(torch.searchsorted(reached, threshold * total).item()) + 1
        k = min(k, self.n_inputs - self.basis.shape[0], len(s))
        self.basis = torch.cat([self.basis, vh[:k]])
        return k

    def project_gradient(self, weight_grad: Tensor, input_dim: int = -1) -> Tensor:
        return project_gradient(weight_grad, self.basis.to(weight_grad), input_dim)

    def energy(self, x: Tensor, orthonormalize: bool = True) -> float:
        return subspace_energy(self.basis, x.to(self.basis), orthonormalize)

    def projection_error(self) -> float:
        return projection_error(self.basis)
