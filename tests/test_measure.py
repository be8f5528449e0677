"""ROI statistics in the core, against numpy on constructed volumes with known values."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cno_annotate.annotation.model import Roi, RoiKind, RoiRole
from cno_annotate.annotation.validation import InvalidLesion, make_roi, roi_from_fields
from cno_annotate.display.measure import roi_stats, signal_ratio
from cno_annotate.errors import CnoError
from cno_annotate.io.volume import Volume
from tests.voxels import voxel_at

SPACING = (0.8, 1.25, 3.0)  # mm along i (x, L), j (y, P), k (z, S)


def _volume(seed: int = 0) -> Volume:
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 1000, size=(6, 24, 32)).astype(np.float32)
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = (-10.0, 5.0, 40.0)
    return Volume(array, affine, "vol-1", "STIR")


def _lps(volume: Volume, i: float, j: float, k: float) -> tuple[float, float, float]:
    return tuple(float(v) for v in volume.index_to_lps(np.array([i, j, k], float)))  # type: ignore[return-value]


def _roi(kind: str, plane: str, points, role: str = "measurement", lesion_id: str | None = None) -> Roi:
    return make_roi(roi_id="R1", kind=kind, plane=plane, points_mm=points, series_uid="vol-1", role=role,
                    lesion_id=lesion_id)


def test_rectangle_on_axial_slice_matches_numpy() -> None:
    volume = _volume()
    roi = _roi("rectangle", "axial", [_lps(volume, 5, 3, 2), _lps(volume, 12, 7, 2)])
    expected = volume.array[2, 3:8, 5:13].astype(float)
    stats = roi_stats(roi, volume)
    assert stats is not None
    assert stats.count == expected.size == 40
    assert stats.mean == pytest.approx(expected.mean())
    assert stats.sd == pytest.approx(expected.std(ddof=1))
    assert (stats.minimum, stats.maximum) == (expected.min(), expected.max())
    assert stats.area_mm2 == pytest.approx(40 * SPACING[0] * SPACING[1])


def test_rectangle_on_coronal_slice_follows_the_flipped_rows() -> None:
    volume = _volume(1)
    roi = _roi("rectangle", "coronal", [_lps(volume, 4, 9, 1), _lps(volume, 10, 9, 4)])
    expected = volume.array[1:5, 9, 4:11].astype(float)
    stats = roi_stats(roi, volume)
    assert stats is not None and stats.count == expected.size
    assert stats.mean == pytest.approx(expected.mean())
    assert stats.area_mm2 == pytest.approx(expected.size * SPACING[0] * SPACING[2])


def test_ellipse_holds_the_voxels_within_its_radii() -> None:
    volume = _volume(2)
    centre, radii = (15, 10), (6.0, 4.0)  # (i, j) and radii in voxels along i and j
    roi = _roi("ellipse", "axial", [_lps(volume, *centre, 3), _lps(volume, centre[0] + radii[0],
                                                                   centre[1] + radii[1], 3)])
    j, i = np.mgrid[0:24, 0:32]
    inside = ((i - centre[0]) / radii[0]) ** 2 + ((j - centre[1]) / radii[1]) ** 2 <= 1
    expected = volume.array[3][inside].astype(float)
    stats = roi_stats(roi, volume)
    assert stats is not None and stats.count == expected.size
    assert stats.mean == pytest.approx(expected.mean())
    assert stats.sd == pytest.approx(expected.std(ddof=1))
    assert stats.area_mm2 == pytest.approx(expected.size * SPACING[0] * SPACING[1])
    # the pixel area approaches the ellipse's area (pi a b)
    assert stats.area_mm2 == pytest.approx(np.pi * 6 * SPACING[0] * 4 * SPACING[1], rel=0.1)


def test_polygon_holds_the_voxels_of_its_triangle() -> None:
    volume = _volume(3)
    corners = [(2.5, 2.5), (20.5, 2.5), (2.5, 14.5)]  # (i, j): a right triangle, edges between voxel centres
    roi = _roi("polygon", "axial", [_lps(volume, i, j, 0) for i, j in corners])
    j, i = np.mgrid[0:24, 0:32]
    inside = (i >= 2.5) & (j >= 2.5) & ((i - 2.5) / 18 + (j - 2.5) / 12 <= 1)
    expected = volume.array[0][inside].astype(float)
    stats = roi_stats(roi, volume)
    assert stats is not None and stats.count == expected.size > 50
    assert stats.mean == pytest.approx(expected.mean())
    assert (stats.minimum, stats.maximum) == (expected.min(), expected.max())


def test_stir_ratio_of_known_regions() -> None:
    array = np.full((4, 20, 20), 10.0, np.float32)
    array[2, 2:6, 2:6] = 100.0  # muscle
    array[2, 10:16, 10:16] = 250.0  # lesion
    volume = Volume(array, np.eye(4), "vol-1", "STIR")
    muscle = _roi("rectangle", "axial", [(2, 2, 2), (5, 5, 2)], role="muscle")
    lesion = _roi("ellipse", "axial", [(13, 13, 2), (15, 15, 2)], role="lesion", lesion_id="L1")
    assert signal_ratio(lesion, muscle, volume) == pytest.approx(2.5)
    outside = _roi("rectangle", "axial", [(2, 2, 9), (5, 5, 9)], role="muscle")
    assert roi_stats(outside, volume) is None
    assert signal_ratio(lesion, outside, volume) is None


@pytest.mark.parametrize(("fields", "message"), [
    ({"kind": "circle"}, "ellipse, a rectangle or a polygon"),
    ({"plane": "oblique"}, "plane is one of"),
    ({"kind": "polygon"}, "at least 3 points"),
    ({"points_mm": [[0, 0, 0], [1, 1, float("nan")]]}, "finite"),
    ({"role": "lesion"}, "names its lesion"),
    ({"lesion_id": "L1"}, "only a lesion ROI"),
    ({"extra": 1}, "no field 'extra'"),
])
def test_bad_rois_are_refused_with_a_reason(fields: dict, message: str) -> None:
    good = {"roi_id": "R1", "kind": "ellipse", "plane": "axial", "points_mm": [[0, 0, 0], [2, 2, 0]],
            "series_uid": "vol-1", "role": "measurement", "lesion_id": None}
    with pytest.raises(InvalidLesion, match=message):
        roi_from_fields({**good, **fields})
    roi = roi_from_fields(good)
    assert (roi.kind, roi.role) == (RoiKind.ELLIPSE, RoiRole.MEASUREMENT)
    assert roi_from_fields(roi.to_dict()) == roi


# -- ROIs with the read ----------------------------------------------------------------------
STUDY = "1.2.826.0.1.3680043.99.1"


def _stir() -> Volume:
    array = np.full((4, 20, 20), 10.0, np.float32)
    array[2, 2:6, 2:6] = 100.0  # muscle
    array[2, 10:16, 10:16] = 250.0  # lesion
    return Volume(array, np.eye(4), "stir-1", "STIR")


def test_rois_persist_with_the_read_and_undo_one_step_each(store) -> None:
    from cno_annotate.annotation.reads import ReadSession, load_read

    session = ReadSession.open_or_create(store, STUDY, "dr-a")
    lesion_id = session.add_lesion((13.0, 13.0, 2.0), "stir-1", (13, 13, 2))
    muscle = session.add_roi("rectangle", "axial", [(2, 2, 2), (5, 5, 2)], "stir-1")
    lesion_roi = session.add_roi("ellipse", "axial", [(13, 13, 2), (15, 15, 2)], "stir-1")
    polygon = session.add_roi("polygon", "axial", [(1, 1, 2), (8, 1, 2), (1, 8, 2)], "stir-1")
    session.set_roi_role(muscle, "muscle", stir=_stir())
    session.set_roi_role(lesion_roi, "lesion", lesion_id, stir=_stir())
    assert session.read.lesion(lesion_id).stir_muscle_ratio == pytest.approx(2.5)
    reopened = load_read(store, session.read.read_id)
    assert [r.roi_id for r in reopened.rois] == [muscle, lesion_roi, polygon]
    assert reopened.muscle_roi is not None and reopened.muscle_roi.points_mm == ((2, 2, 2), (5, 5, 2))
    assert reopened.lesion(lesion_id).stir_muscle_ratio == pytest.approx(2.5)

    session.delete_roi(muscle, stir=_stir())  # the ratio goes with its reference
    assert session.read.lesion(lesion_id).stir_muscle_ratio is None
    assert muscle not in [r.roi_id for r in load_read(store, session.read.read_id).rois]
    session.undo()
    assert load_read(store, session.read.read_id).lesion(lesion_id).stir_muscle_ratio == pytest.approx(2.5)
    assert load_read(store, session.read.read_id).muscle_roi.roi_id == muscle  # type: ignore[union-attr]

    # a second muscle ROI replaces the first (one per read) in one undo step
    session.set_roi_role(polygon, "muscle", stir=_stir())
    assert load_read(store, session.read.read_id).muscle_roi.roi_id == polygon  # type: ignore[union-attr]
    session.undo()
    assert load_read(store, session.read.read_id).muscle_roi.roi_id == muscle  # type: ignore[union-attr]

    session.delete_lesion(lesion_id)  # its ROI goes with it, and comes back with it
    assert [r.roi_id for r in load_read(store, session.read.read_id).rois] == [muscle, polygon]
    session.undo()
    assert load_read(store, session.read.read_id).roi(lesion_roi).lesion_id == lesion_id


def test_the_database_keeps_one_muscle_roi_and_locks_rois_of_a_submitted_read(store) -> None:
    import sqlite3

    from cno_annotate.annotation.reads import ReadSession

    session = ReadSession.open_or_create(store, STUDY, "dr-a")
    roi = session.add_roi("rectangle", "axial", [(2, 2, 2), (5, 5, 2)], "stir-1")
    session.set_roi_role(roi, "muscle")
    read_id = session.read.read_id
    with pytest.raises(sqlite3.IntegrityError):
        with store.transaction() as db:
            db.execute("INSERT INTO rois VALUES (?, 'R9', 9, '{}', 'muscle')", (read_id,))
    session.submit()
    with pytest.raises(sqlite3.IntegrityError, match="submitted and locked"):
        with store.transaction() as db:
            db.execute("DELETE FROM rois WHERE read_id = ?", (read_id,))
    with pytest.raises(CnoError, match="submitted and locked"):
        session.add_roi("ellipse", "axial", [(2, 2, 2), (5, 5, 2)], "stir-1")


def test_rois_and_the_ratio_go_through_json_and_csv_and_come_back(sample_copy, tmp_path) -> None:
    from cno_annotate.annotation.csv_export import lesion_rows
    from cno_annotate.annotation.documents import export_document, import_document, write_document
    from cno_annotate.annotation.reads import ReadSession

    store = sample_copy("rois")
    study = store.studies()[0].study_uid
    series = next(v.volume_id for v in store.volumes(study) if v.role == "STIR")
    session = ReadSession.open_or_create(store, study, "dr-a")
    lesion_id = session.add_lesion((13.0, 13.0, 2.0), series, voxel_at(store, series, (13.0, 13.0, 2.0)))
    muscle = session.add_roi("rectangle", "axial", [(2, 2, 2), (5, 5, 2)], series)
    lesion_roi = session.add_roi("polygon", "axial", [(11, 11, 2), (15, 11, 2), (15, 15, 2), (11, 15, 2)], series)
    session.set_roi_role(muscle, "muscle", stir=_stir())
    session.set_roi_role(lesion_roi, "lesion", lesion_id, stir=_stir())
    document = export_document(store)
    assert document["schema_version"] == "1.2.0"
    read = document["reads"][0]
    assert [r["roi_id"] for r in read["rois"]] == [muscle, lesion_roi]
    assert read["rois"][1] == {"roi_id": lesion_roi, "kind": "polygon", "plane": "axial",
                               "points_mm": [[11.0, 11.0, 2.0], [15.0, 11.0, 2.0], [15.0, 15.0, 2.0],
                                             [11.0, 15.0, 2.0]],
                               "series_uid": series, "role": "lesion", "lesion_id": lesion_id}
    assert read["lesions"][0]["stir_muscle_ratio"] == 2.5
    columns, rows = lesion_rows(document)
    assert "stir_muscle_ratio" in columns and rows[0]["stir_muscle_ratio"] == 2.5
    other = sample_copy("other")
    import_document(other, write_document(document, tmp_path / "reads.json"))
    assert export_document(other)["reads"] == document["reads"]
    bad = json.loads(json.dumps(document))
    bad["reads"][0]["rois"][1]["lesion_id"] = "L99"
    with pytest.raises(CnoError, match=r"\$\.reads\[0\]\.rois\[1\]\.lesion_id: .*L99"):
        import_document(sample_copy("third"), write_document(bad, tmp_path / "bad.json"))
