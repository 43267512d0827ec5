import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from synaptorch import BDH, GPT, BDHConfig, GPTConfig
from synaptorch.errors import ConfigError
from synaptorch.models.sampling import filter_logits, generate, stream_tokens


def tiny_model() -> BDH:
    torch.manual_seed(0)
    return BDH(BDHConfig(n_layer=2, n_embd=16, n_head=2, n_neuron=32, dropout=0.0))


def test_top_k_keeps_exactly_the_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    kept = torch.isfinite(filter_logits(logits, top_k=2))
    assert kept.tolist() == [[False, True, False, True, False]]


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    kept = torch.isfinite(filter_logits(probs.log(), top_p=0.75))
    assert kept.tolist() == [[True, True, False, False]]
    kept = torch.isfinite(filter_logits(probs.log(), top_p=0.1))
    assert kept.tolist() == [[True, False, False, False]]


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(-10, 10), min_size=2, max_size=30),
    st.floats(0.01, 1.0),
    st.integers(0, 30),
    st.floats(0.1, 3.0),
)
def test_filtered_distribution_is_valid(values, top_p, top_k, temperature):
    logits = torch.tensor([values])
    filtered = filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    kept = torch.isfinite(filtered)
    assert kept.any()
    assert logits[kept].max() == logits.max()  # a most likely token always survives
    probs = filtered.softmax(-1)
    assert math.isclose(probs.sum().item(), 1.0, rel_tol=1e-5)


@pytest.mark.parametrize("architecture", ["bdh", "gpt"])
def test_greedy_generation_equals_argmax_of_full_recompute(architecture):
    torch.manual_seed(0)
    model = tiny_model() if architecture == "bdh" else GPT(GPTConfig(n_layer=2, n_embd=32, n_head=4))
    model.eval()
    prompt = torch.randint(0, 256, (2, 7))
    out = generate(model, prompt, 12, temperature=0.0, prefill_chunk=3)
    seq = prompt
    with torch.no_grad():
        for _ in range(12):
            seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, seq)


def test_seed_makes_sampling_reproducible():
    model = tiny_model()
    prompt = torch.randint(0, 256, (1, 4))
    a = generate(model, prompt, 20, temperature=1.0, top_k=40, seed=3)
    b = generate(model, prompt, 20, temperature=1.0, top_k=40, seed=3)
    c = generate(model, prompt, 20, temperature=1.0, top_k=40, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_generation_state_does_not_grow():
    """The recurrent state after 5 and after 200 tokens holds the same number of numbers."""
    model = tiny_model().eval()
    _, short = model.forward_recurrent(torch.randint(0, 256, (1, 5)))
    _, long = model.forward_recurrent(torch.randint(0, 256, (1, 200)))
    assert [r.shape for r in short.rho] == [r.shape for r in long.rho]


def test_stream_yields_one_token_per_step_and_restores_training_mode():
    model = tiny_model().train()
    tokens = list(stream_tokens(model, torch.tensor([[1, 2, 3]]), 5, seed=0))
    assert len(tokens) == 5 and all(t.shape == (1,) for t in tokens)
    assert model.training


@pytest.mark.parametrize("kwargs", [{"temperature": -1.0}, {"top_k": -1}, {"top_p": 0.0}, {"top_p": 1.5}])
def test_bad_sampling_settings_are_refused(kwargs):
    with pytest.raises(ConfigError):
        generate(tiny_model(), torch.tensor([[1]]), 3, **kwargs)
