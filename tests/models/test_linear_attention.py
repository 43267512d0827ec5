import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from synaptorch.models import linear_attention
from synaptorch.models.linear_attention import (
    MIN_CHUNK,
    auto_chunk_size,
    causal_linear_attention,
    causal_linear_attention_detached_reference,
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


def fading_recurrence(q, x, decay):
    """a_t = q_t rho_t with rho_{t+1} = gamma rho_t + q_t^T x_t, token by token."""
    rho = torch.zeros(*q.shape[:-2], q.shape[-1], x.shape[-1], dtype=q.dtype)
    values = x.expand(*q.shape[:-1], x.shape[-1])
    reads = []
    for t in range(q.shape[-2]):
        reads.append(q[..., t : t + 1, :] @ rho)
        rho = decay[..., None, None] * rho + q[..., t, :, None] * values[..., t, None, :]
    return torch.cat(reads, -2)


@settings(max_examples=30, deadline=None)
@given(
    heads=st.integers(1, 3),
    length=st.integers(1, 50),
    chunk=st.integers(1, 60),
    detach_kv=st.booleans(),
    decays=st.lists(st.floats(0.5, 1.0), min_size=3, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_a_fading_state_in_chunks_equals_the_token_recurrence(heads, length, chunk, detach_kv, decays, seed):
    """With decay the chunked form, forward and gradients, equals the recurrence and the masked parallel form."""
    q, x = inputs(2, heads, length, 6, 4, seed, dtype=torch.float64)
    decay = torch.tensor(decays[:heads], dtype=torch.float64).view(1, heads)  # per head, broadcast over the batch
    weights = torch.randn(2, heads, length, 4, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    fast = causal_linear_attention(q, x, chunk, detach_kv, decay)
    reference = causal_linear_attention_detached_reference if detach_kv else causal_linear_attention_reference
    expected = reference(q, x, decay)
    torch.testing.assert_close(fast, fading_recurrence(q, x, decay), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fast, expected, rtol=1e-10, atol=1e-10)
    wanted = [q] if detach_kv else [q, x]
    got = torch.autograd.grad((fast * weights).sum(), wanted)
    for g, e in zip(got, torch.autograd.grad((expected * weights).sum(), wanted), strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


def test_a_fading_state_forgets_what_no_decay_keeps():
    generator = torch.Generator().manual_seed(0)
    q = torch.rand(1, 1, 300, 4, generator=generator, dtype=torch.float64) + 0.1
    x = torch.randn(1, 1, 300, 2, generator=generator, dtype=torch.float64)
    loud_first = q.clone()
    loud_first[..., 0, :] *= 1e6
    half = torch.tensor([0.5], dtype=torch.float64)
    # At a lag of 298 the weight gamma^297 is 1e-90: the last token reads nothing of the first.
    last = [causal_linear_attention(v, x, 64, decay=half)[..., -1, :] for v in (q, loud_first)]
    torch.testing.assert_close(last[0], last[1], rtol=1e-9, atol=0)
    kept = [causal_linear_attention(v, x, 64)[..., -1, :] for v in (q, loud_first)]
    assert (kept[1] - kept[0]).abs().max() > 1e3


@pytest.mark.parametrize(("length", "chunk"), [(37, 8), (16, 16), (9, 1), (5, 20)])
def test_a_fading_state_passes_gradcheck(length, chunk):
    q, x = inputs(2, 2, length, 6, 4, seed=length, dtype=torch.float64)
    decay = torch.tensor([[0.7], [0.95]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda q, x: causal_linear_attention(q, x, chunk, decay=decay), (q, x))


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
