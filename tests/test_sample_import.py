"""The importer on the bundled sample study and on generated studies."""

from __future__ import annotations

import shutil

import numpy as np

from cno_annotate.importer import import_paths
from cno_annotate.io.volume import Volume
from cno_annotate.store.catalog import VolumeRow
from cno_annotate.volumes import load_volume


def composed(store, role: str) -> VolumeRow:
    rows = [v for v in store.volumes() if v.kind == "composed" and v.role == role]
    assert len(rows) == 1, rows
    return rows[0]


def test_sample_roles_stations_and_composed_shapes(sample_store, sample_truth):
    plan = sample_truth["plan"]
    stacks = [v for v in sample_store.volumes() if v.kind == "stack"]
    assert sorted(v.role for v in stacks) == ["STIR"] * plan["stations"] + ["T1"] * plan["stations"]
    assert all(v.orientation == "coronal" for v in stacks)
    for role in ("STIR", "T1"):
        row = composed(sample_store, role)
        assert row.stations == plan["stations"]
        assert len(row.members) == plan["stations"]
        slices, rows, columns = row.shape
        assert (slices, columns) == (plan["slices"], plan["matrix"])
        # Head to feet: stations minus their overlaps.
        pixel = np.linalg.norm(np.array(row.affine)[:3, 1])
        overlap_rows = round(30.0 / pixel)
        assert abs(rows - (plan["stations"] * plan["matrix"] - (plan["stations"] - 1) * overlap_rows)) <= 1


def test_lesion_landmarks_land_at_their_lps_position(sample_store, sample_truth):
    """At each truth lesion the signal is a lesion's: bright on STIR and dark on T1, a ratio that
    marrow, muscle and fat (darker on STIR than on T1) do not reach, and that drops to less than
    half 3 cm further along the body. Slices are thick (the body's depth in 16 slices), so a
    lesion in a thin bone may straddle two: the best of the nearest slice and its neighbours counts."""
    stir = load_volume(sample_store, composed(sample_store, "STIR").volume_id)
    t1 = load_volume(sample_store, composed(sample_store, "T1").volume_id)
    assert np.allclose(stir.affine, t1.affine)
    assert len(sample_truth["lesions"]) >= 4

    def ratio(point, slices=(0,)) -> float:
        i, j, k = np.round(stir.lps_to_index(np.asarray(point, float))).astype(int)
        return max(float(stir.array[k + d, j, i] / t1.array[k + d, j, i]) for d in slices
                   if 0 <= k + d < stir.shape[0])

    for lesion in sample_truth["lesions"]:
        centre = np.array(lesion["lps_mm"])
        at_lesion = ratio(centre, (-1, 0, 1))
        assert at_lesion > 0.9, (lesion["id"], lesion["bone"], at_lesion)
        away = centre + [0, 0, 30 + 2 * lesion["radii_mm"][2]]
        assert ratio(away) < at_lesion / 2, (lesion["id"], lesion["bone"], at_lesion, ratio(away))


def test_index_and_patient_geometry_round_trip(sample_store):
    volume = load_volume(sample_store, composed(sample_store, "STIR").volume_id)
    ijk = np.array([[0, 0, 0], [17, 250, 9], [127, 483, 15]], float)
    np.testing.assert_allclose(volume.lps_to_index(volume.index_to_lps(ijk)), ijk, atol=1e-9)
    # Coronal: columns run to the patient's left, rows to the feet, slices to posterior.
    direction = volume.affine[:3, :3] / np.linalg.norm(volume.affine[:3, :3], axis=0)
    np.testing.assert_allclose(direction, [[1, 0, 0], [0, 0, 1], [0, -1, 0]], atol=1e-6)


def test_second_open_of_a_composed_volume_uses_the_cache(sample_store):
    row = composed(sample_store, "T1")
    first = load_volume(sample_store, row.volume_id)
    second = load_volume(sample_store, row.volume_id)
    assert second.load.cached is True
    np.testing.assert_array_equal(np.asarray(first.array), np.asarray(second.array))


def test_station_seams_are_blended_not_stepped(sample_store):
    """Across a station overlap the mean row intensity changes smoothly."""
    volume = load_volume(sample_store, composed(sample_store, "T1").volume_id)
    profile = volume.array.mean(axis=(0, 2))
    steps = np.abs(np.diff(profile))
    assert steps.max() < 6 * np.median(steps) + 0.25 * profile.mean()


def test_reimport_is_idempotent(small_study, store):
    first = import_paths(store, [small_study])
    volumes_before = store.volumes()
    second = import_paths(store, [small_study])
    assert first.new_instances == second.instances == 36
    assert second.new_instances == 0 and second.already_imported == 36
    assert second.duplicates == 0
    assert store.volumes() == volumes_before
    assert store.db.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 36


def test_duplicate_instances_are_reported_once(small_study, store, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(small_study, copy)
    report = import_paths(store, [small_study, copy])
    duplicates = [s for s in report.skipped if "duplicate" in s["reason"]]
    assert report.duplicates == len(duplicates) == 36
    assert len({d["path"] for d in duplicates}) == 36
    assert all(str(copy) in d["path"] for d in duplicates)
    assert store.db.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 36


def test_many_studies_in_one_run(tmp_path, store):
    from cno_annotate.sample import StudyPlan, generate_study

    for seed in range(3):
        generate_study(tmp_path / f"study{seed}", StudyPlan(stations=2, slices=3, matrix=32, seed=seed))
    report = import_paths(store, [tmp_path])
    assert len(report.studies) == 3
    assert len(store.studies()) == 3
    assert len({s.patient_id for s in store.studies()}) == 3
    assert sum(v.kind == "composed" for v in store.volumes()) == 6


def test_volume_is_float32_with_slices_in_position_order(small_study, store):
    """T1 InstanceNumbers run posterior to anterior; order follows position."""
    import_paths(store, [small_study])
    t1 = [v for v in store.volumes() if v.role == "T1" and v.kind == "stack"][0]
    volume = load_volume(store, t1.volume_id)
    assert isinstance(volume, Volume) and volume.array.dtype == np.float32
    step = volume.affine[:3, 2]
    assert step[1] > 0  # slice k+1 is posterior of slice k
