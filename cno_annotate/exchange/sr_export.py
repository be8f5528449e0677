"""A read as a Comprehensive 3D SR: a TID 1500 measurement report built with highdicom.

Content (what :mod:`.sr_import` reads back):

- observer: the reader (person observer context); procedure: MRI of whole body;
  completion flag COMPLETE for a submitted read, PARTIAL for a draft;
- one TID 1410 planar ROI group per lesion: tracking identifier = lesion id,
  tracking UID = the lesion's own tracking UID (the same across versions and visits),
  activity session = read id, method = the scoring scheme's code, finding type
  Lesion, category Morphologically Abnormal Structure, finding site (SNOMED CT or
  99CNO) with laterality and the sub-site as topographical modifier, one
  qualitative evaluation per graded item, measurements (Width / Depth / Length
  in mm along LPS x / y / z, Volume in ml, the extent's slab along the region's
  normal, reader confidence, the STIR lesion:muscle signal-intensity ratio in UCUM unit 1), and the region as SCOORD3D in the frame of
  reference of the station series that holds the lesion; the volume refers to
  the station image nearest the lesion (source of measurement); the lesion's
  comment as a TEXT item (121106, DCM, "Comment"); the SR is UTF-8 (ISO_IR 192);
- one TID 1501 group per scored or marked bone unit (status, score, and one
  qualitative evaluation per item the reader graded for the unit, "not
  assessable" included) and one with the read's totals;
- the report's Qualitative Evaluations container (C0034375, UMLS) with the site
  taxonomy (id-version) as the 99CNO TEXT item SITE-TAXONOMY (the scoring scheme
  and its version are the method code of every group).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from highdicom.sr import (
    CodedConcept,
    ContainerContentItem,
    ContentSequence,
    FindingSite,
    ImageRegion3D,
    Measurement,
    MeasurementsAndQualitativeEvaluations,
    PlanarROIMeasurementsAndQualitativeEvaluations,
    QualitativeEvaluation,
    RelationshipTypeValues,
    SourceImageForMeasurement,
    TextContentItem,
    TrackingIdentifier,
)
from pydicom.sr.codedict import codes

from cno_annotate import __version__
from cno_annotate.annotation.model import Lesion, Read, ReadStatus
from cno_annotate.annotation.scheme import Scheme, load_scheme
from cno_annotate.annotation.scoring import ReadScores, score_read
from cno_annotate.annotation.taxonomy import Taxonomy, load_taxonomy
from cno_annotate.exchange import codes as cc
from cno_annotate.exchange.geometry import region_of
from cno_annotate.exchange.stations import Station, Stations
from cno_annotate.io.kinds import VolumeKind

#: Namespace of the tracking UIDs (a fixed random UUID: never change it, UIDs must stay stable).
TRACKING_NAMESPACE = uuid.UUID("5d0f0a9e-4f8b-4c59-9d43-0c6e1b7a2c31")
UNIT_PREFIX = "bone unit "
TOTALS_ID = "read totals"
#: TID 1500's container of qualitative evaluations of the whole report.
REPORT_EVALUATIONS = CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")
COMMENT = codes.DCM.Comment
SR_SERIES_NUMBER = 9901


def tracking_uid(read_id: str, key: str) -> str:
    """A 2.25 UID derived from a read id and a lesion id (or unit key): the same at every export."""
    return f"2.25.{uuid.uuid5(TRACKING_NAMESPACE, f'{read_id}/{key}').int}"


@dataclass
class SRContext:
    """What one export needs besides the read."""

    taxonomy: Taxonomy
    scheme: Scheme
    table: cc.CodeTable
    stations: Stations


def build_sr(read: Read, stations: Stations, table: cc.CodeTable | None = None) -> hd.sr.Comprehensive3DSR:
    """The Comprehensive 3D SR of a read.

    Raises
    ------
    CnoError
        If a lesion lies on a volume with no DICOM series, or a series cannot be read.
    """
    ctx = SRContext(load_taxonomy(read.taxonomy), load_scheme(read.scheme_id, read.scheme_version),
                    table or cc.load_code_table(), stations)
    scores = score_read(read.lesions, read.unit_marks, ctx.scheme, ctx.taxonomy, read.unit_grades)
    evidence: dict[str, Station] = {}
    groups: list = []
    for lesion in read.lesions:
        station = stations.holding(lesion.series_uid, lesion.position)
        evidence.setdefault(station.series_uid, station)
        groups.append(_lesion_group(read, lesion, station, ctx))
    groups += _unit_groups(read, scores, ctx)
    if not evidence:  # a read without lesions still refers to its study
        station = stations.in_study(read.study_uid, _study_centre(stations, read.study_uid), None)
        evidence[station.series_uid] = station
    observer = hd.sr.ObserverContext(
        observer_type=codes.cid270.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name=person_name(read.reader)))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_person_context=observer),
        procedure_reported=cc.PROCEDURE,
        imaging_measurements=groups,
        title=codes.cid7021.ImagingMeasurementReport,
    )
    report[0].ContentSequence.append(_report_evaluations(read, ctx))
    info = ctx.table.scheme_info
    scheme_item = CodingSchemeIdentificationItem(
        designator=info["designator"], name=info["name"], version=info["version"],
        responsible_organization=info.get("responsible_organization"))
    headers = [h for s in evidence.values() for h in s.headers]
    return hd.sr.Comprehensive3DSR(
        evidence=headers,
        content=report,
        series_instance_uid=hd.UID(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="cno-annotate",
        is_complete=read.status == ReadStatus.SUBMITTED,
        series_description=f"CNO read ({ctx.scheme.id} {ctx.scheme.version})",
        coding_schemes=[scheme_item],
        software_versions=__version__,
        specific_character_set="ISO_IR 192",  # UTF-8: comments and reader ids are free Unicode text
    )


def _text(name: CodedConcept, value: str) -> TextContentItem:
    return TextContentItem(name=name, value=value, relationship_type=RelationshipTypeValues.CONTAINS)


def _report_evaluations(read: Read, ctx: SRContext) -> ContainerContentItem:
    """TID 1500's Qualitative Evaluations container: the read's site taxonomy as a TEXT item."""
    container = ContainerContentItem(name=REPORT_EVALUATIONS, relationship_type=RelationshipTypeValues.CONTAINS)
    container.ContentSequence = ContentSequence([_text(ctx.table.concept("SITE-TAXONOMY"), read.taxonomy)])
    return container


def _study_centre(stations: Stations, study_uid: str) -> np.ndarray:
    rows = [r for r in stations.store.volumes(study_uid) if r.kind == VolumeKind.STACK]
    if not rows:
        return np.zeros(3)
    row = rows[0]
    k, j, i = row.shape
    return (np.asarray(row.affine, float) @ np.array([(i - 1) / 2, (j - 1) / 2, (k - 1) / 2, 1.0]))[:3]


def finding_site(site_id: str, side, subsite, ctx: SRContext, whole_bone: bool = False) -> FindingSite:
    """A finding site: the site's code, laterality and sub-site (topographical modifier)."""
    site = ctx.taxonomy.site(site_id)
    code = site.bone_code if whole_bone else site.code
    return FindingSite(
        anatomic_location=cc.coded(code, ctx.table),
        laterality=cc.coded(ctx.taxonomy.laterality[side], ctx.table) if side else None,
        topographical_modifier=cc.coded(ctx.taxonomy.subsites[subsite]["code"], ctx.table) if subsite else None,
    )


def _lesion_group(read: Read, lesion: Lesion, station: Station, ctx: SRContext):
    region = region_of(lesion)
    scheme_id = cc.scheme_key(ctx.scheme)
    evaluations = [QualitativeEvaluation(ctx.table.item_code(scheme_id, item_id),
                                         ctx.table.grade_code(scheme_id, item_id, grade))
                   for item_id, grade in sorted(lesion.grades.items(), key=lambda kv: _item_order(ctx.scheme, kv[0]))]
    group = PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=lesion.tracking_uid,
                                               identifier=lesion.lesion_id),
        referenced_region=ImageRegion3D(region.graphic_type, region.points,
                                        station.frame_of_reference_uid),
        finding_type=cc.FINDING_TYPE,
        finding_category=cc.FINDING_CATEGORY,
        method=ctx.table.scheme_code(ctx.scheme),
        finding_sites=[finding_site(lesion.site_id, lesion.side, lesion.subsite, ctx)] if lesion.site_id else None,
        session=read.read_id,
        measurements=_measurements(lesion, region.slab, station, ctx) or None,
        qualitative_evaluations=evaluations or None,
    )
    if lesion.comment:
        group[0].ContentSequence.append(_text(COMMENT, lesion.comment))
    return group


def _item_order(scheme: Scheme, item_id: str) -> int:
    return [i.id for i in scheme.items].index(item_id)


def _measurements(lesion: Lesion, slab, station: Station, ctx: SRContext) -> list[Measurement]:
    out = []
    if lesion.sizes_mm is not None and lesion.volume_ml is not None:
        header = station.headers[station.nearest_slice(lesion.position)]
        source = SourceImageForMeasurement(header.SOPClassUID, header.SOPInstanceUID)
        out.append(Measurement(cc.VOLUME, float(round(lesion.volume_ml, 4)), cc.ML, referenced_images=[source]))
        for name, size in zip((cc.WIDTH, cc.DEPTH, cc.LENGTH), lesion.sizes_mm):
            out.append(Measurement(name, float(round(size, 3)), cc.MM))
    if slab is not None:
        out.append(Measurement(ctx.table.concept("SLAB-LOW"), float(slab[0]), cc.MM))
        out.append(Measurement(ctx.table.concept("SLAB-HIGH"), float(slab[1]), cc.MM))
    if lesion.confidence is not None:
        out.append(Measurement(ctx.table.concept("CONFIDENCE"), int(lesion.confidence), cc.SCORE_UNIT))
    if lesion.stir_muscle_ratio is not None:
        out.append(Measurement(ctx.table.concept("STIR-SIR"), float(lesion.stir_muscle_ratio), cc.RATIO_UNIT))
    return out


def _unit_groups(read: Read, scores: ReadScores, ctx: SRContext) -> list:
    groups = []
    scheme_id = cc.scheme_key(ctx.scheme)
    status_codes = {"lesion": "WITH-LESION", "no_lesion": "NO-LESION", "not_assessable": "NOT-ASSESSABLE"}
    for unit_id in sorted(scores.units):
        unit = scores.units[unit_id]
        site, side = ctx.taxonomy.unit_site(unit_id)
        shared = sum(s.unit == site.unit for s in ctx.taxonomy.sites.values()) > 1
        measurements = [] if unit.score is None else [
            Measurement(ctx.table.concept("UNIT-SCORE"), int(unit.score), cc.SCORE_UNIT)]
        graded = read.unit_grades.get(unit_id, {})
        unit_grades = [QualitativeEvaluation(ctx.table.item_code(scheme_id, item_id),
                                             ctx.table.grade_code(scheme_id, item_id, graded[item_id]))
                       for item_id in sorted(graded, key=lambda i: _item_order(ctx.scheme, i))]
        groups.append(MeasurementsAndQualitativeEvaluations(
            tracking_identifier=TrackingIdentifier(uid=tracking_uid(read.read_id, f"unit:{unit_id}"),
                                                   identifier=UNIT_PREFIX + unit_id),
            method=ctx.table.scheme_code(ctx.scheme),
            finding_sites=[finding_site(site.id, side, None, ctx, whole_bone=shared)],
            session=read.read_id,
            measurements=measurements or None,
            qualitative_evaluations=[QualitativeEvaluation(ctx.table.concept("UNIT-STATUS"),
                                                           ctx.table.concept(status_codes[unit.status])),
                                     *unit_grades],
        ))
    totals = [("TOTAL-SCORE", scores.total, cc.SCORE_UNIT), ("UNITS-LESION", scores.units_with_lesion, cc.COUNT_UNIT),
              ("UNITS-NOLESION", scores.units_no_lesion, cc.COUNT_UNIT),
              ("UNITS-NA", scores.units_not_assessable, cc.COUNT_UNIT)]
    groups.append(MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=tracking_uid(read.read_id, "totals"), identifier=TOTALS_ID),
        method=ctx.table.scheme_code(ctx.scheme),
        session=read.read_id,
        measurements=[Measurement(ctx.table.concept(code), int(value), unit) for code, value, unit in totals],
    ))
    return groups


def person_name(reader: str) -> str:
    """A reader id as a DICOM person name: one family-name component (a trailing caret says so)."""
    return reader if "^" in reader else reader + "^"
