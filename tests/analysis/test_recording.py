import numpy as np
import pytest
import torch

from synaptorch import BDHConfig
from synaptorch.analysis.recording import STATE_BUDGET, default_batch_size, stream
from synaptorch.errors import ConfigError
from synaptorch.models.spiking_bdh import SpikingBDH


def test_stream_covers_the_text_once_in_bounded_batches(small_model):
    ids = np.random.default_rng(0).integers(0, 256, 1003)
    batches = list(stream(small_model, ids, window=10, batch_size=4))
    positions = torch.cat([b.positions.flatten() for b in batches])
    assert positions.tolist() == list(range(1003))
    assert all(b.ids.numel() <= 40 for b in batches)
    assert batches[-1].ids.shape == (1, 3)  # the short tail window comes alone
    for b in batches:
        assert torch.equal(b.ids, torch.as_tensor(ids)[b.positions])
        assert len(b.layers) == 2
        assert b.layers[0]["x_sparse"].shape == (2, *b.ids.shape, 16)
        assert b.layers[0]["residual"].shape == (*b.ids.shape, 16)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_windows_read_from_a_fresh_state_match_the_parallel_form(small_model, batch_size):
    ids = np.random.default_rng(1).integers(0, 256, 60)
    batches = list(stream(small_model, ids, window=20, batch_size=batch_size))
    assert len(batches) == 3 // batch_size
    streamed = [torch.cat([b.layers[layer]["x_sparse"] for b in batches], dim=1) for layer in range(2)]
    # The parallel form reads each window on its own; at 0 steps the spiking BDH is the ReLU model
    # with its activations observable.
    parallel = []
    relu = SpikingBDH.from_relu(small_model, steps=0)
    relu(torch.as_tensor(ids).view(3, 20), lambda layer, x_sparse, **_: parallel.append(x_sparse))
    for layer in range(2):  # (nh, B, T, N)
        torch.testing.assert_close(streamed[layer], parallel[layer], atol=1e-5, rtol=1e-5)


def test_batches_are_sized_by_the_synapse_state():
    paper = BDHConfig(n_layer=6, n_embd=256, n_head=4, n_neuron=8192)
    assert default_batch_size(paper, 512) == max(1, STATE_BUDGET // (6 * 4 * 8192 * 256)) == 1
    tiny = BDHConfig(n_layer=4, n_embd=128, n_head=4, n_neuron=256)
    assert default_batch_size(tiny, 128) * 128 <= 2**14


def test_stream_needs_a_positive_window(small_model):
    with pytest.raises(ConfigError):
        list(stream(small_model, np.zeros(5, dtype=np.int64), window=0))
