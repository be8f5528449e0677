"""Agreement a reviewer accepts: per-category kappa, specific agreement, matched-lesion features, case bootstrap.

Statistics are checked against statsmodels, scikit-learn, krippendorff and pingouin on a cohort with a
missing read, a lesion graded "not assessable" and a unit marked "not assessable"; bootstrap intervals
are reproduced by a few lines of independent resampling with the same seed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cno_annotate.analysis import agreement, cohort
from cno_annotate.analysis.cohort import Case
from cno_annotate.annotation.model import Lesion, Read
from cno_annotate.annotation.scheme import load_scheme
from cno_annotate.annotation.taxonomy import load_taxonomy

SCHEME, TAXONOMY = load_scheme("rai-cromris", "2.0.0"), load_taxonomy("cno-sites-2.0.0")
NA_ALL = {"marrow_hyperintensity": "NA", "signal_extension": "NA", "soft_tissue_periosteal": "NA",
          "bony_expansion": "NA"}
PLACE = {"femur.distal": -400.0, "spine.T8": 200.0, "clavicle.medial": 350.0, "tibia.proximal": -450.0,
         "patella": -420.0}
# case -> reader -> lesions (site, side, marrow grade or "NA" for a lesion with every item not assessable)
SPEC = {
    "C1": {"a": [("femur.distal", "R", 2), ("spine.T8", None, 1)], "b": [("femur.distal", "R", 2), ("spine.T8", None, 1)],
           "c": [("femur.distal", "R", 1)]},
    "C2": {"a": [("femur.distal", "L", 1)], "b": [("femur.distal", "L", "NA")],
           "c": [("femur.distal", "L", 1), ("tibia.proximal", "L", 2)]},
    "C3": {"a": [("clavicle.medial", "R", 2)], "b": [("clavicle.medial", "R", 1)], "c": [("clavicle.medial", "R", 2)]},
    "C4": {"a": [], "b": [("patella", "R", 1)], "c": []},
    "C5": {"a": [("femur.distal", "R", 2)], "b": [("femur.distal", "R", 2)]},  # no read of c
}
MARKS = {("C3", "b"): {"spine.L5": "not_assessable"}}
READERS = ["a", "b", "c"]
BOOT = {"resamples": 200, "seed": 7}


def _read(case: str, reader: str) -> Read:
    lesions = []
    for n, (site, side, grade) in enumerate(SPEC[case][reader], start=1):
        grades = NA_ALL if grade == "NA" else {"marrow_hyperintensity": grade, "signal_extension": 1,
                                               "soft_tissue_periosteal": 0}
        x = {"R": -60.0, "L": 60.0, None: 0.0}[side]
        lesions.append(Lesion(f"L{n}", (x, 0.0, PLACE[site]), "1.2.3", (0, 0, 0), site_id=site, side=side,
                              grades=dict(grades)))
    return Read(f"{case}-{reader}", case, reader, "rai-cromris", "2.0.0", "cno-sites-2.0.0", status="submitted",
                lesions=lesions, unit_marks=MARKS.get((case, reader), {}))


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    out = []
    for n, (code, readers) in enumerate(SPEC.items()):
        case = Case(code, f"P{n}", 1)
        case.reads = {r: _read(code, r) for r in readers}
        out.append(case)
    return out


@pytest.fixture(scope="module")
def result(cases):
    return cohort.agreement_report(cases, READERS, SCHEME, TAXONOMY, threshold_mm=20, **BOOT)


def units() -> list[str]:
    """Every bone unit, written out from the taxonomy's sites (paired units on both sides)."""
    out = set()
    for site in TAXONOMY.sites.values():
        out |= {f"{site.unit}:R", f"{site.unit}:L"} if site.lateral else {site.unit}
    return sorted(out)


def presence(case: str) -> np.ndarray:
    """(units, readers): 1 a lesion, 0 none, NaN marked not assessable or no read."""
    rows = []
    for unit in units():
        row = []
        for reader in READERS:
            if reader not in SPEC[case]:
                row.append(np.nan)
            elif MARKS.get((case, reader), {}).get(unit) == "not_assessable":
                row.append(np.nan)
            else:
                row.append(float(any((f"{s}:{side}" if side else s) == unit for s, side, _ in SPEC[case][reader])))
        rows.append(row)
    return np.array(rows)


def fleiss(rows: np.ndarray, method: str = "fleiss") -> float:
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    complete = rows[~np.isnan(rows).any(axis=1)].astype(int)
    return fleiss_kappa(aggregate_raters(complete, n_cat=2)[0], method=method)


def test_fleiss_uses_the_cases_every_reader_read_and_says_which_it_drops(result):
    complete = ["C1", "C2", "C3", "C4"]  # C5 has no read of c
    assert result["missing"]["cases_with_every_read"] == 4
    assert result["missing"]["cases_missing_a_read"] == [{"case": "C5", "missing": ["c"]}]
    assert "use 4 of 5 cases and drop 1" in result["missing"]["fleiss_note"]
    rows = np.vstack([presence(c) for c in complete])
    p = result["unit_presence"]
    assert p["fleiss_kappa"] == pytest.approx(fleiss(rows), abs=1e-12)
    assert p["randolph_kappa"] == pytest.approx(fleiss(rows, "randolph"), abs=1e-12)
    # every unit of 4 cases, less L5 of C3 (marked not assessable by b)
    assert p["targets_used"] == 4 * len(units()) - 1


def test_kappa_per_bone_category_matches_statsmodels(result):
    knee = [n for n, u in enumerate(units()) if TAXONOMY.group_path(TAXONOMY.unit_site(u)[0].group)[-1] == "knee"]
    rows = np.vstack([presence(c)[knee] for c in ("C1", "C2", "C3", "C4")])
    by = {c["category"]: c for c in result["unit_presence_by_category"]}
    assert by["knee"]["fleiss_kappa"] == pytest.approx(fleiss(rows), abs=1e-12)
    assert by["knee"]["targets_used"] == len(rows)
    assert {"clavicle", "spine", "femur", "pelvis"} <= set(by)


def test_positive_and_negative_specific_agreement_counted_by_hand(result):
    n_units = len(units())
    # bone units, a vs b over C1-C5: both C1 fdR, C1 T8, C2 fdL (b's lesion is not assessable but present),
    # C3 clav, C5 fdR = 5; b only: C4 patella = 1; a only: 0; neither: 5 cases x all units - 6 - C3 L5 (NA).
    ab = next(x for x in result["unit_specific_agreement"] if x["readers"] == ["a", "b"])
    assert (ab["both"], ab["only_first"], ab["only_second"], ab["neither"]) == (5, 0, 1, 5 * n_units - 6 - 1)
    assert ab["psa"] == pytest.approx(10 / 11) and ab["nsa"] == pytest.approx(2 * ab["neither"] / (2 * ab["neither"] + 1))
    # lesions, a vs c (C1-C4): matched fdR (C1), fdL (C2), clav (C3) = 3; a only: T8 (C1) = 1; c only: tibia (C2) = 1
    ac = next(x for x in result["lesions"] if x["readers"] == ["a", "c"])
    assert (ac["matched"], ac["only_first"], ac["only_second"], ac["cases"]) == (3, 1, 1, 4)
    assert ac["psa"] == pytest.approx(6 / 8)
    assert ac["nsa"] == pytest.approx(2 * ac["agreed_negative_units"] / (2 * ac["agreed_negative_units"] + 2))
    assert ac["agreed_negative_units"] == 4 * n_units - 5  # units with a lesion of a or c: fdR, T8, fdL, tib, clav


def test_feature_agreement_on_matched_lesions_matches_scikit_learn(result):
    from sklearn.metrics import cohen_kappa_score

    # a vs b matched pairs: C1 fdR (2, 2), C1 T8 (1, 1), C2 fdL (1, NA: left out), C3 clav (2, 1), C5 fdR (2, 2)
    ab = next(x for x in result["lesions"] if x["readers"] == ["a", "b"])
    marrow = next(f for f in ab["features"] if f["item"] == "marrow_hyperintensity")
    first, second = [2, 1, 2, 2], [2, 1, 1, 2]
    assert marrow["pairs_graded"] == 4
    for w in ("linear", "quadratic"):
        assert marrow[f"kappa_{w}"] == pytest.approx(cohen_kappa_score(first, second, labels=[0, 1, 2], weights=w))


@pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.dropna")  # inside pingouin
def test_krippendorff_alpha_and_iccs_with_missing_reads_and_not_assessable(result, cases):
    import krippendorff
    import pingouin

    # Marrow grade per unit any reader marked, per reader: the unit grade (NaN: not assessable or no read).
    rows = []
    for case in SPEC:
        marked = sorted({(s, side) for r in SPEC[case] for s, side, _ in SPEC[case][r]}, key=str)
        for site, side in marked:
            row = []
            for reader in READERS:
                found = [g for s, sd, g in SPEC[case].get(reader, []) if (s, sd) == (site, side)]
                row.append(np.nan if reader not in SPEC[case] or found == ["NA"] else float(found[0]) if found else 0.0)
            rows.append(row)
    table = np.array(rows)
    item = next(i for i in result["items"] if i["item"] == "marrow_hyperintensity")
    expected = krippendorff.alpha(reliability_data=table.T, level_of_measurement="ordinal", value_domain=[0, 1, 2])
    assert item["krippendorff_alpha"] == pytest.approx(expected, abs=1e-12)
    # Totals: C2 (b's lesion not assessable) and C3 (b's L5 marked) are flagged; C5 misses c.
    totals = result["totals"]
    assert totals["flagged_cases"] == ["C2", "C3"]
    assert (totals["icc_cases"], totals["icc_with_flagged_cases"]) == (2, 4)
    scores = {(c.code, r): cohort.scores_of(c.reads[r], SCHEME, TAXONOMY).total for c in cases for r in c.reads}
    long = pd.DataFrame([(c, r, scores[(c, r)]) for c in ("C1", "C2", "C3", "C4") for r in READERS],
                        columns=["case", "reader", "total"])
    reference = pingouin.intraclass_corr(long, "case", "reader", "total").set_index("Type")
    assert totals["icc_with_flagged"][0]["value"] == pytest.approx(reference.loc["ICC(A,1)", "ICC"], abs=1e-12)
    assert totals["icc_with_flagged"][1]["value"] == pytest.approx(reference.loc["ICC(C,1)", "ICC"], abs=1e-12)


def _percentile_interval(per_case: list, statistic, seed: int, resamples: int) -> tuple[float, float]:
    """Independent case bootstrap: draw cases with replacement, recompute, take the 2.5 and 97.5 percentiles."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        drawn = rng.integers(0, len(per_case), size=len(per_case))
        values.append(statistic([per_case[i] for i in drawn]))
    values = np.array(values, dtype=float)
    return tuple(np.percentile(values[~np.isnan(values)], [2.5, 97.5]))


def test_bootstrap_intervals_are_reproduced_by_independent_resampling(result):
    import krippendorff

    seed, resamples = BOOT["seed"], BOOT["resamples"]
    blocks = [presence(c) for c in ("C1", "C2", "C3", "C4")]
    with np.errstate(divide="ignore", invalid="ignore"):
        low, high = _percentile_interval(blocks, lambda chosen: fleiss(np.vstack(chosen)), seed, resamples)
    assert result["unit_presence"]["fleiss_kappa_ci"] == pytest.approx([low, high], abs=1e-9)
    # specific agreement a vs b per case: (both, a only, b only, neither) bone units
    ab = [(presence(c)[:, 0], presence(c)[:, 1]) for c in SPEC]
    tallies = []
    for x, y in ab:
        keep = ~(np.isnan(x) | np.isnan(y))
        x, y = x[keep] == 1, y[keep] == 1
        tallies.append(((x & y).sum(), (x & ~y).sum(), (~x & y).sum(), (~x & ~y).sum()))

    def psa(chosen):
        a, b, c, _ = np.sum(chosen, axis=0)
        return 2 * a / (2 * a + b + c)

    low, high = _percentile_interval(tallies, psa, seed, resamples)
    pair = next(x for x in result["unit_specific_agreement"] if x["readers"] == ["a", "b"])
    assert pair["psa_ci"] == pytest.approx([low, high], abs=1e-9)
    # Krippendorff's alpha of marrow grades, cases resampled with their units
    per_case = []
    for case in SPEC:
        marked = sorted({(s, side) for r in SPEC[case] for s, side, _ in SPEC[case][r]}, key=str)
        rows = [[np.nan if r not in SPEC[case] else next(
            (np.nan if g == "NA" else float(g) for s, sd, g in SPEC[case][r] if (s, sd) == (site, side)), 0.0)
            for r in READERS] for site, side in marked]
        per_case.append(np.array(rows).reshape(len(rows), 3))

    def alpha(chosen):
        data = np.vstack(chosen).T
        if len(np.unique(data[~np.isnan(data)])) < 2:
            return np.nan
        return krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal", value_domain=[0, 1, 2])

    low, high = _percentile_interval(per_case, alpha, seed, resamples)
    item = next(i for i in result["items"] if i["item"] == "marrow_hyperintensity")
    assert item["krippendorff_alpha_ci"] == pytest.approx([low, high], abs=1e-9)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_tally_statistics_match_the_libraries(seed):
    import krippendorff
    from sklearn.metrics import cohen_kappa_score
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    rng = np.random.default_rng(seed)
    ratings = np.clip(rng.integers(0, 4, (40, 1)) + rng.integers(-1, 2, (40, 3)), 0, 3).astype(float)
    ratings[rng.random((40, 3)) < 0.15] = np.nan
    alpha = agreement.alpha_from_coincidence(agreement.coincidence_tally(ratings, [0, 1, 2, 3]), 4)[0]
    assert alpha == pytest.approx(krippendorff.alpha(reliability_data=ratings.T, level_of_measurement="ordinal",
                                                     value_domain=[0, 1, 2, 3]), abs=1e-12)
    a, b = ratings[:, 0], ratings[:, 1]
    keep = ~(np.isnan(a) | np.isnan(b))
    for w in (None, "linear", "quadratic"):
        assert agreement.weighted_kappa(a, b, [0, 1, 2, 3], w) == pytest.approx(
            cohen_kappa_score(a[keep], b[keep], labels=[0, 1, 2, 3], weights=w), abs=1e-12)
    binary = (np.nan_to_num(ratings) >= 2).astype(float)
    tally = agreement.presence_tally(binary)
    table = aggregate_raters(binary.astype(int), n_cat=2)[0]
    for method in ("fleiss", "randolph"):
        assert agreement.kappa_from_tally(tally, 3, method)[0] == pytest.approx(fleiss_kappa(table, method=method),
                                                                               abs=1e-12)


# -- edge cases found by stress/mutation_run.py ------------------------------------------------

def test_fleiss_kappa_edge_cases_match_their_definition():
    from statsmodels.stats.inter_rater import aggregate_raters
    from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss

    from cno_annotate.analysis.agreement import fleiss_kappa

    nan = float("nan")
    assert np.isnan(fleiss_kappa(np.array([[1.0, nan, 2.0], [nan, 0.0, 0.0]])))  # no target rated by all
    one_target = np.array([[0.0, 1.0, 1.0]])
    expected = sm_fleiss(aggregate_raters(one_target.astype(int))[0])
    assert np.isfinite(expected) and fleiss_kappa(one_target) == pytest.approx(expected)
    same_category = np.array([[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]])
    assert np.isnan(fleiss_kappa(same_category))  # chance agreement is 1: Fleiss' kappa is undefined
    assert fleiss_kappa(same_category, method="randolph") == 1.0  # free-marginal: perfect agreement


def test_cohen_kappa_edge_cases_match_scikit_learn():
    from sklearn.metrics import cohen_kappa_score

    from cno_annotate.analysis.agreement import weighted_kappa

    nan = float("nan")
    assert np.isnan(weighted_kappa(np.array([nan, 1.0]), np.array([0.0, nan]), [0, 1]))  # no pair rated by both
    one_pair = weighted_kappa(np.array([0.0]), np.array([1.0]), [0, 1])
    assert one_pair == cohen_kappa_score([0], [1], labels=[0, 1]) == 0.0


# -- found by stress/mutation_run.py: the bootstrap interval and specific agreement, field by field ----------------
def _ratio(sums: np.ndarray) -> np.ndarray:
    """First tally over second, NaN where the second is 0 (an undefined statistic)."""
    return np.where(sums[:, 1] > 0, sums[:, 0] / np.where(sums[:, 1] > 0, sums[:, 1], 1), np.nan)


def test_the_case_bootstrap_interval_is_the_percentile_of_the_resampled_statistic():
    # four cases; resample b sums the cases it drew (numpy's default_rng(3)); a resample without the first
    # case has no denominator and is left out; level 0.9 -> the 5th and 95th percentiles of the rest
    per_case = np.array([[3, 4], [1, 0], [2, 0], [0, 0]])
    values = _ratio(agreement.bootstrap_weights(4, 300, 3) @ per_case)
    kept = values[~np.isnan(values)]
    assert 100 < kept.size < 300
    interval = agreement.case_bootstrap(per_case, _ratio, resamples=300, seed=3, level=0.9)
    assert (interval.low, interval.high) == tuple(np.percentile(kept, [5, 95]))
    assert (interval.resamples, interval.valid, interval.seed, interval.level) == (300, kept.size, 3, 0.9)
    one = agreement.case_bootstrap(per_case[:1], _ratio, resamples=1, seed=3)  # one case, one resample
    assert (one.low, one.high, one.resamples, one.valid) == (0.75, 0.75, 1, 1)


@pytest.mark.parametrize("per_case,resamples", [(np.zeros((0, 2)), 50), (np.ones((3, 2)), 0),
                                                (np.array([[1.0, 0.0], [2.0, 0.0]]), 50)],
                         ids=["no cases", "no resamples", "never defined"])
def test_an_interval_that_cannot_be_computed_is_nan_and_says_why(per_case, resamples):
    interval = agreement.case_bootstrap(per_case, _ratio, resamples=resamples, seed=4, level=0.9)
    assert np.isnan(interval.low) and np.isnan(interval.high)
    assert (interval.resamples, interval.valid, interval.seed, interval.level) == (resamples, 0, 4, 0.9)


def test_specific_agreement_is_zero_not_undefined_when_only_one_reader_saw_anything():
    # [both, first only, second only, neither]: PSA = 2a / (2a + b + c), NSA = 2d / (2d + b + c)
    psa, nsa = agreement.specific_from_tally(np.array([[0, 0, 1, 5], [0, 1, 0, 5], [0, 0, 0, 4], [2, 1, 1, 0]]))
    assert list(psa[:2]) == [0.0, 0.0] and np.isnan(psa[2]) and psa[3] == 4 / 6
    assert list(nsa) == [10 / 11, 10 / 11, 1.0, 0.0]
