"""Agreement statistics, on plain arrays (no reads, no store).

- Presence of a lesion per bone unit, several readers: Fleiss' kappa and the
  free-marginal (Randolph) kappa, as statsmodels computes them.
- Ordinal grades, two readers: weighted Cohen's kappa (linear, quadratic),
  statsmodels; several readers with missing values: Krippendorff's alpha
  (ordinal), the ``krippendorff`` package.
- Continuous totals: ICC(2,1) (two-way random, absolute agreement, = ICC(A,1))
  and ICC(3,1) (two-way mixed, consistency, = ICC(C,1)) with 95 % confidence
  intervals (Shrout & Fleiss 1979; McGraw & Wong 1996); tests check them
  against pingouin. Bland-Altman limits of agreement for two readers.
- Lesions of two readers matched within bone unit and side by distance
  (optimal assignment, scipy), with positive specific agreement.

Missing values are NaN; each function says what it does with them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.optimize import linear_sum_assignment


def _complete_rows(ratings: np.ndarray) -> np.ndarray:
    ratings = np.asarray(ratings, dtype=float)
    return ratings[~np.isnan(ratings).any(axis=1)]


def fleiss_kappa(ratings: np.ndarray, method: str = "fleiss") -> float:
    """Fleiss' (``method="fleiss"``) or Randolph's free-marginal (``"randolph"``) kappa.

    Parameters
    ----------
    ratings : array (targets, raters)
        Category codes; targets with a missing rating are left out.
    """
    from statsmodels.stats.inter_rater import aggregate_raters
    from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss

    complete = _complete_rows(ratings).astype(int)
    if complete.shape[0] == 0:
        return float("nan")
    table, _ = aggregate_raters(complete)
    if table.shape[1] == 1:  # a single category used: perfect agreement on the observed data
        return 1.0 if method == "randolph" else float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(sm_fleiss(table, method=method))


def cohen_kappa(a: np.ndarray, b: np.ndarray, categories: list[int], weights: str | None = None) -> float:
    """Cohen's kappa of two readers, unweighted or ``"linear"`` / ``"quadratic"`` weighted.

    Pairs with a missing value are left out; ``categories`` are every possible grade.
    """
    from statsmodels.stats.inter_rater import cohens_kappa, to_table

    a, b = np.asarray(a, float), np.asarray(b, float)
    keep = ~(np.isnan(a) | np.isnan(b))
    if keep.sum() == 0:
        return float("nan")
    edges = np.append(np.asarray(categories, float) - 0.5, categories[-1] + 0.5)
    table, _ = to_table(np.c_[a[keep], b[keep]], bins=edges)
    with np.errstate(divide="ignore", invalid="ignore"):
        result = cohens_kappa(table, wt=weights)
    return float(result.kappa)


def krippendorff_alpha(ratings: np.ndarray, categories: list[int], level: str = "ordinal") -> float:
    """Krippendorff's alpha; ``ratings`` is (targets, raters) with NaN for missing."""
    import krippendorff

    data = np.asarray(ratings, dtype=float).T  # the package wants raters x units
    usable = (~np.isnan(data)).sum(axis=0) >= 2
    if usable.sum() == 0 or len(np.unique(data[:, usable][~np.isnan(data[:, usable])])) < 2:
        return float("nan")
    return float(krippendorff.alpha(reliability_data=data[:, usable], level_of_measurement=level,  # type: ignore[arg-type]  # checked by krippendorff
                                    value_domain=list(categories)))


@dataclass(frozen=True)
class ICC:
    """An intraclass correlation with its 95 % confidence interval."""

    kind: str  # "ICC(2,1)" or "ICC(3,1)"
    value: float
    ci_low: float
    ci_high: float
    n_targets: int
    n_raters: int


def icc(ratings: np.ndarray, alpha: float = 0.05) -> tuple[ICC, ICC]:
    """ICC(2,1) and ICC(3,1) of a (targets, raters) table; incomplete targets are left out.

    Returns
    -------
    (ICC(2,1), ICC(3,1))
        Absolute agreement (two-way random) and consistency (two-way mixed).
    """
    y = _complete_rows(ratings)
    n, k = y.shape
    if n < 2 or k < 2:
        nan = float("nan")
        return ICC("ICC(2,1)", nan, nan, nan, n, k), ICC("ICC(3,1)", nan, nan, nan, n, k)
    grand = y.mean()
    ms_targets = k * ((y.mean(axis=1) - grand) ** 2).sum() / (n - 1)
    ms_raters = n * ((y.mean(axis=0) - grand) ** 2).sum() / (k - 1)
    residual = y - y.mean(axis=1, keepdims=True) - y.mean(axis=0, keepdims=True) + grand
    ms_error = (residual**2).sum() / ((n - 1) * (k - 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        icc2 = (ms_targets - ms_error) / (ms_targets + (k - 1) * ms_error + k * (ms_raters - ms_error) / n)
        icc3 = (ms_targets - ms_error) / (ms_targets + (k - 1) * ms_error)
        # ICC(3,1): F-test based interval.
        f_value = ms_targets / ms_error
        df1, df2 = n - 1, (n - 1) * (k - 1)
        f_low = f_value / stats.f.ppf(1 - alpha / 2, df1, df2)
        f_high = f_value * stats.f.ppf(1 - alpha / 2, df2, df1)
        ci3 = ((f_low - 1) / (f_low + k - 1), (f_high - 1) / (f_high + k - 1))
        # ICC(2,1): Satterthwaite approximation (McGraw & Wong 1996).
        fj = ms_raters / ms_error
        vn = (k - 1) * (n - 1) * (k * icc2 * fj + n * (1 + (k - 1) * icc2) - k * icc2) ** 2
        vd = (n - 1) * k**2 * icc2**2 * fj**2 + (n * (1 + (k - 1) * icc2) - k * icc2) ** 2
        v = vn / vd
        f2u = stats.f.ppf(1 - alpha / 2, n - 1, v)
        f2l = stats.f.ppf(1 - alpha / 2, v, n - 1)
        ci2 = (n * (ms_targets - f2u * ms_error) / (f2u * (k * ms_raters + (k * n - k - n) * ms_error) + n * ms_targets),
               n * (f2l * ms_targets - ms_error) / (k * ms_raters + (k * n - k - n) * ms_error + n * f2l * ms_targets))
    return (ICC("ICC(2,1)", float(icc2), float(ci2[0]), float(ci2[1]), n, k),
            ICC("ICC(3,1)", float(icc3), float(ci3[0]), float(ci3[1]), n, k))


@dataclass(frozen=True)
class BlandAltman:
    """Mean difference (bias) and 95 % limits of agreement of two readers."""

    n: int
    bias: float
    sd: float
    lower: float
    upper: float


def bland_altman(a: np.ndarray, b: np.ndarray) -> BlandAltman:
    """Bland-Altman statistics of b - a over pairs where both are present."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    keep = ~(np.isnan(a) | np.isnan(b))
    diff = b[keep] - a[keep]
    if diff.size < 2:
        return BlandAltman(int(diff.size), float("nan"), float("nan"), float("nan"), float("nan"))
    bias, sd = float(diff.mean()), float(diff.std(ddof=1))
    return BlandAltman(int(diff.size), bias, sd, bias - 1.96 * sd, bias + 1.96 * sd)


@dataclass(frozen=True)
class MatchResult:
    """Lesion-level agreement of two readers."""

    matched: list[tuple[str, str, float]]  # (lesion of A, lesion of B, distance in mm)
    only_a: list[str]
    only_b: list[str]

    @property
    def positive_specific_agreement(self) -> float:
        """PSA = 2a / (2a + b + c)."""
        a, b, c = len(self.matched), len(self.only_a), len(self.only_b)
        return float("nan") if (a + b + c) == 0 else 2 * a / (2 * a + b + c)


def match_lesions(lesions_a: list[tuple[str, str, np.ndarray]], lesions_b: list[tuple[str, str, np.ndarray]],
                  threshold_mm: float) -> MatchResult:
    """Match two readers' lesions: same bone unit and side, closest pairs first (optimal assignment).

    Parameters
    ----------
    lesions_a, lesions_b : list of (lesion id, bone unit id with side, LPS position)
    threshold_mm : float
        Pairs further apart than this are not matched.
    """
    matched: list[tuple[str, str, float]] = []
    used_a: set[str] = set()
    used_b: set[str] = set()
    for unit in sorted({u for _, u, _ in lesions_a} & {u for _, u, _ in lesions_b}):
        a = [(i, np.asarray(p, float)) for i, u, p in lesions_a if u == unit]
        b = [(i, np.asarray(p, float)) for i, u, p in lesions_b if u == unit]
        cost = np.array([[np.linalg.norm(pa - pb) for _, pb in b] for _, pa in a])
        big = cost.max() + threshold_mm + 1.0
        rows, cols = linear_sum_assignment(np.where(cost <= threshold_mm, cost, big))
        for r, c in zip(rows, cols):
            if cost[r, c] <= threshold_mm:
                matched.append((a[r][0], b[c][0], float(cost[r, c])))
                used_a.add(a[r][0])
                used_b.add(b[c][0])
    return MatchResult(
        matched=matched,
        only_a=[i for i, _, _ in lesions_a if i not in used_a],
        only_b=[i for i, _, _ in lesions_b if i not in used_b],
    )
