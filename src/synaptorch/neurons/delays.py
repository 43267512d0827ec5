"""Learnable synaptic delays: a weight and a delay per synapse, as one temporal convolution.

    y_t[j] = sum_i w[j, i] x_{t - d[j, i]}[i]

Following dilated convolutions with learnable spacings (DCLS) as used for delays: each synapse's
kernel over the last `max_delay` steps is a Gaussian bump at its delay, so the delay gets a
gradient; `sigma` is meant to shrink during training, and at 0 every kernel is one tap at the
rounded delay, the delay of a real synapse.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from synaptorch.errors import ConfigError


class SynapticDelay(nn.Module):
    """x (T, B, n_in) -> (T, B, n_out); delays in [0, max_delay - 1] steps, learned."""

    def __init__(self, n_in: int, n_out: int, max_delay: int, sigma: float = 1.0) -> None:
        super().__init__()
        if max_delay < 1 or sigma < 0:
            raise ConfigError(f"need max_delay >= 1 and sigma >= 0, got {max_delay} and {sigma}")
        self.max_delay, self.sigma = max_delay, sigma
        self.weight = nn.Parameter(torch.randn(n_out, n_in) / n_in**0.5)
        self.delay = nn.Parameter(torch.rand(n_out, n_in) * (max_delay - 1))

    def kernel(self) -> Tensor:
        """(n_out, n_in, max_delay) taps; tap k holds the input from max_delay - 1 - k steps ago."""
        delay = self.delay.clamp(0, self.max_delay - 1)
        lag = torch.arange(self.max_delay - 1, -1, -1, device=delay.device, dtype=delay.dtype)
        if self.sigma == 0:
            taps = (lag == delay.detach().round()[..., None]).to(delay.dtype)
        else:
            taps = torch.exp(-0.5 * ((lag - delay[..., None]) / self.sigma) ** 2)
            taps = taps / taps.sum(-1, keepdim=True)
        return self.weight[..., None] * taps

    def forward(self, x: Tensor) -> Tensor:
        signal = F.pad(x.permute(1, 2, 0), (self.max_delay - 1, 0))  # (B, n_in, max_delay - 1 + T)
        return F.conv1d(signal, self.kernel()).permute(2, 0, 1)
