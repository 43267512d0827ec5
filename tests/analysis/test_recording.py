import numpy as np
import pytest
import torch

from synaptorch import BDH, BDHConfig
from synaptorch.analysis.recording import STATE_BUDGET, default_batch_size, stream
from synaptorch.errors import ConfigError


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return BDH(BDHConfig(n_layer=2, n_embd=16, n_head=2, n_neuron=16, dropout=0.0)).eval()


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


def test_windows_read_from_a_fresh_state_match_the_parallel_form(small_model):
    ids = np.random.default_rng(1).integers(0, 256, 60)
    (batch,) = list(stream(small_model, ids, window=20, batch_size=3))
    density = small_model.neuron_density(torch.as_tensor(ids).view(3, 20))
    fired = [(layer["x_sparse"] > 0).float().mean().item() for layer in batch.layers]
    assert fired == pytest.approx([d["x"] for d in density], abs=1e-6)


def test_batches_are_sized_by_the_synapse_state():
    paper = BDHConfig(n_layer=6, n_embd=256, n_head=4, n_neuron=8192)
    assert default_batch_size(paper, 512) == max(1, STATE_BUDGET // (6 * 4 * 8192 * 256)) == 1
    tiny = BDHConfig(n_layer=4, n_embd=128, n_head=4, n_neuron=256)
    assert default_batch_size(tiny, 128) * 128 <= 2**14


def test_stream_needs_a_positive_window(small_model):
    with pytest.raises(ConfigError):
        list(stream(small_model, np.zeros(5, dtype=np.int64), window=0))
