import pytest
import torch

from synaptorch import BDH, BDHConfig
from synaptorch.analysis.recording import stream
from synaptorch.analysis.report import measure_activity
from synaptorch.analysis.sparsity import SparsityCounter
from synaptorch.data.tokenizer import ByteTokenizer

# 'a' = 97 is class 1, 'b' class 2, 'c' class 3, 'd' = 100 class 0: 6, 3, 2 and 1 of 12 bytes.
TEXT = "aaaaaabbbccd"


def test_firing_rates_of_a_hand_built_model(one_hot_model):
    # Windows of 5 (the last one shorter) two at a time: the streamed counts must be exact.
    result = measure_activity(one_hot_model, ByteTokenizer(), TEXT, window=5, batch_size=2).sparsity
    assert result.tokens == 12
    head0 = torch.tensor([1, 6, 3, 2]) / 12
    head1 = torch.tensor([0, 12, 7, 11]) / 12
    for layer in range(2):
        assert torch.allclose(result.x_rate[layer, 0], head0.double())
        assert torch.allclose(result.x_rate[layer, 1], head1.double())
    assert torch.count_nonzero(result.y_rate) == 0
    per_layer = result.per_layer()
    assert per_layer[1]["x_per_head"] == [round(0.25, 6), round(30 / 48, 6)]
    assert per_layer[0]["x"] == round((12 + 30) / 96, 6)
    assert per_layer[0]["x_never"] == 1 and per_layer[0]["x_always"] == 1
    assert per_layer[0]["y_never"] == 8
    summary = result.summary()
    assert summary["x_never_active"] == 2 and summary["x_always_active"] == 2
    assert summary["neurons"] == 16


def test_streamed_sparsity_matches_the_models_own_density():
    torch.manual_seed(0)
    model = BDH(BDHConfig(n_layer=3, n_embd=16, n_head=2, n_neuron=32, dropout=0.0)).eval()
    ids = torch.randint(0, 256, (3, 40))
    counter = SparsityCounter(3, 2, 32)
    for batch in stream(model, ids.flatten().numpy(), window=40, batch_size=2):
        counter.update(batch)
    density = model.neuron_density(ids)
    result = counter.result()
    for layer in range(3):
        # neuron_density averages in float32, the counter counts exactly
        assert result.x_rate[layer].mean().item() == pytest.approx(density[layer]["x"], abs=1e-6)
        assert result.y_rate[layer].mean().item() == pytest.approx(density[layer]["y"], abs=1e-6)
