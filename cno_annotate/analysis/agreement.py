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
from functools import lru_cache

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
    """An intraclass correlation with its 95 % confidence interval.

    An ICC of k readers lies between -1/(k-1) and 1. A number the formulas cannot give inside that
    range (too few cases, or no residual variance) is NaN, and ``note`` says which and why;
    a number outside the range is refused.
    """

    kind: str  # "ICC(2,1)" or "ICC(3,1)"
    value: float
    ci_low: float
    ci_high: float
    n_targets: int
    n_raters: int
    note: str = ""

    def __post_init__(self) -> None:
        floor = icc_floor(self.n_raters)
        for name, number in (("value", self.value), ("ci_low", self.ci_low), ("ci_high", self.ci_high)):
            if np.isfinite(number) and not floor <= number <= 1:
                raise ValueError(f"{self.kind} {name} {number:g} lies outside the range of an ICC of "
                                 f"{self.n_raters} readers ({floor:.3g} to 1)")
        if not np.isfinite([self.value, self.ci_low, self.ci_high]).all() and not self.note:
            raise ValueError(f"{self.kind}: a number that is not estimable needs a note saying why")


def icc_floor(raters: int) -> float:
    """The lowest value an ICC of ``raters`` readers can take: -1/(k-1) (-1 for two readers)."""
    return -1.0 / (raters - 1) if raters > 1 else -1.0


def icc(ratings: np.ndarray, alpha: float = 0.05) -> tuple[ICC, ICC]:
    """ICC(2,1) and ICC(3,1) of a (targets, raters) table; incomplete targets are left out.

    The intervals are the F-distribution intervals of Shrout & Fleiss (1979) for ICC(3,1) and
    McGraw & Wong (1996, Satterthwaite degrees of freedom) for ICC(2,1), as pingouin computes
    them. A value or bound these give outside the ICC's range, or cannot give at all, is
    reported as not estimable (NaN, with the reason in ``note``).

    Returns
    -------
    (ICC(2,1), ICC(3,1))
        Absolute agreement (two-way random) and consistency (two-way mixed).
    """
    y = _complete_rows(ratings)
    n, k = y.shape
    if n < 2 or k < 2:
        nan = float("nan")
        note = f"not estimable: {n} complete case{'s' * (n != 1)} and {k} reader{'s' * (k != 1)} (2 of each needed)"
        return ICC("ICC(2,1)", nan, nan, nan, n, k, note), ICC("ICC(3,1)", nan, nan, nan, n, k, note)
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
    exact = bool(ms_error == 0)
    return (_estimable("ICC(2,1)", float(icc2), float(ci2[0]), float(ci2[1]), n, k, exact),
            _estimable("ICC(3,1)", float(icc3), float(ci3[0]), float(ci3[1]), n, k, exact))


def _estimable(kind: str, value: float, low: float, high: float, n: int, k: int, exact: bool) -> ICC:
    """The ICC with every number outside the range, or undefined, replaced by NaN and named in the note."""
    floor = icc_floor(k)
    numbers = {f"the {kind} estimate": value, "the 95 % CI lower bound": low, "the 95 % CI upper bound": high}
    outside = [f"{name} ({number:.3g})" for name, number in numbers.items()
               if np.isfinite(number) and not floor <= number <= 1]
    undefined = [name for name, number in numbers.items() if not np.isfinite(number)]
    notes = []
    if outside:
        notes.append(f"not estimable: {_listing(outside)} "
                     f"{'falls' if len(outside) == 1 else 'fall'} outside the range of an ICC of {k} readers "
                     f"({floor:.3g} to 1) with {n} cases")
    if undefined:
        why = ("the readers agree exactly (no residual variance)" if exact
               else "no variance between cases or readers" if not np.isfinite(value) else "the F quantile is undefined")
        notes.append(f"not estimable: {_listing(undefined)} {'is' if len(undefined) == 1 else 'are'} "
                     f"undefined, {why}")
    value, low, high = (number if np.isfinite(number) and floor <= number <= 1 else float("nan")
                        for number in numbers.values())
    return ICC(kind, value, low, high, n, k, "; ".join(notes))


def _listing(names: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


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
        with np.errstate(over="ignore", invalid="ignore"):  # huge finite positions: an infinite distance
            cost = np.array([[np.linalg.norm(pa - pb) for _, pb in b] for _, pa in a])
        # A pair beyond the threshold costs more than every allowed pair together, so the assignment
        # matches as many pairs as it can, then the closest; always finite, so never "infeasible".
        big = (min(len(a), len(b)) + 1) * (threshold_mm + 1.0)
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


# -- specific agreement, kappa from count tables, case-level bootstrap -------------------------------
@dataclass(frozen=True)
class Interval:
    """A percentile bootstrap confidence interval."""

    low: float
    high: float
    resamples: int
    valid: int  # resamples where the statistic was defined
    seed: int
    level: float = 0.95


@lru_cache(maxsize=8)
def bootstrap_weights(n_cases: int, resamples: int, seed: int) -> np.ndarray:
    """How often each case is drawn in each resample: (resamples, n_cases), read-only.

    With ``rng = numpy.random.default_rng(seed)``, resample ``b`` draws
    ``rng.integers(0, n_cases, size=n_cases)`` (cases with replacement). Every
    statistic of a report over the same cases uses the same draws (cached).
    """
    rng = np.random.default_rng(seed)
    weights = np.zeros((resamples, n_cases))
    for b in range(resamples):
        weights[b] = np.bincount(rng.integers(0, n_cases, size=n_cases), minlength=n_cases)
    weights.setflags(write=False)
    return weights


def case_bootstrap(per_case: np.ndarray, statistic, resamples: int = 1000, seed: int = 0,
                   level: float = 0.95) -> Interval:
    """Percentile interval of a statistic of summed per-case tallies, over case resamples.

    Units within a child are not independent, so whole cases are resampled
    (:func:`bootstrap_weights`). Each statistic here is a function of tallies
    that add up over cases (count tables, confusion and coincidence matrices),
    so a resample's tallies are the weighted sum of the cases' tallies and
    every resample is computed at once: ``statistic`` takes (resamples, ...)
    summed tallies and returns one value per resample. Resamples where it is
    NaN are left out (``valid``); the interval is ``numpy.percentile`` at
    (1 - level) / 2 and 1 - (1 - level) / 2.
    """
    per_case = np.asarray(per_case, dtype=float)
    nan = float("nan")
    if len(per_case) == 0 or resamples <= 0:
        return Interval(nan, nan, resamples, 0, seed, level)
    weights = bootstrap_weights(len(per_case), resamples, seed)
    sums = np.tensordot(weights, per_case, axes=(1, 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.asarray(statistic(sums), dtype=float)
    kept = values[~np.isnan(values)]
    if kept.size == 0:
        return Interval(nan, nan, resamples, 0, seed, level)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(kept, [tail, 100 - tail])
    return Interval(float(low), float(high), resamples, int(kept.size), seed, level)


# tallies that add up over cases, and the statistics computed from their sums (vectorised over resamples)
def presence_tally(block: np.ndarray) -> np.ndarray:
    """[targets, no-lesion choices, lesion choices, sum of squared counts] of one case's complete rows."""
    kept = block[~np.isnan(block).any(axis=1)]
    ones = kept.sum(axis=1)
    zeros = kept.shape[1] - ones
    return np.array([len(kept), zeros.sum(), ones.sum(), (zeros**2 + ones**2).sum()], dtype=float)


def kappa_from_tally(sums: np.ndarray, raters: int, method: str = "fleiss") -> np.ndarray:
    """Fleiss' or Randolph's kappa (two categories) from summed :func:`presence_tally` rows."""
    sums = np.atleast_2d(sums)
    targets, choices, squares = sums[:, 0], sums[:, 1:3], sums[:, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        observed = (squares - targets * raters) / (targets * raters * (raters - 1))
        shares = choices / (targets * raters)[:, None]
        expected = np.full(len(sums), 0.5) if method == "randolph" else (shares**2).sum(axis=1)
        kappa = (observed - expected) / (1 - expected)
    return np.where((targets > 0) & (expected < 1), kappa, np.nan)


def specific_from_tally(sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative specific agreement from summed [a, b, c, d] tallies.

    a = both readers positive, b and c = positive for one reader only, d = both
    negative: PSA = 2a / (2a + b + c), NSA = 2d / (2d + b + c) (Cicchetti &
    Feinstein 1990); NaN where undefined.
    """
    sums = np.atleast_2d(sums)
    a, b, c, d = sums.T
    with np.errstate(divide="ignore", invalid="ignore"):
        return (np.where(2 * a + b + c > 0, 2 * a / (2 * a + b + c), np.nan),
                np.where(2 * d + b + c > 0, 2 * d / (2 * d + b + c), np.nan))


def confusion_tally(pairs: np.ndarray, categories: list[int]) -> np.ndarray:
    """Flattened confusion matrix of (first, second) grade pairs; pairs with a missing grade are left out."""
    k = len(categories)
    index = {c: n for n, c in enumerate(categories)}
    table = np.zeros((k, k))
    for x, y in np.asarray(pairs, float).reshape(-1, 2):
        if not (np.isnan(x) or np.isnan(y)):
            table[index[int(x)], index[int(y)]] += 1
    return table.ravel()


def kappa_from_confusion(sums: np.ndarray, k: int, weights: str | None = None) -> np.ndarray:
    """Cohen's kappa (unweighted, linear, quadratic) from summed flattened confusion matrices."""
    observed = np.atleast_2d(sums).reshape(-1, k, k)
    total = observed.sum(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = observed.sum(axis=2)[:, :, None] * observed.sum(axis=1)[:, None, :] / total[:, None, None]
        grid = np.abs(np.subtract.outer(np.arange(k), np.arange(k))).astype(float)
        w = (grid > 0).astype(float) if weights is None else grid if weights == "linear" else grid**2
        denominator = (w * expected).sum(axis=(1, 2))
        return np.where(denominator > 0, 1 - (w * observed).sum(axis=(1, 2)) / denominator, np.nan)


def weighted_kappa(a: np.ndarray, b: np.ndarray, categories: list[int], weights: str | None = None) -> float:
    """Cohen's kappa of two readers in plain numpy (as scikit-learn's ``cohen_kappa_score``); NaN pairs left out."""
    tally = confusion_tally(np.c_[np.asarray(a, float), np.asarray(b, float)], categories)
    if tally.sum() == 0:
        return float("nan")
    return float(kappa_from_confusion(tally, len(categories), weights)[0])


def coincidence_tally(ratings: np.ndarray, categories: list[int]) -> np.ndarray:
    """Flattened Krippendorff coincidence matrix of (targets, raters) ratings (NaN missing).

    A target rated m >= 2 times adds 1 / (m - 1) for every ordered pair of its
    ratings by different raters (Krippendorff 2011); targets with fewer
    ratings add nothing.
    """
    k = len(categories)
    index = {c: n for n, c in enumerate(categories)}
    table = np.zeros((k, k))
    for row in np.asarray(ratings, float).reshape(-1, np.asarray(ratings).shape[-1] if np.ndim(ratings) > 1 else 1):
        values = [index[int(v)] for v in row if not np.isnan(v)]
        if len(values) < 2:
            continue
        for p, x in enumerate(values):
            for q, y in enumerate(values):
                if p != q:
                    table[x, y] += 1.0 / (len(values) - 1)
    return table.ravel()


def alpha_from_coincidence(sums: np.ndarray, k: int) -> np.ndarray:
    """Krippendorff's ordinal alpha from summed flattened coincidence matrices."""
    o = np.atleast_2d(sums).reshape(-1, k, k)
    n_c = o.sum(axis=2)
    n = n_c.sum(axis=1)
    # ordinal metric: (sum of n_g from c to k minus (n_c + n_k) / 2) squared
    cumulative = np.cumsum(n_c, axis=1)
    c_idx, k_idx = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    low, high = np.minimum(c_idx, k_idx), np.maximum(c_idx, k_idx)
    between = cumulative[:, high] - np.where(low > 0, cumulative[:, np.maximum(low - 1, 0)], 0.0)
    delta = (between - (n_c[:, c_idx] + n_c[:, k_idx]) / 2) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        disagreement = (o * delta).sum(axis=(1, 2))
        expected = (n_c[:, :, None] * n_c[:, None, :] * delta).sum(axis=(1, 2))
        alpha = 1 - (n - 1) * disagreement / expected
    return np.where(expected > 0, alpha, np.nan)
