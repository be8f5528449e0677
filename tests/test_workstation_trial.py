"""Defects a radiologist trial of the reading workstation left (issue 12), driven through the real window.

Every test starts from where the keyboard focus lands at open, drives keys, wheel and mouse, and saves
the screenshots it judges by (under pytest's tmp_path) so that they can be looked at.
"""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6", reason="the workstation needs the ui extra")

from PySide6.QtCore import QPointF, QRectF, Qt  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from tests.gui_keys import key as _key  # noqa: E402

pytestmark = pytest.mark.gui


@pytest.fixture
def window(open_viewer):
    w = open_viewer(reader="dr-t", size=(1280, 800))
    yield w
    w.loader.wait(5000)


def test_labels_of_lesions_off_the_view_sit_at_the_nearest_edge_apart_and_a_click_brings_the_lesion_in(
        window, qtbot, tmp_path):
    """Defect 2: zoomed in, the four lesions above, below, right and left of the view are named at the top, bottom,
    right and left edges (they were pinned along the bottom), clear of each other and of the corner texts;
    a click on one selects its lesion and brings it into view."""
    view, state, session = window.panels["left"].view, window.session.views["left"], window.read_session
    row, col = state.lps_to_screen(state.point)
    rows, cols = state.image().shape
    places = {"top": (row - 150, col), "bottom": (row + 150, col), "left": (row, 4.0), "right": (row, cols - 5.0)}
    ids = {}
    for edge, (r, c) in places.items():
        lps = state.screen_to_lps(r, c)
        ids[edge] = session.add_lesion(lps, state.volume.volume_id, state.volume.lps_to_index(lps))
    window.lesion_panel.refresh()
    window.focus_image()
    for _ in range(9):
        _key(qtbot, Qt.Key_Plus)
    qtbot.wait(20)
    view.grab().save(str(tmp_path / "off-view-labels.png"))
    labels = {label.lines[0].split()[1]: label for label in view.label_layout() if label.lines[0][0] in "↑↓←→"}
    assert set(labels) == set(ids.values()), [label.lines for label in view.label_layout()]
    arrows = {"top": "↑", "bottom": "↓", "left": "←", "right": "→"}
    w, h = view.width(), view.height()
    for edge, lesion_id in ids.items():
        box = labels[lesion_id].box
        assert labels[lesion_id].lines[0].startswith(arrows[edge])
        assert {"top": box.top() < h / 4, "bottom": box.bottom() > 3 * h / 4,
                "left": box.left() < w / 4, "right": box.right() > 3 * w / 4}[edge], (edge, box)
    boxes = [label.box for label in labels.values()] + list(view.overlay_layout().values())
    overlaps = [(a, b) for n, a in enumerate(boxes) for b in boxes[n + 1:] if a.intersects(b)]
    assert overlaps == [] and all(QRectF(view.rect()).contains(label.box) for label in labels.values())
    target = labels[ids["bottom"]].box.center()
    qtbot.mouseClick(view, Qt.LeftButton, pos=target.toPoint())
    assert window.lesion_panel.selected == ids["bottom"]
    lesion = session.read.lesion(ids["bottom"])
    where = view.image_to_widget(*state.lps_to_screen(lesion.position))
    assert QRectF(view.rect()).contains(where)
    view.grab().save(str(tmp_path / "brought-into-view.png"))


@pytest.mark.parametrize("plane_key", [Qt.Key_C, Qt.Key_S])
def test_a_click_on_a_vertebral_body_names_its_level_in_coronal_and_sagittal_stir_and_t1(window, qtbot, plane_key):
    """Defect 1 through the window: M, a click on the generator's T8, L3 or C5 body on the STIR (left) or T1
    (right) view, coronal or sagittal: the site box offers that level (it offered the level below)."""
    from cno_annotate.phantom import vertebra_centres

    centres = vertebra_centres()
    for name in ("left", "right"):
        view, state = window.panels[name].view, window.session.views[name]
        qtbot.mouseClick(view, Qt.LeftButton, pos=view.rect().center())  # this view is the active one
        _key(qtbot, plane_key)
        for level in ("T8", "L3", "C5"):
            centre = centres[level][0]
            window.session.set_point(name, centre)
            placed = len(window.read_session.read.lesions)
            _key(qtbot, Qt.Key_M)
            row, col = state.lps_to_screen(centre)
            qtbot.mouseClick(view, Qt.LeftButton, pos=view.image_to_widget(row, col).toPoint())
            picker = window.lesion_panel.site_picker
            qtbot.waitUntil(lambda: len(window.read_session.read.lesions) == placed + 1, timeout=3000)  # (after the
            # double-click interval)
            assert picker.search.text() == window.read_session.taxonomy.site(f"spine.{level}").label, (name, level)
            _key(qtbot, Qt.Key_Escape)


def test_the_panel_and_the_status_count_one_unit_and_one_lesion_in_the_singular(window, qtbot, monkeypatch):
    """Defect 3: one lesion in one unit reads "1 unit with lesions", the last unit marked "1 bone unit"."""
    session, state = window.read_session, window.session.views["left"]
    lesion = session.add_lesion((-77.0, 0.0, -420.0), state.volume.volume_id, (40, 337, 6))
    session.update_lesion(lesion, site_id="femur.distal", side="R")
    window.lesion_panel.refresh()
    text = window.lesion_panel.totals.text()
    assert "1 unit with lesions" in text and "1 units" not in text, text
    for unit in window.read_session.taxonomy.unit_ids()[1:]:
        if unit != "femur.distal:R":
            session.mark_unit(unit, "no_lesion")
    window.lesion_panel.refresh()
    questions = []
    monkeypatch.setattr(window, "confirm", lambda question, detail: questions.append(question) or True)
    qtbot.mouseClick(window.mark_rest_button, Qt.LeftButton)
    assert questions == ["Mark the 1 bone unit not yet reviewed as 'no lesion'?"]
    assert window.statusBar().currentMessage().startswith("1 unit marked no lesion"), window.statusBar().currentMessage()


def _luminance(colour) -> float:
    """WCAG relative luminance of a QColor."""
    def channel(value: int) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    return 0.2126 * channel(colour.red()) + 0.7152 * channel(colour.green()) + 0.0722 * channel(colour.blue())


def _ratio(a: float, b: float) -> float:
    return (max(a, b) + 0.05) / (min(a, b) + 0.05)


def _surface_and_text(widget) -> tuple[float, float]:
    """(luminance of a widget's surface, contrast of its text on it) from its pixels as painted.

    The surface is the commonest colour inside the widget (its frame left out), the text the pixel that stands
    out most from it (a glyph's core).
    """
    from collections import Counter

    image = (widget.grab() if hasattr(widget, "grab") else widget).toImage()  # a widget, or a pixmap of one
    pixels = [image.pixelColor(x, y) for x in range(3, image.width() - 3) for y in range(3, image.height() - 3)]
    surface = Counter(p.rgb() for p in pixels).most_common(1)[0][0]
    from PySide6.QtGui import QColor

    lum = _luminance(QColor.fromRgb(surface))
    return lum, max(_ratio(lum, _luminance(p)) for p in pixels)


def _controls(window) -> list:
    """The window's buttons (grade buttons, toolbar buttons), combos, text boxes, labels and spin boxes that
    show a text."""
    from PySide6.QtWidgets import QAbstractButton, QAbstractSpinBox, QComboBox, QLabel, QLineEdit

    found = []
    for kind in (QAbstractButton, QComboBox, QLineEdit, QLabel, QAbstractSpinBox):
        for widget in window.findChildren(kind):
            text = widget.currentText() if isinstance(widget, QComboBox) else widget.text()
            if widget.isVisible() and not widget.visibleRegion().isEmpty() and text and widget.width() > 12:
                found.append(widget)
    return found


@pytest.mark.parametrize("first", ["dark", "light"])
def test_every_control_state_reads_in_both_themes(open_viewer, qtbot, tmp_path, monkeypatch, first):
    """Defect 4: after switching theme (and when started in it), every control of the window - enabled,
    disabled, checked, checked and disabled (no lesion chosen, a lesion graded, the read submitted) - has the
    theme's surface (light in the light theme, dark in the dark one; checked grades their blue) and text at
    4.5:1 on it. Disabled grade buttons stayed dark in the light theme."""
    from PySide6.QtWidgets import QMessageBox, QToolButton

    monkeypatch.setenv("CNO_ANNOTATE_THEME", first)
    window = open_viewer(reader="dr-t", size=(1280, 800))
    state, session = window.session.views["left"], window.read_session
    lesion = session.add_lesion((-77.0, 0.0, -420.0), state.volume.volume_id, (40, 337, 6))
    session.update_lesion(lesion, site_id="femur.distal", side="R")
    session.set_grade(lesion, "marrow_hyperintensity", 2)
    problems = []
    for step in ("no lesion chosen", "a lesion graded", "submitted"):
        if step == "a lesion graded":
            window.lesion_panel.select(lesion)
        if step == "submitted":
            monkeypatch.setattr(QMessageBox, "exec", lambda box: QMessageBox.Yes)  # the submit question
            qtbot.mouseClick(window.lesion_panel.submit_button, Qt.LeftButton)
            window.lesion_panel.select(lesion)
        for theme in ("light", "dark") if first == "dark" else ("dark", "light"):
            if window.light_action.isChecked() != (theme == "light"):
                window.light_action.trigger()
            qtbot.wait(10)
            window.grab().save(str(tmp_path / f"{first}-then-{theme}-{step.replace(' ', '-')}.png"))
            for widget in _controls(window):
                surface, contrast = _surface_and_text(widget)
                checked = isinstance(widget, QToolButton) and widget.isChecked()
                name = f"{step}, {theme}: {type(widget).__name__} {widget.text() if hasattr(widget, 'text') else ''}" \
                       f"{' checked' if checked else ''}{'' if widget.isEnabled() else ' disabled'}"
                if contrast < 4.5:
                    problems.append(f"{name}: text {contrast:.1f}:1")
                if not checked and (surface < 0.4 if theme == "light" else surface > 0.1):
                    problems.append(f"{name}: surface luminance {surface:.2f} in the {theme} theme")
    assert problems == [], "\n".join(problems)
    window.loader.wait(5000)


def _cut_selectors(window) -> list[str]:
    """The visible combo boxes of the views' headers and the toolbars whose current text does not fit them."""
    from PySide6.QtWidgets import QComboBox, QStyle, QStyleOptionComboBox

    cut = []
    for combo in window.findChildren(QComboBox):
        if not combo.isVisible() or combo.visibleRegion().isEmpty() or not combo.currentText():
            continue
        option = QStyleOptionComboBox()
        combo.initStyleOption(option)
        field = combo.style().subControlRect(QStyle.CC_ComboBox, option, QStyle.SC_ComboBoxEditField, combo)
        shown = combo.displayed_text() if hasattr(combo, "displayed_text") else combo.currentText()
        needed = combo.fontMetrics().horizontalAdvance(shown)
        if field.width() < needed:
            cut.append(f"{shown!r}: {field.width()} of {needed} px")
    return cut


def _abbreviated(window) -> list[str]:
    """The views' series selectors that show a short form instead of the whole name."""
    return [p.series.displayed_text() for p in window.panels.values()
            if p.isVisible() and p.series.displayed_text() != p.series.currentText()]


@pytest.mark.parametrize("size", [(1024, 768), (1280, 800)])
def test_series_selectors_show_their_whole_name_at_small_window_sizes(open_viewer, qtbot, tmp_path, size):
    """Defect 5 (1x): at 1024x768 and 1280x800 every selector shows its whole text ("STIR coronal whole body
    (4 stations)" was cut at 1024 px), and the images keep most of the window."""
    window = open_viewer(reader="dr-t", size=size)
    qtbot.wait(20)
    window.grab().save(str(tmp_path / f"selectors-{size[0]}.png"))
    assert window.width() <= size[0] and window.height() <= size[1]
    assert _cut_selectors(window) == []
    if size[0] >= 1280:  # room for the whole names: no abbreviation
        assert _abbreviated(window) == []
    view = window.panels["left"].view
    assert view.height() > 0.75 * size[1]
    window.loader.wait(5000)


def _window_at_2x(tmp_path, sample_store, size: tuple[int, int], body: str) -> dict:
    """Run ``body`` in a fresh process at QT_SCALE_FACTOR=2 (offscreen), with ``w``, a main window of size ``size``
    showing the sample study, loaded; ``body`` prints one JSON line, returned as a dict."""
    import json
    import os
    import shutil
    import subprocess
    import sys
    import textwrap

    from tests.conftest import REPO

    store_dir = tmp_path / "store"
    shutil.copytree(sample_store.root, store_dir)
    script = tmp_path / "at-2x.py"
    script.write_text(f"""
import json, sys
sys.path.insert(0, {str(REPO)!r})
from PySide6.QtWidgets import QApplication
app = QApplication([])
from cno_annotate_ui.main_window import MainWindow
w = MainWindow({str(store_dir)!r}, reader="dr-h")
w.resize({size[0]}, {size[1]})
w.show()
done = []
w.all_loaded.connect(lambda: done.append(1))
w.select_study(w.store.studies()[0].study_uid)
while not done:
    app.processEvents()
""" + textwrap.dedent(body) + "\nw.close()\n")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "QT_SCALE_FACTOR": "2"}
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120,
                            cwd=REPO)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_series_selectors_show_their_whole_name_at_2x_scaling(tmp_path, sample_store):
    """Defect 5 (2x): QT_SCALE_FACTOR=2, a 1280 x 800 window: every selector shows its whole text."""
    figures = _window_at_2x(tmp_path, sample_store, (1280, 800), f"""
        from tests.test_workstation_trial import _abbreviated, _cut_selectors
        app.processEvents()
        w.grab().save({str(tmp_path / "selectors-2x.png")!r})
        print(json.dumps({{"ratio": w.devicePixelRatioF(), "cut": _cut_selectors(w), "short": _abbreviated(w)}}))
        """)
    assert figures == {"ratio": 2.0, "cut": [], "short": []}


def _answer_when_shown(qtbot, *keys, text: str = "") -> list[str]:
    """Answer the next modal dialog or popup, once it shows, with ``text`` typed and then ``keys``; returns
    [its class name] once answered."""
    from PySide6.QtCore import QTimer

    answered: list[str] = []

    def answer() -> None:
        dialog = QApplication.activeModalWidget() or QApplication.activePopupWidget()
        if dialog is None or not dialog.isVisible():
            QTimer.singleShot(10, answer)
            return
        answered.append(type(dialog).__name__)
        if text:
            qtbot.keyClicks(dialog.focusWidget() or dialog, text)
        for key in keys:
            qtbot.keyClick(dialog.focusWidget() or dialog, key)
        # still open after 3 s: closed, and said (the timer goes with the dialog once that is deleted)
        QTimer.singleShot(3000, dialog, lambda: dialog.isVisible() and (answered.append("left open"), dialog.close()))

    QTimer.singleShot(0, answer)
    return answered


def _arrows_scroll_the_image(window, qtbot) -> bool:
    """Whether Down, pressed wherever the focus is, moves the active image view one slice (and Up back)."""
    state = window.session.views[window.active_name]
    before = state.slice_index
    if QApplication.focusWidget() is None:  # no widget has the keyboard: keys go nowhere
        return False
    _key(qtbot, Qt.Key_Down)
    moved = state.slice_index == before + 1
    _key(qtbot, Qt.Key_Up)
    return moved and state.slice_index == before


def test_keys_act_on_the_image_after_every_dialog(window, qtbot):
    """Defect 6: after F1 help, the region list, the mark-the-rest and submit confirmations (declined and
    accepted) and the new-version question, each opened by its own gesture and closed with the keyboard, the
    arrows move the image again (they went to the button or list that opened the dialog)."""
    session, state = window.read_session, window.session.views["left"]
    lesion = session.add_lesion((-77.0, 0.0, -420.0), state.volume.volume_id, (40, 337, 6))
    session.update_lesion(lesion, site_id="femur.distal", side="R")
    window.lesion_panel.refresh()
    assert _arrows_scroll_the_image(window, qtbot)
    failed = []

    def check(what: str, answered: list[str]) -> None:
        qtbot.waitUntil(lambda: bool(answered), timeout=5000)
        qtbot.wait(20)
        if not _arrows_scroll_the_image(window, qtbot):
            failed.append(f"{what} ({answered}): focus on {type(QApplication.focusWidget()).__name__}")

    answered = _answer_when_shown(qtbot, Qt.Key_Escape)
    _key(qtbot, Qt.Key_F1)
    check("F1 help closed with Esc", answered)
    answered = _answer_when_shown(qtbot, Qt.Key_Down, Qt.Key_Down, Qt.Key_Return)
    qtbot.mouseClick(window.region, Qt.LeftButton)
    check("region chosen from the list", answered)
    answered = _answer_when_shown(qtbot, Qt.Key_Escape)
    qtbot.mouseClick(window.mark_rest_button, Qt.LeftButton)
    check("mark the rest declined", answered)
    answered = _answer_when_shown(qtbot, Qt.Key_Escape)
    qtbot.mouseClick(window.lesion_panel.submit_button, Qt.LeftButton)
    check("submit declined", answered)
    answered = _answer_when_shown(qtbot, Qt.Key_Return)
    qtbot.mouseClick(window.lesion_panel.submit_button, Qt.LeftButton)
    check("submit accepted", answered)
    assert str(window.read_session.read.status) == "submitted"
    answered = _answer_when_shown(qtbot, Qt.Key_Return, text="typo in a grade")
    qtbot.mouseClick(window.lesion_panel.version_button, Qt.LeftButton)
    check("new version given a reason", answered)
    assert failed == [], "\n".join(failed)


def test_undo_says_so_in_the_status_bar(window, qtbot, monkeypatch):
    """Found in the trial: after "Rest: no lesion" and Ctrl+Z the status still said "135 units marked no
    lesion" though none was; it says what Ctrl+Z and Ctrl+Y did."""
    monkeypatch.setattr(window, "confirm", lambda question, detail: True)
    qtbot.mouseClick(window.mark_rest_button, Qt.LeftButton)
    assert window.statusBar().currentMessage().startswith("136 units marked no lesion")
    _key(qtbot, Qt.Key_Z, Qt.ControlModifier)
    assert window.read_session.read.unit_marks == {}
    assert window.statusBar().currentMessage() == "Undone: mark 136 remaining units no lesion (Ctrl+Y redoes it)"
    _key(qtbot, Qt.Key_Y, Qt.ControlModifier)
    assert len(window.read_session.read.unit_marks) == 136
    assert window.statusBar().currentMessage() == "Redone: mark 136 remaining units no lesion (Ctrl+Z undoes it)"


def test_a_label_beside_its_marker_stays_off_the_crosshair_through_it(window, qtbot, tmp_path):
    """Found in the trial: the label beside a lesion at the crosshair sat on the horizontal line, which ran
    through its letters' feet and filled its spaces with dashes ("L1.Distal.femur.R")."""
    view, state, session = window.panels["left"].view, window.session.views["left"], window.read_session
    lesion = session.add_lesion(state.point, state.volume.volume_id, state.volume.lps_to_index(state.point))
    session.update_lesion(lesion, site_id="femur.distal", side="R")
    window.lesion_panel.refresh()
    qtbot.wait(20)
    view.grab().save(str(tmp_path / "label-and-crosshair.png"))
    line = view.image_to_widget(*state.lps_to_screen(state.point)).y()
    (label,) = [label for label in view.label_layout() if label.lines[0].startswith(lesion)]
    assert label.box.bottom() < line - 1 or label.box.top() > line + 1, (label.box, line)


def test_undo_and_redo_are_greyed_until_there_is_something_to_undo(qtbot, tmp_path, sample_store):
    """Found in the trial: in reader mode before a case is open, Undo and Redo looked enabled (and did nothing)."""
    import shutil

    from cno_annotate_ui.main_window import MainWindow

    from cno_annotate import reading_study as rs
    from cno_annotate.store import Store

    shutil.copytree(sample_store.root, tmp_path / "store")
    store = Store.open(tmp_path / "store")
    rs.create(store, "one", seed=1)
    rs.add_cases(store, "one", [s.study_uid for s in store.studies()])
    rs.add_readers(store, "one", ["dr-1"])
    rs.assign(store, "one")
    store.close()
    window = MainWindow(tmp_path / "store", reader="dr-1", reading_study="one")
    qtbot.addWidget(window)
    window.show()
    assert not window.undo_action.isEnabled() and not window.redo_action.isEnabled()
    with qtbot.waitSignal(window.all_loaded, timeout=20000):
        window.open_next_case()
    assert not window.undo_action.isEnabled() and not window.redo_action.isEnabled()
    window.read_session.mark_unit("skull", "no_lesion")
    assert window.undo_action.isEnabled() and not window.redo_action.isEnabled()
    window.loader.wait(5000)


def test_a_preset_selector_off_every_preset_shows_custom(window, qtbot, tmp_path):
    """The preset selector (which shows short names when narrow) still paints its placeholder "Custom" when a
    right drag leaves every preset (with the short-name painting it was left blank)."""
    from PySide6.QtCore import QEvent, QPoint
    from PySide6.QtGui import QMouseEvent

    panel = window.panels["left"]
    view = panel.view
    centre = QPoint(view.width() // 2, view.height() // 2)
    qtbot.mousePress(view, Qt.RightButton, pos=centre)
    end = QPointF(centre + QPoint(40, -25))
    view.mouseMoveEvent(QMouseEvent(QEvent.MouseMove, end, view.mapToGlobal(end), Qt.NoButton, Qt.RightButton,
                                    Qt.NoModifier))
    qtbot.mouseRelease(view, Qt.RightButton, pos=end.toPoint())
    assert panel.preset.currentIndex() == -1
    panel.preset.grab().save(str(tmp_path / "preset-custom.png"))
    assert panel.preset.displayed_text() == "Custom"
    left_part = panel.preset.grab(panel.preset.rect().adjusted(0, 0, -30, 0))  # the text, not the arrow
    surface, contrast = _surface_and_text(left_part)
    assert contrast > 2.0, contrast  # some text is painted


def test_status_bar_text_is_elided_in_the_middle_with_the_whole_text_in_its_tooltip_at_2x(tmp_path, sample_store):
    """Trials (2x): QT_SCALE_FACTOR=2, 1024 x 768, the 2x2 layout: the position line and a long message fit the
    status bar (elided in the middle), and the whole text is in the tooltip."""
    seen = _window_at_2x(tmp_path, sample_store, (1024, 768), f"""
        w.set_layout("2x2")
        label = w.position_label
        while "sagittal" not in label.text():  # the lower views' series and slices join the line once shown
            app.processEvents()
        shown = label.displayed_text()
        out = {{"ratio": w.devicePixelRatioF(), "width": w.width(), "full": label.text(), "tooltip": label.toolTip(),
                "shown": shown, "fits": label.fontMetrics().horizontalAdvance(shown) <= label.contentsRect().width()}}
        w.grab().save({str(tmp_path / "status-2x.png")!r})
        message = "Fetching " + "CNO-0001 " * 30 + "from the study PACS: the end"
        w.statusBar().showMessage(message)
        app.processEvents()
        bar = w.statusBar()
        shown = bar.displayed_message()
        out.update(message_shown=shown, message_tooltip=bar.toolTip(), message=message,
                   message_fits=bar.fontMetrics().horizontalAdvance(shown) <= bar.message_rect().width())
        w.grab().save({str(tmp_path / "status-message-2x.png")!r})
        print(json.dumps(out))
        """)
    assert (seen["ratio"], seen["width"]) == (2.0, 1024)
    assert seen["full"].startswith("LPS ") and seen["tooltip"] == seen["full"]
    assert seen["fits"] and "…" in seen["shown"], seen  # cut in the middle: both ends stay
    assert seen["shown"].startswith(seen["full"][:8]) and seen["shown"].endswith(seen["full"][-8:])
    assert seen["message_fits"] and seen["message_tooltip"] == seen["message"], seen
    assert seen["message_shown"].startswith("Fetching") and seen["message_shown"].endswith("the end")


def _loading_bar_report(w) -> dict:
    """Load the composed T1 again into the right view, held at "loading" (the loader is stopped), and say what the
    status bar's progress bar paints: its text, whether it fits the bar, and its tooltip."""
    from PySide6.QtWidgets import QApplication

    w.loader.load = lambda *_args: None  # the load never ends: the bar stays up to be looked at
    t1 = next(v for v in w.store.volumes(w.store.studies()[0].study_uid) if v.role == "T1" and v.kind == "composed")
    w.show_volume("right", t1.volume_id)
    w._on_progress("right", 0.45)
    QApplication.processEvents()
    bar = w.progress
    label = w.session.views["right"].label
    shown = bar.text()
    room = bar.contentsRect().width() - 8  # the style's padding either side
    return {"visible": bar.isVisible(), "shown": shown, "whole": f"Loading {label} 45%", "tooltip": bar.toolTip(),
            "fits": bar.fontMetrics().horizontalAdvance(shown) <= room,
            "bar": bar.geometry().getRect(), "status": w.statusBar().geometry().getRect()}


@pytest.mark.parametrize("size", [(1280, 800), (1024, 768)])
def test_the_loading_progress_reads_whole_in_the_status_bar(window, qtbot, tmp_path, size):
    """The progress bar's text ("Loading T1 coronal whole body (4 stations) 45%") was cut to "Loading T1 coronal
    whole…" in a 180-pixel bar at 1280 x 800: the bar is as wide as its text (1280 x 800), or the series' name is
    cut in the middle, whole in the tooltip, when the window is too narrow for it."""
    window.resize(*size)
    report = _loading_bar_report(window)
    window.grab().save(str(tmp_path / f"loading-{size[0]}.png"))
    assert report["visible"] and report["fits"], report
    if size[0] >= 1280:
        assert report["shown"] == report["whole"], report
    assert report["shown"].startswith("Loading T1") and report["shown"].endswith("45%"), report
    assert report["tooltip"] == report["whole"], report


def test_the_loading_progress_reads_whole_at_2x_scaling(tmp_path, sample_store):
    """The same at QT_SCALE_FACTOR=2 in a 1280 x 800 window: the whole text, fitting its bar."""
    report = _window_at_2x(tmp_path, sample_store, (1280, 800), f"""
        from tests.test_workstation_trial import _loading_bar_report
        out = _loading_bar_report(w)
        w.grab().save({str(tmp_path / "loading-2x.png")!r})
        print(json.dumps(out))
        """)
    assert report["visible"] and report["fits"] and report["shown"] == report["whole"], report
