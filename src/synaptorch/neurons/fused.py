"""A multi-step LIF layer whose time loop carries as little as possible, forward and backward.

A feed-forward LIF layer (no recurrent weight) over T steps is mostly elementwise work on small
tensors, so its cost is the number of operations per step. Forward, the loop carries only the
membrane: u_t = beta v_{t-1} + x_t, then v_t = reset(u_t); the spikes and everything the
backward pass needs are computed afterwards for all steps at once from the stored u. Backward,
with sg_t the surrogate derivative at u_t - threshold, the gradient of u obeys the linear
recurrence

    gu_t = gs_t sg_t + beta dv_t/du_t gu_{t+1}

(gs: the gradient of the spikes; dv/du: 1 - threshold sg for reset by subtraction,
1 - s - u sg for reset to zero, 1 for none), one fused multiply-add per step. Only u is stored,
and the elementwise work runs over blocks of steps small enough to stay in cache.
"""

from __future__ import annotations

import torch
from torch import Tensor

from synaptorch.neurons.parameters import DEFAULT_LIF, LIFParameters, check_lif, reset_membrane
from synaptorch.neurons.surrogate import DERIVATIVES, biper_forward


def lif_sequence(xs: Tensor, p: LIFParameters = DEFAULT_LIF, v0: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Spikes (T, ..., n) of LIF neurons driven by input currents xs (T, ..., n), and the last membrane.

    Equal, forward and backward, to stepping `lif_step` without a recurrent weight.
    """
    check_lif(p)
    v0 = torch.zeros_like(xs[0]) if v0 is None else v0
    return _FusedLIF.apply(xs, v0, p)


def _spikes(shifted: Tensor, p: LIFParameters) -> Tensor:
    return biper_forward(shifted, p.alpha) if p.surrogate == "biper" else (shifted > 0).to(shifted.dtype)


# Steps per block of the vectorised work, so that a block's tensors are still in cache when the
# time loop reads them (16 x 4096 neurons x 32 steps x 4 bytes = 8 MiB).
BLOCK = 32


class _FusedLIF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xs: Tensor, v0: Tensor, p: LIFParameters) -> tuple[Tensor, Tensor]:
        us, spikes = torch.empty_like(xs), torch.empty_like(xs)
        v = v0
        for start in range(0, xs.shape[0], BLOCK):
            end = min(start + BLOCK, xs.shape[0])
            for t in range(start, end):
                u = torch.add(xs[t], v, alpha=p.beta, out=us[t])
                v = _next_membrane(u, p)
            spikes[start:end] = _spikes(us[start:end] - p.threshold, p)
        ctx.save_for_backward(us)
        ctx.p = p
        return spikes, v

    @staticmethod
    def backward(ctx, grad_spikes: Tensor, grad_v: Tensor) -> tuple[Tensor, Tensor, None]:
        (us,) = ctx.saved_tensors
        p = ctx.p
        grad_u = torch.empty_like(us)
        later = None  # gradient of u one step after the current block
        for end in range(us.shape[0], 0, -BLOCK):
            start = max(end - BLOCK, 0)
            shifted = us[start:end] - p.threshold
            surrogate = DERIVATIVES[p.surrogate](shifted, p.alpha)
            if p.reset == "subtract":
                dv_du = 1 - p.threshold * surrogate
            elif p.reset == "zero":
                dv_du = 1 - _spikes(shifted, p) - us[start:end] * surrogate
            else:
                dv_du = torch.ones_like(shifted)
            block = torch.mul(grad_spikes[start:end], surrogate, out=grad_u[start:end])  # gs_t sg_t
            if later is None:  # the last step's v is the output v
                block[-1].addcmul_(grad_v, dv_du[-1])
            else:
                block[-1].addcmul_(dv_du[-1], later, value=p.beta)
            carry = dv_du.mul_(p.beta)
            for t in range(block.shape[0] - 1, 0, -1):
                block[t - 1].addcmul_(carry[t - 1], block[t])
            later = block[0]
        return grad_u, p.beta * grad_u[0], None


def _next_membrane(u: Tensor, p: LIFParameters) -> Tensor:
    """v after the reset, in as few operations as the reset allows."""
    if p.surrogate == "biper":
        return reset_membrane(u, _spikes(u - p.threshold, p), p.threshold, p.reset)
    if p.reset == "subtract":
        return torch.add(u, u > p.threshold, alpha=-p.threshold)
    if p.reset == "zero":
        return u.masked_fill(u > p.threshold, 0.0)
    return u
