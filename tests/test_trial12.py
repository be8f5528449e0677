"""Defects found by the issue-12 new-user trial (a radiologist's whole read under Xvfb), each driven in the real window."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("PySide6", reason="the viewer needs the ui extra")

from PySide6.QtCore import QEvent, QPointF, Qt  # noqa: E402
from PySide6.QtGui import QMouseEvent  # noqa: E402

from cno_annotate.importer import import_paths  # noqa: E402
from cno_annotate.store import Store  # noqa: E402
from tests.followup_data import visits  # noqa: E402
from tests.gui_keys import key as _key  # noqa: E402

pytestmark = pytest.mark.gui
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def _drag(qtbot, view, start: QPointF, end: QPointF) -> None:
    qtbot.mousePress(view, Qt.LeftButton, pos=start.toPoint())
    view.mouseMoveEvent(QMouseEvent(QEvent.MouseMove, end, view.mapToGlobal(end), Qt.NoButton, Qt.LeftButton,
                                    Qt.NoModifier))
    qtbot.mouseRelease(view, Qt.LeftButton, pos=end.toPoint())


@pytest.fixture(scope="module")
def two_visits(tmp_path_factory):
    root = tmp_path_factory.mktemp("trial12-visits")
    return root, visits(root)


def _followup_window(qtbot, tmp_path, two_visits):
    from cno_annotate_ui.main_window import MainWindow

    root, uids = two_visits
    store = Store.open(tmp_path / "store")
    import_paths(store, [root])
    store.close()
    window = MainWindow(tmp_path / "store", reader="dr-a")
    window.resize(1280, 800)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    with qtbot.waitSignal(window.all_loaded, timeout=20000):
        window.select_study(uids["followup"])
    return window


def test_prior_view_shows_none_of_the_current_reads_rois_or_rulers(qtbot, tmp_path, two_visits):
    """An ROI (with its lesion:muscle text) and a ruler measured on the current visit are not drawn on the prior.

    They are the current study's measurements in its patient coordinates; drawn over the prior
    (repositioned) they measured other tissue under the current read's labels.
    """
    window = _followup_window(qtbot, tmp_path, two_visits)
    view = window.panels["left"].view
    view.setFocus()
    centre = QPointF(view.rect().center())
    _key(qtbot, Qt.Key_E)
    _drag(qtbot, view, centre, centre + QPointF(8, 8))
    _key(qtbot, Qt.Key_D)
    _drag(qtbot, view, centre + QPointF(-30, 20), centre + QPointF(10, 40))
    assert window.session.rois_on("left") and window.session.rulers_on("left")
    with qtbot.waitSignal(window.all_loaded, timeout=20000):
        _key(qtbot, Qt.Key_P, Qt.ControlModifier)
    assert window.session.views["left"].frame == "prior"
    assert window.session.rois_on("left") == [] and window.session.rulers_on("left") == []
    texts = window.panels["left"].view.overlay_texts()
    assert not [t for t in texts if t.startswith(("mean", "R1")) or t.endswith(" mm")], texts
    assert window.session.rois_on("right")  # still on the current visit


def _ellipse(qtbot, view, at: QPointF, radius: float = 20) -> None:
    view.setFocus()
    _key(qtbot, Qt.Key_E)
    _drag(qtbot, view, at, at + QPointF(radius, radius))


def test_lesion_muscle_ratio_set_beside_the_prior_is_measured_on_the_visit_being_read(qtbot, tmp_path, two_visits):
    """With the prior on the left, U on a muscle ROI of the current visit measures both ROIs on the current STIR."""
    from cno_annotate.display.measure import roi_stats

    window = _followup_window(qtbot, tmp_path, two_visits)
    view = window.panels["left"].view
    view.setFocus()
    centre = QPointF(view.rect().center())
    _key(qtbot, Qt.Key_M)
    qtbot.mouseClick(view, Qt.LeftButton, pos=centre.toPoint())
    qtbot.waitUntil(lambda: window.read_session is not None and len(window.read_session.read.lesions) == 1)
    (lesion_id,) = [lesion.lesion_id for lesion in window.read_session.read.lesions]
    _ellipse(qtbot, view, centre)
    _key(qtbot, Qt.Key_L)  # R1: the lesion's ROI
    current_stir = window.session.views["left"].volume
    with qtbot.waitSignal(window.all_loaded, timeout=20000):
        _key(qtbot, Qt.Key_P, Qt.ControlModifier)
    assert window.session.views["left"].frame == "prior"
    right = window.panels["right"].view
    assert window.session.views["right"].volume.volume_id == current_stir.volume_id
    _ellipse(qtbot, right, QPointF(right.rect().center()) + QPointF(0, 40))
    _key(qtbot, Qt.Key_U)  # R2: the muscle reference, drawn on the current visit
    read = window.read_session.read
    lesion_roi, muscle = (next(r for r in read.rois if r.roi_id == rid) for rid in ("R1", "R2"))
    expected = roi_stats(lesion_roi, current_stir).mean / roi_stats(muscle, current_stir).mean
    assert read.lesion(lesion_id).stir_muscle_ratio == pytest.approx(expected, abs=5e-5)  # stored to 4 decimals


def test_a_lesion_or_roi_cannot_be_placed_on_the_prior_study_beside_the_current(qtbot, tmp_path, two_visits):
    """A click in mark or ROI mode on the prior view adds nothing to the read of the current study and says why."""
    window = _followup_window(qtbot, tmp_path, two_visits)
    with qtbot.waitSignal(window.all_loaded, timeout=20000):
        _key(qtbot, Qt.Key_P, Qt.ControlModifier)
    prior = window.panels["left"].view
    assert window.session.views["left"].frame == "prior"
    prior.setFocus()
    _key(qtbot, Qt.Key_M)
    qtbot.mouseClick(prior, Qt.LeftButton, pos=prior.rect().center())
    qtbot.waitUntil(lambda: "prior" in window.statusBar().currentMessage())  # a single click waits out a double
    _ellipse(qtbot, prior, QPointF(prior.rect().center()))
    read = window.read_session.read if window.read_session is not None else None
    assert read is None or (read.lesions == [] and read.rois == [])
    message = window.statusBar().currentMessage()
    assert "prior" in message and "2.25." not in message, message


def _whole_text_shown(widget, item) -> bool:
    """Whether a list item's whole text fits in its rectangle, inside the list's viewport (nothing cut)."""
    from PySide6.QtCore import QRect

    rect = widget.visualItemRect(item)
    if rect.left() < 0 or rect.right() >= widget.viewport().width():
        return False
    needed = widget.fontMetrics().boundingRect(QRect(0, 0, rect.width() - 8, 10000), Qt.TextWordWrap, item.text())
    return needed.width() <= rect.width() and needed.height() <= rect.height()


@pytest.mark.parametrize("size", [(1280, 800), (1024, 768)])
def test_a_lesion_row_shows_its_whole_text_and_score_in_the_lesion_list(open_viewer, qtbot, size):
    """At 1280 x 800 a graded "Proximal humerus L · metaphysis" row ended at "— score": the score was cut off."""
    window = open_viewer(reader="dr-trial", size=size)
    state = window.session.views["left"]
    point = state.screen_to_lps(100.0, 90.0)
    session = window.read_session
    lesion_id = session.add_lesion(point, state.volume.volume_id, state.volume.lps_to_index(point),
                                   site_id="humerus.proximal", side="L", subsite="metaphysis",
                                   grades={"marrow_hyperintensity": 2, "signal_extension": 1})
    window.lesion_panel.refresh()
    qtbot.wait(50)
    lesions = window.lesion_panel.lesions
    (item,) = [lesions.item(n) for n in range(lesions.count())]
    assert item.text().startswith(lesion_id) and item.text().endswith("score 3"), item.text()
    assert not lesions.horizontalScrollBar().isVisible()  # no sideways scrolling to find the score
    assert _whole_text_shown(lesions, item), (item.text(), lesions.visualItemRect(item), lesions.viewport().width())
    window.loader.wait(5000)


def _body_at(volume, lps) -> bool:
    """Whether the voxel at an LPS point is body: above the air of its slice (darkest fifth + 6 SD)."""
    import numpy as np

    i, j, k = np.round(volume.lps_to_index(np.asarray(lps, dtype=float))).astype(int)
    image = np.asarray(volume.array[k], dtype=np.float64)
    air = image[image <= np.percentile(image, 20)]
    patch = image[max(0, j - 1):j + 2, max(0, i - 1):i + 2]
    return float(patch.mean()) > air.mean() + 6 * air.std()


def test_a_unit_clicked_on_a_slice_that_misses_its_bone_goes_to_a_slice_through_it(sample_store, sample_truth):
    """Trial: clicking the left proximal humerus on a posterior coronal slice put the crosshair on air.

    The coronal slice is kept where the body is at the unit's place on it; otherwise the views go to
    the slice through the middle of the body there (the arm), near the lesion's own slice.
    """
    import numpy as np

    from cno_annotate.annotation.taxonomy import load_taxonomy
    from cno_annotate.display.checklist import unit_target
    from cno_annotate.volumes import load_volume

    row = next(v for v in sample_store.volumes() if v.kind == "composed" and v.role == "STIR")
    volume, taxonomy = load_volume(sample_store, row.volume_id), load_taxonomy()
    corners = np.array([volume.index_to_lps(np.array([0.0, 0.0, k])) for k in (0, volume.shape[0] - 1)])
    posterior = float(corners[:, 1].max())  # the last coronal slice, behind the arms
    limbs = [lesion for lesion in sample_truth["lesions"] if lesion["bone"] in {"humerus", "radius", "ulna"}]
    assert limbs
    for lesion in limbs:
        unit = f"{lesion['bone']}.{lesion['segment']}:{lesion['side']}" if lesion["segment"] else lesion["bone"]
        start = np.array([0.0, posterior, 0.0])
        assert not _body_at(volume, [lesion["lps_mm"][0], posterior, lesion["lps_mm"][2]])  # the bone is not there
        target = unit_target(volume, taxonomy, unit, start)
        assert _body_at(volume, target), (unit, target)
        assert abs(target[1] - lesion["lps_mm"][1]) < 30, (unit, target, lesion["lps_mm"])
    trunk = [0.0, 12.0, float(np.mean(corners[:, 2]))]
    target = unit_target(volume, taxonomy, "ilium:L", np.array(trunk))
    assert _body_at(volume, target) and target[1] == pytest.approx(12.0)  # body there: the slice is kept


def _body_under(view, box) -> int:
    """How many pixels under a widget rectangle show tissue: above a quarter of the window from black to white."""
    import numpy as np

    window = view.state.window
    body = np.asarray(view.state.image()) > window.level - window.width / 2 + 0.25 * window.width
    count = 0
    for y in np.arange(box.top(), box.bottom(), 2.0):
        for x in np.arange(box.left(), box.right(), 2.0):
            row, col = view.widget_to_image(QPointF(x, y))
            r, c = int(round(row)), int(round(col))
            if 0 <= r < body.shape[0] and 0 <= c < body.shape[1] and body[r, c]:
                count += 1
    return count


@pytest.fixture(scope="module")
def gapped_study(tmp_path_factory):
    """A 4-station sample (matrix 64) with one slice file of one STIR station deleted."""
    from cno_annotate.sample import StudyPlan, generate_study

    out = tmp_path_factory.mktemp("trial12-gap") / "study"
    truth = generate_study(out, StudyPlan(stations=4, slices=8, matrix=64, seed=907))
    stir2 = next(s["series_uid"] for s in truth["series"] if s["role"] == "STIR" and s["station"] == 2)
    import pydicom

    files = [p for p in sorted(out.rglob("IM*")) if pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID == stir2]
    files[4].unlink()
    return out


@pytest.mark.parametrize("size", [(1280, 800), (1920, 1080)])
def test_the_missing_slices_badge_does_not_cover_the_body(qtbot, tmp_path, gapped_study, size):
    """Trial: in the 1x2 layout the badge sat over both ankles and feet (a common CNO site) on every slice."""
    from cno_annotate_ui.main_window import MainWindow

    store = Store.open(tmp_path / "store")
    import_paths(store, [gapped_study])
    study = store.studies()[0].study_uid
    store.close()
    window = MainWindow(tmp_path / "store", reader="dr-a")
    window.resize(*size)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    with qtbot.waitSignal(window.all_loaded, timeout=20000):
        window.select_study(study)
    view = window.panels["left"].view
    assert view.badge_text()
    for _ in range(3):
        layout = view.overlay_layout()
        assert _body_under(view, layout["badge"]) == 0, (view.state.slice_index, layout["badge"])
        others = [key for key in layout if key != "badge" and layout[key].intersects(layout["badge"])]
        assert not others and view.rect().contains(layout["badge"].toRect())
        _key(qtbot, Qt.Key_Down)
    window.loader.wait(5000)


@pytest.mark.parametrize("size", [(1280, 800), (1024, 768)])
def test_prior_views_series_selector_shows_its_short_name_whole_beside_the_study_tag(qtbot, tmp_path, two_visits,
                                                                                      size):
    """Trial at 1280 x 800 and 2x: "Prior: <date> <description>" left the prior's selector "STIR cor WB ×" (cut)."""
    window = _followup_window(qtbot, tmp_path, two_visits)
    window.resize(*size)
    with qtbot.waitSignal(window.all_loaded, timeout=20000):
        _key(qtbot, Qt.Key_P, Qt.ControlModifier)
    for layout in (Qt.Key_2, Qt.Key_4):
        _key(qtbot, layout, Qt.ControlModifier)
        qtbot.wait(50)
        for name, panel in window.panels.items():
            if not panel.isVisible():
                continue
            combo = panel.series
            shown = combo.displayed_text()
            assert combo.fontMetrics().horizontalAdvance(shown) <= combo.text_room(), (name, shown, combo.text_room())
            tag = panel.tag
            if tag.isVisible():
                assert tag.toolTip().startswith(("Prior", "Current"))
                assert tag.displayed_text().startswith(("Prior: 2019-01-04", "Current (being re")), tag.displayed_text()
                assert tag.geometry().right() < combo.geometry().left()  # side by side, not over each other


def test_no_site_is_proposed_on_a_series_that_does_not_show_the_whole_body(open_viewer, qtbot):
    """Trial: on a knee station (legs running off its top and bottom) a click proposed "Phalanges of the hand".

    The schematic is fitted to the vertex and soles; on a part of the body there are none, so no site
    is proposed (the site box stays empty for typing) and the status bar says why. The composed
    whole-body volume still proposes.
    """
    import numpy as np

    from cno_annotate.display.marking import click_placement

    window = open_viewer(reader="dr-trial", size=(1280, 800))
    panel, state = window.panels["left"], window.session.views["left"]
    taxonomy = window.read_session.taxonomy
    composed = state.volume
    knee = state.screen_to_lps(state.mapping.rows * 0.7, state.mapping.cols * 0.4)
    assert click_placement(composed, taxonomy, knee).site_id is not None
    rows = [v for v in window.store.volumes(window.read_session.read.study_uid) if v.kind == "stack" and v.role == "STIR"]
    station = next(r for r in rows if (np.asarray(r.affine)[2, 3] > knee[2] and  # the station holding the knee
                                       np.asarray(r.affine)[2, 3] - 128 * 3.3 < knee[2]))
    with qtbot.waitSignal(window.all_loaded, timeout=20000):
        window.show_volume("left", station.volume_id)
    assert state.volume.volume_id == station.volume_id
    view = panel.view
    view.setFocus()
    state.set_point(knee) if hasattr(state, "set_point") else window.session.set_point("left", knee)
    _key(qtbot, Qt.Key_M)
    spot = view.image_to_widget(*state.lps_to_screen(knee))
    qtbot.mouseClick(view, Qt.LeftButton, pos=spot.toPoint())
    qtbot.waitUntil(lambda: len(window.read_session.read.lesions) == 1)
    assert click_placement(state.volume, taxonomy, knee).site_id is None
    picker = window.lesion_panel.site_picker
    assert picker.search.text() == "" and not picker.results.isVisible()
    assert "whole body" in window.statusBar().currentMessage()
    window.loader.wait(5000)


def test_a_click_just_beside_a_thin_bone_of_the_schematic_goes_to_that_bone(open_viewer, qtbot):
    """Trial at 1280 x 800: the humerus is drawn about 5 px wide; a click 2 px beside it did nothing at all."""
    import numpy as np

    from cno_annotate.display.checklist import unit_target

    window = open_viewer(reader="dr-trial", size=(1280, 800))
    checklist, state = window.checklist, window.session.views["left"]
    inside = checklist.unit_point("humerus.proximal:L")
    beside = QPointF(inside)
    while checklist.drawn_at(beside) == "humerus.proximal:L":
        beside += QPointF(1, 0)
    beside += QPointF(2, 0)  # 2 px outside the outline, towards the open side of the arm
    assert checklist.drawn_at(beside) is None
    start = state.point.copy()
    qtbot.mouseClick(checklist, Qt.LeftButton, pos=beside.toPoint())
    expected = unit_target(state.volume, window.read_session.taxonomy, "humerus.proximal:L", start)
    np.testing.assert_allclose(state.point, expected, atol=1e-6)
    far = QPointF(checklist.width() - 3, inside.y())  # far from every bone: still nothing
    assert checklist.unit_at(far) is None
    window.loader.wait(5000)


def test_the_two_rows_of_the_2x2_layout_keep_their_columns_lined_up(qtbot, tmp_path, two_visits):
    """Trial at 2x with the prior beside: the upper row split at 395/640 px, the lower at 470/700: columns askew.

    Both rows split at the same place when 2x2 opens, and a splitter moved in one row moves the other.
    """
    window = _followup_window(qtbot, tmp_path, two_visits)
    with qtbot.waitSignal(window.all_loaded, timeout=20000):
        _key(qtbot, Qt.Key_P, Qt.ControlModifier)
    _key(qtbot, Qt.Key_4, Qt.ControlModifier)
    qtbot.wait(50)
    rows = window.centralWidget()
    upper, lower = rows.widget(0), rows.widget(1)

    def columns(row):
        return [row.widget(n).geometry().width() for n in range(row.count())]

    assert abs(columns(upper)[0] - columns(lower)[0]) <= 1, (columns(upper), columns(lower))
    sizes = upper.sizes()
    upper.moveSplitter(sizes[0] - 60, 1)
    qtbot.wait(20)
    assert abs(columns(upper)[0] - columns(lower)[0]) <= 1, (columns(upper), columns(lower))
