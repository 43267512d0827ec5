import pytest
import torch

from synaptorch.errors import ConfigError
from synaptorch.neurons.delays import SynapticDelay


def shifted(v, steps):
    return torch.cat([torch.zeros(steps, *v.shape[1:]), v[: len(v) - steps]])


def test_hard_delays_shift_each_synapse_by_its_own_number_of_steps():
    layer = SynapticDelay(2, 2, max_delay=5, sigma=0)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0.0], [0.5, 2.0]]))
        layer.delay.copy_(torch.tensor([[3.0, 0.0], [0.0, 1.2]]))  # 1.2 rounds to 1
    x = torch.randn(9, 3, 2)
    y = layer(x)
    torch.testing.assert_close(y[..., 0], shifted(x[..., 0], 3))
    torch.testing.assert_close(y[..., 1], 0.5 * x[..., 0] + 2.0 * shifted(x[..., 1], 1))


def test_soft_delays_are_learnable_and_centred_on_the_delay():
    layer = SynapticDelay(3, 4, max_delay=8, sigma=0.5)
    x = torch.randn(20, 2, 3)
    layer(x).square().sum().backward()
    assert layer.delay.grad.abs().sum() > 0 and layer.weight.grad.abs().sum() > 0
    with torch.no_grad():
        layer.delay.fill_(2.0)
    taps = layer.kernel() / layer.weight[..., None]
    assert (taps.argmax(-1) == 8 - 1 - 2).all()  # tap k holds the input from 7 - k steps ago
    torch.testing.assert_close(taps.sum(-1), torch.ones(4, 3))


def test_impossible_delay_settings_are_refused():
    with pytest.raises(ConfigError):
        SynapticDelay(2, 2, max_delay=0)
    with pytest.raises(ConfigError):
        SynapticDelay(2, 2, max_delay=3, sigma=-1)
