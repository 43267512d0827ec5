"""The fine-tuning methods of the spiking BDH: surrogate gradients, equilibrium rates, TKS, distillation."""

import time

import numpy as np
import pytest
import torch

from synaptorch.errors import ConfigError
from synaptorch.models.spiking_bdh import SpikingBDH
from synaptorch.train.spiking import (
    AC_PJ,
    MAC_PJ,
    ModelSignal,
    convert,
    evaluate_spiking,
    finetune_spiking,
)


def _t4_loss(reference, spiking, tokens) -> float:
    _, (result,) = evaluate_spiking(reference, spiking, tokens[12000:], [4], block_size=32, max_tokens=1024)
    return result.loss


@pytest.mark.parametrize("method", ["surrogate", "equilibrium", "tks", "distill"])
def test_each_method_lowers_the_loss_at_four_steps(small_trained_bdh, word_salad_tokens, method):
    spiking = convert(small_trained_bdh, word_salad_tokens[:2048], block_size=32)
    before = _t4_loss(small_trained_bdh, spiking, word_salad_tokens)
    losses = finetune_spiking(
        spiking, word_salad_tokens[:12000], iterations=30, steps=4, block_size=32, lr=1e-3, method=method
    )
    assert len(losses) == 30 and all(np.isfinite(losses))
    assert _t4_loss(small_trained_bdh, spiking, word_salad_tokens) < before - 0.01


def test_the_equilibrium_gradient_runs_the_spikes_forward_and_the_clipped_relu_backward(small_trained_bdh):
    spiking = SpikingBDH.from_relu(small_trained_bdh, steps=4)
    spiking.thresholds.fill_(0.5)
    current = torch.linspace(-0.4, 1.0, 2 * 64).view(2, 1, 1, 64).requires_grad_()
    with torch.no_grad():
        spikes = spiking.fire_x(current)
    spiking.gradient = "equilibrium"
    rates = spiking.fire_x(current)
    assert torch.equal(rates.detach(), spikes)
    rates.sum().backward()
    # d/dI of threshold * clamp(I / threshold, 0, 1): 1 between 0 and the threshold, else 0.
    inside = (current.detach() > 0) & (current.detach() < 0.5)
    assert torch.equal(current.grad, inside.float())
    assert spikes.unique().numel() == 5  # the T + 1 levels of four steps


def test_the_rates_approach_their_equilibrium_within_half_a_level(small_trained_bdh, word_salad_tokens):
    spiking = convert(small_trained_bdh, word_salad_tokens[:2048], block_size=32)
    relu, results = evaluate_spiking(
        small_trained_bdh, spiking, word_salad_tokens[12000:], [1, 4, 16, 64], block_size=32, max_tokens=512
    )
    gaps = [r.equilibrium_gap for r in results]
    # Starting at half the threshold, T steps round the rate to the nearest of T + 1 levels.
    assert all(0 < gap <= 0.5 / r.steps + 1e-6 for gap, r in zip(gaps, results, strict=True))
    assert gaps == sorted(gaps, reverse=True)
    for r in results:
        assert r.energy_pj_per_token == pytest.approx(
            MAC_PJ * relu.analog_macs_per_token + AC_PJ * r.synaptic_ops_per_token
        )
    assert relu.energy_pj_per_token == pytest.approx(MAC_PJ * (relu.macs_per_token + relu.analog_macs_per_token))


def test_fine_tuning_stops_at_its_time_budget(small_trained_bdh, word_salad_tokens):
    spiking = convert(small_trained_bdh, word_salad_tokens[:2048], block_size=32)
    start = time.perf_counter()
    losses = finetune_spiking(spiking, word_salad_tokens[:12000], 0, block_size=32, method="equilibrium", seconds=0.5)
    elapsed = time.perf_counter() - start
    assert 0.5 <= elapsed < 2.0 and len(losses) > 1
    capped = finetune_spiking(spiking, word_salad_tokens[:12000], 3, block_size=32, method="equilibrium", seconds=60)
    assert len(capped) == 3
    assert finetune_spiking(spiking, word_salad_tokens[:12000], 5, block_size=32, method="none") == []


def test_distillation_learns_from_the_teacher_it_is_given(small_trained_bdh, word_salad_tokens):
    tokens = word_salad_tokens[:12000]
    # A teacher that always predicts id 101 ('e'): the student is pulled towards it, away from the data.
    fixed = torch.full((1, 256), -20.0)
    fixed[0, 101] = 0.0

    class Fixed(torch.nn.Module):
        readout = torch.zeros(1)

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            return fixed.expand(*idx.shape, 256)

    spiking = convert(small_trained_bdh, word_salad_tokens[:2048], block_size=32)
    finetune_spiking(
        spiking, tokens, 30, 4, 32, lr=3e-3, method="distill", teacher=ModelSignal(Fixed(), tokens), alpha=0.0
    )
    idx = torch.from_numpy(word_salad_tokens[12000:12256]).view(8, 32)
    spiking.steps = 4
    with torch.no_grad():
        share = (spiking.eval()(idx).argmax(-1) == 101).float().mean().item()
    assert share > 0.9


def test_bad_method_settings_are_refused(small_trained_bdh, word_salad_tokens):
    spiking = convert(small_trained_bdh, word_salad_tokens[:256], block_size=32)
    tokens = word_salad_tokens[:2000]
    with pytest.raises(ConfigError, match="method must be one of"):
        finetune_spiking(spiking, tokens, 1, block_size=32, method="bptt")
    with pytest.raises(ConfigError, match="its own gradient"):
        finetune_spiking(spiking, tokens, 1, block_size=32, method="surrogate", gradient="equilibrium")
    with pytest.raises(ConfigError, match="gradient must be one of"):
        finetune_spiking(spiking, tokens, 1, block_size=32, method="tks", gradient="exact")
    with pytest.raises(ConfigError, match="seconds"):
        finetune_spiking(spiking, tokens, 1, block_size=32, seconds=-1)
    with pytest.raises(ConfigError, match="alpha"):
        finetune_spiking(spiking, tokens, 1, block_size=32, method="distill", alpha=2.0)


def test_silent_groups_pass_no_gradient_so_few_steps_train_on_the_relu_models_scale(
    small_trained_bdh, word_salad_tokens
):
    # At one step many tokens leave a layer's attention or its xy neurons at an exact 0, where the
    # layer norms' derivative is 1 / sqrt(eps); without blocking it, the gradient reached 1e10.
    spiking = convert(small_trained_bdh, word_salad_tokens[:2048], block_size=32).train()
    idx = torch.from_numpy(word_salad_tokens[: 33 * 8].reshape(8, 33))

    def gradient_norm(steps: int, gradient: str) -> float:
        spiking.steps, spiking.gradient = steps, gradient
        spiking.zero_grad()
        logits = spiking(idx[:, :-1])
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), idx[:, 1:].flatten()).backward()
        return spiking.encoder_x.grad.norm().item()

    relu = gradient_norm(0, "surrogate")
    for gradient in ("surrogate", "equilibrium"):
        for steps in (1, 2, 4):
            assert 0 < gradient_norm(steps, gradient) < 100 * relu
