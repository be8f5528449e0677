"""Display logic without Qt: planes, windowing, markers, regions, linked views."""

from __future__ import annotations

import numpy as np
import pytest

from cno_annotate.display.catalog import default_pair, series_choices
from cno_annotate.display.overlay import Marker, markers_on_slice
from cno_annotate.display.planes import extract, index_to_screen, plane_mapping, screen_to_index
from cno_annotate.display.regions import REGION_FRACTIONS, region_z
from cno_annotate.display.session import ViewerSession
from cno_annotate.display.windowing import Window, Windowing, presets
from cno_annotate.io.volume import Volume


def coronal_volume(shape=(6, 40, 30), spacing=(2.0, 3.0, 5.0), origin=(-30.0, -10.0, 100.0), role="STIR") -> Volume:
    """A coronal stack: i -> patient left, j -> feet, k -> posterior; value = 1000k + 10j + i/10."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    affine = np.eye(4)
    affine[:3, 0] = [spacing[0], 0, 0]
    affine[:3, 1] = [0, 0, -spacing[1]]
    affine[:3, 2] = [0, spacing[2], 0]
    affine[:3, 3] = origin
    return Volume((1000 * k + 10 * j + i / 10).astype(np.float32), affine, "vol", role)


def test_coronal_plane_of_a_coronal_stack_is_the_acquired_slice():
    v = coronal_volume()
    m = plane_mapping(v.affine, v.shape, "coronal")
    assert (m.slices, m.rows, m.cols) == (6, 40, 30)
    assert (m.row_mm, m.col_mm, m.slice_mm) == (3.0, 2.0, 5.0)
    assert m.letters == {"left": "R", "right": "L", "top": "S", "bottom": "I"}
    image = extract(v.array, m, 2)
    np.testing.assert_array_equal(image, v.array[2])
    assert np.shares_memory(image, v.array)


def test_axial_and_sagittal_reformats_have_true_aspect_and_orientation():
    v = coronal_volume()
    axial = plane_mapping(v.affine, v.shape, "axial")
    assert (axial.slices, axial.rows, axial.cols) == (40, 6, 30)  # rows run anterior -> posterior
    assert axial.aspect == pytest.approx(5.0 / 2.0)
    assert axial.letters == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    np.testing.assert_array_equal(extract(v.array, axial, 7), v.array[:, 7, :])
    sagittal = plane_mapping(v.affine, v.shape, "sagittal")
    assert (sagittal.slices, sagittal.rows, sagittal.cols) == (30, 40, 6)
    assert sagittal.letters == {"left": "A", "right": "P", "top": "S", "bottom": "I"}
    np.testing.assert_array_equal(extract(v.array, sagittal, 3), v.array[:, :, 3].T)


def test_flipped_axes_are_shown_in_radiological_convention():
    """An axial stack stored feet-first with rows posterior-to-anterior still shows R left, A top."""
    shape = (5, 8, 9)
    data = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    affine = np.diag([-1.0, -1.0, -2.0, 1.0])  # i -> right, j -> anterior, k -> inferior
    m = plane_mapping(affine, shape, "axial")
    assert m.flip_cols and m.flip_rows
    image = extract(data, m, 1)
    np.testing.assert_array_equal(image, data[1, ::-1, ::-1])
    # screen right is patient left (+x): moving one column right increases x.
    lps = [Volume(data, affine).index_to_lps(screen_to_index(m, 1, 3, c)) for c in (4, 5)]
    assert lps[1][0] > lps[0][0]


@pytest.mark.parametrize("plane", ["coronal", "axial", "sagittal"])
def test_screen_index_round_trip(plane):
    v = coronal_volume()
    m = plane_mapping(v.affine, v.shape, plane)
    ijk = np.array([7.25, 11.5, 3.0])
    s, r, c = index_to_screen(m, ijk)
    np.testing.assert_allclose(screen_to_index(m, s, r, c), ijk)
    image = extract(v.array, m, int(s))
    i, j, k = np.round(screen_to_index(m, int(s), round(r), round(c))).astype(int)
    assert image[round(r), round(c)] == v.array[k, j, i]


def test_windowing_maps_the_window_to_0_255():
    w = Windowing()
    image = np.array([[-100.0, 0.0, 50.0, 100.0, 500.0]], np.float32)
    out = w.apply(image, Window(level=50.0, width=100.0))
    assert out.tolist() == [[0, 0, 127, 255, 255]]
    out2 = w.apply(image, Window(level=100.0, width=200.0))
    assert out2.tolist() == [[0, 0, 63, 127, 255]]  # 0 .. 200


def test_presets_come_from_robust_percentiles():
    v = coronal_volume()
    named = presets(v.array, "STIR")
    assert list(named)[0] == "Auto (robust)" and any(n.startswith("STIR") for n in named)
    auto = named["Auto (robust)"]
    assert v.array.min() <= auto.low < auto.high <= v.array.max()


def test_marker_cut_through_slices():
    v = coronal_volume()
    m = plane_mapping(v.affine, v.shape, "coronal")
    centre = v.index_to_lps(np.array([10.0, 20.0, 3.0]))
    marker = Marker(tuple(centre), radii_mm=(6.0, 7.5, 9.0), label="L1")
    (cut,) = markers_on_slice([marker], m, v.affine, 3)
    assert (cut.row, cut.col) == pytest.approx((20.0, 10.0)) and cut.in_plane
    assert cut.col_radius == pytest.approx(6.0 / 2.0) and cut.row_radius == pytest.approx(9.0 / 3.0)
    (neighbour,) = markers_on_slice([marker], m, v.affine, 4)  # 5 mm away, radius 7.5 mm
    assert not neighbour.in_plane and neighbour.col_radius < cut.col_radius
    assert markers_on_slice([marker], m, v.affine, 5) == []  # 10 mm away: outside


def test_linked_views_follow_in_patient_coordinates_across_grids():
    session = ViewerSession()
    stir = coronal_volume()
    t1 = coronal_volume(shape=(9, 50, 24), spacing=(2.5, 2.4, 3.3), origin=(-29.0, -11.0, 101.0), role="T1")
    session.set_volume("left", stir)
    session.set_volume("right", t1)
    left, right = session.views["left"], session.views["right"]
    target = stir.index_to_lps(np.array([12.0, 17.0, 4.0]))
    session.set_point("left", target)
    assert left.slice_index == 4
    # The right view shows the slice whose centre is nearest to the target (in its own grid).
    k_right = t1.lps_to_index(target)[2]
    assert right.slice_index == round(k_right)
    assert abs(right.slice_index - k_right) <= 0.5
    row, col = right.lps_to_screen(target)
    np.testing.assert_allclose(right.screen_to_lps(row, col)[[0, 2]], target[[0, 2]], atol=1e-9)
    session.scroll("left", 1)
    assert left.slice_index == 5
    assert abs(right.volume.lps_to_index(left.point)[2] - right.slice_index) <= 0.5
    session.link_position = False
    session.scroll("left", -3)
    assert left.slice_index == 2 and abs(right.volume.lps_to_index(right.point)[2] - right.slice_index) <= 0.5
    assert right.point[1] != left.point[1]


def test_scroll_is_clamped_and_plane_switch_follows():
    session = ViewerSession()
    session.set_volume("left", coronal_volume())
    session.scroll("left", -100)
    assert session.views["left"].slice_index == 0
    session.scroll("left", 100)
    assert session.views["left"].slice_index == 5
    session.set_plane("left", "axial")
    assert session.views["left"].mapping.plane == "axial"


def test_regions_order_head_to_feet(sample_store):
    from cno_annotate.volumes import load_volume

    row = next(v for v in sample_store.volumes() if v.kind == "composed" and v.role == "T1")
    volume = load_volume(sample_store, row.volume_id)
    z = region_z(volume)
    values = [z[name] for name in REGION_FRACTIONS]
    assert values == sorted(values, reverse=True)
    assert 540 < z["Head"] < 640 and -900 < z["Feet"] < -780  # the phantom's head and soles


def test_series_choices_and_default_pair(sample_store):
    volumes = sample_store.volumes()
    choices = series_choices(volumes)
    labels = [label for _, label in choices]
    assert labels[:2] == ["STIR coronal whole body (4 stations)", "T1 coronal whole body (4 stations)"]
    assert "STIR coronal station 1/4" in labels and "T1 coronal station 4/4" in labels
    left, right = default_pair(volumes)
    by_id = {v.volume_id: v for v in volumes}
    assert by_id[left].role == "STIR" and by_id[left].kind == "composed"
    assert by_id[right].role == "T1" and by_id[right].kind == "composed"


def test_the_session_tells_views_what_changed_with_typed_events():
    from cno_annotate.display.session import ViewChange

    session = ViewerSession()
    events: list[tuple] = []
    session.changed.connect(lambda name, what: events.append((name, what)))
    stir = coronal_volume()
    session.set_volume("left", stir)
    session.set_point("left", stir.index_to_lps(np.array([1.0, 2.0, 3.0])))
    session.set_plane("left", "axial")
    assert all(isinstance(what, ViewChange) for _, what in events)
    kinds = [what for _, what in events]
    assert ViewChange.VOLUME in kinds and ViewChange.POINT in kinds and kinds[-1] is ViewChange.PLANE
