"""One validator for lesions and reads, shared by the editor, ``read import``, scoring and analysis.

A :class:`~cno_annotate.annotation.model.Lesion` is built only through
:func:`make_lesion`, which checks it against the site taxonomy and the scoring
scheme ("valid once constructed"): a known site and sub-site, a side only on a
lateral site, grades only for items of the scheme that apply to the site's unit
type, finite positions, a confidence of 1 to 5, text without lone surrogates.
:func:`read_problems` adds the rules that concern a whole read (a submitted read
places every lesion; a unit that holds lesions carries no mark), and
:func:`reference_problems` the rules that need the store (the study, series,
reading study and reader exist; ``supersedes`` names a read; one adjudicator
per case). :func:`load_strict_json` reads a JSON document the way import needs
it: duplicate keys, NaN / Infinity, lone surrogates and deep nesting refused
with the JSON path.

Every problem is a :class:`Problem`: a JSON path (relative to the object
checked, so import can prefix ``$.reads[3]``) and a one-line reason.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cno_annotate.annotation.model import (
    CONFIDENCE,
    PLANE_AXES,
    FollowupStatus,
    Lesion,
    Read,
    ReadingRole,
    ReadStatus,
    Roi,
    RoiKind,
    RoiRole,
    Side,
    UnitMark,
    extent_sizes,
)
from cno_annotate.annotation.scheme import NOT_ASSESSABLE, Scheme
from cno_annotate.annotation.taxonomy import Taxonomy
from cno_annotate.errors import CnoError
from cno_annotate.uids import UID_MAX_LENGTH, is_uid, new_uid

#: Largest integer SQLite stores (revisions and versions must fit).
SQLITE_MAX_INT = 2**63 - 1
#: Deepest nesting accepted in an imported JSON document (a read document needs 6).
MAX_JSON_DEPTH = 32


@dataclass(frozen=True)
class Problem:
    """One broken rule: where (a JSON path suffix such as ``.lesions[0].site.id``) and why."""

    path: str
    reason: str

    def at(self, prefix: str) -> Problem:
        """The same problem under a parent path."""
        return Problem(prefix + self.path, self.reason)

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


class InvalidLesion(CnoError):
    """A lesion that breaks a rule; ``problem`` says where and why."""

    def __init__(self, problem: Problem):
        super().__init__(problem.reason)
        self.problem = problem


def _refuse(path: str, reason: str) -> InvalidLesion:
    return InvalidLesion(Problem(path, reason))


# -- text and numbers ------------------------------------------------------------------------
def has_lone_surrogate(text: str) -> bool:
    """Whether ``text`` holds a UTF-16 surrogate that UTF-8 cannot encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _text(value: Any, path: str, what: str) -> str:
    if not isinstance(value, str):
        raise _refuse(path, f"{what} must be text, not {type(value).__name__}")
    if has_lone_surrogate(value):
        raise _refuse(path, f"{what} holds an unpaired surrogate (not valid Unicode text)")
    return value


def _finite(value: Any, path: str, what: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise _refuse(path, f"{what} must be a number, not {value!r}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise _refuse(path, f"{what} must be a finite number, not {value!r}")
    return number


def _sequence(value: Any) -> bool:
    return isinstance(value, (list, tuple, np.ndarray))


def _triple(value: Any, path: str, what: str) -> tuple[float, float, float]:
    if not _sequence(value) or len(value) != 3:
        raise _refuse(path, f"{what} must be three numbers")
    x, y, z = (_finite(v, f"{path}[{n}]", what) for n, v in enumerate(value))
    return (x, y, z)


#: Largest distance, in mm along any axis, of a lesion from the scanner origin: no patient lies 10 m away.
MAX_POSITION_MM = 10_000.0


def _position(value: Any, path: str) -> tuple[float, float, float]:
    """A lesion position in LPS mm: three finite numbers within :data:`MAX_POSITION_MM` of the origin."""
    position = _triple(value, path, "a position")
    if any(abs(v) > MAX_POSITION_MM for v in position):
        raise _refuse(path, f"a position must lie within 10 m ({MAX_POSITION_MM:.0f} mm) of the origin on every "
                            f"axis, not {list(position)}")
    return position


# -- lesions -----------------------------------------------------------------------------------
def make_lesion(taxonomy: Taxonomy, scheme: Scheme, *, lesion_id: str, position: Any, series_uid: str, voxel: Any,
                site_id: str | None = None, side: str | None = None, subsite: str | None = None,
                extent: dict | None = None, grades: Mapping | None = None, comment: str = "",
                confidence: int | None = None, created_by: str = "", created_at: str = "",
                modified_by: str = "", modified_at: str = "", stir_muscle_ratio: Any = None,
                tracking_uid: str | None = None) -> Lesion:
    """Build a lesion that is valid for this taxonomy and scheme.

    ``tracking_uid`` is the lesion's DICOM tracking UID; ``None`` (a lesion
    created now) gives it a new one. Edits, new versions, exports and a
    lesion confirmed at a follow-up visit pass the UID on unchanged.

    Returns
    -------
    Lesion
        With positions as floats, the side as :class:`Side` and grades as
        integers or ``"NA"``.

    Raises
    ------
    InvalidLesion
        Naming the field (as a JSON path of the export form) and why.
    """
    _text(lesion_id, ".lesion_id", "the lesion id")
    if not lesion_id:
        raise _refuse(".lesion_id", "a lesion needs an id")
    site = None
    if site_id is not None:
        _text(site_id, ".site.id", "the site id")
        if site_id not in taxonomy.sites:
            raise _refuse(".site.id", f"unknown site {site_id!r} in taxonomy {taxonomy.id} {taxonomy.version}")
        site = taxonomy.sites[site_id]
    if subsite is not None:
        if site is None:
            raise _refuse(".subsite", "choose the site before its sub-site")
        if subsite not in site.subsites:
            choices = ", ".join(site.subsites) or "none"
            raise _refuse(".subsite.id", f"{site.label} has no sub-site {subsite!r} (choices: {choices})")
    checked_side = _side(side, site)
    return Lesion(
        lesion_id=lesion_id,
        position=_position(position, ".position.lps_mm"),
        series_uid=_text(series_uid, ".position.series_uid", "the series UID"),
        voxel=_triple(voxel, ".position.voxel", "a voxel index"),
        site_id=site_id,
        side=checked_side,
        subsite=subsite,
        extent=_extent(extent),
        grades=_grades(grades or {}, scheme, site),
        comment=_text(comment, ".comment", "the comment"),
        confidence=_confidence(confidence),
        created_by=_text(created_by, ".created.by", "the creator"),
        created_at=_text(created_at, ".created.at", "the creation time"),
        modified_by=_text(modified_by, ".modified.by", "the last editor"),
        modified_at=_text(modified_at, ".modified.at", "the modification time"),
        stir_muscle_ratio=_ratio(stir_muscle_ratio),
        tracking_uid=new_uid() if tracking_uid is None else _tracking_uid(tracking_uid),
    )


def _ratio(value: Any) -> float | None:
    """A signal-intensity ratio: a finite number above 0 (or None)."""
    if value is None:
        return None
    ratio = _finite(value, ".stir_muscle_ratio", "the STIR lesion:muscle ratio")
    if not 0 < ratio < 1e6:
        raise _refuse(".stir_muscle_ratio", f"the STIR lesion:muscle ratio must be above 0, not {ratio!r}")
    return ratio


# -- regions of interest ------------------------------------------------------------------------
def make_roi(*, roi_id: str, kind: Any, plane: Any, points_mm: Any, series_uid: str,
             role: Any = RoiRole.MEASUREMENT, lesion_id: str | None = None) -> Roi:
    """Build a region of interest: a known kind and plane, the points the kind needs, a lesion only for a lesion ROI.

    Raises
    ------
    InvalidLesion
        Naming the field and why.
    """
    _text(roi_id, ".roi_id", "the ROI id")
    if not roi_id:
        raise _refuse(".roi_id", "an ROI needs an id")
    try:
        checked_kind = RoiKind(kind)
    except ValueError:
        raise _refuse(".kind", f"an ROI is an ellipse, a rectangle or a polygon, not {kind!r}") from None
    try:
        checked_role = RoiRole(role)
    except ValueError:
        raise _refuse(".role", f"an ROI's role is measurement, muscle or lesion, not {role!r}") from None
    if plane not in PLANE_AXES:
        raise _refuse(".plane", f"a plane is one of {', '.join(PLANE_AXES)}")
    if not _sequence(points_mm):
        raise _refuse(".points_mm", "the points must be a list of LPS positions")
    needed = 3 if checked_kind == RoiKind.POLYGON else 2
    if (len(points_mm) < needed) if checked_kind == RoiKind.POLYGON else (len(points_mm) != needed):
        raise _refuse(".points_mm", f"a {checked_kind} ROI needs {'at least ' if needed == 3 else ''}{needed} points")
    points = tuple(_position(p, f".points_mm[{n}]") for n, p in enumerate(points_mm))
    if checked_role == RoiRole.LESION:
        if not lesion_id:
            raise _refuse(".lesion_id", "a lesion ROI names its lesion")
        _text(lesion_id, ".lesion_id", "the lesion id")
    elif lesion_id is not None:
        raise _refuse(".lesion_id", f"only a lesion ROI names a lesion (this one is a {checked_role} ROI)")
    return Roi(roi_id=roi_id, kind=checked_kind, plane=plane, points_mm=points,
               series_uid=_text(series_uid, ".series_uid", "the series UID"), role=checked_role, lesion_id=lesion_id)


def roi_from_fields(fields: Mapping) -> Roi:
    """:func:`make_roi` from the stored (``Roi.to_dict``) form."""
    if not isinstance(fields, Mapping):
        raise _refuse("", "an ROI must be an object")
    unknown = set(fields) - set(Roi.__dataclass_fields__)
    if unknown:
        raise _refuse("", f"an ROI has no field {min(unknown)!r}")
    return make_roi(**fields)


def _tracking_uid(value: Any) -> str:
    text = _text(value, ".tracking_uid", "the tracking UID")
    if not is_uid(text):
        raise _refuse(".tracking_uid", f"the tracking UID must be a DICOM UID (digits and dots, at most "
                                       f"{UID_MAX_LENGTH} characters, no leading zeros), not {text!r}")
    return text


def lesion_from_fields(taxonomy: Taxonomy, scheme: Scheme, fields: Mapping) -> Lesion:
    """:func:`make_lesion` from the stored (``Lesion.to_dict``) form."""
    unknown = set(fields) - set(Lesion.__dataclass_fields__)
    if unknown:
        raise _refuse("", f"a lesion has no field {min(unknown)!r}")
    return make_lesion(taxonomy, scheme, **fields)


def _side(side: Any, site) -> Side | None:
    if side is None:
        return None
    try:
        value = Side(side)
    except ValueError:
        raise _refuse(".laterality.side", f"side must be R or L, not {side!r}") from None
    if site is not None and not site.lateral:
        raise _refuse(".laterality", f"{site.label} is a midline site: it has no side")
    return value


def _confidence(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or value not in CONFIDENCE:
        raise _refuse(".confidence", f"confidence is 1 to 5, not {value!r}")
    return int(value)


def _grades(grades: Mapping, scheme: Scheme, site) -> dict:
    if not isinstance(grades, Mapping):
        raise _refuse(".grades", "grades must be an object of item: grade")
    out: dict = {}
    for item_id, value in grades.items():
        path = f".grades.{item_id}"
        try:
            item = scheme.item(item_id)
        except CnoError as exc:
            raise _refuse(path, str(exc)) from None
        if isinstance(value, bool) or (value != NOT_ASSESSABLE and value not in item.values):
            allowed = ", ".join(str(v) for v in item.values)
            raise _refuse(path, f"{item.label}: grade {value!r} is not one of {allowed} or {NOT_ASSESSABLE}")
        if site is not None and not item.applies(site.unit_type):
            raise _refuse(path, f"{item.label} is not graded for {site.label} ({site.unit_type.replace('_', ' ')}); "
                                f"clear that grade first")
        out[item_id] = value if value == NOT_ASSESSABLE else int(value)
    return out


def _extent(extent: Any) -> dict | None:
    if extent is None:
        return None
    if not isinstance(extent, Mapping):
        raise _refuse(".extent", "an extent must be an object")
    kind = extent.get("kind")
    keys = {"ellipse": {"kind", "plane", "radii_mm", "slice_range_mm"}, "box": {"kind", "min_mm", "max_mm"},
            "polygon": {"kind", "plane", "points_mm", "slice_range_mm"}}
    if kind not in keys:
        raise _refuse(".extent.kind", f"an extent is an ellipse, a box or a polygon, not {kind!r}")
    if set(extent) != keys[kind]:
        raise _refuse(".extent", f"a {kind} extent has exactly {', '.join(sorted(keys[kind]))}")
    if kind == "box":
        _triple(extent["min_mm"], ".extent.min_mm", "a corner")
        _triple(extent["max_mm"], ".extent.max_mm", "a corner")
    else:
        if extent["plane"] not in PLANE_AXES:
            raise _refuse(".extent.plane", f"a plane is one of {', '.join(PLANE_AXES)}")
        _pair(extent["slice_range_mm"], ".extent.slice_range_mm", positive=False)
        if kind == "ellipse":
            _pair(extent["radii_mm"], ".extent.radii_mm", positive=True)
        else:
            points = extent["points_mm"]
            if not _sequence(points) or len(points) < 3:
                raise _refuse(".extent.points_mm", "a polygon needs at least three points")
            for n, point in enumerate(points):
                _triple(point, f".extent.points_mm[{n}]", "a polygon point")
    out = _plain_numbers(extent)
    sizes, volume = extent_sizes(out)
    if not all(math.isfinite(v) for v in (*sizes, volume)):
        raise _refuse(".extent", "the extent is too large to measure")
    return out


def _plain_numbers(value: Any) -> Any:
    """A copy with lists for sequences and Python floats for numbers (what JSON and the store hold)."""
    if isinstance(value, Mapping):
        return {k: _plain_numbers(v) for k, v in value.items()}
    if _sequence(value):
        return [_plain_numbers(v) for v in value]
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        return int(value) if isinstance(value, numbers.Integral) else float(value)
    return value


def _pair(value: Any, path: str, positive: bool) -> None:
    if not _sequence(value) or len(value) != 2:
        raise _refuse(path, "must be two numbers")
    for n, v in enumerate(value):
        if _finite(v, f"{path}[{n}]", "a size") <= 0 and positive:
            raise _refuse(f"{path}[{n}]", "must be greater than 0")


# -- whole reads ---------------------------------------------------------------------------------
def unit_of(lesion: Lesion, taxonomy: Taxonomy) -> str | None:
    """The bone unit a lesion lies in, or None while it has no site (or no side on a lateral site)."""
    if lesion.site_id is None:
        return None
    site = taxonomy.site(lesion.site_id)
    if site.lateral and lesion.side is None:
        return None
    return taxonomy.unit_id(site.id, lesion.side)


def read_problems(read: Read, taxonomy: Taxonomy) -> list[Problem]:
    """The rules a whole read keeps (paths relative to the read's export form).

    - version and revision are whole numbers SQLite can hold; a read does not supersede itself;
    - every unit mark names a bone unit of the taxonomy and is ``no_lesion`` or ``not_assessable``;
    - a unit that holds lesions carries no mark (a "not assessable" unit with lesions would be
      counted in concordance and dropped by scoring);
    - a submitted read places every lesion: a site, and a side where the site is lateral;
    - ROI ids are unique, one muscle (reference) ROI at most, a lesion ROI names a lesion of the
      read and each lesion has one ROI at most;
    - no two lesions share a tracking UID;
    - a follow-up read's persisting prior lesions are lesions of the read, its resolved and not
      assessable ones are not; a submitted one grades each persisting lesion (one item not NA).
    """
    problems = []
    if not 0 <= read.revision <= SQLITE_MAX_INT:
        problems.append(Problem(".revision", f"revision {read.revision} is out of range (0 to 2^63-1)"))
    if not 1 <= read.version <= SQLITE_MAX_INT:
        problems.append(Problem(".version", f"version {read.version} is out of range (1 to 2^63-1)"))
    if read.supersedes is not None and read.supersedes == read.read_id:
        problems.append(Problem(".supersedes", "a read cannot supersede itself"))
    tracked: dict[str, str] = {}
    for n, lesion in enumerate(read.lesions):
        if lesion.tracking_uid in tracked:
            problems.append(Problem(f".lesions[{n}].tracking_uid", f"lesions {tracked[lesion.tracking_uid]} and "
                                    f"{lesion.lesion_id} have the same tracking UID (one lesion, one UID per read)"))
        tracked.setdefault(lesion.tracking_uid, lesion.lesion_id)
    problems.extend(_followup_problems(read, tracked))
    holding: dict[str, str] = {}
    for lesion in read.lesions:
        unit = unit_of(lesion, taxonomy)
        if unit is not None:
            holding.setdefault(unit, lesion.lesion_id)
    for n, (unit_id, mark) in enumerate(read.unit_marks.items()):
        try:
            taxonomy.unit_site(unit_id)
        except CnoError as exc:
            problems.append(Problem(f".unit_marks[{n}].unit_id", str(exc)))
            continue
        if mark not in tuple(UnitMark):
            problems.append(Problem(f".unit_marks[{n}].mark", f"a unit mark is one of {', '.join(UnitMark)}"))
        elif unit_id in holding:
            what = "not assessable" if mark == UnitMark.NOT_ASSESSABLE else "without lesion"
            problems.append(Problem(f".unit_marks[{n}]", f"{taxonomy.unit_label(unit_id)} holds lesion "
                                                         f"{holding[unit_id]} and cannot be marked {what}"))
    if read.status == ReadStatus.SUBMITTED:
        problems.extend(_ungraded_persisting_problems(read))
        for n, lesion in enumerate(read.lesions):
            if lesion.site_id is None:
                problems.append(Problem(f".lesions[{n}].site", f"lesion {lesion.lesion_id} of a submitted read "
                                                               f"needs a site"))
            elif unit_of(lesion, taxonomy) is None:
                label = taxonomy.site(lesion.site_id).label
                problems.append(Problem(f".lesions[{n}].laterality", f"lesion {lesion.lesion_id} of a submitted read "
                                                                     f"needs a side ({label} is lateral)"))
    return problems + _roi_problems(read)


def _roi_problems(read: Read) -> list[Problem]:
    problems, seen, muscle, measured = [], set(), None, set()
    lesions = {lesion.lesion_id for lesion in read.lesions}
    for n, roi in enumerate(read.rois):
        if roi.roi_id in seen:
            problems.append(Problem(f".rois[{n}].roi_id", f"two ROIs are called {roi.roi_id}"))
        seen.add(roi.roi_id)
        if roi.role == RoiRole.MUSCLE:
            if muscle is not None:
                problems.append(Problem(f".rois[{n}].role", f"a read has one muscle ROI ({muscle} already is)"))
            muscle = roi.roi_id
        if roi.role == RoiRole.LESION:
            if roi.lesion_id not in lesions:
                problems.append(Problem(f".rois[{n}].lesion_id", f"ROI {roi.roi_id} names lesion {roi.lesion_id}, "
                                                                 f"which the read does not have"))
            elif roi.lesion_id in measured:
                problems.append(Problem(f".rois[{n}].lesion_id", f"lesion {roi.lesion_id} has an ROI already"))
            measured.add(roi.lesion_id)
    return problems


def _followup_problems(read: Read, tracked: dict[str, str]) -> list[Problem]:
    """A persisting prior lesion is a lesion of this read (same tracking UID); a resolved or not assessable one is not."""
    if read.followup is None:
        return []
    problems = []
    if read.followup.prior_read_id == read.read_id:
        problems.append(Problem(".followup.prior_read_id", "a read cannot follow up itself"))
    for n, (uid, status) in enumerate(read.followup.outcomes.items()):
        path = f".followup.outcomes[{n}]"
        if not is_uid(uid):
            problems.append(Problem(f"{path}.tracking_uid", f"the tracking UID must be a DICOM UID, not {uid!r}"))
        elif status == FollowupStatus.PERSISTING and uid not in tracked:
            problems.append(Problem(path, f"prior lesion {uid} is marked persisting but no lesion of the read "
                                          f"carries its tracking UID"))
        elif status != FollowupStatus.PERSISTING and uid in tracked:
            what = "resolved" if status == FollowupStatus.RESOLVED else "not assessable"
            problems.append(Problem(path, f"prior lesion {uid} is marked {what} but lesion {tracked[uid]} of the "
                                          f"read carries its tracking UID"))
    return problems


def _ungraded_persisting_problems(read: Read) -> list[Problem]:
    """A submitted follow-up read grades every persisting lesion anew (at least one item not NA)."""
    if read.followup is None:
        return []
    persisting = {uid for uid, status in read.followup.outcomes.items() if status == FollowupStatus.PERSISTING}
    return [Problem(f".lesions[{n}].grades", f"persisting lesion {lesion.lesion_id} of a submitted follow-up read "
                                             f"needs a grade (graded anew at this visit; mark the prior lesion not "
                                             f"assessable if it cannot be graded)")
            for n, lesion in enumerate(read.lesions)
            if lesion.tracking_uid in persisting and all(v == NOT_ASSESSABLE for v in lesion.grades.values())]


def check_read(read: Read, taxonomy: Taxonomy) -> None:
    """Raise :class:`CnoError` with the first of :func:`read_problems` (for the editor)."""
    problems = read_problems(read, taxonomy)
    if problems:
        raise CnoError(problems[0].reason)


# -- references to the store ------------------------------------------------------------------------
def reference_problems(store, reads: Iterable[Read]) -> list[Problem]:
    """Rules that need the store, for reads about to be written (paths ``$.reads[n]...``).

    The study is in the store; each lesion's series is a series or volume of that
    study and its voxel index is its position in that volume (within half a voxel); a reading study exists, has the study as a case and the reader with the
    read's role; ``supersedes`` names a read of the same reader and study (in the
    store or among ``reads``); a case has at most one adjudicated read (one
    adjudicator, one line of versions).
    """
    from cno_annotate import reading_study as rs
    from cno_annotate.annotation.reads import list_reads
    from cno_annotate.store.reading_studies import case_sources

    sources = case_sources(store.db)  # a read naming its case by the key (a server reader's) is checked as its source
    reads = [read if (read.reading_study or "", read.study_uid) not in sources else
             dataclasses.replace(read, study_uid=sources[(read.reading_study or "", read.study_uid)]) for read in reads]
    problems: list[Problem] = []
    from cno_annotate.volumes import volumes_by_series  # volumes reads the store's files: imported when used

    studies = store.study_uids()
    series_of = store.series_of_studies()
    volumes = volumes_by_series(store) if any(read.lesions for read in reads) else {}
    stored = {r["read_id"]: r for r in list_reads(store)}
    incoming = {r.read_id: r for r in reads}
    for n, read in enumerate(reads):
        where = f"$.reads[{n}]"
        if read.study_uid not in studies:
            problems.append(Problem(f"{where}.study_uid", f"study {read.study_uid} is not in the store"))
        else:
            for m, lesion in enumerate(read.lesions):
                if lesion.series_uid not in series_of.get(read.study_uid, set()):
                    problems.append(Problem(f"{where}.lesions[{m}].position.series_uid",
                                            f"series {lesion.series_uid} is not a series of study {read.study_uid}"))
                    break
                mismatch = voxel_mismatch(lesion, volumes.get(lesion.series_uid, []))
                if mismatch is not None:
                    problems.append(Problem(f"{where}.lesions[{m}].position.voxel", mismatch))
                    break
        if read.reading_study is not None:
            problems.extend(p.at(where) for p in _reading_study_problems(store, rs, read))
        if read.followup is not None:
            prior = incoming.get(read.followup.prior_read_id) or stored.get(read.followup.prior_read_id)
            if prior is None:
                problems.append(Problem(f"{where}.followup.prior_read_id",
                                        f"prior read {read.followup.prior_read_id} does not exist"))
        if read.supersedes is not None:
            old = incoming.get(read.supersedes) or stored.get(read.supersedes)
            if old is None:
                problems.append(Problem(f"{where}.supersedes", f"read {read.supersedes} does not exist"))
            else:
                old_key = (old.study_uid, old.reader) if isinstance(old, Read) else (old["study_uid"], old["reader"])
                if old_key != (read.study_uid, read.reader):
                    problems.append(Problem(f"{where}.supersedes", f"read {read.supersedes} is not a read of the "
                                                                   f"same reader and study"))
    problems.extend(_adjudicator_problems(reads, stored))
    return problems


#: Slack on the half-voxel rule for indices written with a few decimals.
VOXEL_SLACK = 1e-3


def voxel_mismatch(lesion: Lesion, volumes: list) -> str | None:
    """Why a lesion's voxel index does not belong to its LPS position, or None when it does.

    The index is derived data: the position mapped through the affine of the
    volume the lesion names (:meth:`~cno_annotate.io.volume.Volume.lps_to_index`).
    It must lie within half a voxel of that, on every axis, in one of the
    volumes its ``series_uid`` names (a DICOM series may be several stacks).
    """
    if not volumes:
        return None
    expected = [np.asarray(volume.lps_to_index(np.asarray(lesion.position, float)), float) for volume in volumes]
    given = np.asarray(lesion.voxel, float)
    if any(np.all(np.abs(given - e) <= 0.5 + VOXEL_SLACK) for e in expected):
        return None
    return (f"lesion {lesion.lesion_id}: voxel [{', '.join(f'{v:g}' for v in given)}] is more than half a voxel "
            f"from its position ({', '.join(f'{v:g}' for v in lesion.position)}) mm, voxel "
            f"[{', '.join(f'{v:.1f}' for v in expected[0])}] of series {lesion.series_uid}")


def _reading_study_problems(store, rs, read: Read) -> list[Problem]:
    try:
        rs.get(store, read.reading_study)
    except CnoError as exc:
        return [Problem(".reading_study", str(exc))]
    if read.study_uid not in {c.study_uid for c in rs.cases(store, read.reading_study)}:
        return [Problem(".study_uid", f"study {read.study_uid} is not a case of reading study "
                                      f"{read.reading_study!r}")]
    try:
        role = rs.role_of(store, read.reading_study, read.reader)
    except CnoError as exc:
        return [Problem(".reader", str(exc))]
    if role != read.role:
        return [Problem(".role", f"{read.reader!r} is registered as {role} in {read.reading_study!r}, "
                                 f"not {read.role}")]
    return []


def _adjudicator_problems(reads: list[Read], stored: dict[str, dict]) -> list[Problem]:
    """At most one adjudicated read per case: all adjudicator reads of a case form one line of versions."""
    everything: dict[str, tuple[str | None, str, str, str | None, int | None]] = {
        rid: (row["reading_study"], row["study_uid"], row["role"], row["supersedes"], None)
        for rid, row in stored.items()}
    for n, read in enumerate(reads):
        everything[read.read_id] = (read.reading_study, read.study_uid, read.role, read.supersedes, n)
    heads: dict[tuple, list[tuple[str, int | None]]] = {}
    superseded = {v[3] for v in everything.values() if v[3]}
    for rid, (reading_study, study_uid, role, _, index) in everything.items():
        if role == ReadingRole.ADJUDICATOR and reading_study is not None and rid not in superseded:
            heads.setdefault((reading_study, study_uid), []).append((rid, index))
    problems = []
    for (reading_study, _study_uid), found in heads.items():
        if len(found) > 1 and any(index is not None for _, index in found):
            index = max(i for _, i in found if i is not None)
            others = ", ".join(sorted(rid for rid, i in found if i != index))
            problems.append(Problem(f"$.reads[{index}].role", f"the case already has an adjudicated read ({others}) "
                                                              f"in {reading_study!r}; one adjudicator per case"))
    return problems


# -- strict JSON ----------------------------------------------------------------------------------
class _Pairs(dict):
    """A JSON object that remembers keys it saw twice."""

    duplicates: list[str]


class _Constant:
    """NaN, Infinity or -Infinity as read, to be refused with its path."""

    def __init__(self, text: str):
        self.text = text


def _pairs(pairs: list[tuple[str, Any]]) -> _Pairs:
    out = _Pairs()
    out.duplicates = []
    for key, value in pairs:
        if key in out:
            out.duplicates.append(key)
        out[key] = value
    return out


def strict_problem(value: Any, path: str = "$", depth: int = 0) -> Problem | None:
    """The first thing strict JSON refuses in a parsed document (see :func:`load_strict_json`)."""
    if depth > MAX_JSON_DEPTH:
        return Problem(path, f"nested more than {MAX_JSON_DEPTH} levels deep")
    if isinstance(value, _Constant):
        return Problem(path, f"{value.text} is not a JSON number (write a finite number or null)")
    if isinstance(value, str):
        return Problem(path, "text holds an unpaired surrogate (not valid Unicode)") if has_lone_surrogate(value) else None
    if isinstance(value, dict):
        duplicates = getattr(value, "duplicates", None)
        if duplicates:
            return Problem(path, f"key {duplicates[0]!r} appears twice")
        for key, item in value.items():
            child = f"{path}.{key}"
            if has_lone_surrogate(key):
                return Problem(path, "a key holds an unpaired surrogate (not valid Unicode)")
            found = strict_problem(item, child, depth + 1)
            if found:
                return found
    if isinstance(value, list):
        for n, item in enumerate(value):
            found = strict_problem(item, f"{path}[{n}]", depth + 1)
            if found:
                return found
    return None


def load_strict_json(path: Path) -> Any:
    """Read a JSON file for import, refusing what strict parsers and our exports cannot carry.

    Raises
    ------
    CnoError
        Naming the file and the JSON path (or line and column) of: invalid JSON,
        a key repeated in one object, NaN / Infinity, a lone surrogate, nesting
        deeper than :data:`MAX_JSON_DEPTH`.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CnoError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise CnoError(f"{path}: not valid UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:
        raise CnoError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        document = json.loads(text, object_pairs_hook=_pairs, parse_constant=_Constant)
    except json.JSONDecodeError as exc:
        raise CnoError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except RecursionError:
        raise CnoError(f"{path}: $: nested more than {MAX_JSON_DEPTH} levels deep") from None
    problem = strict_problem(document)
    if problem is not None:
        raise CnoError(f"{path}: {problem}")
    return _plain(document)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def dumps_strict(document: Any, indent: int | None = 2) -> str:
    """JSON text as our exports write it: no NaN / Infinity (``allow_nan=False``), UTF-8 safe.

    Raises
    ------
    CnoError
        If the document holds a non-finite number or text that is not valid Unicode.
    """
    try:
        text = json.dumps(document, indent=indent, ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        raise CnoError(f"cannot write strict JSON: {exc}") from None
    if has_lone_surrogate(text):
        raise CnoError("cannot write JSON: some text holds an unpaired surrogate")
    return text
