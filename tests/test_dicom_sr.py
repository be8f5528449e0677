"""Reads as DICOM SR (TID 1500) and lesion extents as SEG: built with highdicom, checked three ways.

highdicom and pydicom read every file back, dciodvfy (dicom3tools) reports no
error, and the SR content tree is compared with the read item by item. The
round trip export -> import -> export gives the same content tree, and an SR
built directly with highdicom (another tool's) imports with what it cannot map listed.
"""

from __future__ import annotations

import shutil
import subprocess

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from cno_annotate.annotation.reads import ReadSession, load_read
from cno_annotate.annotation.resources import load_versioned_json, schemas_dir
from cno_annotate.annotation.scheme import load_scheme
from cno_annotate.annotation.scoring import score_read
from cno_annotate.annotation.taxonomy import load_taxonomy
from cno_annotate.exchange import codes as cc
from cno_annotate.exchange.commands import import_srs
from cno_annotate.exchange.seg_export import build_segs
from cno_annotate.exchange.sr_export import build_sr
from cno_annotate.exchange.sr_import import read_sr
from cno_annotate.exchange.stations import Stations
from cno_annotate.store import audit
from cno_annotate.store.catalog import VolumeRow

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

ELLIPSE = {"kind": "ellipse", "plane": "coronal", "radii_mm": [12.5, 8.25], "slice_range_mm": [-8.25, 8.25]}
BOX = {"kind": "box", "min_mm": [-10.0, -5.0, -110.0], "max_mm": [10.0, 5.0, -90.0]}
POLYGON = {"kind": "polygon", "plane": "coronal", "points_mm": [[20.0, 2.0, -210.0], [40.0, 2.0, -210.0],
                                                                  [30.0, 2.0, -190.0]], "slice_range_mm": [-3.0, 7.0]}

WEDGING = "Anterior wedging – Höhenminderung ≈ 20 %\nsecond line"


def _stir_composed(store) -> VolumeRow:
    return next(v for v in store.volumes() if v.kind == "composed" and v.role == "STIR")


@pytest.fixture
def read_store(sample_copy):
    """A copy of the sample store with one submitted read: ellipse, box, polygon and point lesions, unit marks,
    lesion comments and unit grades (one not assessable)."""
    store = sample_copy("sr-store")
    volume = _stir_composed(store).volume_id
    session = ReadSession.open_or_create(store, store.studies()[0].study_uid, "dr-a")
    l1 = session.add_lesion((-70.5, 0.0, -400.0), volume, (1, 1, 1), site_id="femur.distal", side="R",
                            subsite="metaphysis", extent=ELLIPSE, confidence=4)
    session.set_grade(l1, "marrow_hyperintensity", 2)
    session.set_grade(l1, "signal_extension", "NA")
    session.set_grade(l1, "bony_expansion", 1)
    session.update_lesion(l1, comment="Metaphyseal focus; compare with the last visit.")
    _stir_ratio(session, l1)
    l2 = session.add_lesion((0.0, 0.0, -100.0), volume, (1, 1, 1), site_id="spine.L2", extent=BOX)
    session.set_grade(l2, "vertebral_collapse", 1)
    session.update_lesion(l2, comment=WEDGING)  # not ASCII, two lines
    session.set_unit_grade("femur.distal:R", "signal_extension", 2)  # items graded per bone unit
    session.set_unit_grade("spine.L2", "signal_extension", "NA")
    session.add_lesion((30.0, 2.0, -200.0), volume, (1, 1, 1), site_id="ilium", side="L", extent=POLYGON)
    session.add_lesion((-30.0, 2.0, -250.0), volume, (1, 1, 1), site_id="tibia.shaft", side="L")
    session.mark_unit("clavicle.medial:L", "no_lesion")
    session.mark_unit("spine.T8", "not_assessable")
    session.submit()
    return store, load_read(store, session.read.read_id)


def _stir_ratio(session, lesion_id: str) -> None:
    """A lesion ROI and a muscle ROI on a constructed STIR volume: the lesion's ratio is 3.0."""
    from cno_annotate.io.volume import Volume

    array = np.full((40, 20, 60), 100.0, np.float32)  # z -420..-381, y -10..9, x -100..-41
    array[15:26, 5:16, 20:40] = 300.0  # around the lesion at (-70.5, 0, -400)
    affine = np.eye(4)
    affine[:3, 3] = (-100.0, -10.0, -420.0)
    stir = Volume(array, affine, "stir", "STIR")
    lesion_roi = session.add_roi("ellipse", "coronal", [(-70.5, 0.0, -400.0), (-66.5, 0.0, -397.0)], "stir")
    muscle = session.add_roi("rectangle", "coronal", [(-95.0, 0.0, -418.0), (-90.0, 0.0, -412.0)], "stir")
    session.set_roi_role(lesion_roi, "lesion", lesion_id, stir=stir)
    session.set_roi_role(muscle, "muscle", stir=stir)
    assert session.read.lesion(lesion_id).stir_muscle_ratio == 3.0


def _saved(dataset, path):
    dataset.save_as(path, enforce_file_format=True)
    return path


def _comments(group) -> list[str]:
    """The TEXT items (121106, DCM, "Comment") of a measurement group."""
    return [str(i.TextValue) for i in group[0].ContentSequence
            if i.ValueType == "TEXT" and i.ConceptNameCodeSequence[0].CodeValue == "121106"]


def _report_texts(dataset) -> dict[str, str]:
    """The TEXT items of the report's Qualitative Evaluations container, by code value."""
    containers = [i for i in dataset.ContentSequence if i.ValueType == "CONTAINER"
                  and i.ConceptNameCodeSequence[0].CodeValue == "C0034375"]
    return {str(t.ConceptNameCodeSequence[0].CodeValue): str(t.TextValue)
            for c in containers for t in c.ContentSequence if t.ValueType == "TEXT"}


def _dciodvfy_errors(path) -> list[str]:
    tool = shutil.which("dciodvfy")
    assert tool, "dciodvfy is missing: install the Debian package dicom3tools (sh dev test does as root)"
    result = subprocess.run([tool, str(path)], capture_output=True, text=True)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def test_code_table_is_valid_and_codes_every_item_grade_and_private_site():
    table = cc.load_code_table()
    load_versioned_json(schemas_dir() / "codes" / "cno-codes-1.0.0.json", "code-table")
    values = [c["value"] for c in table.document["concepts"]]
    assert len(values) == len(set(values))
    for scheme_id, version in (("rai-cromris", "1.0.0"), ("rai-cromris", "2.0.0"), ("cno-descriptive", "1.0.0")):
        scheme = load_scheme(scheme_id, version)
        assert table.scheme_of(table.scheme_code(scheme).value) == (scheme_id, version)
        scheme_id = cc.scheme_key(scheme)
        for item in scheme.items:
            assert table.item_of(scheme_id, table.item_code(scheme_id, item.id).value) == item.id
            for value in item.values:
                assert table.grade_of(scheme_id, item.id, table.grade_code(scheme_id, item.id, value).value) == value
    for name in ("cno-sites-1.0.0", "cno-sites-2.0.0"):
        taxonomy = load_taxonomy(name)
        private = [s.code for s in taxonomy.sites.values()] + [s["code"] for s in taxonomy.subsites.values()]
        for code in private:
            if code["scheme"] == cc.PRIVATE:
                assert table.has(code["value"]), code


def test_sr_reads_back_and_its_content_matches_the_read_item_by_item(read_store, tmp_path):
    store, read = read_store
    stations = Stations(store)
    path = _saved(build_sr(read, stations), tmp_path / "read.sr.dcm")
    dataset = pydicom.dcmread(path)
    assert dataset.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert dataset.CompletionFlag == "COMPLETE"
    assert [i.CodingSchemeDesignator for i in dataset.CodingSchemeIdentificationSequence] == ["99CNO"]
    sr = hd.sr.srread(path)
    report = sr.content
    observer = [str(i.PersonName) for c in report.get_observer_contexts() for i in c if i.ValueType == "PNAME"]
    assert observer == ["dr-a^"]
    table, taxonomy = cc.load_code_table(), load_taxonomy("cno-sites-2.0.0")
    scheme = load_scheme(read.scheme_id, read.scheme_version)
    key = cc.scheme_key(scheme)
    groups = report.get_planar_roi_measurement_groups()
    assert [g.tracking_identifier for g in groups] == [l.lesion_id for l in read.lesions]
    kinds = {"ellipse": "ELLIPSE", "box": "POLYGON", "polygon": "POLYGON", None: "POINT"}
    for lesion, group in zip(read.lesions, groups):
        assert group.tracking_uid == lesion.tracking_uid  # the lesion's own UID, kept across versions and visits
        station = stations.holding(lesion.series_uid, lesion.position)
        assert group.roi.ReferencedFrameOfReferenceUID == station.frame_of_reference_uid
        assert group.roi.graphic_type.value == kinds[lesion.extent["kind"] if lesion.extent else None]
        if lesion.extent and lesion.extent["kind"] != "ellipse":
            assert np.array_equal(group.roi.value[0], group.roi.value[-1])  # closed polygon
        site = taxonomy.site(lesion.site_id)
        found = group.finding_sites[0]
        assert (found.value.value, found.value.scheme_designator) == (site.code["value"], site.code["scheme"])
        assert (found.laterality.value if found.laterality else None) == \
            (taxonomy.laterality[lesion.side]["value"] if lesion.side else None)
        assert (found.topographical_modifier.value if found.topographical_modifier else None) == \
            (taxonomy.subsites[lesion.subsite]["code"]["value"] if lesion.subsite else None)
        evaluations = {(e.name.value, e.value.value) for e in group.get_qualitative_evaluations()
                       if e.name.value != "276214006"}
        assert _comments(group) == ([lesion.comment] if lesion.comment else [])
        assert group.method.value == table.scheme_code(scheme).value
        assert evaluations == {(table.item_code(key, i).value, table.grade_code(key, i, g).value)
                               for i, g in lesion.grades.items()}
        measured = {m.name.value: m for m in group.get_measurements()}
        if lesion.stir_muscle_ratio is None:
            assert "STIR-SIR" not in measured
        else:  # the STIR lesion:muscle ratio: a measurement in UCUM unit 1
            assert measured["STIR-SIR"].value == pytest.approx(lesion.stir_muscle_ratio)
            assert (measured["STIR-SIR"].unit.value, measured["STIR-SIR"].unit.scheme_designator) == ("1", "UCUM")
        if lesion.extent is None:
            assert "118565006" not in measured
        else:
            assert measured["118565006"].value == pytest.approx(lesion.volume_ml, abs=1e-4)
            assert measured["118565006"].unit.value == "ml"
            sizes = [measured[c.value].value for c in (cc.WIDTH, cc.DEPTH, cc.LENGTH)]
            assert sizes == pytest.approx(lesion.sizes_mm, abs=1e-3)
            assert measured[cc.WIDTH.value].unit.value == "mm"
    scores = score_read(read.lesions, read.unit_marks, scheme, taxonomy, read.unit_grades)  # scores count the reader's unit grades
    units = {g.tracking_identifier: g for g in report.get_image_measurement_groups()}
    totals = {m.name.value: m.value for m in units.pop("read totals").get_measurements()}
    assert totals["TOTAL-SCORE"] == scores.total and totals["UNITS-NA"] == 1 and totals["UNITS-NOLESION"] == 1
    assert set(units) == {f"bone unit {u}" for u in scores.units}
    for unit_id, unit in scores.units.items():
        group = units[f"bone unit {unit_id}"]
        status = {e.name.value: e.value.value for e in group.get_qualitative_evaluations()}["UNIT-STATUS"]
        assert status == {"lesion": "WITH-LESION", "no_lesion": "NO-LESION", "not_assessable": "NOT-ASSESSABLE"}[
            unit.status]
        score = [m.value for m in group.get_measurements()]
        assert score == ([] if unit.score is None else [unit.score])
        graded = {(e.name.value, e.value.value) for e in group.get_qualitative_evaluations()
                  if e.name.value != "UNIT-STATUS"}
        assert graded == {(table.item_code(key, i).value, table.grade_code(key, i, g).value)
                          for i, g in read.unit_grades.get(unit_id, {}).items()}
    assert read.unit_grades == {"femur.distal:R": {"signal_extension": 2}, "spine.L2": {"signal_extension": "NA"}}
    assert _report_texts(dataset) == {"SITE-TAXONOMY": read.taxonomy}


def test_dciodvfy_finds_no_error_in_the_sr_and_the_segs(read_store, tmp_path):
    store, read = read_store
    stations = Stations(store)
    files = [_saved(build_sr(read, stations), tmp_path / "read.sr.dcm")]
    segs, _ = build_segs(read, stations)
    files += [_saved(seg, tmp_path / f"{n}.seg.dcm") for n, seg in enumerate(segs)]
    for path in files:
        assert _dciodvfy_errors(path) == [], path


def test_dciodvfy_check_is_not_vacuous(read_store, tmp_path):
    store, read = read_store
    sr = build_sr(read, Stations(store))
    del sr.CompletionFlag  # type 1 in the SR Document General module
    assert _dciodvfy_errors(_saved(sr, tmp_path / "broken.sr.dcm"))


def test_import_sr_refuses_other_files_and_unknown_studies_with_one_line_and_changes_nothing(read_store, tmp_path, cli):
    store, read = read_store
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom at all")
    image = tmp_path / "image.dcm"
    shutil.copy(Stations(store).holding(read.lesions[0].series_uid, read.lesions[0].position).stack.images[0].path,
                image)
    sr = build_sr(read, Stations(store))
    sr.StudyInstanceUID = "2.25.1"
    elsewhere = _saved(sr, tmp_path / "elsewhere.sr.dcm")
    before = audit.verify(store.db).entries
    for path, message in ((junk, "not a readable DICOM SR"), (image, "not a TID 1500 measurement report"),
                          (elsewhere, "is not in the store")):
        code, out, err = cli("read", "import-sr", "--store", store.root, path)
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
    assert audit.verify(store.db).entries == before


def test_export_import_export_gives_the_same_content_and_the_same_read(read_store, tmp_path):
    store, read = read_store
    first = _saved(build_sr(read, Stations(store)), tmp_path / "first.sr.dcm")
    imported = read_sr(first, store, Stations(store))
    assert imported.unmapped == []
    again = imported.read
    assert (again.read_id, again.reader, again.status, again.unit_marks, again.unit_grades, again.taxonomy) == \
        (read.read_id, read.reader, read.status, read.unit_marks, read.unit_grades, read.taxonomy)
    assert again.unit_grades["spine.L2"] == {"signal_extension": "NA"}
    for before, after in zip(read.lesions, again.lesions, strict=True):
        for name in ("lesion_id", "tracking_uid", "position", "site_id", "side", "subsite", "extent", "grades",
                     "confidence", "stir_muscle_ratio", "comment"):
            assert getattr(after, name) == getattr(before, name), (before.lesion_id, name)
    assert again.lesion("L1").stir_muscle_ratio == 3.0
    assert again.lesion("L2").comment == WEDGING
    second = _saved(build_sr(again, Stations(store)), tmp_path / "second.sr.dcm")
    a, b = pydicom.dcmread(first), pydicom.dcmread(second)
    assert a.ContentSequence == b.ContentSequence
    assert a.CurrentRequestedProcedureEvidenceSequence == b.CurrentRequestedProcedureEvidenceSequence


def test_import_sr_lists_an_unknown_site_taxonomy_and_maps_sites_with_the_default(read_store, tmp_path):
    store, read = read_store
    sr = build_sr(read, Stations(store))
    container = next(i for i in sr.ContentSequence if i.ValueType == "CONTAINER"
                     and i.ConceptNameCodeSequence[0].CodeValue == "C0034375")
    container.ContentSequence[0].TextValue = "cno-sites-9.9.9"
    imported = read_sr(_saved(sr, tmp_path / "taxonomy.sr.dcm"), store, Stations(store))
    assert imported.read.taxonomy == "cno-sites-2.0.0"
    assert [m for m in imported.unmapped if m.startswith("site taxonomy 'cno-sites-9.9.9'")], imported.unmapped
    assert [l.site_id for l in imported.read.lesions] == [l.site_id for l in read.lesions]


def test_an_sr_of_another_tool_imports_its_regions_and_lists_what_it_cannot_map(read_store, tmp_path):
    store, read = read_store
    station = Stations(store).in_study(read.study_uid, (-70.5, 0.0, -400.0), None)
    frame = station.frame_of_reference_uid

    def group(n, graphic, points, site, laterality=None, evaluations=None):
        return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"finding {n}"),
            referenced_region=hd.sr.ImageRegion3D(graphic, np.array(points, float), frame),
            finding_type=codes.SCT.Lesion,
            finding_sites=[hd.sr.FindingSite(site, laterality=laterality)],
            qualitative_evaluations=evaluations)

    observer = hd.sr.ObserverContext(
        observer_type=codes.cid270.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name="Other^Tool"))
    groups = [
        group(1, "POINT", [[-70.5, 0.0, -400.0]], codes.SCT.Patella, codes.SCT.Left),
        group(2, "ELLIPSE", [[-80.5, 0.0, -400.0], [-60.5, 0.0, -400.0], [-70.5, 0.0, -405.0],
                             [-70.5, 0.0, -395.0]], codes.SCT.Tibia, codes.SCT.Right,
              [hd.sr.QualitativeEvaluation(codes.SCT.Finding, codes.SCT.Present)]),
        group(3, "POLYGON", [[0.0, 0.0, -100.0], [10.0, 0.0, -100.0], [5.0, 0.0, -90.0], [0.0, 0.0, -100.0]],
              codes.SCT.Sacrum),
        group(4, "POLYGON", [[0.0, 0.0, -100.0], [10.0, 5.0, -100.0], [5.0, 0.0, -90.0], [0.0, 0.0, -100.0]],
              codes.SCT.Sacrum),
    ]
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_person_context=observer),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion, imaging_measurements=groups)
    other = hd.sr.Comprehensive3DSR(evidence=station.headers, content=report, series_instance_uid=hd.UID(),
                                    series_number=5, sop_instance_uid=hd.UID(), instance_number=1,
                                    manufacturer="another tool")
    path = _saved(other, tmp_path / "other.dcm")
    [item] = import_srs(store, [path])
    lesions = {l.lesion_id: l for l in item.read.lesions}
    assert item.read.reader == "Other^Tool" and item.read.status == "draft"
    assert lesions["finding 1"].site_id == "patella"
    assert lesions["finding 1"].side == "L" and lesions["finding 1"].extent is None
    assert lesions["finding 2"].extent["kind"] == "ellipse" and lesions["finding 2"].extent["radii_mm"] == [10.0, 5.0]
    assert lesions["finding 2"].site_id is None  # tibia has three sites: not guessed
    assert lesions["finding 3"].site_id == "sacrum" and lesions["finding 3"].extent["kind"] == "polygon"
    assert "finding 4" not in lesions
    listed = "\n".join(item.unmapped)
    assert "finding 2: finding site Tibia" in listed and "Finding = Present" in listed
    assert "finding 4: the POLYGON region is not in an axial, coronal or sagittal plane" in listed
    assert load_read(store, item.read.read_id).lesions == item.read.lesions


def test_segs_one_per_station_series_one_segment_per_lesion_with_extent(read_store, tmp_path):
    store, read = read_store
    stations = Stations(store)
    segs, skipped = build_segs(read, stations)
    assert skipped == ["L4"]  # the point lesion has no extent
    expected = {}
    for lesion in read.lesions[:3]:
        expected.setdefault(stations.holding(lesion.series_uid, lesion.position).series_uid, []).append(lesion)
    assert len(segs) == len(expected)
    for n, seg in enumerate(segs):
        back = hd.seg.segread(_saved(seg, tmp_path / f"{n}.seg.dcm"))
        assert back.SegmentationType == "BINARY"
        lesions = expected[back.ReferencedSeriesSequence[0].SeriesInstanceUID]
        assert [s.TrackingID for s in back.SegmentSequence] == [l.lesion_id for l in lesions]
        for number, (segment, lesion) in enumerate(zip(back.SegmentSequence, lesions), start=1):
            assert segment.TrackingUID == lesion.tracking_uid
            assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
            assert back.get_segment_description(number).anatomic_regions[0].value == \
                load_taxonomy("cno-sites-2.0.0").site(lesion.site_id).code["value"]
            pixels = back.get_pixels_by_source_instance(
                [h.SOPInstanceUID for h in stations.holding(lesion.series_uid, lesion.position).headers],
                segment_numbers=[number])
            assert pixels.sum() > 0
            if lesion.extent["kind"] == "box":  # every voxel of the segment lies in the box
                station = stations.holding(lesion.series_uid, lesion.position)
                k, j, i = np.nonzero(pixels[..., 0])
                slices = np.asarray(station.stack.slice_index)[k]
                lps = (station.affine @ np.stack([i, j, slices, np.ones_like(i)]).astype(float))[:3].T
                assert np.all(lps >= np.array(BOX["min_mm"]) - 1e-6) and np.all(lps <= np.array(BOX["max_mm"]) + 1e-6)
        assert pydicom.dcmread(tmp_path / f"{n}.seg.dcm").Modality == "SEG"


def test_export_sr_and_seg_are_audited_coordinator_exports(read_store, sample_copy, tmp_path, cli):
    store, read = read_store
    code, out, err = cli("read", "export-sr", "--store", store.root, "--out", tmp_path / "out")
    assert code == 0, err
    assert (tmp_path / "out" / f"{read.read_id}.sr.dcm").is_file()
    code, out, err = cli("read", "export-seg", "--store", store.root, "--out", tmp_path / "out")
    assert code == 0, err
    assert "no extent, no segment: L4" in out
    actions = [(e["actor"], e["action"]) for e in audit.entries(store.db, 5)]
    assert ("coordinator", "export-sr") in actions and ("coordinator", "export-seg") in actions
    code, out, err = cli("read", "import-sr", "--store", store.root, tmp_path / "out" / f"{read.read_id}.sr.dcm")
    assert code == 1 and "already has read" in err
    other = sample_copy("other-store")  # the same study in another store, without the read
    code, out, err = cli("read", "import-sr", "--store", other.root, tmp_path / "out" / f"{read.read_id}.sr.dcm")
    assert code == 0, err
    assert load_read(other, read.read_id).lesions[0].extent == ELLIPSE
    assert ("coordinator", "import") in [(e["actor"], e["action"]) for e in audit.entries(other.db, 3)]
