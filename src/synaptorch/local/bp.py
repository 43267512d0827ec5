"""Backpropagation, the baseline of the local rules: the same ReLU layers trained end to end on the
cross-entropy of a linear read-out.

    h_l = relu(W_l h_{l-1} + b_l),  h_0 = x;   logits = W_out h_L + b_out;   L = CE(logits, y)

Every weight gets dL/dW through all the layers above it, so a training step keeps every
layer's activations until the backward pass, which the local rules do not. Weights N(0, 1/fan_in)
as the Forward-Forward layers; the optimiser is that of the Forward-Forward code (SGD with
momentum 0.9, the learning rate constant for half the run and then falling linearly to 0) so
that the two differ in the rule only; its learning rate (0.05) is this library's choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from synaptorch.local.ff import check_layers, check_sgd, half_then_linear, linear_stack


@dataclass(frozen=True)
class BPConfig:
    n_inputs: int = 784
    n_classes: int = 10
    layers: tuple[int, ...] = (1000, 1000, 1000)
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    epochs: int = 20
    batch_size: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        check_layers(self)
        check_sgd(self)


class BP(nn.Module):
    name: ClassVar[str] = "bp"

    def __init__(self, config: BPConfig) -> None:
        super().__init__()
        self.config = config
        generator = torch.Generator().manual_seed(config.seed)
        self.layers = linear_stack((config.n_inputs, *config.layers, config.n_classes), generator)
        self.optimizer = torch.optim.SGD(
            self.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return self.layers[-1](x)

    def predict(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self(x).argmax(dim=-1)

    def train_batch(self, x: Tensor, y: Tensor, progress: float) -> dict[str, float]:
        self.optimizer.param_groups[0]["lr"] = self.config.lr * half_then_linear(progress)
        loss = F.cross_entropy(self(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"loss": loss.item()}
