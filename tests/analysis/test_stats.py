import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from synaptorch.analysis.stats import EXACT_UP_TO, fit_power_law, holm, mann_whitney_u


def test_mann_whitney_without_ties_by_hand_is_exact():
    # Every value of the first sample is below every value of the second: U = 0 of 6 pairs. Under
    # the null hypothesis each of the C(5, 2) = 10 ways to place the second sample is equally
    # likely, and one of them gives U = 0 (one gives U = 6): two-sided p = 2 / 10.
    result = mann_whitney_u([1, 2, 3], [4, 5])
    assert result.u == 0
    assert result.rank_biserial == -1
    assert result.method == "exact"
    assert result.p == pytest.approx(0.2)


def test_mann_whitney_of_large_samples_is_the_normal_approximation():
    # 60 values in the first sample against 2, no ties, all below: U = 0, mean 60, variance
    # 60 * 2 / 12 * (62 + 1) = 630; z = (60 - 0.5) / sqrt(630).
    result = mann_whitney_u(np.arange(60), [100, 101])
    assert EXACT_UP_TO < 60
    assert result.method == "asymptotic"
    assert result.p == pytest.approx(math.erfc(59.5 / math.sqrt(630) / math.sqrt(2)))


def test_mann_whitney_with_ties_by_hand():
    # Pairs of [1, 2, 2] against [2, 3]: 1 < 2, 1 < 3, 2 = 2 (1/2), 2 < 3, 2 = 2 (1/2), 2 < 3 -> U = 1.
    # One tie group of three 2s: variance 6 / 12 * ((5 + 1) - (27 - 3) / (5 * 4)) = 2.4.
    result = mann_whitney_u([1, 2, 2], [2, 3])
    assert result.u == 1
    assert result.method == "asymptotic"  # the exact distribution knows no ties
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


def test_holm_by_hand():
    # Sorted: 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04; running maximum
    # 0.02, 0.03, 0.06, 0.06; back in the given order.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # 2 * 0.5 = 1 and the running maximum keeps the larger p at 1 too; one p is left as it is.
    assert holm([0.6, 0.5]) == pytest.approx([1.0, 1.0])
    assert holm([0.2]) == pytest.approx([0.2])
    assert holm([]).size == 0
    with pytest.raises(ValueError):
        holm([0.1, 1.5])


@given(st.lists(st.floats(0, 1), min_size=1, max_size=30))
def test_holm_is_monotone_and_never_below_the_raw_p(p):
    adjusted = holm(p)
    assert (adjusted >= np.asarray(p) - 1e-12).all() and (adjusted <= 1).all()
    order = np.argsort(p, kind="stable")
    assert (np.diff(adjusted[order]) >= 0).all()
    assert adjusted.min() == pytest.approx(min(1.0, len(p) * min(p)))


@pytest.mark.parametrize("alpha", [2.2, 2.8])
def test_power_law_exponent_is_recovered_from_samples(alpha):
    support = np.arange(1, 200_001)
    weights = support**-alpha
    values = np.random.default_rng(1).choice(support, size=4000, p=weights / weights.sum())
    fit = fit_power_law(values)
    assert fit is not None
    assert fit.alpha == pytest.approx(alpha, abs=0.12)
    assert fit.ks < 0.05
    # The lognormal cannot be told apart from the power law, or is the worse fit.
    assert fit.p_lognormal > 0.05 or fit.lr_lognormal > 0


def test_lognormal_samples_favour_the_lognormal():
    values = np.round(np.random.default_rng(3).lognormal(2.0, 1.0, 4000)).astype(int)
    fit = fit_power_law(values)
    assert fit.lr_lognormal < 0


def test_the_tail_keeps_at_least_min_tail_values(capsys):
    values = [1] * 30 + [2] * 5 + [3] * 3 + [4, 9]
    fit = fit_power_law(values, min_tail=10)
    assert fit.n_tail >= 10 and fit.x_min <= 2
    # Only x_min = 1 leaves two distinct values and ten values in the tail.
    assert fit_power_law([1] * 20 + [2] * 5, min_tail=10).x_min == 1
    assert capsys.readouterr() == ("", "")  # powerlaw's messages and warnings stay silent


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
