import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from synaptorch.neurons import LIFParameters, LIFState, lif_step
from synaptorch.neurons.fused import lif_sequence
from synaptorch.neurons.surrogate import SURROGATES


def reference_loop(xs, p, v0):
    state, spikes = LIFState(v0, torch.zeros_like(v0)), []
    for x in xs:
        s, state = lif_step(x, state, p)
        spikes.append(s)
    return torch.stack(spikes), state.v


@settings(max_examples=40, deadline=None)
@given(
    steps=st.integers(1, 80),  # across blocks of 32 steps
    width=st.integers(1, 6),
    beta=st.sampled_from([0.0, 0.5, 0.9, 1.0]),
    reset=st.sampled_from(["subtract", "zero", "none"]),
    surrogate=st.sampled_from(sorted(SURROGATES)),
    seed=st.integers(0, 2**16),
)
def test_fused_lif_equals_the_step_loop_forward_and_backward(steps, width, beta, reset, surrogate, seed):
    generator = torch.Generator().manual_seed(seed)
    xs = torch.rand(steps, 2, width, generator=generator, dtype=torch.float64) * 0.9
    v0 = torch.rand(2, width, generator=generator, dtype=torch.float64)
    weights = torch.randn(steps, 2, width, generator=generator, dtype=torch.float64)
    p = LIFParameters(beta=beta, reset=reset, surrogate=surrogate, alpha=2.0)
    results = []
    for run in (lambda xs, v0: lif_sequence(xs, p, v0), lambda xs, v0: reference_loop(xs, p, v0)):
        xs_, v0_ = xs.clone().requires_grad_(), v0.clone().requires_grad_()
        spikes, v = run(xs_, v0_)
        loss = (spikes * weights).sum() + 0.3 * v.sum()
        results.append((spikes, v, *torch.autograd.grad(loss, (xs_, v0_))))
    for fused, reference in zip(*results, strict=True):
        torch.testing.assert_close(fused, reference, rtol=1e-9, atol=1e-9)


def test_fused_lif_fires_like_integrate_and_fire_by_hand():
    spikes, v = lif_sequence(torch.full((6, 1), 0.4), LIFParameters(beta=1.0))
    assert spikes[:, 0].tolist() == [0, 0, 1, 0, 0, 1]
    assert v.item() == pytest.approx(0.4)
