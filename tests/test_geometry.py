"""Geometry contracts: NIfTI round trip, composition on any grid, chaining rules."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from cno_annotate.importer import import_paths
from cno_annotate.io.compose import StackGeometry, compose, composed_geometry, plan_chains
from cno_annotate.io.volume import Volume, apply_affine, orientation_name
from cno_annotate.volumes import load_volume


def test_dicom_to_nifti_to_import_keeps_a_landmark_within_half_a_voxel(sample_store, sample_truth, cli, tmp_path):
    row = next(v for v in sample_store.volumes() if v.kind == "composed" and v.role == "STIR")
    out = tmp_path / "stir.nii.gz"
    code, text, err = cli("export-nifti", row.volume_id, "--out", out, "--store", sample_store.root)
    assert code == 0, err
    dicom = load_volume(sample_store, row.volume_id)
    lesion = np.array(sample_truth["lesions"][0]["lps_mm"])
    ijk = np.round(dicom.lps_to_index(lesion))
    # nibabel reads our file as RAS: the same voxel sits at (-x, -y, z).
    ras = apply_affine(nib.load(out).affine, ijk)
    np.testing.assert_allclose(ras, dicom.index_to_lps(ijk) * [-1, -1, 1], atol=1e-3)
    # Import the NIfTI back: the landmark voxel maps to the same LPS point.
    code, text, err = cli("import", out, "--store", tmp_path / "nifti-store", "--json")
    assert code == 0, err
    from cno_annotate.store import Store

    store = Store.open(tmp_path / "nifti-store")
    (back_row,) = store.volumes()
    back = load_volume(store, back_row.volume_id)
    spacing = np.array(dicom.spacing)
    back_ijk = back.lps_to_index(dicom.index_to_lps(ijk))
    assert np.all(np.abs(back_ijk - np.round(back_ijk)) < 0.5)
    np.testing.assert_allclose(back.index_to_lps(np.round(back_ijk)), dicom.index_to_lps(ijk), atol=0.5 * spacing.min())
    i, j, k = np.round(back_ijk).astype(int)
    assert back.array[k, j, i] == pytest.approx(float(dicom.array[int(ijk[2]), int(ijk[1]), int(ijk[0])]))


def _coronal(origin_z: float, rows: int, spacing: float = 2.0, x0: float = -20.0, value=None) -> Volume:
    affine = np.eye(4)
    affine[:3, 0] = [spacing, 0, 0]
    affine[:3, 1] = [0, 0, -spacing]
    affine[:3, 2] = [0, 4.0, 0]
    affine[:3, 3] = [x0, 0, origin_z]
    k, i = 3, 20
    zs = origin_z - spacing * np.arange(rows)
    array = np.broadcast_to((100 + zs)[None, :, None], (k, rows, i)).astype(np.float32) if value is None \
        else np.full((k, rows, i), value, np.float32)
    return Volume(array=array.copy(), affine=affine, volume_id=f"st{origin_z}", role="STIR")


def test_compose_on_whole_voxel_offsets_copies_and_blends():
    """A linear ramp in z composes to the same ramp: blending keeps it exact."""
    top, bottom = _coronal(100.0, 30), _coronal(50.0, 30)  # 10 rows of overlap
    out = compose([bottom, top])
    assert out.shape == (3, 55, 20)
    zs = apply_affine(out.affine, np.stack([np.zeros(55), np.arange(55), np.zeros(55)], axis=1))[:, 2]
    np.testing.assert_allclose(out.array[1, :, 5], 100 + zs, atol=1e-4)


@pytest.mark.parametrize("bottom_z", [50.7, 49.1, 51.99])
def test_compose_sub_voxel_table_moves_interpolate_exactly(bottom_z):
    """Stations a fraction of a voxel off the grid: a linear ramp stays exact."""
    top, bottom = _coronal(100.0, 30), _coronal(bottom_z, 30)
    out = compose([top, bottom])
    rows = np.arange(out.shape[1])
    zs = apply_affine(out.affine, np.stack([np.zeros(rows.size), rows, np.zeros(rows.size)], axis=1))[:, 2]
    np.testing.assert_allclose(out.array[2, :, 7], 100 + zs, atol=5e-3)
    assert zs.max() == pytest.approx(100.0) and zs.min() >= bottom_z - 2 * 29 - 1e-6


def test_compose_blends_overlaps_linearly():
    top, bottom = _coronal(100.0, 30, value=10.0), _coronal(50.0, 30, value=20.0)
    out = compose([top, bottom]).array[0, :, 0]
    assert out[0] == 10.0 and out[-1] == 20.0
    overlap = out[25:30]
    assert np.all(np.diff(overlap) > 0) and 10 < overlap.min() and overlap.max() < 20


def test_compose_resamples_stations_on_other_grids():
    """A station with another spacing and a half-voxel shift is resampled."""
    top = _coronal(100.0, 30)
    bottom = _coronal(51.0, 40, spacing=1.5, x0=-19.25)
    out = compose([top, bottom])
    grid, shape = composed_geometry([(top.affine, top.shape), (bottom.affine, bottom.shape)])
    np.testing.assert_allclose(out.affine, grid)
    assert out.shape == shape
    rows = np.arange(out.shape[1])
    zs = apply_affine(out.affine, np.stack([np.full(rows.size, 5.0), rows, np.ones(rows.size)], axis=1))[:, 2]
    inside = zs > 51.0 - 1.5 * 39 + 1.5  # away from the lowest edge
    # ITK samples up to half a voxel past a station edge, so the last blended row is off by ~0.06.
    np.testing.assert_allclose(out.array[1, inside, 5], 100 + zs[inside], atol=0.1)


def _geometry(volume_id, top_z, rows=100, role="STIR", description="t2_tirm_cor", x0=-100.0, orientation="coronal"):
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = [2, 0, 0], [0, 0, -2], [0, 5, 0]
    affine[:3, 3] = [x0, 0, top_z]
    return StackGeometry(volume_id, "study", role, orientation, description, affine, (10, rows, 100))


def test_chains_need_same_role_description_and_neighbouring_positions():
    stations = [_geometry("a", 400), _geometry("b", 220), _geometry("c", 40)]  # 200 mm tall, 20 mm overlap
    t1 = [_geometry("t1a", 400, role="T1", description="t1_tse_cor"), _geometry("t1b", 220, role="T1", description="t1_tse_cor")]
    knee = [_geometry("knee", 210, description="stir knee")]
    repeat = [_geometry("a-again", 390)]  # overlaps "a" by 95 %
    far = [_geometry("far", -600)]
    chains = plan_chains(stations + t1 + knee + repeat + far)
    ids = sorted(sorted(g.volume_id for g in chain) for chain in chains)
    assert ids == [["a", "b", "c"], ["t1a", "t1b"]] or ids == [["a-again", "b", "c"], ["t1a", "t1b"]]


def test_stations_side_by_side_do_not_chain():
    left, right = _geometry("l", 400, x0=-300.0), _geometry("r", 220, x0=100.0)
    assert plan_chains([left, right]) == []


@pytest.mark.parametrize(
    "normal, name",
    [((0, 0, 1), "axial"), ((0, 1, 0), "coronal"), ((1, 0, 0), "sagittal"), ((0.707, 0.707, 0), "oblique"),
     ((0, -0.96, 0.28), "coronal")],
)
def test_orientation_names(normal, name):
    assert orientation_name(np.array(normal, float)) == name


def test_store_schema_version_and_future_store_refused(tmp_path):
    from cno_annotate.errors import CnoError
    from cno_annotate.store import Store
    from cno_annotate.store.db import SCHEMA_VERSION

    store = Store.open(tmp_path / "s")
    assert store.schema_version == SCHEMA_VERSION
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    store.close()
    with pytest.raises(CnoError, match="newer|update cno-annotate"):
        Store.open(tmp_path / "s")


def test_a_file_that_is_not_a_store_is_refused(tmp_path):
    from cno_annotate.errors import CnoError
    from cno_annotate.store import Store

    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "store.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(CnoError, match="cannot open the store"):
        Store.open(tmp_path / "s")


def test_composed_volume_ids_are_stable_across_stores(small_study, tmp_path):
    from cno_annotate.store import Store

    ids = []
    for name in ("one", "two"):
        store = Store.open(tmp_path / name)
        import_paths(store, [small_study])
        ids.append(sorted(v.volume_id for v in store.volumes()))
    assert ids[0] == ids[1]


# -- issue 11: missing data carries no weight; repeated stations; composition notes ---------

def _with_missing_slice(volume: Volume, k: int) -> Volume:
    volume.array[k] = 0.0
    return volume.with_header(gaps=({"after_slice": k - 1, "missing": 1},))


@pytest.mark.parametrize("bottom_z, spacing", [(50.0, 2.0), (50.7, 2.0), (51.0, 1.5)])
def test_a_missing_slice_does_not_darken_the_overlap(bottom_z, spacing):
    """The neighbouring station's valid data keeps full weight where one station misses a slice."""
    top = _with_missing_slice(_coronal(100.0, 30, value=10.0), 1)  # covers z 100 .. 42
    bottom = _coronal(bottom_z, 30, spacing=spacing, value=10.0)
    out = compose([top, bottom])
    rows = np.arange(out.shape[1])
    grid_z = apply_affine(out.affine, np.stack([np.zeros(rows.size), rows, np.zeros(rows.size)], axis=1))[:, 2]
    columns = np.arange(out.shape[2])
    grid_x = apply_affine(out.affine, np.stack([columns, np.zeros(columns.size), np.zeros(columns.size)], axis=1))[:, 0]
    both_sides = (grid_x >= -20.0 + 1.0) & (grid_x <= -20.0 + 19 * spacing - 1.0)
    plane = out.array[1][:, both_sides]  # the plane of the missing slice, where both stations reach sideways
    overlap = (grid_z >= 42.0 + 1.0) & (grid_z <= bottom_z - 1.0)
    assert overlap.sum() >= 3
    np.testing.assert_allclose(plane[overlap], 10.0, rtol=1e-5)
    # Where no other station covers the missing slice, it stays empty (and is flagged by the plan).
    assert np.all(plane[grid_z > bottom_z + 1.0] == 0.0)
    np.testing.assert_allclose(out.array[0][overlap][:, both_sides], 10.0, rtol=1e-5)  # present slices unchanged
