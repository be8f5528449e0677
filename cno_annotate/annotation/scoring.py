"""Scores from findings: pure functions, no storage, no state.

A lesion's score sums its scored item grades. In each bone unit, the grades
of its lesions combine item by item (``unit_combine``: max or sum); the unit
score sums those, capped at ``unit_max``. Regions and the patient sum units.
"Not assessable" is never 0: an NA grade is left out of every sum, a unit
marked not assessable is left out and counted, and a unit marked "no lesion"
scores 0 explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cno_annotate.annotation.model import UnitMark
from cno_annotate.annotation.scheme import NOT_ASSESSABLE, Scheme
from cno_annotate.annotation.taxonomy import Taxonomy

NO_LESION, UNIT_NOT_ASSESSABLE = UnitMark.NO_LESION, UnitMark.NOT_ASSESSABLE
UNIT_MARKS = tuple(UnitMark)


@dataclass(frozen=True)
class Finding:
    """What scoring needs of a lesion: its id, site, side and grades."""

    lesion_id: str
    site_id: str | None
    side: str | None
    grades: dict


@dataclass
class UnitScore:
    """One bone unit's result."""

    unit_id: str
    status: str  # lesion, no_lesion, not_assessable
    score: int | None
    items: dict = field(default_factory=dict)  # item id -> combined grade or NA
    lesions: list[str] = field(default_factory=list)


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

    def as_dict(self) -> dict:
        """JSON-ready form (units sorted by id)."""
        return {
            "scheme": dict(self.scheme),
            "total": self.total,
            "units_with_lesion": self.units_with_lesion,
            "units_no_lesion": self.units_no_lesion,
            "units_not_assessable": self.units_not_assessable,
            "regions": dict(sorted(self.regions.items())),
            "lesions": dict(sorted(self.lesions.items())),
            "units": [
                {"unit_id": u.unit_id, "status": u.status, "score": u.score, "items": dict(sorted(u.items.items()))}
                for u in sorted(self.units.values(), key=lambda u: u.unit_id)
            ],
        }


def lesion_score(finding: Finding, scheme: Scheme, taxonomy: Taxonomy) -> int | None:
    """Sum of the lesion's scored, applicable, assessable grades (None without a site)."""
    if finding.site_id is None:
        return None
    unit_type = taxonomy.site(finding.site_id).unit_type
    return sum(
        int(finding.grades[item.id])
        for item in scheme.items_for(unit_type)
        if item.scored and finding.grades.get(item.id, NOT_ASSESSABLE) != NOT_ASSESSABLE
    )


def score_read(findings: list[Finding], unit_marks: dict[str, str], scheme: Scheme, taxonomy: Taxonomy) -> ReadScores:
    """Score a read.

    Parameters
    ----------
    findings : list of Finding
        The read's lesions.
    unit_marks : dict
        Bone unit id -> ``"no_lesion"`` or ``"not_assessable"``.
    scheme, taxonomy
        The scoring scheme and site taxonomy.

    Returns
    -------
    ReadScores
        Lesion, unit, region, reporting-group and patient scores; lesions
        without a site yet are listed in ``unplaced_lesions`` and not scored.
    """
    warnings: list[str] = []
    lesions: dict[str, int | None] = {}
    by_unit: dict[str, list[Finding]] = {}
    unplaced = []
    for finding in findings:
        lesions[finding.lesion_id] = lesion_score(finding, scheme, taxonomy)
        if finding.site_id is None or (taxonomy.site(finding.site_id).lateral and finding.side is None):
            unplaced.append(finding.lesion_id)
            continue
        by_unit.setdefault(taxonomy.unit_id(finding.site_id, finding.side), []).append(finding)
    units: dict[str, UnitScore] = {}
    for unit_id, mark in unit_marks.items():
        if mark == UNIT_NOT_ASSESSABLE and unit_id in by_unit:
            warnings.append(f"{unit_id} is marked not assessable but has lesions; they are left out")
        units[unit_id] = UnitScore(unit_id, mark, 0 if mark == NO_LESION else None)
    for unit_id, unit_findings in by_unit.items():
        if unit_marks.get(unit_id) == UNIT_NOT_ASSESSABLE:
            continue
        units[unit_id] = _score_unit(unit_id, unit_findings, scheme, taxonomy)
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
        lesions=lesions,
        units=units,
        regions=regions,
        groups=groups,
        total=sum(u.score for u in units.values() if u.score is not None),
        units_with_lesion=sum(u.status == "lesion" for u in units.values()),
        units_no_lesion=sum(u.status == NO_LESION for u in units.values()),
        units_not_assessable=sum(u.status == UNIT_NOT_ASSESSABLE for u in units.values()),
        unplaced_lesions=unplaced,
        warnings=warnings,
    )


def _score_unit(unit_id: str, findings: list[Finding], scheme: Scheme, taxonomy: Taxonomy) -> UnitScore:
    site_id = findings[0].site_id
    if site_id is None:
        raise ValueError(f"unit {unit_id}: a finding without a site cannot be scored in a unit")
    site = taxonomy.site(site_id)
    combine = scheme.aggregation["unit_combine"]
    items: dict = {}
    for item in scheme.items_for(site.unit_type):
        if not item.scored:
            continue
        grades = [int(f.grades[item.id]) for f in findings
                  if f.grades.get(item.id, NOT_ASSESSABLE) != NOT_ASSESSABLE]
        if not grades:
            items[item.id] = NOT_ASSESSABLE
        else:
            items[item.id] = max(grades) if combine == "max" else sum(grades)
    score = sum(v for v in items.values() if v != NOT_ASSESSABLE)
    cap = scheme.aggregation["unit_max"]
    if cap is not None:
        score = min(score, cap)
    return UnitScore(unit_id, "lesion", score, items, [f.lesion_id for f in findings])
