"""TID 1500 measurement reports back into reads: ours losslessly, other tools' as far as they map.

Planar ROI groups with a SCOORD3D point, ellipse or polygon become lesions,
built through the one lesion validator
(:func:`~cno_annotate.annotation.validation.make_lesion`); finding sites map by
code to the taxonomy (laterality to the side, the topographical modifier to the
sub-site), qualitative evaluations by the 99CNO table to grades, comments
(121106, DCM) to the lesion's comment. Bone-unit groups give back the unit marks
and the reader's unit grades; the report's SITE-TAXONOMY text names the site
taxonomy. What cannot be mapped is listed, never dropped silently.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import highdicom as hd
import pydicom

from cno_annotate.annotation.model import Lesion, Read, ReadStatus
from cno_annotate.annotation.scheme import DEFAULT_SCHEME, load_scheme
from cno_annotate.annotation.taxonomy import DEFAULT_TAXONOMY, Taxonomy, load_taxonomy
from cno_annotate.annotation.validation import InvalidLesion, make_lesion, read_problems, unit_of
from cno_annotate.errors import CnoError
from cno_annotate.exchange import codes as cc
from cno_annotate.exchange.geometry import Region, lesion_geometry
from cno_annotate.exchange.sr_export import COMMENT, REPORT_EVALUATIONS, TOTALS_ID, UNIT_PREFIX
from cno_annotate.exchange.stations import Stations
from cno_annotate.io.kinds import VolumeKind
from cno_annotate.store import catalog
from cno_annotate.uids import is_uid

#: Measurements the export writes that import recomputes from the extent.
DERIVED = {cc.VOLUME.value, cc.WIDTH.value, cc.DEPTH.value, cc.LENGTH.value}
FINDING_CATEGORY_NAME = "276214006"
UNIT_STATUS_MARKS = {"NO-LESION": "no_lesion", "NOT-ASSESSABLE": "not_assessable", "WITH-LESION": None}
TAXONOMY_NAME = re.compile(r"[a-z][a-z0-9-]*-\d+\.\d+\.\d+")


@dataclass
class ImportedSR:
    """A read built from an SR, and what could not be mapped."""

    read: Read
    unmapped: list[str] = field(default_factory=list)


def _text_items(group, concept: str) -> list[str]:
    return [str(item.TextValue) for item in group[0].ContentSequence
            if item.ValueType == "TEXT" and item.ConceptNameCodeSequence[0].CodeValue == concept]


def _code(concept) -> tuple[str, str]:
    return str(concept.scheme_designator), str(concept.value)


def read_sr(path: Path, store, stations: Stations) -> ImportedSR:
    """Build a read from a TID 1500 SR file (not yet written to the store).

    Raises
    ------
    CnoError
        If the file is not a readable SR measurement report or its study is not in the store.
    """
    try:
        dataset = pydicom.dcmread(path)
        sr = hd.sr.srread(path) if dataset.get("Modality") == "SR" else None
    except (OSError, pydicom.errors.InvalidDicomError, ValueError, AttributeError) as exc:
        raise CnoError(f"{path}: not a readable DICOM SR ({exc})") from None
    if sr is None or not isinstance(sr.content, hd.sr.MeasurementReport):
        raise CnoError(f"{path}: not a TID 1500 measurement report")
    study_uid = str(dataset.StudyInstanceUID)
    if study_uid not in {s.study_uid for s in store.studies(count_missing=False)}:
        raise CnoError(f"{path}: study {study_uid} is not in the store (import its images first)")
    table = cc.load_code_table()
    report = sr.content
    planar = report.get_planar_roi_measurement_groups()
    other = report.get_image_measurement_groups()
    volumetric = report.get_volumetric_roi_measurement_groups()
    sessions = [s for g in [*planar, *other] for s in _text_items(g, "C67447")]
    methods = [g.method for g in [*planar, *other] if g.method is not None]
    named = {found for m in methods if m.scheme_designator == cc.PRIVATE and (found := table.scheme_of(m.value))}
    if len(named) > 1:
        raise CnoError(f"{path}: the measurement groups name {len(named)} scoring schemes; a read has one")
    scheme = load_scheme(*next(iter(named))) if named else load_scheme(DEFAULT_SCHEME)
    unmapped: list[str] = []
    taxonomy_name = _taxonomy_name(dataset, table, unmapped)
    taxonomy = load_taxonomy(taxonomy_name)
    ours = bool(named) and len(set(sessions)) == 1 and len(methods) == len(planar) + len(other)
    read_id = sessions[0] if ours else f"sr-{uuid.uuid5(uuid.NAMESPACE_OID, str(dataset.SOPInstanceUID)).hex}"
    reader = _observer(report) or "sr-import"
    unmapped += [f"volumetric ROI group {g.tracking_identifier or '?'}: volumetric regions are not mapped"
                 for g in volumetric]
    evidence = {str(s.SeriesInstanceUID) for item in dataset.get("CurrentRequestedProcedureEvidenceSequence", [])
                for s in item.ReferencedSeriesSequence}
    stamp = _content_time(dataset)
    lesions: list[Lesion] = []
    for n, group in enumerate(planar):
        name = group.tracking_identifier or f"ROI {n + 1}"
        try:
            lesions.append(_lesion(group, name, n, study_uid, cc.scheme_key(scheme), taxonomy, table, stations, evidence,
                                   store, reader, stamp, scheme, unmapped))
        except (ValueError, CnoError) as exc:
            unmapped.append(f"ROI {name}: {exc}")
    marks: dict[str, str] = {}
    unit_grades: dict[str, dict] = {}
    for unit_group in other:
        name = unit_group.tracking_identifier or ""
        if name == TOTALS_ID:
            continue
        if not name.startswith(UNIT_PREFIX):
            unmapped.append(f"measurement group {name or '?'}: not a bone-unit group")
            continue
        unit_id = name[len(UNIT_PREFIX):]
        for evaluation in unit_group.get_qualitative_evaluations():
            code = evaluation.value.value  # type: ignore[union-attr]  # a qualitative evaluation's value is coded
            if evaluation.name.value == "UNIT-STATUS":
                if mark := UNIT_STATUS_MARKS.get(code):
                    marks[unit_id] = mark
                continue
            grade = _unit_grade(unit_id, evaluation, cc.scheme_key(scheme), scheme, taxonomy, table)
            if grade is None:
                value = evaluation.value.meaning  # type: ignore[union-attr]  # a qualitative evaluation is coded
                unmapped.append(f"{name}: qualitative evaluation {evaluation.name.meaning} = {value}")
            else:
                unit_grades.setdefault(unit_id, {})[grade[0]] = grade[1]
    holding = {unit_of(l, taxonomy) for l in lesions}
    for unit_id in [u for u in marks if u in holding]:  # "not assessable" computed for a unit with lesions
        del marks[unit_id]
    for unit_id in [u for u in unit_grades if u not in holding]:
        unmapped.append(f"{UNIT_PREFIX}{unit_id}: unit grades of a unit without lesions")
        del unit_grades[unit_id]
    lesion_ids = {l.lesion_id for l in lesions}
    if len(lesion_ids) != len(lesions):
        lesions = [_renamed(l, f"L{n + 1}", taxonomy, scheme) for n, l in enumerate(lesions)]
    complete = str(dataset.get("CompletionFlag", "")) == "COMPLETE" and ours
    placed = all(l.site_id is not None for l in lesions)
    read = Read(read_id, study_uid, reader, scheme.id, scheme.version, taxonomy_name,
                ReadStatus.SUBMITTED if complete and placed else ReadStatus.DRAFT,
                stamp, stamp if complete and placed else None, stamp, 0, lesions, marks, unit_grades=unit_grades)
    problems = read_problems(read, taxonomy)
    if problems:
        raise CnoError(f"{path}: {problems[0]}")
    return ImportedSR(read, unmapped)


def _taxonomy_name(dataset, table, unmapped: list[str]) -> str:
    """The site taxonomy the report names in its Qualitative Evaluations (SITE-TAXONOMY), else the default."""
    names = [str(text.TextValue) for item in dataset.get("ContentSequence", [])
             if item.ValueType == "CONTAINER" and _names(item, REPORT_EVALUATIONS)
             for text in item.get("ContentSequence", [])
             if text.ValueType == "TEXT" and _names(text, table.concept("SITE-TAXONOMY"))]
    if not names:
        return DEFAULT_TAXONOMY
    try:
        if not TAXONOMY_NAME.fullmatch(names[0]):
            raise CnoError(f"{names[0]!r} is no taxonomy name")
        load_taxonomy(names[0])
    except CnoError as exc:
        unmapped.append(f"site taxonomy {names[0]!r}: {exc} (sites mapped with {DEFAULT_TAXONOMY})")
        return DEFAULT_TAXONOMY
    return names[0]


def _names(item, concept) -> bool:
    """Whether a content item's concept name is this concept (by scheme and value)."""
    name = item.ConceptNameCodeSequence[0]
    return (str(name.CodingSchemeDesignator), str(name.CodeValue)) == (concept.scheme_designator, concept.value)


def _unit_grade(unit_id: str, evaluation, scheme_key: str, scheme, taxonomy: Taxonomy, table):
    """(item id, grade) of a reader's unit grade in a bone-unit group, or None if it does not map."""
    if evaluation.name.scheme_designator != cc.PRIVATE:
        return None
    item_id = table.item_of(scheme_key, evaluation.name.value)
    grade = table.grade_of(scheme_key, item_id, evaluation.value.value) if item_id else None
    if grade is None:
        return None
    try:
        site, _ = taxonomy.unit_site(unit_id)
        scheme.check_unit_grade(item_id, grade, site.unit_type)
    except CnoError:
        return None
    return item_id, grade


def _renamed(lesion: Lesion, lesion_id: str, taxonomy: Taxonomy, scheme) -> Lesion:
    fields = lesion.to_dict()
    fields["lesion_id"] = lesion_id
    return make_lesion(taxonomy, scheme, **fields)


def _observer(report) -> str | None:
    for context in report.get_observer_contexts():
        for item in context:
            if item.ValueType == "PNAME":
                return str(item.PersonName).rstrip("^") or None
    return None


def _content_time(dataset) -> str:
    date, time = str(dataset.get("ContentDate", "")), str(dataset.get("ContentTime", ""))
    if len(date) == 8 and len(time) >= 6:
        return f"{date[:4]}-{date[4:6]}-{date[6:]}T{time[:2]}:{time[2:4]}:{time[4:6]}+00:00"
    return ""


def _lesion(group, name, n, study_uid, scheme_id, taxonomy, table, stations, evidence, store, reader, stamp,
            scheme, unmapped) -> Lesion:
    roi = group.roi
    if not isinstance(roi, hd.sr.ImageRegion3D):
        raise ValueError("the region is not SCOORD3D (image-relative regions are not mapped)")
    numbers = {}
    confidence, ratio = None, None
    for measurement in group.get_measurements():
        code = measurement.name.value
        if measurement.name.scheme_designator == cc.PRIVATE and code in ("SLAB-LOW", "SLAB-HIGH"):
            numbers[code] = float(measurement.value)
        elif measurement.name.scheme_designator == cc.PRIVATE and code == "CONFIDENCE":
            confidence = int(measurement.value)
        elif measurement.name.scheme_designator == cc.PRIVATE and code == "STIR-SIR":
            ratio = float(measurement.value)
        elif code not in DERIVED:
            unmapped.append(f"ROI {name}: measurement {measurement.name.meaning} (recomputed or not kept)")
    slab = (numbers["SLAB-LOW"], numbers["SLAB-HIGH"]) if len(numbers) == 2 else None
    position, extent = lesion_geometry(Region(str(roi.graphic_type.value), roi.value, slab))
    station = _station(group, stations, study_uid, position, str(roi.ReferencedFrameOfReferenceUID), evidence, store)
    site_id, side, subsite = _site(group, name, taxonomy, table, unmapped)
    grades = {}
    for evaluation in group.get_qualitative_evaluations():
        if _code(evaluation.name) == ("SCT", FINDING_CATEGORY_NAME):
            continue
        item_id = table.item_of(scheme_id, evaluation.name.value) \
            if evaluation.name.scheme_designator == cc.PRIVATE else None
        grade = table.grade_of(scheme_id, item_id, evaluation.value.value) if item_id else None
        if item_id is None or grade is None:
            unmapped.append(f"ROI {name}: qualitative evaluation {evaluation.name.meaning} = "
                            f"{evaluation.value.meaning}")
            continue
        grades[item_id] = grade
    comments = [str(item.TextValue) for item in group[0].ContentSequence
                if item.ValueType == "TEXT" and _names(item, COMMENT)]
    if len(comments) > 1:
        unmapped.append(f"ROI {name}: {len(comments) - 1} more comments (the first is kept)")
    voxel = tuple(round(float(v), 3) for v in station.voxel_of(position))
    lesion_id = group.tracking_identifier if group.tracking_identifier else f"L{n + 1}"
    try:
        return make_lesion(taxonomy, scheme, lesion_id=lesion_id, position=position, series_uid=station.volume_id,
                           voxel=voxel, site_id=site_id, side=side, subsite=subsite, extent=extent, grades=grades,
                           confidence=confidence, created_by=reader, created_at=stamp, modified_by=reader,
                           modified_at=stamp, stir_muscle_ratio=ratio,
                           tracking_uid=_tracking_uid_of(group), comment=comments[0] if comments else "")
    except InvalidLesion as exc:
        raise CnoError(str(exc.problem)) from None


def _tracking_uid_of(group) -> str | None:
    """The ROI group's tracking UID when it is a valid UID (the lesion keeps it), else None (a new one)."""
    uid = getattr(group, "tracking_uid", None)
    return str(uid) if uid and is_uid(str(uid)) else None


def _station(group, stations: Stations, study_uid: str, position, frame_uid: str, evidence: set[str], store):
    for measurement in group.get_measurements():
        for image in measurement.referenced_images:
            sop = str(image.referenced_sop_instance_uid)
            series_uid = catalog.series_of_instance(store.db, sop)
            if series_uid is not None:
                candidates = [v for v in store.volumes(study_uid) if v.kind == VolumeKind.STACK
                              and v.series_uid == series_uid]
                for volume in candidates:
                    station = stations.get(volume.volume_id)
                    if any(str(h.SOPInstanceUID) == sop for h in station.headers):
                        return station
    station = stations.in_study(study_uid, position, frame_uid)
    return station


def _site(group, name: str, taxonomy: Taxonomy, table, unmapped: list[str]):
    sites = group.finding_sites
    if not sites:
        return None, None, None
    if len(sites) > 1:
        unmapped.append(f"ROI {name}: {len(sites) - 1} more finding sites (the first is kept)")
    site = sites[0]
    location = _code(site.value)
    matches = [s for s in taxonomy.sites.values() if (s.code["scheme"], s.code["value"]) == location]
    if not matches:
        bone = [s for s in taxonomy.sites.values() if (s.bone_code["scheme"], s.bone_code["value"]) == location]
        if len(bone) == 1 or len({s.unit for s in bone}) == 1 and bone:
            matches = bone[:1]
        else:
            unmapped.append(f"ROI {name}: finding site {site.value.meaning} ({location[0]} {location[1]}) is no "
                            f"site of {taxonomy.id} {taxonomy.version}"
                            + (f" (several: {', '.join(s.id for s in bone)})" if bone else ""))
            return None, None, None
    chosen = matches[0]
    side = None
    if site.laterality is not None:
        code = _code(site.laterality)
        side = next((s for s, c in taxonomy.laterality.items() if (c["scheme"], c["value"]) == code), None)
        if side is None:
            unmapped.append(f"ROI {name}: laterality {site.laterality.meaning}")
        elif not chosen.lateral:
            unmapped.append(f"ROI {name}: laterality {site.laterality.meaning} on midline site {chosen.label}")
            side = None
    subsite = None
    if site.topographical_modifier is not None:
        code = _code(site.topographical_modifier)
        subsite = next((k for k, v in taxonomy.subsites.items()
                        if (v["code"]["scheme"], v["code"]["value"]) == code and k in chosen.subsites), None)
        if subsite is None:
            unmapped.append(f"ROI {name}: topographical modifier {site.topographical_modifier.meaning}")
    return chosen.id, side, subsite


