"""What a new-user trial of the reading workstation found left (issue 12), in the real window.

Each test drives the window with keys, the wheel and the mouse from where the focus lands at open
and looks at what is painted (grabbed pixels, the widgets' visible regions).
"""

from __future__ import annotations

import math

import pytest

pytest.importorskip("PySide6", reason="the viewer needs the ui extra")

from PySide6.QtCore import QEvent, QPoint, QPointF, Qt, QTimer  # noqa: E402
from PySide6.QtGui import QMouseEvent  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from tests.gui_keys import focused as _focused  # noqa: E402
from tests.gui_keys import key as _key  # noqa: E402

pytestmark = pytest.mark.gui


def _place_lesion_by_keyboard(window, qtbot, row: float, col: float, site: str, side: str) -> str:
    """M, a click on the image, the site typed, Enter, the side: the keyboard path of a lesion."""
    v = window.panels["left"].view
    _key(qtbot, Qt.Key_M)
    qtbot.mouseClick(v, Qt.LeftButton, pos=v.image_to_widget(row, col).toPoint())
    qtbot.waitUntil(lambda: len(window.read_session.read.lesions) > 0 and _focused() is not v)
    qtbot.keyClicks(_focused(), site)
    _key(qtbot, Qt.Key_Return)
    qtbot.keyClicks(_focused(), side)
    return window.read_session.read.lesions[-1].lesion_id


def _fully_shown(widget) -> bool:
    """Whether every pixel of a widget is on screen (nothing covers or clips it) and its text fits its height."""
    region = widget.visibleRegion().boundingRect()
    fits = not widget.wordWrap() or widget.height() >= widget.heightForWidth(widget.width())
    return region == widget.rect() and fits


@pytest.mark.parametrize("size", [(1280, 800), (1024, 768)])
def test_unit_extent_row_says_yours_only_once_graded_and_is_never_clipped(open_viewer, qtbot, tmp_path, size):
    """Defect 2: a lesion graded NA proposes NA for the unit: '(proposed)', not '(yours)'; the label shows whole."""
    window = open_viewer(reader="dr-u", size=size)
    _place_lesion_by_keyboard(window, qtbot, 300.0, 40.0, "distal fem", "R")
    _key(qtbot, Qt.Key_2)  # bone marrow hyperintensity 2, then the extent
    _key(qtbot, Qt.Key_N)  # extent of signal abnormality: not assessable on this lesion
    qtbot.wait(50)
    panel = window.lesion_panel
    ((label, selector),) = panel._unit_grade_widgets.values()
    panel.grab().save(str(tmp_path / f"unit-row-proposed-{size[0]}.png"))
    assert window.read_session.read.unit_grades == {}
    assert "(yours)" not in label.text() and label.text().endswith("(proposed)")
    assert _fully_shown(label), (label.size(), label.visibleRegion().boundingRect())
    three = next(b for b in selector.buttons.buttons() if b.text() == "3")
    panel.scroll.ensureWidgetVisible(three)
    qtbot.mouseClick(three, Qt.LeftButton)
    qtbot.wait(50)
    panel.grab().save(str(tmp_path / f"unit-row-yours-{size[0]}.png"))
    assert label.text().endswith("(yours)") and _fully_shown(label)
    window.loader.wait(5000)


def test_number_key_presets_show_in_the_preset_selector(open_viewer, qtbot, tmp_path):
    """Defect 3: 2 applies the second preset and the selector says so; a right drag shows 'Custom'; 1 goes back."""
    window = open_viewer(reader=None, size=(1280, 800))
    panel = window.panels["left"]
    state = window.session.views["left"]
    names = list(state.presets)
    assert _focused() is panel.view and len(names) >= 2
    assert panel.preset.currentText() == names[0]
    before = panel.preset.grab().toImage()
    _key(qtbot, Qt.Key_2)
    assert state.window == state.presets[names[1]]
    shown = panel.preset.grab().toImage()
    shown.save(str(tmp_path / "preset-2.png"))
    assert panel.preset.currentText() == names[1] and shown != before
    assert window.panels["right"].preset.currentText() == list(window.session.views["right"].presets)[0]
    v = panel.view
    centre = QPoint(v.width() // 2, v.height() // 2)
    qtbot.mousePress(v, Qt.RightButton, pos=centre)
    end = QPointF(centre + QPoint(40, -25))
    v.mouseMoveEvent(QMouseEvent(QEvent.MouseMove, end, v.mapToGlobal(end), Qt.NoButton, Qt.RightButton,
                                 Qt.NoModifier))
    qtbot.mouseRelease(v, Qt.RightButton, pos=end.toPoint())
    assert state.preset_name is None and panel.preset.currentIndex() == -1
    custom = panel.preset.grab().toImage()
    custom.save(str(tmp_path / "preset-custom.png"))
    assert custom != shown
    _key(qtbot, Qt.Key_1)
    assert panel.preset.currentText() == names[0] and panel.preset.grab().toImage() == before
    window.loader.wait(5000)


def _choose_in_next_menu(qtbot, downs: int) -> None:
    """In the context menu about to open: Down ``downs`` times, then Enter (as the reader would)."""

    def choose() -> None:
        menu = QApplication.activePopupWidget()
        if menu is None:
            QTimer.singleShot(20, choose)
            return
        for _ in range(downs):
            qtbot.keyClick(menu, Qt.Key_Down)
        qtbot.keyClick(menu, Qt.Key_Return)

    QTimer.singleShot(20, choose)


def test_messages_name_bone_units_by_their_display_names(open_viewer, qtbot, tmp_path):
    """Defect 4: the checklist's menu, the refusal in the status bar and the unit marks list say 'Distal femur R'."""
    window = open_viewer(reader="dr-n", size=(1280, 800))
    shown: list[str] = []
    window.statusBar().messageChanged.connect(shown.append)
    _place_lesion_by_keyboard(window, qtbot, 300.0, 40.0, "distal fem", "R")
    _key(qtbot, Qt.Key_Return)  # done grading: back to the image
    checklist = window.checklist
    titles: list[str] = []

    def read_title() -> None:
        menu = QApplication.activePopupWidget()
        if menu is not None:
            titles.extend(a.text() for a in menu.actions() if a.isSeparator() and a.text())

    QTimer.singleShot(10, read_title)
    _choose_in_next_menu(qtbot, 1)  # "No lesion" on a unit that holds a lesion: refused
    qtbot.mouseClick(checklist, Qt.RightButton, pos=checklist.unit_point("femur.distal:R").toPoint())
    qtbot.waitUntil(lambda: any("has lesions" in m for m in shown))
    _choose_in_next_menu(qtbot, 2)  # "Not assessable" on the skull
    qtbot.mouseClick(checklist, Qt.RightButton, pos=checklist.unit_point("skull").toPoint())
    qtbot.waitUntil(lambda: bool(window.read_session.read.unit_marks))
    window.grab().save(str(tmp_path / "unit-names.png"))
    marks = [window.lesion_panel.unit_marks.item(n).text() for n in range(window.lesion_panel.unit_marks.count())]
    refusal = next(m for m in shown if "has lesions" in m)
    assert titles == ["Distal femur R"]
    assert refusal.startswith("Distal femur R has lesions")
    assert marks == ["Skull: not assessable"]
    texts = [refusal, *titles, *marks]
    assert not any("femur.distal" in t or "femur distal" in t or ":R" in t for t in texts), texts
    window.loader.wait(5000)


def _drag(qtbot, view, start: QPointF, end: QPointF) -> None:
    qtbot.mousePress(view, Qt.LeftButton, pos=start.toPoint())
    view.mouseMoveEvent(QMouseEvent(QEvent.MouseMove, end, view.mapToGlobal(end), Qt.NoButton, Qt.LeftButton,
                                    Qt.NoModifier))
    qtbot.mouseRelease(view, Qt.LeftButton, pos=end.toPoint())


def _near(colour, target, tolerance: int = 45) -> bool:
    return all(abs(a - b) <= tolerance for a, b in ((colour.red(), target.red()), (colour.green(), target.green()),
                                                     (colour.blue(), target.blue())))


def test_labels_never_cover_another_label_another_roi_or_another_lesion(open_viewer, qtbot, tmp_path):
    """Defect 1: two lesions a few slices' width apart, each with its lesion ROI and ratio, and a muscle ROI.

    Every label (lesion names, ROI statistics with the STIR ratio) is clear of every other label, of every
    other lesion's marker and ROI, and of the view's corner texts; in the grabbed pixels no label's box holds
    another label's or outline's colour.
    """
    from cno_annotate_ui.slice_view import ROI_COLOURS
    from PySide6.QtCore import QRectF
    from PySide6.QtGui import QColor

    from cno_annotate.display.overlay import LESION_COLOUR, SELECTED_COLOUR, UNPLACED_COLOUR

    window = open_viewer(reader="dr-r", size=(1280, 800))
    v = window.panels["left"].view
    assert _focused() is v
    lesions = []
    for row in (300.0, 318.0):  # the second lesion just below the first one's ROI
        _key(qtbot, Qt.Key_M)
        qtbot.mouseClick(v, Qt.LeftButton, pos=v.image_to_widget(row, 40.0).toPoint())
        count = len(lesions)
        qtbot.waitUntil(lambda: len(window.read_session.read.lesions) > count)  # noqa: B023 (waited for here)
        _key(qtbot, Qt.Key_Escape)
        lesions.append(window.read_session.read.lesions[-1].lesion_id)
        _key(qtbot, Qt.Key_E)
        _drag(qtbot, v, v.image_to_widget(row, 40.0), v.image_to_widget(row + 5.0, 45.0))
        _key(qtbot, Qt.Key_L)  # the selected lesion's ROI
    _key(qtbot, Qt.Key_B)
    _drag(qtbot, v, v.image_to_widget(280.0, 60.0), v.image_to_widget(292.0, 75.0))
    _key(qtbot, Qt.Key_U)  # muscle reference, beside the first lesion
    read = window.read_session.read
    assert all(read.lesion(lesion).stir_muscle_ratio is not None for lesion in lesions)
    grab = v.grab().toImage()
    grab.save(str(tmp_path / "labels.png"))
    labels = v.label_layout()
    assert len(labels) == 2 + 3
    owners = [v._marker_box(sm) for sm in window.session.screen_markers("left")]
    owners += [v._roi_path(sr).boundingRect() for sr in window.session.rois_on("left")]
    owners = [o if isinstance(o, QRectF) else QRectF(o.left, o.top, o.width, o.height) for o in owners]
    fixed = list(v.overlay_layout().values())
    for n, label in enumerate(labels):
        assert QRectF(v.rect()).contains(label.box), label.lines
        for other in labels[n + 1:]:
            assert not label.box.intersects(other.box), (label.lines[0], other.lines[0])
        for other in fixed:
            assert not label.box.intersects(other), label.lines[0]
        mine = [o for o in owners if label.box.intersects(o)]
        assert mine == [], (label.lines[0], mine)
    # the pixels: inside a label's box, only its own colour (and the outline's black, the image's greys)
    colours = {QColor(SELECTED_COLOUR).name(), QColor(LESION_COLOUR).name(), QColor(UNPLACED_COLOUR).name(),
               *(c.name() for c in ROI_COLOURS.values())}
    # the vertical crosshair line spans the view and may pass under a label of a narrow view (its yellow over
    # the grey image is near the measurement ROI's orange); the horizontal one is kept off the labels
    centre = v.image_to_widget(*window.session.views["left"].lps_to_screen(window.session.views["left"].point))
    crosshair_columns = {math.floor(centre.x()) + d for d in (-1, 0, 1)}
    for label in labels:
        others = [QColor(c) for c in colours if c != label.colour.name()
                  and not _near(QColor(c), label.colour, 60)]
        box = label.box.adjusted(2, 2, -2, -2).toRect()
        strays = [(x, y) for x in range(box.left(), box.right(), 2) for y in range(box.top(), box.bottom(), 2)
                  if x not in crosshair_columns and any(_near(grab.pixelColor(x, y), c) for c in others)]
        assert strays == [], (label.lines[0], strays[:5])
    window.loader.wait(5000)


def _luminance(colour) -> float:
    """WCAG relative luminance of an sRGB colour."""

    def channel(value: int) -> float:
        c = value / 255.0
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    return 0.2126 * channel(colour.red()) + 0.7152 * channel(colour.green()) + 0.0722 * channel(colour.blue())


def _text_contrast(image) -> float:
    """Contrast ratio of a widget's text against its background, from its grabbed pixels.

    The background is the commonest colour inside the widget's frame (3 pixels in from its edges); the text
    is the pixel there that differs most from it (a glyph's core).
    """
    from collections import Counter

    pixels = Counter(image.pixel(x, y) for x in range(3, image.width() - 3) for y in range(3, image.height() - 3))
    from PySide6.QtGui import QColor

    background = _luminance(QColor.fromRgb(pixels.most_common(1)[0][0]))
    ratios = [(max(background, lum) + 0.05) / (min(background, lum) + 0.05)
              for lum in (_luminance(QColor.fromRgb(p)) for p in pixels)]
    return max(ratios)


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_a_submitted_read_stays_readable_in_either_theme(open_viewer, qtbot, tmp_path, monkeypatch, theme):
    """Defect 5: after Submit the panel's texts keep a contrast of at least 4.5:1 (WCAG AA) on grabbed pixels."""
    from PySide6.QtWidgets import QComboBox, QGroupBox, QLabel, QLineEdit, QListWidget, QToolButton

    monkeypatch.setenv("CNO_ANNOTATE_THEME", theme)
    window = open_viewer(reader="dr-c", size=(1280, 800))
    assert window.theme == theme
    _place_lesion_by_keyboard(window, qtbot, 300.0, 40.0, "distal fem", "R")
    for digit in (Qt.Key_2, Qt.Key_2, Qt.Key_1, Qt.Key_0):
        _key(qtbot, digit)
    panel = window.lesion_panel

    def press_enter() -> None:
        dialog = QApplication.activeModalWidget()
        if dialog is None:
            QTimer.singleShot(20, press_enter)
            return
        qtbot.keyClick(dialog, Qt.Key_Return)

    QTimer.singleShot(20, press_enter)
    qtbot.mouseClick(panel.submit_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: window.read_session.read.status == "submitted")
    panel.select(window.read_session.read.lesions[0].lesion_id)
    qtbot.wait(50)
    panel.grab().save(str(tmp_path / f"submitted-{theme}.png"))
    checked = {}
    kinds = (QLabel, QLineEdit, QComboBox, QListWidget, QGroupBox, QToolButton)
    widgets = [w for kind in kinds for w in panel.findChildren(kind)]
    for widget in widgets:
        text = (widget.text() if isinstance(widget, (QLabel, QLineEdit, QToolButton)) else widget.currentText()
                if isinstance(widget, QComboBox) else widget.title() if isinstance(widget, QGroupBox)
                else widget.item(0).text() if widget.count() else "")
        if not any(c.isalnum() for c in text) or not widget.isVisible() or widget.visibleRegion().isEmpty():
            continue
        image = widget.grab(widget.visibleRegion().boundingRect()).toImage()
        if isinstance(widget, QGroupBox):  # its title only
            image = widget.grab(widget.visibleRegion().boundingRect().intersected(
                widget.rect().adjusted(0, 0, 0, -(widget.height() - widget.fontMetrics().height() - 4)))).toImage()
        checked[f"{type(widget).__name__}:{text[:30]}"] = round(_text_contrast(image), 2)
    low = {name: ratio for name, ratio in checked.items() if ratio < 4.5}
    assert len(checked) >= 12 and low == {}, low  # a dash alone ("none") is left out: its one-pixel line never
    # reaches its full colour on screen
    window.loader.wait(5000)


def _off_the_toolbars(window) -> list[str]:
    """Toolbar actions a reader cannot click: hidden, past a bar's right edge, behind an extension arrow."""
    from PySide6.QtCore import QRect
    from PySide6.QtWidgets import QToolBar, QToolButton

    out = []
    window_rect = QRect(0, 0, window.width(), window.height())
    for bar in window.findChildren(QToolBar):
        if not bar.isVisible():
            assert [a for a in bar.actions() if not a.isSeparator()] == [], bar.objectName()
            continue
        arrows = [b for b in bar.findChildren(QToolButton) if b.objectName() == "qt_toolbar_ext_button"]
        if any(b.isVisible() for b in arrows):
            out.append(f"{bar.objectName()}: extension arrow")
        for action in bar.actions():
            if action.isSeparator() or not action.isVisible():
                continue
            widget = bar.widgetForAction(action)
            if widget is None or not widget.isVisible() or widget.geometry().right() > bar.width():
                out.append(action.text() or type(widget).__name__)
            elif not window_rect.contains(QRect(widget.mapTo(window, widget.rect().topLeft()), widget.size())):
                out.append((action.text() or type(widget).__name__) + " (off the window)")
    return out


@pytest.mark.parametrize("size", [(1024, 768), (800, 600)])
def test_every_toolbar_action_is_on_screen_below_1280(open_viewer, qtbot, tmp_path, size):
    """Defect 6: at 1024x768 (and 800x600) the toolbar wraps onto more rows: no action hides, and each works."""
    from PySide6.QtWidgets import QToolBar

    def button(action):
        return next(b.widgetForAction(action) for b in window.findChildren(QToolBar)
                    if b.widgetForAction(action) is not None)

    window = open_viewer(reader=None, size=size)
    qtbot.wait(20)
    window.grab().save(str(tmp_path / f"toolbar-{size[0]}.png"))
    assert _off_the_toolbars(window) == []
    assert button(window.comparison.action).isVisible()  # the last one, the prior study's
    qtbot.mouseClick(button(window.layout_actions["2x2"]), Qt.LeftButton)
    assert window.layout_name == "2x2"
    qtbot.mouseClick(button(window.layout_actions["1x2"]), Qt.LeftButton)
    window.resize(1400, 900)  # wider again: back to two rows, nothing lost
    qtbot.wait(20)
    assert _off_the_toolbars(window) == []
    assert sum(b.isVisible() for b in window.findChildren(QToolBar)) == 2
    window.loader.wait(5000)
