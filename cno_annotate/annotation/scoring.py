"""Scores from a read's lesions: pure functions, no storage, no state.

Scores are per bone unit. An item graded per lesion takes, in each unit, the
combination of its lesions' grades (``unit_combine``: max or sum); an item
graded per unit (RAI-CROMRIS extent, scheme 2.0.0) takes the reader's unit
grade, or else the grade its lesions propose (:meth:`Item.propose_unit_grade`),
reported as proposed. The unit score sums its items, capped at ``unit_max``;
regions and the patient sum units. A lesion's own item sum is descriptive
only: lesion sums do not add up to unit scores.

"Not assessable" is never 0, and never the same as "not graded": a unit's
item that no lesion and no unit grade gave is None (exported empty), one that
a lesion or the reader said not assessable is NA. An NA grade is left out of every sum and makes
its unit (and the read's total) incomplete; a lesion with no assessable grade
is not assessable (score None); a unit whose lesions give no assessable grade,
or that is marked not assessable, is not assessable (score None, counted);
a unit marked "no lesion" scores 0 explicitly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from cno_annotate.annotation.model import Lesion, UnitMark
from cno_annotate.annotation.scheme import NOT_ASSESSABLE, Scheme
from cno_annotate.annotation.taxonomy import Taxonomy

NO_LESION, UNIT_NOT_ASSESSABLE = UnitMark.NO_LESION, UnitMark.NOT_ASSESSABLE
UNIT_MARKS = tuple(UnitMark)


@dataclass
class UnitScore:
    """One bone unit's result."""

    unit_id: str
    status: str  # lesion, no_lesion, not_assessable
    score: int | None
    items: dict = field(default_factory=dict)  # item id -> unit grade, NA (said not assessable) or None (not graded)
    lesions: list[str] = field(default_factory=list)
    proposed: list[str] = field(default_factory=list)  # per-unit items not yet graded by the reader
    complete: bool = True  # False when an applicable item is not assessable


@dataclass
class ReadScores:
    """Every score of a read, with the scheme that produced them."""

    scheme: dict
    lesions: dict[str, int | None]
    units: dict[str, UnitScore]
    regions: dict[str, int]
    groups: dict[str, int]
    total: int
    units_with_lesion: int
    units_no_lesion: int
    units_not_assessable: int
    unplaced_lesions: list[str]
    warnings: list[str]
    lesions_not_assessable: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """False when the total leaves out a not-assessable unit or item (a flagged total)."""
        return self.units_not_assessable == 0 and all(u.complete for u in self.units.values())

    def as_dict(self) -> dict:
        """JSON-ready form (units sorted by id)."""
        return {
            "scheme": dict(self.scheme),
            "total": self.total,
            "units_with_lesion": self.units_with_lesion,
            "units_no_lesion": self.units_no_lesion,
            "units_not_assessable": self.units_not_assessable,
            "complete": self.complete,
            "regions": dict(sorted(self.regions.items())),
            "lesions": dict(sorted(self.lesions.items())),
            "units": [
                {"unit_id": u.unit_id, "status": u.status, "score": u.score, "items": dict(sorted(u.items.items()))}
                for u in sorted(self.units.values(), key=lambda u: u.unit_id)
            ],
        }


def lesion_score(lesion: Lesion, scheme: Scheme, taxonomy: Taxonomy) -> int | None:
    """Sum of the lesion's scored, applicable, assessable grades.

    None without a site, and None (not assessable) when its scored items are
    graded "not assessable" and none has a grade (a lesion not graded yet sums
    to 0). Descriptive only: lesion sums do not add up to a unit score.
    """
    if lesion.site_id is None:
        return None
    unit_type = taxonomy.site(lesion.site_id).unit_type
    given = [lesion.grades[item.id] for item in scheme.items_for(unit_type) if item.scored and item.id in lesion.grades]
    grades = [int(g) for g in given if g != NOT_ASSESSABLE]
    return None if not grades and NOT_ASSESSABLE in given else sum(grades)


def score_read(lesions: Sequence[Lesion], unit_marks: dict[str, str], scheme: Scheme, taxonomy: Taxonomy,
               unit_grades: dict[str, dict] | None = None) -> ReadScores:
    """Score a read.

    Parameters
    ----------
    lesions : sequence of Lesion
        The read's lesions (built by :func:`~cno_annotate.annotation.validation.make_lesion`,
        so scoring sees what the editor and import accepted).
    unit_marks : dict
        Bone unit id -> ``"no_lesion"`` or ``"not_assessable"``.
    scheme, taxonomy
        The scoring scheme and site taxonomy.
    unit_grades : dict, optional
        Bone unit id -> {item id: grade or NA}: the reader's grades of items
        graded per unit (confirming or changing the proposal).

    Returns
    -------
    ReadScores
        Lesion, unit, region, reporting-group and patient scores; lesions
        without a site yet are listed in ``unplaced_lesions`` and not scored.
    """
    warnings: list[str] = []
    lesion_scores: dict[str, int | None] = {}
    by_unit: dict[str, list[Lesion]] = {}
    unplaced = []
    for lesion in lesions:
        lesion_scores[lesion.lesion_id] = lesion_score(lesion, scheme, taxonomy)
        if lesion.site_id is None or (taxonomy.site(lesion.site_id).lateral and lesion.side is None):
            unplaced.append(lesion.lesion_id)
            continue
        by_unit.setdefault(taxonomy.unit_id(lesion.site_id, lesion.side), []).append(lesion)
    units: dict[str, UnitScore] = {}
    for unit_id, mark in unit_marks.items():
        if mark == UNIT_NOT_ASSESSABLE and unit_id in by_unit:
            warnings.append(f"{unit_id} is marked not assessable but has lesions; they are left out")
        units[unit_id] = UnitScore(unit_id, mark, 0 if mark == NO_LESION else None)
    for unit_id, unit_lesions in by_unit.items():
        if unit_marks.get(unit_id) == UNIT_NOT_ASSESSABLE:
            continue
        units[unit_id] = _score_unit(unit_id, unit_lesions, scheme, taxonomy, (unit_grades or {}).get(unit_id, {}))
    regions: dict[str, int] = {}
    groups: dict[str, int] = {}
    for unit in units.values():
        if unit.score is None:
            continue
        site, _ = taxonomy.unit_site(unit.unit_id)
        regions[site.region] = regions.get(site.region, 0) + unit.score
        for group in taxonomy.group_path(site.group):
            groups[group] = groups.get(group, 0) + unit.score
    return ReadScores(
        scheme=scheme.ref,
        lesions=lesion_scores,
        units=units,
        regions=regions,
        groups=groups,
        total=sum(u.score for u in units.values() if u.score is not None),
        units_with_lesion=sum(u.status == "lesion" for u in units.values()),
        units_no_lesion=sum(u.status == NO_LESION for u in units.values()),
        units_not_assessable=sum(u.status == UNIT_NOT_ASSESSABLE for u in units.values()),
        unplaced_lesions=unplaced,
        warnings=warnings,
        lesions_not_assessable=[lesion.lesion_id for lesion in lesions
                                if lesion.site_id is not None and lesion_scores[lesion.lesion_id] is None],
    )


def _score_unit(unit_id: str, lesions: list[Lesion], scheme: Scheme, taxonomy: Taxonomy,
                reader_grades: dict) -> UnitScore:
    site = taxonomy.site(lesions[0].site_id or "")
    combine = scheme.aggregation["unit_combine"]
    items: dict = {}
    proposed = []
    said_na = set()  # items a lesion or the reader graded "not assessable", with no grade to use instead
    for item in scheme.items_for(site.unit_type):
        if not item.scored:
            continue
        grades = [int(lesion.grades[item.id]) for lesion in lesions
                  if lesion.grades.get(item.id, NOT_ASSESSABLE) != NOT_ASSESSABLE]
        if item.per_unit and item.id in reader_grades:
            items[item.id] = reader_grades[item.id]
        elif not grades:
            said = any(lesion.grades.get(item.id) == NOT_ASSESSABLE for lesion in lesions)
            items[item.id] = NOT_ASSESSABLE if said else None
        elif item.per_unit:
            items[item.id] = item.propose_unit_grade(grades)
            proposed.append(item.id)
        else:
            items[item.id] = max(grades) if combine == "max" else sum(grades)
        if items[item.id] == NOT_ASSESSABLE and (
                reader_grades.get(item.id) == NOT_ASSESSABLE
                or any(lesion.grades.get(item.id) == NOT_ASSESSABLE for lesion in lesions)):
            said_na.add(item.id)
    assessable = [int(v) for v in items.values() if v is not None and v != NOT_ASSESSABLE]
    lesion_ids = [lesion.lesion_id for lesion in lesions]
    if not assessable and said_na:
        return UnitScore(unit_id, UNIT_NOT_ASSESSABLE, None, items, lesion_ids, proposed, complete=False)
    score = sum(assessable)
    cap = scheme.aggregation["unit_max"]
    if cap is not None:
        score = min(score, cap)
    return UnitScore(unit_id, "lesion", score, items, lesion_ids, proposed, complete=not said_na)
