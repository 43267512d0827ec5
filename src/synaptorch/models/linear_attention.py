"""BDH's causal linear attention, a_t = sum_{s<t} <q_t, q_s> x_s, in a form whose cost is linear in T.

The sequence is cut into chunks of C tokens. Inside a chunk the scores are a C x C matrix, as in
the parallel form; across chunks the past is the Hebbian synapse state rho = sum_s q_s^T x_s
(N x d per head), read by every query of the next chunk and then written with the chunk's own
pairs, as in the recurrent form. Per token this costs 2C(N + d) for the scores and 4Nd for the
state instead of the parallel form's 2T(N + d). Training keeps q, x, the chunk scores (C floats
per token and head) and the state each chunk read (Nd / C per token and head), never a T x T
tensor; the backward pass reads the queries' gradients off those states in one batched product
and sweeps the chunks once backward for the keys' and values'. With recomputation (see BDH)
these live for one layer at a time.

Decay: with a factor gamma in (0, 1] per head, the state fades at every token, rho_{t+1} = gamma
rho_t + q_t^T x_t, so that a_t = sum_{s<t} gamma^(t-1-s) <q_t, q_s> x_s (the retention of RetNet,
Sun et al. 2023). Inside a chunk the scores are weighted by gamma^(i-1-j); query i of a chunk
reads the state entering it weighted by gamma^i; key j is written weighted by gamma^(C-1-j); and
the state fades by gamma^C from chunk to chunk. The weights are relative to the chunk, so no power
of gamma grows with the length of the sequence.

Precision: every product runs in q's dtype (bf16 under autocast, which is off inside, so that the
inputs' dtype decides), accumulating in float32 as matmuls do. The synapse state is accumulated in
at least float32: each chunk's pairs are added to a float32 running sum, so that bf16 rounding does
not build up over the chunks of a long sequence. Every read of the state casts it to q's dtype, one
rounding whatever the length, which keeps the state products as fast as the rest. The backward
pass keeps its running sum of the later chunks' pairs the same way.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Shorter chunks make the state products, which contract over C tokens, inefficient; longer ones
# spend more on the C x C scores. Chunk lengths are compared in benchmarks/fast_paths.py.
MIN_CHUNK = 64


def auto_chunk_size(seq_len: int, n_neuron: int, head_dim: int) -> int:
    """The chunk length C for a sequence of seq_len tokens.

    One chunk of the whole sequence costs 2T(N + d) per token; chunks of C cost 2C(N + d) plus
    4Nd for reading and writing the state. Chunking pays once T exceeds C + 2Nd / (N + d).
    """
    state_cost_in_tokens = 2 * n_neuron * head_dim / (n_neuron + head_dim)
    if seq_len <= MIN_CHUNK + state_cost_in_tokens:
        return seq_len
    return MIN_CHUNK


def causal_linear_attention_reference(q: Tensor, x: Tensor, decay: Tensor | None = None) -> Tensor:
    """The parallel form: the whole T x T score matrix, masked. q (..., T, N), x (..., T, d)."""
    return _decayed_scores(q @ q.mT, decay) @ x


def causal_linear_attention(
    q: Tensor, x: Tensor, chunk_size: int | None = None, detach_kv: bool = False, decay: Tensor | None = None
) -> Tensor:
    """a (..., T, d) from q (..., T, N) and x (..., T, d), equal to the reference form.

    The leading dimensions of x broadcast against those of q: BDH's heads share one x.
    chunk_size None picks it with `auto_chunk_size`. With detach_kv the gradient reaches q only in
    its role of query, a_t = sum_{s<t} <q_t, sg(q_s)> sg(x_s): the keys and values are constants,
    as in the BDH paper's training without backpropagation through the attention (its 7.2), and
    the backward pass skips its sweep over the chunks. decay, when given, holds the factor gamma
    of each sequence, broadcasting against q's leading dimensions, (nh, 1) for BDH's (nh, B, T, N).
    """
    T = q.shape[-2]
    if chunk_size is None:
        chunk_size = auto_chunk_size(T, q.shape[-1], x.shape[-1])
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    return _ChunkedLinearAttention.apply(q, x, min(chunk_size, T), detach_kv, decay)


def causal_linear_attention_detached_reference(q: Tensor, x: Tensor, decay: Tensor | None = None) -> Tensor:
    """The parallel form with the keys and values detached: the gradient reaches q as query only."""
    return _decayed_scores(q @ q.detach().mT, decay) @ x.detach()


def decay_weights(decay: Tensor, length: int) -> tuple[Tensor, Tensor, Tensor]:
    """For a block of `length` tokens read against the state entering it and then written to it:
    the weights gamma^i of the queries' reads and gamma^(length-1-j) of the keys' writes, each
    (..., length, 1), and gamma^length, the fading of that state over the block, (..., 1, 1).
    decay (...) holds gamma; the weights are in its dtype, at least float32."""
    dtype = torch.promote_types(decay.dtype, torch.float32)
    position = torch.arange(length, dtype=dtype, device=decay.device)
    log_decay = decay.to(dtype).log()[..., None, None]
    reads = torch.exp(log_decay * position[:, None])
    writes = torch.exp(log_decay * (length - 1 - position)[:, None])
    return reads, writes, torch.exp(log_decay * length)


def _decay_mask(decay: Tensor, length: int) -> Tensor:
    """gamma^(i-1-j) below the diagonal and 0 on and above it, (..., length, length), at least float32."""
    dtype = torch.promote_types(decay.dtype, torch.float32)
    position = torch.arange(length, dtype=dtype, device=decay.device)
    lag = (position[:, None] - position[None, :] - 1).clamp_min(0)
    return torch.exp(decay.to(dtype).log()[..., None, None] * lag).tril_(diagonal=-1)


def _decayed_scores(scores: Tensor, decay: Tensor | None) -> Tensor:
    """Scores (..., T, T) masked below the diagonal and, with decay, weighted by gamma^(t-1-s)."""
    if decay is None:
        return _strict_lower(scores)
    return scores * _decay_mask(decay, scores.shape[-1]).to(scores.dtype)


def _chunks(t: Tensor, chunk_size: int) -> Tensor:
    """(..., T, D) -> (..., n, C, D), zero-padding T to a multiple of C; zero rows add nothing."""
    pad = -t.shape[-2] % chunk_size
    if pad:
        t = torch.nn.functional.pad(t, (0, 0, 0, pad))
    return t.unflatten(-2, (-1, chunk_size))


def _unchunk(t: Tensor, length: int) -> Tensor:
    return t.flatten(-3, -2)[..., :length, :]


def _state_dtype(q: Tensor) -> torch.dtype:
    return torch.promote_types(q.dtype, torch.float32)


def _strict_lower(scores: Tensor) -> Tensor:
    return scores.tril_(diagonal=-1)


class _ChunkedLinearAttention(torch.autograd.Function):
    """Computes in the dtype of q; the synapse state is summed in at least float32 and read in q's dtype."""

    @staticmethod
    def forward(ctx, q: Tensor, x: Tensor, chunk_size: int, detach_kv: bool = False, decay: Tensor | None = None):
        with torch.autocast(q.device.type, enabled=False):
            qc, xc = _chunks(q, chunk_size), _chunks(_per_head(x, q), chunk_size)  # (..., n, C, N), (..., n, C, d)
            # C floats per token and head, kept: (..., n, C, C)
            scores = _decayed_scores(qc @ qc.mT, None if decay is None else decay[..., None])
            a = scores @ xc  # (..., n, C, d)
            reads, writes, fade = _chunk_weights(decay, chunk_size, q.dtype)
            # states[c] is rho after chunks 0..c, which chunk c + 1 reads: (..., n - 1, N, d)
            n = qc.shape[-3]
            states = q.new_empty(*qc.shape[:-3], n - 1, q.shape[-1], x.shape[-1], dtype=_state_dtype(q))
            for c in range(n - 1):
                written = _weighted(qc[..., c, :, :], writes).mT @ xc[..., c, :, :]
                states[..., c, :, :] = written if c == 0 else _weighted(states[..., c - 1, :, :], fade) + written
                a[..., c + 1, :, :] += _weighted(qc[..., c + 1, :, :], reads) @ states[..., c, :, :].to(q.dtype)
        ctx.save_for_backward(q, x, scores, states, decay)
        ctx.chunk_size, ctx.x_dtype, ctx.detach_kv = chunk_size, x.dtype, detach_kv
        return _unchunk(a, q.shape[-2])

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor | None, None, None, None]:
        q, x, scores, states, decay = ctx.saved_tensors
        T, C = q.shape[-2], ctx.chunk_size
        with torch.autocast(q.device.type, enabled=False):
            qc, xc, gc = _chunks(q, C), _chunks(_per_head(x, q), C), _chunks(grad.to(q.dtype), C)
            n = qc.shape[-3]
            reads, writes, fade = _chunk_weights(decay, C, q.dtype)

            # Inside chunks the scores S = tril(q q^T) * M (M the decay, or 1) were used as S x, so
            # dx = S^T g and dS = tril(g x^T) * M, which reaches q through both sides of q q^T.
            grad_scores = _decayed_scores(gc @ xc.mT, None if decay is None else decay[..., None])
            # Across chunks: the queries of chunk c + 1 read states[c].
            grad_reads = _weighted(
                gc[..., 1:, :, :] @ states.mT.to(q.dtype), None if reads is None else reads[..., None, :, :]
            )
            if ctx.detach_kv:  # q as query only; no gradient for the keys and values
                grad_q = grad_scores @ qc
                grad_q[..., 1:, :, :] += grad_reads
                return _unchunk(grad_q, T), None, None, None, None
            grad_x_heads = scores.mT @ gc  # (..., n, C, d)
            grad_q = (grad_scores + grad_scores.mT) @ qc  # (..., n, C, N)
            del grad_scores
            grad_q[..., 1:, :, :] += grad_reads
            # The pairs of chunk c were read by every later query, weighted by its gradient (and
            # by the fading since they were written).
            later = None
            for c in range(n - 1, 0, -1):
                read_c = _weighted(qc[..., c, :, :], reads).mT @ gc[..., c, :, :]  # (..., N, d)
                later = read_c.to(_state_dtype(q)) if later is None else _weighted(later, fade) + read_c
                later_ = later.to(q.dtype)
                grad_q[..., c - 1, :, :] += _weighted(xc[..., c - 1, :, :] @ later_.mT, writes)
                grad_x_heads[..., c - 1, :, :] += _weighted(qc[..., c - 1, :, :], writes) @ later_

        grad_x = _unchunk(grad_x_heads, T).sum_to_size(x.shape)
        return _unchunk(grad_q, T), grad_x.to(ctx.x_dtype), None, None, None


def _chunk_weights(decay: Tensor | None, chunk_size: int, dtype: torch.dtype) -> tuple:
    """`decay_weights` of a chunk, the reads and writes in the dtype of the products; Nones without decay."""
    if decay is None:
        return None, None, None
    reads, writes, fade = decay_weights(decay, chunk_size)
    return reads.to(dtype), writes.to(dtype), fade


def _weighted(t: Tensor, weight: Tensor | None) -> Tensor:
    return t if weight is None else t * weight


def _per_head(x: Tensor, q: Tensor) -> Tensor:
    """x in q's dtype with q's leading dimensions: matmuls that broadcast a shared x copy more."""
    return x.to(q.dtype).expand(*q.shape[:-1], x.shape[-1]).contiguous()
