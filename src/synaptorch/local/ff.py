"""Forward-Forward (Hinton 2022, "The Forward-Forward Algorithm: Some Preliminary Investigations",
and his Matlab code): each layer learns to tell positive data from negative data by its own
goodness, and no error travels backwards through the network.

The label is written into the image: its first C pixels become the one-hot label (times
`label_strength`). With n(v) = v / sqrt(mean(v^2) + eps) the length normalisation that hides a
layer's goodness from the next, layer l computes

    h_l = relu(W_l n(h_{l-1}) + b_l),   h_0 = the image with its label     (B, H_l)
    G_l = sum_j h_lj^2                                                     goodness
    p_l = sigmoid(G_l - theta_l),       theta_l = H_l                      "this is positive"
    L_l = softplus(theta_l - G_l+) + softplus(G_l- - theta_l)              -log p+ - log(1 - p-)

with G+ on the image and its own label, G- on the image and a wrong label. n(h_{l-1}) is
detached: layer l's loss reaches only W_l and b_l, and each layer takes its optimiser step on
its own loss. Peer normalisation keeps every unit in use: with m_j a running mean (0.9) of unit
j's positive activity and z_j its total input, the term -lambda sum_j sg(mean(m) - m_j) mean_b(z_bj)
raises units that are rarely on (even silent ones, whose activity has no gradient) and lowers
units that are always on (lambda = 0.03).

Negatives: a random wrong label, or a hard one drawn from the softmax read-out's own prediction
with the true label masked out (`negatives="hard"`), so that the network learns most from the
labels it confuses.

Two read-outs, as in the official code, both skipping the first hidden layer (whose goodness
mostly says whether the label pixels are on):
- goodness: the label c whose image gives the largest sum of G_l over layers 2..L;
- softmax: a linear softmax layer on the normalised activities of layers 2..L, computed with a
  neutral label (1/C in each label pixel) and trained on its own cross-entropy with its inputs
  detached.

Defaults follow the official code (3 x 1000 ReLU units, weights N(0, 1/fan_in), learning rate
0.01 and 0.1 for the softmax read-out, weight cost 0.001, gradient smoothing 0.9 as SGD with
momentum 0.9 and dampening 0.9, the learning rate constant for half the epochs and then falling
linearly to 0, batch 100). The official code's gradient leaves out the factor 2 of dG/dh = 2h
that autograd keeps here, so its learning rate 0.01 is 0.005 here. Published: MNIST 1.36% test
error (the paper); the official code reaches 1.47%. The number of epochs is this library's
choice (the paper trains 100).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from synaptorch.errors import ConfigError
from synaptorch.fields import check_positive_ints

NEGATIVES = ("hard", "random")
READOUTS = ("goodness", "softmax")
EPS = 1e-8


@dataclass(frozen=True)
class FFConfig:
    n_inputs: int = 784
    n_classes: int = 10
    layers: tuple[int, ...] = (1000, 1000, 1000)
    label_strength: float = 1.0
    lr: float = 0.005
    readout_lr: float = 0.1
    weight_cost: float = 0.001
    smoothing: float = 0.9
    peer_normalization: float = 0.03
    negatives: str = "hard"
    readout: str = "goodness"
    epochs: int = 20
    batch_size: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        check_layers(self)
        if self.n_inputs < self.n_classes:
            raise ConfigError(f"n_inputs ({self.n_inputs}) must hold the {self.n_classes} label pixels")
        if self.negatives not in NEGATIVES:
            raise ConfigError(f"negatives must be one of {', '.join(NEGATIVES)}, got {self.negatives!r}")
        if self.readout not in READOUTS:
            raise ConfigError(f"readout must be one of {', '.join(READOUTS)}, got {self.readout!r}")
        for name in ("lr", "readout_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("weight_cost", "peer_normalization", "label_strength"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be non-negative, got {getattr(self, name)}")
        if not 0 <= self.smoothing < 1:
            raise ConfigError(f"smoothing must be in [0, 1), got {self.smoothing}")


def check_layers(config: object) -> None:
    """The fields every image rule shares: sizes, epochs and batch, and a non-empty tuple of widths."""
    check_positive_ints(config, ("n_inputs", "n_classes", "epochs", "batch_size"))
    layers = config.layers
    if not isinstance(layers, tuple) or not layers:
        raise ConfigError(f"layers must be a non-empty tuple of widths, got {layers!r}")
    for width in layers:
        if not isinstance(width, int) or isinstance(width, bool) or width <= 0:
            raise ConfigError(f"layers must be positive integers, got {layers!r}")
    if config.n_classes < 2:
        raise ConfigError(f"n_classes must be at least 2, got {config.n_classes}")


def check_sgd(config: object) -> None:
    """lr > 0, momentum in [0, 1) and weight_decay >= 0: the SGD fields of the rules that share them."""
    if not config.lr > 0:
        raise ConfigError(f"lr must be positive, got {config.lr}")
    if not 0 <= config.momentum < 1:
        raise ConfigError(f"momentum must be in [0, 1), got {config.momentum}")
    if not config.weight_decay >= 0:
        raise ConfigError(f"weight_decay must be non-negative, got {config.weight_decay}")


def rms_normalize(h: Tensor) -> Tensor:
    """h / sqrt(mean(h^2)) per row: the direction of an activity vector without its length."""
    return h / torch.sqrt(h.pow(2).mean(dim=-1, keepdim=True) + EPS)


def goodness(h: Tensor) -> Tensor:
    """G = sum_j h_j^2 per row: (B, H) -> (B,)."""
    return h.pow(2).sum(dim=-1)


def ff_loss(good_positive: Tensor, good_negative: Tensor, theta: float) -> Tensor:
    """Mean over the batch of -log sigmoid(G+ - theta) - log sigmoid(theta - G-)."""
    return (F.softplus(theta - good_positive) + F.softplus(good_negative - theta)).mean()


def embed_label(x: Tensor, labels: Tensor, n_classes: int, strength: float = 1.0) -> Tensor:
    """The images with their first C pixels replaced by the one-hot label: (B, D), (B,) -> (B, D)."""
    out = x.clone()
    out[:, :n_classes] = strength * F.one_hot(labels, n_classes).to(x.dtype)
    return out


def embed_neutral(x: Tensor, n_classes: int, strength: float = 1.0) -> Tensor:
    """The images with 1/C in each label pixel: no label preferred."""
    out = x.clone()
    out[:, :n_classes] = strength / n_classes
    return out


def wrong_labels(labels: Tensor, n_classes: int, generator: torch.Generator, weights: Tensor | None = None) -> Tensor:
    """A label other than the true one per row, uniformly or in proportion to `weights` (B, C)."""
    weights = torch.ones(len(labels), n_classes) if weights is None else weights.clamp_min(0) + EPS
    weights = weights.scatter(1, labels[:, None], 0.0)
    return torch.multinomial(weights, 1, generator=generator).squeeze(1)


def init_linear(layer: nn.Linear, generator: torch.Generator) -> nn.Linear:
    """Weights N(0, 1/fan_in) and zero biases, as in the official code."""
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) / layer.in_features**0.5)
        if layer.bias is not None:
            layer.bias.zero_()
    return layer


def linear_stack(widths: tuple[int, ...], generator: torch.Generator) -> nn.ModuleList:
    """Linear layers widths[0] -> widths[1] -> ..., initialised as the official code's."""
    return nn.ModuleList(init_linear(nn.Linear(a, b), generator) for a, b in itertools.pairwise(widths))


def half_then_linear(progress: float) -> float:
    """The learning-rate factor of the official code: 1 for the first half, then linearly to 0."""
    return min(1.0, 2.0 * (1.0 - progress))


class FF(nn.Module):
    name: ClassVar[str] = "ff"

    def __init__(self, config: FFConfig) -> None:
        super().__init__()
        self.config = config
        self.generator = torch.Generator().manual_seed(config.seed)
        self.layers = linear_stack((config.n_inputs, *config.layers), self.generator)
        self.readout = nn.Linear(sum(self._read_widths()), config.n_classes)
        nn.init.zeros_(self.readout.weight)
        nn.init.zeros_(self.readout.bias)
        self.register_buffer("mean_activity", torch.full((sum(config.layers),), 0.5))
        self.optimizer = torch.optim.SGD(
            self.layers.parameters(),
            lr=config.lr,
            momentum=config.smoothing,
            dampening=config.smoothing,
        )
        self.readout_optimizer = torch.optim.SGD(
            self.readout.parameters(), lr=config.readout_lr, momentum=config.smoothing, dampening=config.smoothing
        )

    def _read_widths(self) -> tuple[int, ...]:
        return self.config.layers[1:] or self.config.layers

    def _read_layers(self) -> range:
        n = len(self.layers)
        return range(1, n) if n > 1 else range(n)

    def activities(self, x: Tensor) -> list[Tensor]:
        """Every hidden layer's activity for inputs that already carry their label pixels."""
        out, h = [], x
        for layer in self.layers:
            h = torch.relu(layer(rms_normalize(h)))
            out.append(h)
        return out

    def goodness_scores(self, x: Tensor) -> Tensor:
        """Sum of the goodness of layers 2..L for each candidate label: (B, D) -> (B, C)."""
        c = self.config.n_classes
        labels = torch.arange(c).repeat_interleave(len(x))
        hs = self.activities(embed_label(x.repeat(c, 1), labels, c, self.config.label_strength))
        total = sum(goodness(hs[i]) for i in self._read_layers())
        return total.view(c, len(x)).T

    def softmax_logits(self, x: Tensor) -> Tensor:
        hs = self.activities(embed_neutral(x, self.config.n_classes, self.config.label_strength))
        return self.readout(torch.cat([rms_normalize(hs[i]) for i in self._read_layers()], dim=-1))

    def predict_with(self, x: Tensor, readout: str) -> Tensor:
        if readout not in READOUTS:
            raise ConfigError(f"readout must be one of {', '.join(READOUTS)}, got {readout!r}")
        with torch.no_grad():
            scores = self.goodness_scores(x) if readout == "goodness" else self.softmax_logits(x)
        return scores.argmax(dim=-1)

    def predict(self, x: Tensor) -> Tensor:
        return self.predict_with(x, self.config.readout)

    def _train_readout(self, x: Tensor, y: Tensor) -> Tensor:
        """One step of the softmax read-out on detached activities; returns its class probabilities."""
        with torch.no_grad():
            hs = self.activities(embed_neutral(x, self.config.n_classes, self.config.label_strength))
            features = torch.cat([rms_normalize(hs[i]) for i in self._read_layers()], dim=-1)
        logits = self.readout(features)
        loss = F.cross_entropy(logits, y)
        self.readout_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.readout_optimizer.step()
        return logits.detach().softmax(dim=-1)

    def train_batch(self, x: Tensor, y: Tensor, progress: float) -> dict[str, float]:
        config = self.config
        factor = half_then_linear(progress)
        self.optimizer.param_groups[0]["lr"] = config.lr * factor
        self.readout_optimizer.param_groups[0]["lr"] = config.readout_lr * factor
        probabilities = self._train_readout(x, y)
        hard = probabilities if config.negatives == "hard" else None
        negative_labels = wrong_labels(y, config.n_classes, self.generator, hard)
        positive = embed_label(x, y, config.n_classes, config.label_strength)
        negative = embed_label(x, negative_labels, config.n_classes, config.label_strength)
        figures, offset = {}, 0
        batch = len(x)
        # Positives and negatives in one pass: one weight gradient per layer, not two to be summed.
        inputs = torch.cat([positive, negative])
        for index, layer in enumerate(self.layers):
            width = layer.out_features
            z = layer(rms_normalize(inputs.detach()))
            h = torch.relu(z)
            h_pos, h_neg = h[:batch], h[batch:]
            loss = ff_loss(goodness(h_pos), goodness(h_neg), float(width))
            mean = self.mean_activity[offset : offset + width]
            if config.peer_normalization > 0:
                push = (mean.mean() - mean).detach()
                # On the total input, not the activity: a silent unit must be reachable to be revived.
                loss = loss - config.peer_normalization * (push * z[:batch].mean(dim=0)).sum()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            with torch.no_grad():
                # The weight cost acts outside the gradient smoothing, as in the official code.
                for parameter in layer.parameters():
                    parameter.mul_(1 - self.optimizer.param_groups[0]["lr"] * config.weight_cost)
                mean.mul_(0.9).add_(0.1 * h_pos.mean(dim=0))
            figures[f"loss_{index + 1}"] = loss.item()
            inputs, offset = h.detach(), offset + width
        self.optimizer.zero_grad(set_to_none=True)
        return figures
