"""The ICC's 95 % intervals: the F-distribution intervals of Shrout & Fleiss (1979) and McGraw & Wong (1996),
as pingouin computes them, and "not estimable" (never a number outside the ICC's range) where they break down.

An ICC of k readers lies between -1/(k-1) and 1. With few cases the McGraw & Wong interval of ICC(2,1) can
reach below that (below -1 with 4 cases and 2 readers), and with no residual variance the F ratio is undefined.
"""

import math

import numpy as np
import pandas as pd
import pytest

from cno_annotate.analysis import agreement

#: Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges.
SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], float)

#: 4 cases, 2 readers whose totals disagree: McGraw & Wong's lower bound of ICC(2,1) is -1.64.
FOUR_CASES = np.array([[3, 4], [5, 0], [0, 4], [5, 1]], float)


def _pingouin(ratings: np.ndarray) -> pd.DataFrame:
    import pingouin

    long = pd.DataFrame([(t, r, ratings[t, r]) for t in range(ratings.shape[0]) for r in range(ratings.shape[1])],
                        columns=["target", "rater", "score"])
    return pingouin.intraclass_corr(long, "target", "rater", "score").set_index("Type")


def _in_range(value: float, raters: int) -> bool:
    return -1 / (raters - 1) <= value <= 1


def test_shrout_fleiss_worked_example():
    # Shrout & Fleiss report ICC(2,1) = .29 and ICC(3,1) = .71; the F intervals are .02 to .76 and .34 to .95.
    icc2, icc3 = agreement.icc(SHROUT_FLEISS)
    assert (round(icc2.value, 2), round(icc2.ci_low, 2), round(icc2.ci_high, 2)) == (0.29, 0.02, 0.76)
    assert (round(icc3.value, 2), round(icc3.ci_low, 2), round(icc3.ci_high, 2)) == (0.71, 0.34, 0.95)
    assert icc2.note == "" and icc3.note == ""


@pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.dropna")  # inside pingouin
def test_shrout_fleiss_example_matches_pingouin():
    table = _pingouin(SHROUT_FLEISS)
    for ours, kind in zip(agreement.icc(SHROUT_FLEISS), ("ICC(A,1)", "ICC(C,1)")):
        assert ours.value == pytest.approx(table.loc[kind, "ICC"], abs=1e-9)
        assert [round(ours.ci_low, 2), round(ours.ci_high, 2)] == pytest.approx(list(table.loc[kind, "CI95"]))


@pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.dropna")
def test_a_lower_bound_below_minus_one_with_four_cases_is_not_estimable():
    icc2, icc3 = agreement.icc(FOUR_CASES)
    reference = _pingouin(FOUR_CASES)
    assert reference.loc["ICC(A,1)", "CI95"][0] < -1  # the formula itself leaves the range here
    assert math.isnan(icc2.ci_low)
    assert round(icc2.ci_high, 2) == pytest.approx(reference.loc["ICC(A,1)", "CI95"][1])  # the upper bound stands
    assert icc2.note.startswith("not estimable:")
    assert "lower bound (-1.64)" in icc2.note and "(-1 to 1) with 4 cases" in icc2.note
    # ICC(3,1)'s interval stays inside the range and is reported as pingouin gives it
    assert [round(icc3.ci_low, 2), round(icc3.ci_high, 2)] == pytest.approx(list(reference.loc["ICC(C,1)", "CI95"]))
    assert icc3.note == ""


def test_a_point_estimate_outside_the_range_is_not_estimable_either():
    icc2, _ = agreement.icc(FOUR_CASES)  # the ANOVA estimate of ICC(2,1) is -1.29 here
    assert math.isnan(icc2.value)
    assert "-1.29" in icc2.note


def test_no_residual_variance_gives_no_interval_and_says_why():
    icc2, icc3 = agreement.icc(np.array([[2, 2], [3, 3], [1, 1], [4, 4]], float))
    for result in (icc2, icc3):
        assert result.value == 1.0
        assert math.isnan(result.ci_low) and math.isnan(result.ci_high)
        assert result.note == ("not estimable: the 95 % CI lower bound and the 95 % CI upper bound are undefined, "
                               "the readers agree exactly (no residual variance)")


@pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.dropna")
def test_every_reported_number_is_inside_the_range_and_otherwise_equals_pingouin():
    rng = np.random.default_rng(4)
    left_range = 0
    for _ in range(60):
        cases, readers = int(rng.integers(3, 7)), int(rng.integers(2, 4))
        ratings = rng.integers(0, 6, size=(cases, readers)).astype(float)
        reference = _pingouin(ratings)
        for ours, kind in zip(agreement.icc(ratings), ("ICC(A,1)", "ICC(C,1)")):
            theirs = [reference.loc[kind, "ICC"], *reference.loc[kind, "CI95"]]
            for mine, expected, digits in zip((ours.value, ours.ci_low, ours.ci_high), theirs, (9, 2, 2)):
                if np.isfinite(expected) and _in_range(expected, readers):
                    assert round(mine, digits) == pytest.approx(round(expected, digits), abs=1e-9)
                elif not np.isfinite(mine):
                    left_range += 1
                    assert ours.note
                else:  # pingouin rounds to 0.01: a bound just inside the range may round to just outside
                    assert _in_range(mine, readers) and round(mine, 2) == pytest.approx(expected)
    assert left_range > 0  # the sample holds intervals the formula cannot give


def test_the_icc_type_refuses_a_number_outside_its_range():
    with pytest.raises(ValueError, match="outside"):
        agreement.ICC("ICC(2,1)", 0.5, -1.6, 0.9, 4, 2)
    with pytest.raises(ValueError, match="note"):
        agreement.ICC("ICC(2,1)", 0.5, float("nan"), 0.9, 4, 2)


def test_fewer_than_two_complete_cases_or_readers_give_no_icc_and_say_why():
    one_case = agreement.icc(np.array([[3, 4], [np.nan, 2]], float))
    assert all(math.isnan(i.value) and math.isnan(i.ci_low) and math.isnan(i.ci_high) for i in one_case)
    assert one_case[0].note == "not estimable: 1 complete case and 2 readers (2 of each needed)"
    assert agreement.icc(np.array([[3], [4], [5]], float))[1].note == (
        "not estimable: 3 complete cases and 1 reader (2 of each needed)")
    two_cases, _ = agreement.icc(np.array([[1, 2], [4, 4]], float))  # two cases are enough for a value
    assert two_cases.n_targets == 2 and np.isfinite(two_cases.value)
