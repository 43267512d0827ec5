import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from synaptorch.models import linear_attention
from synaptorch.models.linear_attention import (
    MIN_CHUNK,
    auto_chunk_size,
    causal_linear_attention,
    causal_linear_attention_reference,
)


def inputs(batch, heads, length, neurons, width, seed, shared_values=True, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, length, neurons, generator=generator, dtype=dtype).relu_()
    x = torch.randn(batch, 1 if shared_values else heads, length, width, generator=generator, dtype=dtype)
    return q.requires_grad_(), x.requires_grad_()


def value_and_grads(attention, q, x, weights):
    out = attention(q, x)
    return (out, *torch.autograd.grad((out * weights).sum(), (q, x)))


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 3),
    heads=st.integers(1, 3),
    length=st.integers(1, 70),
    neurons=st.integers(1, 24),
    width=st.integers(1, 12),
    chunk=st.integers(1, 80),
    shared_values=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_chunked_equals_parallel_form_forward_and_gradients(
    batch, heads, length, neurons, width, chunk, shared_values, seed
):
    q, x = inputs(batch, heads, length, neurons, width, seed, shared_values)
    weights = torch.randn(batch, heads, length, width, generator=torch.Generator().manual_seed(seed + 1))
    fast = value_and_grads(lambda q, x: causal_linear_attention(q, x, chunk), q, x, weights)
    reference = value_and_grads(causal_linear_attention_reference, q, x, weights)
    for got, expected in zip(fast, reference, strict=True):
        scale = expected.abs().max().clamp_min(1.0)
        torch.testing.assert_close(got / scale, expected / scale, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("length", "chunk"), [(37, 8), (16, 16), (9, 1), (5, 20)])
def test_gradients_pass_gradcheck_in_double_precision(length, chunk):
    q, x = inputs(2, 2, length, 6, 4, seed=length, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda q, x: causal_linear_attention(q, x, chunk), (q, x))


def test_bfloat16_runs_in_bfloat16_with_a_float32_state():
    q, x = inputs(2, 2, 96, 16, 8, seed=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = causal_linear_attention(q.bfloat16(), x, 16)
    assert out.dtype == torch.bfloat16
    expected = causal_linear_attention_reference(q, x)
    assert ((out.float() - expected).abs().max() / expected.abs().max()).item() < 2e-2
    out.float().sum().backward()
    assert q.grad.dtype == torch.float32 and x.grad.dtype == torch.float32


def bf16_errors(length: int, chunk: int) -> list[float]:
    """Relative RMS errors of the chunked form in bf16, forward and both gradients, against float64."""
    q, x = inputs(1, 2, length, 16, 8, seed=0, dtype=torch.bfloat16)
    weights = torch.randn(1, 2, length, 8, generator=torch.Generator().manual_seed(1), dtype=torch.bfloat16)
    got = value_and_grads(lambda q, x: causal_linear_attention(q, x, chunk), q, x, weights)
    assert all(t.dtype == torch.bfloat16 for t in got)
    # The reference takes the same bf16-rounded inputs, so only the arithmetic is compared.
    exact = [t.detach().double().requires_grad_() for t in (q, x)]
    expected = value_and_grads(causal_linear_attention_reference, *exact, weights.double())
    return [((g.double() - e).norm() / e.norm()).item() for g, e in zip(got, expected, strict=True)]


def test_a_long_bfloat16_sequence_keeps_the_error_of_a_few_roundings(monkeypatch):
    """2048 tokens in 256 chunks: the float32 state keeps the error to a few bf16 roundings.

    bf16 keeps 8 bits, a rounding error of up to 2**-9 relative. The output passes through a few
    roundings whatever the length (the chunk's products, the state read in bf16, the sum of the
    two): under 2**-8 RMS. The gradients chain a few more, under 2**-7. A state summed in bf16
    rounds once per chunk, an error that grows with the number of chunks and exceeds both bounds.
    """
    bounds = (2**-8, 2**-7, 2**-7)  # forward, gradient of q, gradient of x
    assert all(error < bound for error, bound in zip(bf16_errors(2048, 8), bounds, strict=True))
    monkeypatch.setattr(linear_attention, "_state_dtype", lambda q: q.dtype)
    assert all(error > bound for error, bound in zip(bf16_errors(2048, 8), bounds, strict=True))


def test_chunk_size_is_the_whole_sequence_when_short_and_fixed_when_long():
    assert auto_chunk_size(100, 256, 128) == 100
    assert auto_chunk_size(4096, 256, 128) == auto_chunk_size(65536, 256, 128) == MIN_CHUNK
    # With wide values the state costs more, so a single chunk stays cheaper for longer.
    assert auto_chunk_size(400, 8192, 256) == 400


def test_default_chunking_matches_the_parallel_form_on_a_long_sequence():
    q, x = inputs(1, 2, 3 * MIN_CHUNK + 11, 32, 8, seed=3)
    torch.testing.assert_close(
        causal_linear_attention(q, x), causal_linear_attention_reference(q, x), rtol=1e-5, atol=1e-4
    )


def test_nonpositive_chunk_size_is_refused():
    q, x = inputs(1, 1, 4, 2, 2, seed=0)
    with pytest.raises(ValueError, match="chunk_size"):
        causal_linear_attention(q, x, 0)


@pytest.mark.slow
def test_compiled_chunked_attention_equals_the_parallel_form():
    q, x = inputs(2, 2, 50, 16, 8, seed=5)
    weights = torch.randn(2, 2, 50, 8)
    compiled = torch.compile(lambda q, x: causal_linear_attention(q, x, 16))
    fast = value_and_grads(compiled, q, x, weights)
    reference = value_and_grads(causal_linear_attention_reference, q, x, weights)
    for got, expected in zip(fast, reference, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
