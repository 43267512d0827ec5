import itertools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from synaptorch.errors import ConfigError
from synaptorch.models.gpt import GPT, GPTConfig


def tiny_gpt(seed=0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{"n_layer": 2, "n_embd": 32, "n_head": 4, **overrides})).eval()


def test_shapes_and_parameter_count():
    model = tiny_gpt()
    assert model(torch.randint(0, 256, (3, 9))).shape == (3, 9, 256)
    assert sum(p.numel() for p in model.parameters()) == model.config.n_params


def test_output_weights_are_tied_to_the_embedding():
    model = tiny_gpt()
    names = [name for name, _ in model.named_parameters()]
    assert not any("head" in name or "readout" in name for name in names)
    with torch.no_grad():
        model.embed.weight[7].zero_()
    logits = model(torch.randint(0, 256, (1, 5)))
    assert torch.all(logits[..., 7] == 0)


def test_causal():
    model = tiny_gpt()
    idx = torch.randint(0, 256, (1, 10))
    changed = idx.clone()
    changed[0, 6] += 1
    torch.testing.assert_close(model(idx)[:, :6], model(changed)[:, :6], rtol=0, atol=0)


@settings(max_examples=20, deadline=None)
@given(
    n_layer=st.integers(1, 3),
    heads_and_dim=st.sampled_from([(1, 8), (2, 16), (4, 32), (3, 24)]),
    cuts=st.lists(st.integers(1, 29), max_size=5, unique=True),
    seed=st.integers(0, 2**16),
)
def test_kv_cache_equals_full_recompute_for_any_chunking(n_layer, heads_and_dim, cuts, seed):
    n_head, n_embd = heads_and_dim
    model = tiny_gpt(seed, n_layer=n_layer, n_head=n_head, n_embd=n_embd)
    idx = torch.randint(0, 256, (2, 30), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        full = model(idx)
        outs, state = [], None
        for start, end in itertools.pairwise([0, *sorted(cuts), 30]):
            logits, state = model.forward_recurrent(idx[:, start:end], state)
            outs.append(logits)
    torch.testing.assert_close(torch.cat(outs, 1), full, rtol=0, atol=1e-4)
    assert state.position == 30 and state.keys[0].shape[2] == 30


def test_every_parameter_gets_a_gradient():
    model = tiny_gpt(dropout=0.1).train()
    idx = torch.randint(0, 256, (2, 12))
    F.cross_entropy(model(idx[:, :-1]).flatten(0, 1), idx[:, 1:].flatten()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "bad", [{"n_layer": 0}, {"n_embd": 30, "n_head": 4}, {"n_embd": 12, "n_head": 4}, {"dropout": -0.1}]
)
def test_impossible_configs_are_refused(bad):
    with pytest.raises(ConfigError):
        GPTConfig(**bad)
