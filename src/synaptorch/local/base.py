"""What every learning rule of `synaptorch.local` has: a config dataclass and a model that learns one batch
at a time with its own rule and predicts labels.

A rule's model is an `nn.Module` with

    config                                 its config dataclass (JSON-able fields only)
    train_batch(x, y, progress) -> dict    one update on images x (B, D) in [0, 1] and labels y (B,);
                                           progress in [0, 1) is how far training has come (for
                                           schedules); returns scalar figures such as the loss
    predict(x) -> (B,) labels              no learning, no teacher

Everything the model needs for `predict` lies in its `state_dict` (parameters and buffers), so a
checkpoint of config.json and model.safetensors restores it. Optimizers are the model's own
business: rules that use one build it in `__init__` and keep it out of the state dict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class ImageTask:
    """The shape of the data a rule is built for: D inputs per image, C classes."""

    n_inputs: int = 784
    n_classes: int = 10


class LocalRule(Protocol):
    name: ClassVar[str]
    config: object

    def train_batch(self, x: Tensor, y: Tensor, progress: float) -> dict[str, float]: ...

    def predict(self, x: Tensor) -> Tensor: ...


def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 1000) -> float:
    """Fraction of images whose predicted label is right, in batches; no gradient, no learning."""
    correct = 0
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            predicted = model.predict(images[start : start + batch_size])
            correct += int((predicted == labels[start : start + batch_size]).sum())
    return correct / max(len(images), 1)
