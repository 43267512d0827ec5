import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from synaptorch.analysis.stats import average_ranks, fit_power_law, hurwitz_zeta, mann_whitney_u


def test_average_ranks_share_the_mean_rank_of_ties():
    ranks, ties = average_ranks(np.array([3.0, 1.0, 3.0, 2.0, 3.0]))
    assert ranks.tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]
    assert sorted(ties.tolist()) == [1, 1, 3]


def test_mann_whitney_without_ties_by_hand():
    # Every value of the first sample is below every value of the second: U = 0 of 6 pairs.
    # Mean 3, variance 3 * 2 / 12 * (5 + 1) = 3; z = (3 - 0.5) / sqrt(3).
    result = mann_whitney_u([1, 2, 3], [4, 5])
    assert result.u == 0
    assert result.rank_biserial == -1
    assert result.p == pytest.approx(math.erfc(2.5 / math.sqrt(3) / math.sqrt(2)))
    assert result.p == pytest.approx(0.1489, abs=1e-4)


def test_mann_whitney_with_ties_by_hand():
    # Pairs of [1, 2, 2] against [2, 3]: 1 < 2, 1 < 3, 2 = 2 (1/2), 2 < 3, 2 = 2 (1/2), 2 < 3 -> U = 1.
    # One tie group of three 2s: variance 6 / 12 * ((5 + 1) - (27 - 3) / (5 * 4)) = 2.4.
    result = mann_whitney_u([1, 2, 2], [2, 3])
    assert result.u == 1
    assert result.rank_biserial == pytest.approx(2 * 1 / 6 - 1)
    assert result.p == pytest.approx(math.erfc((2 - 0.5) / math.sqrt(2.4) / math.sqrt(2)))


def test_mann_whitney_of_identical_values_is_no_evidence():
    result = mann_whitney_u([1, 1, 1], [1, 1])
    assert result.p == 1.0
    assert result.rank_biserial == 0


def test_mann_whitney_separates_shifted_samples():
    rng = np.random.default_rng(0)
    result = mann_whitney_u(rng.normal(1, 1, 200), rng.normal(0, 1, 200))
    assert result.p < 1e-6
    assert 0.3 < result.rank_biserial < 0.7  # P(a > b) = Phi(1/sqrt 2) = 0.76 -> r = 0.52


samples = st.lists(st.integers(-5, 5), min_size=1, max_size=15)


@given(samples, samples)
def test_mann_whitney_is_antisymmetric(a, b):
    forward, backward = mann_whitney_u(a, b), mann_whitney_u(b, a)
    assert forward.u + backward.u == pytest.approx(len(a) * len(b))
    assert forward.rank_biserial == pytest.approx(-backward.rank_biserial)
    assert forward.p == pytest.approx(backward.p)
    assert 0 <= forward.p <= 1
    pairs = sum((x > y) + 0.5 * (x == y) for x in a for y in b)
    assert forward.u == pytest.approx(pairs)


def test_hurwitz_zeta_matches_known_sums():
    assert hurwitz_zeta(2.0, 1)[0] == pytest.approx(math.pi**2 / 6, rel=1e-9)
    assert hurwitz_zeta(4.0, 1)[0] == pytest.approx(math.pi**4 / 90, rel=1e-9)
    assert hurwitz_zeta(2.0, 3)[0] == pytest.approx(math.pi**2 / 6 - 1 - 0.25, rel=1e-9)


@pytest.mark.parametrize("alpha", [2.2, 2.8])
def test_power_law_exponent_is_recovered_from_samples(alpha):
    support = np.arange(1, 200_001)
    weights = support**-alpha
    values = np.random.default_rng(1).choice(support, size=4000, p=weights / weights.sum())
    fit = fit_power_law(values)
    assert fit is not None
    assert fit.alpha == pytest.approx(alpha, abs=0.12)
    assert fit.ks < 0.05


def test_power_law_of_a_shifted_tail_finds_its_x_min():
    # Uniform noise below 10, a power law of exponent 2.5 from 10 on: the fit should start near 10.
    rng = np.random.default_rng(2)
    support = np.arange(10, 100_000)
    weights = support**-2.5
    tail = rng.choice(support, size=3000, p=weights / weights.sum())
    values = np.concatenate([tail, rng.integers(1, 10, 1500)])
    fit = fit_power_law(values)
    assert 8 <= fit.x_min <= 14
    assert fit.alpha == pytest.approx(2.5, abs=0.15)


def test_power_law_needs_enough_distinct_values():
    assert fit_power_law([3] * 50) is None
    assert fit_power_law([1, 2, 3]) is None
    assert fit_power_law([0] * 40) is None
