"""The networks of the continual benchmarks: a bias-free MLP and its spiking twin.

Both are chains of bias-free linear maps (784-800-800-10 by default, the network of the permuted
MNIST experiments of GPM and HLOP); the projection methods act on each map's weight, so every
forward pass can also return what each map received (`forward(x, return_inputs=True)`):

- `MLP`: h_0 = x, h_l = relu(W_l h_{l-1}), logits W_L h_{L-1}.
- `SpikingMLP`: the analog image is the input current of every one of T steps (direct coding),
  each hidden layer is a layer of LIF neurons (`synaptorch.neurons.lif_sequence`, surrogate
  gradients), and the logits are the mean over time of the last map's output, W_L r_{L-1} with
  r the spike rate. A map's input is then its presynaptic rate r = mean_t s_t (the image for the
  first), HLOP's x for spiking layers; since W is shared by all steps, projecting W's gradient
  with a subspace of rates is the same as projecting every step's spikes with it.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn

from synaptorch.errors import ConfigError
from synaptorch.neurons.fused import lif_sequence
from synaptorch.neurons.parameters import LIFParameters, check_lif


def _linear_chain(widths: tuple[int, ...]) -> nn.ModuleList:
    if len(widths) < 2 or any(not isinstance(w, int) or w <= 0 for w in widths):
        raise ConfigError(f"layer widths must be at least two positive integers, got {widths!r}")
    return nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in itertools.pairwise(widths))


class MLP(nn.Module):
    """n_inputs - hidden... - n_classes, ReLU, no bias: forward(x (B, n_inputs)) -> logits (B, n_classes)."""

    def __init__(self, n_inputs: int = 784, hidden: tuple[int, ...] = (800, 800), n_classes: int = 10) -> None:
        super().__init__()
        self.layers = _linear_chain((n_inputs, *hidden, n_classes))

    def forward(self, x: Tensor, return_inputs: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Logits, and with return_inputs the detached input (B, n_l) of every linear map."""
        inputs = []
        for i, layer in enumerate(self.layers):
            inputs.append(x.detach())
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return (x, inputs) if return_inputs else x


class SpikingMLP(nn.Module):
    """The MLP with LIF hidden neurons over `steps` time steps; forward(x (B, n_inputs)) -> logits (B, n_classes).

    The LIF parameters default to `LIFParameters(threshold=0.5)` (decay 0.9, reset by subtraction,
    SuperSpike surrogate) and the weights to N(0, 2 / fan_in) (He et al. 2015), both this library's
    choices: with PyTorch's default uniform weights and threshold 1 the second hidden layer of the
    784-200-200-10 network hardly fires (rate 0.0003 on Fashion-MNIST at 4 steps) and learns
    nothing in an epoch; with these, every layer fires at about 0.3 and learns as fast as the MLP.
    """

    def __init__(
        self,
        n_inputs: int = 784,
        hidden: tuple[int, ...] = (800, 800),
        n_classes: int = 10,
        steps: int = 4,
        lif: LIFParameters | None = None,
    ) -> None:
        super().__init__()
        if steps <= 0:
            raise ConfigError(f"steps must be positive, got {steps}")
        self.layers = _linear_chain((n_inputs, *hidden, n_classes))
        self.steps = steps
        self.lif = LIFParameters(threshold=0.5) if lif is None else lif
        check_lif(self.lif)
        for layer in self.layers:
            nn.init.normal_(layer.weight, std=(2 / layer.in_features) ** 0.5)

    def forward(self, x: Tensor, return_inputs: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Logits, and with return_inputs the detached presynaptic rate (B, n_l) of every linear map."""
        inputs = [x.detach()]
        # The image drives every step with the same current, so the first map runs once.
        current = self.layers[0](x).expand(self.steps, *x.shape[:-1], self.layers[0].out_features)
        for layer in self.layers[1:]:
            spikes, _ = lif_sequence(current, self.lif)  # (T, B, n)
            inputs.append(spikes.detach().mean(0))
            current = layer(spikes)
        logits = current.mean(0)
        return (logits, inputs) if return_inputs else logits
