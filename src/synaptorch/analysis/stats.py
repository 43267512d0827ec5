"""The two statistics the analysis needs, in numpy: the Mann-Whitney U test and a power-law fit."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike


@dataclass(frozen=True)
class MannWhitney:
    """U counts the pairs (a from the first sample, b from the second) with a > b, ties as 1/2.

    rank_biserial = 2U / (n1 n2) - 1 = 1 - 2U' / (n1 n2) with U' = n1 n2 - U the second sample's
    U: +1 when every value of the first sample is above every value of the second, -1 when below.
    p is two-sided, from the normal approximation with tie and continuity corrections.
    """

    u: float
    p: float
    rank_biserial: float
    n1: int
    n2: int


def average_ranks(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ranks 1..n of values, tied values sharing the mean of their ranks; and the size of each tie group."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    sizes = np.diff(np.r_[starts, len(values)])
    group_rank = starts + (sizes + 1) / 2  # mean of ranks starts+1 .. starts+size
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(group_rank, sizes)
    return ranks, sizes


def mann_whitney_u(first: ArrayLike, second: ArrayLike) -> MannWhitney:
    a, b = np.asarray(first, dtype=np.float64).ravel(), np.asarray(second, dtype=np.float64).ravel()
    n1, n2 = len(a), len(b)
    if n1 == 0 or n2 == 0:
        raise ValueError("both samples need at least one value")
    n = n1 + n2
    ranks, ties = average_ranks(np.concatenate([a, b]))
    u = float(ranks[:n1].sum() - n1 * (n1 + 1) / 2)
    mean = n1 * n2 / 2
    tie_term = float((ties**3 - ties).sum()) / (n * (n - 1)) if n > 1 else 0.0
    variance = n1 * n2 / 12 * ((n + 1) - tie_term)
    if variance <= 0:  # every value tied: no evidence either way
        p = 1.0
    else:
        z = max(abs(u - mean) - 0.5, 0.0) / math.sqrt(variance)
        p = min(1.0, math.erfc(z / math.sqrt(2)))
    return MannWhitney(u, p, 2 * u / (n1 * n2) - 1, n1, n2)


@dataclass(frozen=True)
class PowerLaw:
    """P(k) proportional to k^-alpha for integers k >= x_min, fitted to n_tail of the values."""

    alpha: float
    x_min: int
    ks: float  # Kolmogorov-Smirnov distance between the tail and the fit
    n_tail: int


def hurwitz_zeta(alpha: float, start: np.ndarray | int, terms: int = 500) -> np.ndarray:
    """sum_{k >= start} k^-alpha for alpha > 1: `terms` terms exactly, then the Euler-Maclaurin tail."""
    start = np.atleast_1d(np.asarray(start, dtype=np.float64))
    k = start[:, None] + np.arange(terms)
    head = (k**-alpha).sum(1)
    end = start + terms
    tail = end ** (1 - alpha) / (alpha - 1) + end**-alpha / 2 + alpha * end ** (-alpha - 1) / 12
    return head + tail


def _fit_alpha(tail: np.ndarray, x_min: int) -> float:
    """The discrete MLE of alpha: maximise -n log zeta(alpha, x_min) - alpha sum log x by golden section."""
    log_sum = float(np.log(tail).sum())
    n = len(tail)

    def neg_log_likelihood(alpha: float) -> float:
        return n * math.log(float(hurwitz_zeta(alpha, x_min)[0])) + alpha * log_sum

    lo, hi = 1.0001, 8.0
    ratio = (math.sqrt(5) - 1) / 2
    c, d = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fc, fd = neg_log_likelihood(c), neg_log_likelihood(d)
    while hi - lo > 1e-5:
        if fc < fd:
            hi, d, fd = d, c, fc
            c = hi - ratio * (hi - lo)
            fc = neg_log_likelihood(c)
        else:
            lo, c, fc = c, d, fd
            d = lo + ratio * (hi - lo)
            fd = neg_log_likelihood(d)
    return (lo + hi) / 2


def _ks_distance(tail: np.ndarray, alpha: float, x_min: int) -> float:
    support = np.arange(x_min, int(tail.max()) + 1)
    model_cdf = np.cumsum(support**-alpha) / hurwitz_zeta(alpha, x_min)[0]
    empirical_cdf = np.searchsorted(np.sort(tail), support, side="right") / len(tail)
    return float(np.abs(empirical_cdf - model_cdf).max())


def fit_power_law(values: ArrayLike, min_tail: int = 10) -> PowerLaw | None:
    """Clauset, Shalizi & Newman (2009): for each candidate x_min the discrete MLE of alpha, keeping
    the x_min whose fit is closest to the data in KS distance. alpha is searched in (1, 8]; a fit
    at 8 means a tail too steep to call a power law. Values below 1 are left out; None when fewer
    than min_tail values or fewer than two distinct ones remain."""
    x = np.asarray(values, dtype=np.int64).ravel()
    x = x[x >= 1]
    if len(x) < min_tail or len(np.unique(x)) < 2:
        return None
    best = None
    for x_min in np.unique(x):
        tail = x[x >= x_min]
        if len(tail) < min_tail or len(np.unique(tail)) < 2:
            break
        alpha = _fit_alpha(tail.astype(np.float64), int(x_min))
        fit = PowerLaw(alpha, int(x_min), _ks_distance(tail, alpha, int(x_min)), len(tail))
        if best is None or fit.ks < best.ks:
            best = fit
    return best
