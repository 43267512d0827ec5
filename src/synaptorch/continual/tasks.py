"""Permuted image tasks: each task shows the same images with its own fixed shuffle of the pixels.

Permuted MNIST (Goodfellow et al. 2013; Kirkpatrick et al. 2017) is the usual benchmark of
continual learning with a shared output layer: every task keeps the ten classes and the label of
each image, and only the pixel order changes, so the tasks compete for the same weights. Here
the images are Fashion-MNIST's by default (any MNIST-style folder works). Task 0 keeps the
identity order when `identity_first` is set (as is common, this library's default); the other
permutations are `torch.randperm` draws, in task order, of one generator seeded with `seed`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from synaptorch.data.images import load_image_rows
from synaptorch.errors import ConfigError


@dataclass
class Task:
    """One task: float rows in [0, 1] (N, D) whose pixels follow `permutation` (D,), with long labels."""

    name: str
    permutation: Tensor
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor

    @property
    def n_inputs(self) -> int:
        return self.train_x.shape[1]


ImageRows = tuple[Tensor, Tensor, Tensor, Tensor]  # train rows (N, D), train labels, test rows, test labels


def permuted_tasks(
    data: str | Path | ImageRows,
    n_tasks: int,
    seed: int = 0,
    train_limit: int | None = None,
    test_limit: int | None = None,
    identity_first: bool = True,
) -> list[Task]:
    """`n_tasks` permuted copies of an image set: a name or folder, or the rows `load_image_rows` gives.

    `train_limit` and `test_limit` keep the first N images of each split, the same images in every task.
    """
    if n_tasks <= 0:
        raise ConfigError(f"n_tasks must be positive, got {n_tasks}")
    for name, limit in (("train_limit", train_limit), ("test_limit", test_limit)):
        if limit is not None and limit <= 0:
            raise ConfigError(f"{name} must be positive, got {limit}")
    train_x, train_y, test_x, test_y = load_image_rows(data) if isinstance(data, str | Path) else data
    train_x, train_y = train_x[:train_limit], train_y[:train_limit]
    test_x, test_y = test_x[:test_limit], test_y[:test_limit]
    generator = torch.Generator().manual_seed(seed)
    n_inputs = train_x.shape[1]
    tasks = []
    for t in range(n_tasks):
        identity = identity_first and t == 0
        permutation = torch.arange(n_inputs) if identity else torch.randperm(n_inputs, generator=generator)
        tasks.append(
            Task(f"permuted-{t}", permutation, train_x[:, permutation], train_y, test_x[:, permutation], test_y)
        )
    return tasks
