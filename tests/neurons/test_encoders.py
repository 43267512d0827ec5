import pytest
import torch

from synaptorch.errors import ConfigError
from synaptorch.neurons.encoders import delta_encode, latency_encode, raster_plot, rate_encode


def test_rate_code_fires_at_the_given_rate():
    x = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0])
    spikes = rate_encode(x, 20_000, generator=torch.Generator().manual_seed(0))
    assert spikes.shape == (20_000, 5) and set(spikes.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(spikes.mean(0), x, rtol=0, atol=0.01)
    assert spikes[:, 0].sum() == 0 and spikes[:, 4].sum() == 20_000


def test_latency_code_fires_once_earlier_for_larger_values():
    spikes = latency_encode(torch.tensor([[1.0, 0.5, 0.0, 0.25]]), steps=5)
    assert spikes.shape == (5, 1, 4)
    expected = torch.zeros(5, 4)  # at steps round((1 - x) * 4): 0, 2, never, 3
    expected[0, 0] = expected[2, 1] = expected[3, 3] = 1
    assert torch.equal(spikes[:, 0], expected)


def test_delta_code_signs_changes_beyond_the_threshold():
    x = torch.tensor([[0.0], [0.5], [0.55], [0.2], [0.2]])
    assert delta_encode(x, threshold=0.1)[:, 0].tolist() == [0.0, 1.0, 0.0, -1.0, 0.0]


def test_encoders_refuse_values_outside_their_range():
    with pytest.raises(ConfigError):
        rate_encode(torch.tensor([1.5]), 3)
    with pytest.raises(ConfigError):
        latency_encode(torch.tensor([-0.1]), 3)
    with pytest.raises(ConfigError):
        delta_encode(torch.zeros(3, 1), threshold=0)


def test_raster_plot_draws_one_dot_per_spike(tmp_path):
    spikes = (torch.rand(50, 8, generator=torch.Generator().manual_seed(1)) < 0.2).float()
    figure = raster_plot(spikes, tmp_path / "raster.png", title="test")
    (dots,) = figure.axes[0].collections
    assert len(dots.get_offsets()) == int(spikes.sum())
    assert (tmp_path / "raster.png").stat().st_size > 1000
    with pytest.raises(ConfigError):
        raster_plot(torch.zeros(3, 2, 2))
