"""The statistics the analysis needs: the Mann-Whitney U test with a Holm correction (scipy), and a
power-law fit of degree distributions compared with a lognormal (the `powerlaw` package)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

# Up to this many values in each sample (and without ties) the p-value comes from the exact null
# distribution of U; scipy computes it in a few milliseconds at 50 x 50.
EXACT_UP_TO = 50


@dataclass(frozen=True)
class MannWhitney:
    """U counts the pairs (a from the first sample, b from the second) with a > b, ties as 1/2.

    rank_biserial = 2U / (n1 n2) - 1 = 1 - 2U' / (n1 n2) with U' = n1 n2 - U the second sample's
    U: +1 when every value of the first sample is above every value of the second, -1 when below.
    p is two-sided; `method` says how it was computed ("exact" or "asymptotic").
    """

    u: float
    p: float
    rank_biserial: float
    n1: int
    n2: int
    method: str


def mann_whitney_u(first: ArrayLike, second: ArrayLike) -> MannWhitney:
    """Two-sided Mann-Whitney U test of `first` against `second` by `scipy.stats.mannwhitneyu`.

    The p-value is exact (the null distribution of U) when neither sample holds more than
    EXACT_UP_TO values and no value occurs twice in the two together; otherwise it is the normal
    approximation with tie and continuity corrections. scipy's own "auto" goes exact only up to 8
    values in a sample, but the exact distribution is valid and cheap well beyond that, while
    with ties it is not corrected for them and the approximation is the right one.
    """
    a, b = np.asarray(first, dtype=np.float64).ravel(), np.asarray(second, dtype=np.float64).ravel()
    n1, n2 = len(a), len(b)
    if n1 == 0 or n2 == 0:
        raise ValueError("both samples need at least one value")
    pooled = np.concatenate([a, b])
    if np.ptp(pooled) == 0:  # every value tied: no evidence either way (and no variance to divide by)
        return MannWhitney(n1 * n2 / 2, 1.0, 0.0, n1, n2, "asymptotic")
    ties = len(np.unique(pooled)) < n1 + n2
    method = "exact" if not ties and max(n1, n2) <= EXACT_UP_TO else "asymptotic"
    result = stats.mannwhitneyu(a, b, alternative="two-sided", method=method, use_continuity=True)
    u = float(result.statistic)
    return MannWhitney(u, min(1.0, float(result.pvalue)), 2 * u / (n1 * n2) - 1, n1, n2, method)


def round_for_report(key: str, value: object, decimals: int) -> object:
    """A float rounded to `decimals`, but a p-value (key "p" or "p_...") to 4 significant digits:
    its small values are the point, and rounding to decimals would make them 0."""
    if not isinstance(value, float):
        return value
    if key == "p" or key.startswith("p_"):
        return float(f"{value:.4g}")
    return round(value, decimals)


def holm(p_values: ArrayLike) -> np.ndarray:
    """Holm's step-down adjustment of p-values for testing them all at once, in their own order.

    Sorted ascending, the i-th smallest of m (from 0) becomes max over j <= i of min(1, (m - j) p_(j)):
    rejecting where the adjusted p is below a level keeps the family-wise error rate at that level.
    """
    p = np.asarray(p_values, dtype=np.float64).ravel()
    if ((p < 0) | (p > 1) | np.isnan(p)).any():
        raise ValueError("p-values must lie in [0, 1]")
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (len(p) - np.arange(len(p))) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


@dataclass(frozen=True)
class PowerLaw:
    """P(k) proportional to k^-alpha for integers k >= x_min, fitted to n_tail of the values.

    ks: Kolmogorov-Smirnov distance between the tail and the fit. lr_lognormal: log-likelihood
    ratio of the power law over a lognormal on the same tail (positive: the power law fits
    better, negative: the lognormal does), p_lognormal: the two-sided significance of its sign
    (Vuong's test; a large p means the data cannot tell the two apart).
    """

    alpha: float
    x_min: int
    ks: float
    n_tail: int
    lr_lognormal: float
    p_lognormal: float


def fit_power_law(values: ArrayLike, min_tail: int = 10) -> PowerLaw | None:
    """Clauset, Shalizi & Newman (2009) by `powerlaw.Fit(discrete=True)`: for each candidate x_min
    the discrete MLE of alpha, keeping the x_min whose fit is closest to the data in KS distance,
    among those that leave at least min_tail values in the tail. Values below 1 are left out;
    None when fewer than min_tail values or fewer than two distinct ones remain, or the fit fails."""
    x = np.asarray(values, dtype=np.int64).ravel()
    x = x[x >= 1]
    distinct, counts = np.unique(x, return_counts=True)
    tail_sizes = counts[::-1].cumsum()[::-1]
    # Candidates: every value but the largest (a tail needs two distinct values) with a long enough tail.
    candidates = int((tail_sizes[:-1] >= min_tail).sum())
    if candidates == 0:
        return None
    if candidates == 1:
        x_min: float | tuple[float, float] = float(distinct[0])
    else:
        # powerlaw tries the distinct values in [low, high) but the largest, so high lies just past
        # the first value that is not a candidate.
        x_min = (float(distinct[0]), float(distinct[candidates]) + 0.5)
    # powerlaw imports matplotlib.pyplot (half a second); only the graph statistics need it.
    import powerlaw

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # Its optimiser warns on every candidate x_min and its lognormal fit on flat likelihoods.
        warnings.simplefilter("ignore")
        fit = powerlaw.Fit(x, discrete=True, xmin=x_min, verbose=False)
        alpha, ks = float(fit.power_law.alpha), float(fit.power_law.D)
        ratio, p = fit.distribution_compare("power_law", "lognormal")
    if not all(math.isfinite(v) for v in (alpha, ks, fit.xmin)):
        return None
    return PowerLaw(alpha, int(fit.xmin), ks, int(fit.n_tail), float(ratio), float(p))
