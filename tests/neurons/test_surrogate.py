import math

import pytest
import torch

from synaptorch.errors import ConfigError
from synaptorch.neurons import SURROGATES, spike

X = torch.linspace(-3, 3, 601, dtype=torch.float64)

# The derivatives written out again, independently of the module.
EXPECTED = {
    "superspike": lambda x, a: 1 / (a * x.abs() + 1) ** 2,
    "sigmoid": lambda x, a: a * torch.exp(-a * x) / (1 + torch.exp(-a * x)) ** 2,
    "arctan": lambda x, a: a / 2 / (1 + (math.pi * a * x / 2) ** 2),
    "triangle": lambda x, a: torch.where(x.abs() < 1 / a, a - a * a * x.abs(), 0.0),
    "ste": lambda x, a: torch.ones_like(x),
    "biper": lambda x, a: a / 2 * torch.cos(a * x),
}


def surrogate_gradient(name, x, alpha):
    x = x.clone().requires_grad_()
    out = spike(x, name, alpha)
    (grad,) = torch.autograd.grad(out.sum(), x)
    return out.detach(), grad


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_surrogate_gradient_matches_its_formula(name):
    _, grad = surrogate_gradient(name, X, 2.0)
    torch.testing.assert_close(grad, EXPECTED[name](X, 2.0))


@pytest.mark.parametrize("name", [n for n in SURROGATES if n != "biper"])
def test_spikes_are_a_step_at_zero(name):
    out, _ = surrogate_gradient(name, X, 5.0)
    assert torch.equal(out, (X > 0).double())


@pytest.mark.parametrize("name", ["superspike", "sigmoid", "arctan", "triangle", "reste"])
def test_surrogates_peak_at_the_threshold(name):
    x = torch.cat([X, torch.zeros(1, dtype=torch.float64)])
    _, grad = surrogate_gradient(name, x, 3.0)
    assert grad[-1] == grad.max()
    assert grad.min() >= 0


@pytest.mark.parametrize("name", ["sigmoid", "arctan", "triangle"])
def test_normalised_surrogates_integrate_to_one(name):
    x = torch.linspace(-200, 200, 400_001, dtype=torch.float64)
    _, grad = surrogate_gradient(name, x, 4.0)
    assert torch.trapezoid(grad, x).item() == pytest.approx(1.0, abs=2e-3)


def test_reste_follows_a_power_law_inside_its_range_and_is_zero_outside():
    x = torch.tensor([0.3, 0.6, 1.2, -0.6, 1.6, -2.0], dtype=torch.float64)
    _, grad = surrogate_gradient("reste", x, 3.0)
    expected = (x.abs() / 1.5) ** (1 / 3 - 1) / (2 * 3 * 1.5)
    torch.testing.assert_close(grad[:4], expected[:4])
    assert grad[4] == 0 and grad[5] == 0
    assert grad[0] > grad[1] > grad[2]  # steeper towards the threshold
    # Near zero it is held at its value at 0.1 * 1.5, so it stays finite.
    _, near_zero = surrogate_gradient("reste", torch.tensor([1e-9, 0.1], dtype=torch.float64), 3.0)
    assert near_zero[0] == near_zero[1]


def test_biper_is_a_square_wave_forward():
    x = torch.tensor([0.5, 2.0, 3.5, 5.0, -0.5], dtype=torch.float64)  # alpha 1: sin > 0 on (0, pi)
    out, _ = surrogate_gradient("biper", x, 1.0)
    assert out.tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_unknown_surrogate_is_refused():
    with pytest.raises(ConfigError, match="surrogate"):
        spike(torch.zeros(3), "heaviside")
