"""An online reader's lesions reach the coordinator's exports under the source series.

The reader reads on the de-identified copies fetched from the study PACS, so their
lesions name the cache's volumes: stand-in series UIDs, and composed volumes of
stand-in stations. The coordinator's JSON, CSV, SR and SEG exports must name the
source series and volumes (the UID pairs are on the coordinator's side only, as
``reading-study collect`` maps packages back), with the positions unchanged.
A real PostgreSQL and a real Orthanc (fixtures of tests/test_online_reading.py).
"""

from __future__ import annotations

import csv
import json

import pydicom
import pytest

from cno_annotate import reading_study as rs
from cno_annotate import study_pacs
from cno_annotate.annotation.reads import ReadSession
from cno_annotate.io.kinds import VolumeKind
from cno_annotate.pacs import config
from cno_annotate.pacs.client import open_client
from cno_annotate.store import Store
from cno_annotate.store.catalog import VolumeRow
from tests.cli_run import run_cli
from tests.test_online_reading import READER, source, trial  # noqa: F401 (fixtures)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _centre(volume: VolumeRow) -> tuple[float, float, float]:
    """The LPS centre of a volume's grid."""
    import numpy as np

    affine = np.asarray(volume.affine, float)
    k, j, i = volume.shape
    return tuple(float(v) for v in (affine @ [(i - 1) / 2, (j - 1) / 2, (k - 1) / 2, 1.0])[:3])  # type: ignore


def _read_online(url: str) -> tuple[str, dict[str, tuple]]:
    """As the reader: fetch the first case, mark a lesion on a composed volume and one on a station; submit.

    Returns the read id and, per lesion id, (cache volume, its member stations' series UIDs, position).
    """
    reader = Store.open(url)
    try:
        code = rs.worklist(reader, "online", READER)[0]["reading_code"]
        with open_client(config.get_node("web")) as client:
            cached = study_pacs.fetch_case(reader, "online", code, client)
        cache = Store.open(cached.cache)
        try:
            volumes = cache.volumes(cached.study_uid)
            composed = next(v for v in volumes if v.kind == VolumeKind.COMPOSED)
            stack = next(v for v in volumes if v.kind == VolumeKind.STACK)
            members = {v.volume_id: v.series_uid for v in volumes if v.kind == VolumeKind.STACK}
        finally:
            cache.close()
        session = ReadSession.open_or_create(reader, rs.study_uid_of(reader, "online", code), READER,
                                             reading_study="online")
        marked = {}
        for volume, boxed in ((composed, False), (stack, True)):  # a point on the composed volume, a box on a station
            where = _centre(volume)
            extent = {"kind": "box", "min_mm": [c - 6 for c in where], "max_mm": [c + 6 for c in where]} if boxed else None
            lesion = session.add_lesion(where, volume.volume_id, (1, 2, 3), site_id="femur.distal", side="R",
                                        extent=extent)
            session.set_grade(lesion, "marrow_hyperintensity", 2)
            series = [members[m] for m in volume.members] if volume.kind == VolumeKind.COMPOSED \
                else [volume.series_uid]
            marked[lesion] = (volume.volume_id, series, where)
        session.add_roi("rectangle", "axial", [_centre(stack), [c + 4 for c in _centre(stack)]], stack.volume_id)
        session.submit()
        return session.read.read_id, marked
    finally:
        reader.close()


def _source_of(owner: Store, series: list[str]) -> tuple[str, set[str]]:
    """The coordinator's volume made of the source series behind these stand-in series, and those series."""
    back = {new: old for old, new in owner.db.execute("SELECT source_uid, package_uid FROM package_uids")}
    originals = {back[s] for s in series}
    for volume in owner.volumes():
        if volume.kind == VolumeKind.COMPOSED:
            held = {owner.volume(m).series_uid for m in volume.members}
        elif volume.kind == VolumeKind.STACK:
            held = {volume.series_uid}
        else:
            continue
        if held == originals:
            return volume.volume_id, originals
    raise AssertionError(f"no source volume of series {originals}")


def _walk(dataset):
    """Every dataset nested in ``dataset`` (itself included)."""
    yield dataset
    for element in dataset:
        if element.VR == "SQ":
            for item in element.value:
                yield from _walk(item)


def test_the_coordinators_exports_name_the_source_series_of_an_online_readers_lesions(
        trial, nodes, tmp_path):  # noqa: F811
    assert run_cli("reading-study", "publish", "online", "--pacs", "web", "--store", trial())[0] == 0
    read_id, marked = _read_online(trial(READER))
    owner = Store.open(trial())
    try:
        expected = {lesion: (_source_of(owner, series), where) for lesion, (_, series, where) in marked.items()}
        source_series = {r[0] for r in owner.db.execute("SELECT series_uid FROM dicom_series")}
        frames = {str(pydicom.dcmread(p, stop_before_pixels=True).FrameOfReferenceUID)
                  for p in {r[0] for r in owner.db.execute("SELECT path FROM images")}}
    finally:
        owner.close()
    stand_ins = {volume for volume, _, _ in marked.values()} | {s for _, series, _ in marked.values() for s in series}

    code, out = run_cli("read", "export", "--reader", READER, "--out", tmp_path / "reads.json", "--store", trial())
    assert code == 0, out
    document = json.loads((tmp_path / "reads.json").read_text())
    lesions = {lesion["lesion_id"]: lesion for lesion in document["reads"][0]["lesions"]}
    for lesion_id, ((volume_id, _), where) in expected.items():
        assert lesions[lesion_id]["position"]["series_uid"] == volume_id
        assert lesions[lesion_id]["position"]["lps_mm"] == pytest.approx(list(where))

    stack_lesion = next(lesion for lesion, (_, series, _) in marked.items() if len(series) == 1)
    assert [roi["series_uid"] for roi in document["reads"][0]["rois"]] == [expected[stack_lesion][0][0]]

    reader = Store.open(trial(READER))
    try:  # the reader's own (blinded) export works from the stand-ins: their login never sees the pairs
        mine = rs.reader_document(reader, "online", READER, audited=False)["reads"][0]
    finally:
        reader.close()
    assert {lesion["position"]["series_uid"] for lesion in mine["lesions"]} == {
        rs.pseudonymous_series_uid("online", volume) for volume, _, _ in marked.values()}

    code, out = run_cli("export-csv", "--reader", READER, "--out", tmp_path / "csv", "--store", trial())
    assert code == 0, out
    with (tmp_path / "csv" / "lesions.csv").open(newline="") as handle:
        rows = {row["lesion_id"]: row for row in csv.DictReader(handle)}
    for lesion_id, ((volume_id, _), _) in expected.items():
        assert rows[lesion_id]["series_uid"] == volume_id

    code, out = run_cli("read", "export-sr", "--reader", READER, "--out", tmp_path / "sr", "--store", trial())
    assert code == 0, out
    sr = pydicom.dcmread(tmp_path / "sr" / f"{read_id}.sr.dcm")
    referenced = {str(d.SeriesInstanceUID) for d in _walk(sr) if "SeriesInstanceUID" in d and d is not sr}
    frames_used = {str(d.ReferencedFrameOfReferenceUID) for d in _walk(sr) if "ReferencedFrameOfReferenceUID" in d}
    points = [tuple(float(v) for v in d.GraphicData) for d in _walk(sr) if d.get("GraphicType") == "POINT"]
    assert referenced and referenced <= source_series and not referenced & stand_ins
    assert frames_used and frames_used <= frames
    point_lesion = next(lesion for lesion, (_, series, _) in marked.items() if len(series) > 1)  # no extent
    assert points == [pytest.approx(expected[point_lesion][1], abs=1e-3)]

    code, out = run_cli("read", "export-seg", "--reader", READER, "--out", tmp_path / "seg", "--store", trial())
    assert code == 0, out
    segs = [pydicom.dcmread(p) for p in sorted((tmp_path / "seg").glob("*.seg.dcm"))]
    assert segs
    for seg in segs:
        series = {str(d.SeriesInstanceUID) for d in seg.ReferencedSeriesSequence}
        assert series <= source_series and not series & stand_ins
        assert str(seg.FrameOfReferenceUID) in frames


# -- a series the copies split otherwise than the source ---------------------------------------------------------------
B_VALUE = (0x0019, "SIEMENS MR HEADER", 0x0C)


@pytest.fixture
def diffusion(pg_server, pg_database, nodes, tmp_path):
    """URL maker of a database holding one study with a diffusion series whose b-values (0, 800) are only in a
    Siemens private attribute, b=800 acquired first (AcquisitionNumber 1): published, a reading study assigned.

    The source splits the series by b-value (b=0 first); the de-identified copies have no private attributes and
    split it by acquisition number (b=800 first), so the copies' stack numbers are not the source's."""
    from pydicom.uid import generate_uid

    from cno_annotate.importer import import_paths
    from cno_annotate.sample import StudyPlan, generate_study

    folder = tmp_path / "dwi-study"
    generate_study(folder, StudyPlan(stations=1, slices=3, matrix=24, seed=61))
    (folder / "ground_truth.json").unlink(missing_ok=True)
    first = sorted(p for p in folder.rglob("IM*") if p.parent.name == "SE000101")
    series = generate_uid()
    target = first[0].parent.parent / "SE000901"
    target.mkdir()
    for b_value, acquisition in ((800, 1), (0, 2)):
        for path in first:
            ds = pydicom.dcmread(path)
            ds.SeriesInstanceUID, ds.SeriesNumber, ds.AcquisitionNumber = series, 901, acquisition
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.private_block(B_VALUE[0], B_VALUE[1], create=True).add_new(B_VALUE[2], "IS", str(b_value))
            ds.save_as(target / f"B{b_value}-{path.name}", enforce_file_format=True)
    url = pg_database()
    database = url.rsplit("/", 1)[1]
    store = Store.open(url)
    import_paths(store, [folder])
    rs.create(store, "dwi")
    rs.add_cases(store, "dwi", [s.study_uid for s in store.studies()])
    rs.add_readers(store, "dwi", [READER])
    rs.assign(store, "dwi")
    store.close()
    code, out = run_cli("store", "grant", "--reader", READER, "--store", url)
    assert code == 0, out
    if "password (shown once): " in out:
        pg_server.remember(READER, out.rsplit(": ", 1)[1].strip())
    code, out = run_cli("reading-study", "publish", "dwi", "--pacs", "web", "--store", url)
    assert code == 0, out
    return lambda login="cno_owner": pg_server.plain_url(database, user=login)


def _stack_values(store: Store, volume: VolumeRow, key: str) -> set:
    """The split values ``key`` (b_value, acquisition) of a stack's images."""
    from cno_annotate.volumes import _stack

    return {image.split_values.get(key) for image in _stack(store, volume).images}


def test_a_lesion_on_a_copy_stack_maps_back_to_the_source_stack_of_the_same_images(diffusion, nodes, tmp_path):
    reader = Store.open(diffusion(READER))
    try:
        code = rs.worklist(reader, "dwi", READER)[0]["reading_code"]
        with open_client(config.get_node("web")) as client:
            cached = study_pacs.fetch_case(reader, "dwi", code, client)
        cache = Store.open(cached.cache)
        try:
            stacks = [v for v in cache.volumes(cached.study_uid) if v.kind == VolumeKind.STACK]
            first = next(v for v in stacks if _stack_values(cache, v, "acquisition") == {1})  # the b=800 images
            assert first.volume_id.endswith(".1")  # the copies number it first; the source numbers b=0 first
        finally:
            cache.close()
        session = ReadSession.open_or_create(reader, rs.study_uid_of(reader, "dwi", code), READER, reading_study="dwi")
        session.add_lesion(_centre(first), first.volume_id, (1, 1, 1), site_id="femur.distal", side="R")
        session.submit()
    finally:
        reader.close()
    code, out = run_cli("read", "export", "--reader", READER, "--out", tmp_path / "reads.json", "--store", diffusion())
    assert code == 0, out
    (lesion,) = json.loads((tmp_path / "reads.json").read_text())["reads"][0]["lesions"]
    owner = Store.open(diffusion())
    try:
        source = owner.volume(lesion["position"]["series_uid"])
        assert _stack_values(owner, source, "b_value") == {800.0}  # the same images, not the stack of the same number
    finally:
        owner.close()
