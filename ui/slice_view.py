"""One image view: draws a :class:`ViewState` and turns gestures into session calls.

Mouse: left click / drag moves the crosshair (the linked point), a click on a
marker selects its lesion; wheel scrolls slices (one slice per notch,
however finely the wheel reports); Ctrl+wheel zooms about the mouse; right
drag changes window (horizontal) and level (vertical); middle drag or
Space+left drag pans; double click fits. Keyboard: see
:data:`cno_annotate_ui.help.SHORTCUTS`.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QEvent, QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFont,
    QFontMetricsF,
    QImage,
    QKeyEvent,
    QPainter,
    QPainterPath,
    QPen,
    QTextOption,
)
from PySide6.QtWidgets import QApplication, QSizePolicy, QWidget

from cno_annotate import timing
from cno_annotate.display.catalog import short_label
from cno_annotate.display.labels import (
    BLOCK_SIDES,
    MARKER_SIDES,
    Box,
    LabelRequest,
    Side,
    edge_anchor,
    leader_line,
    place_labels,
)
from cno_annotate.display.marking import clip_to_image, gesture_lesion
from cno_annotate.display.measure import ScreenRoi
from cno_annotate.display.overlay import ScreenMarker, marker_at
from cno_annotate.display.session import ViewChange, ViewerSession, ViewState
from cno_annotate.display.windowing import Window, Windowing

CROSSHAIR = QColor(255, 220, 0, 170)
TEXT = QColor(235, 235, 235)
OUTLINE = QColor(0, 0, 0, 220)
LETTERS = QColor(255, 210, 90)
MISSING = QColor(255, 140, 0)
RULER = QColor(120, 255, 160)
#: ROI outlines by role: a measurement, the muscle reference, a lesion's ROI.
ROI_COLOURS = {"measurement": QColor(255, 160, 64), "muscle": QColor(185, 140, 255), "lesion": QColor(96, 224, 255)}
ROI_TOOLS = ("ellipse", "rectangle", "polygon")
WHEEL_NOTCH = 120  # angle delta of one wheel notch (Qt: eighths of a degree)
_NICE_MM = (5, 10, 20, 50, 100, 200, 500)
_ZOOM_STEP = 1.25


#: A voxel shows as tissue (not air) where the window maps it above this fraction of black to white;
#: the missing-slices badge goes where it covers the fewest such voxels.
VISIBLE = 0.25


@dataclass(frozen=True)
class PaintedLabel:
    """A label as a view paints it: its lines, colour and font, and the box it takes (widget pixels)."""

    lines: list[str]
    colour: QColor
    font: QFont
    box: QRectF
    owner: QRectF  # what it names: a label placed away from it gets a leader line to it
    off_view: tuple[str, tuple[float, float]] | None = None  # a marker outside the view: its key, (row, col)


def _box(rect: QRectF) -> Box:
    """A Qt rectangle as the label placement's box."""
    return Box(rect.left(), rect.top(), rect.width(), rect.height())


_METRICS: dict[str, QFontMetricsF] = {}


def _metrics(font: QFont) -> QFontMetricsF:
    """Font metrics, kept per font (made once, asked at every paint)."""
    key = font.key()
    if key not in _METRICS:
        _METRICS[key] = QFontMetricsF(font)
    return _METRICS[key]


class SliceView(QWidget):
    """A view of one :class:`ViewState` of a :class:`ViewerSession`."""

    hovered = Signal(object)  # LPS point under the mouse (numpy array) or None
    first_image_painted = Signal()
    #: The image of a volume just set has been painted (after every change of volume, the preview's too).
    image_shown = Signal()
    lesion_drawn = Signal(str, object, object)  # view name, LPS centre, extent dict or None
    marker_clicked = Signal(str)  # the key of the marker clicked (a lesion id for the open read)
    activated = Signal(str)  # the view got the keyboard or the mouse: it is the active view
    roi_drawn = Signal(str, str, object)  # view name, ROI kind, list of LPS points
    roi_clicked = Signal(str)  # the id of the ROI clicked
    roi_delete = Signal(str)  # Delete pressed on the image with this ROI selected
    lesion_delete = Signal()  # Delete pressed on the image with no ROI selected: the selected lesion goes
    navigated = Signal()  # a navigation key, the wheel or a click on the image (stops the cine)
    message = Signal(str)  # a gesture refused, and why (the status bar shows it)

    def __init__(self, session: ViewerSession, name: str, parent=None):
        super().__init__(parent)
        self.session, self.name = session, name
        self.setFocusPolicy(Qt.StrongFocus)
        self.setMouseTracking(True)
        self.setMinimumSize(200, 200)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.setAttribute(Qt.WA_OpaquePaintEvent)
        self._windowing = Windowing()
        self._image_key = None
        self._body_counts: dict[tuple, int] = {}  # body voxels under a badge position, per slice and geometry
        self._drawn: tuple | None = None
        self._buffer = None
        self._labels_placed: tuple[tuple, list[Box]] | None = None  # the last placement and what it was for
        self._drag = None  # (mode, start position, start value)
        self._space = False
        self._painted_once = False
        self._volume_unpainted = False  # a volume was set and its image is not painted yet
        self._early_keys: list[tuple[int, Qt.KeyboardModifier, str]] = []  # pressed before the image: see keyPressEvent
        self.mark_mode = False  # left click / drag places a lesion instead of moving the crosshair
        self.ruler_mode = False  # left drag measures a distance instead of moving the crosshair
        self._rubber: tuple[QPointF, QPointF] | None = None
        self._wheel_rest = 0  # angle delta not yet turned into a slice step
        self._measuring: tuple[QPointF, QPointF] | None = None  # a ruler being drawn
        self.roi_tool: str | None = None  # "ellipse", "rectangle" or "polygon": left drag / clicks draw an ROI
        self._roi_drag: tuple[QPointF, QPointF] | None = None  # an ellipse or rectangle being dragged
        self._polygon: list[tuple[float, float]] = []  # image (row, column) of the vertices placed so far
        self._hover: QPointF | None = None
        self._pending_click: tuple[QPointF, QPointF] | None = None  # a mark click waiting out a double click
        self._click_timer = QTimer(self)
        self._click_timer.setSingleShot(True)
        self._click_timer.timeout.connect(self._place_pending_click)
        session.changed.connect(self._on_session_changed)

    @property
    def state(self) -> ViewState:
        """The view's state in the session."""
        return self.session.views[self.name]

    # -- geometry --------------------------------------------------------------
    def pixels_per_mm(self) -> float:
        """Current zoom: screen pixels per millimetre (fit when the zoom is unset)."""
        self._sync_viewport()
        return self.state.pixels_per_mm()

    def _centre_pixel(self) -> tuple[float, float]:
        """Image (row, column) shown at the widget's centre."""
        return self.state.centre_pixel()

    def image_to_widget(self, row: float, col: float) -> QPointF:
        """Widget position of the centre of image pixel (row, column)."""
        self._sync_viewport()
        return QPointF(*self.state.image_to_viewport(row, col))

    def widget_to_image(self, point: QPointF) -> tuple[float, float]:
        """Image (row, column) under a widget position."""
        self._sync_viewport()
        return self.state.viewport_to_image(point.x(), point.y())

    def _sync_viewport(self) -> None:
        if self.state.viewport != (self.width(), self.height()):
            self.session.set_viewport(self.name, self.width(), self.height())

    # -- painting --------------------------------------------------------------
    def current_image(self) -> tuple[QImage, QRectF, QRectF]:
        """The windowed slice as an 8-bit image, with its target and source rectangles.

        Zoomed out (an image pixel smaller than a device pixel), the visible
        part of the slice is sampled at device resolution (nearest voxel)
        before windowing, and drawn 1:1; zoomed in, the whole slice is
        windowed and Qt scales it smoothly. The windowed pixels are cached
        until slice, window or (when sampled) geometry change; where they go
        on screen is worked out for every paint, so zoom, pan, fit and resize
        always redraw the image.
        """
        view = self.state
        m = view.mapping
        scale = self.pixels_per_mm()
        ratio = self.devicePixelRatioF()
        top_left = self.image_to_widget(-0.5, -0.5)
        bottom_right = self.image_to_widget(m.rows - 0.5, m.cols - 0.5)
        target = QRectF(top_left, bottom_right)
        sample = scale * m.col_mm * ratio <= 1.0 and scale * m.row_mm * ratio <= 1.0
        geometry = (self.width(), self.height(), ratio, target.getCoords()) if sample else None
        smooth = not sample and target.width() > m.cols * 1.5  # as paintEvent scales it
        key = (id(view.volume), view.plane, view.slice_index, view.window, view.inverted, geometry, smooth)
        if key != self._image_key:
            image = view.image()
            sampled_target = None
            if sample:
                image, sampled_target = self._screen_sample(image, target, ratio)
            display = self._windowing.apply(image, view.window)
            if view.inverted:
                np.subtract(255, display, out=display)
            self._buffer = display
            rows, cols = display.shape
            qimage = QImage(display.data, cols, rows, cols, QImage.Format_Grayscale8)
            if smooth:
                # Zoomed in past 1.5 screen pixels per voxel, Qt scales the slice smoothly at every zoom
                # and pan step, faster from 32-bit pixels than from 8-bit grey (converted as fetched):
                # converted once here per slice and window (a copy: it owns its pixels). Nearer to fit,
                # unsmoothed, 8-bit grey draws faster (paired bench runs: pan 1.6 against 3.1 ms).
                qimage = qimage.convertToFormat(QImage.Format_RGB32)
            self._drawn = (qimage, sampled_target)
            self._image_key = key
        qimage, sampled_target = self._drawn
        if sampled_target is not None:
            return qimage, sampled_target, QRectF(0, 0, qimage.width(), qimage.height())
        return qimage, target, QRectF(0, 0, m.cols, m.rows)

    def _screen_sample(self, image: np.ndarray, target: QRectF, ratio: float) -> tuple[np.ndarray, QRectF]:
        """The nearest image pixel for every visible device pixel of ``target``."""
        x0, y0 = max(0, math.floor(target.left())), max(0, math.floor(target.top()))
        x1, y1 = min(self.width(), math.ceil(target.right())), min(self.height(), math.ceil(target.bottom()))
        if x1 <= x0 or y1 <= y0:
            return image[:1, :1], QRectF(0, 0, 0, 0)
        width, height = round((x1 - x0) * ratio), round((y1 - y0) * ratio)
        xs = ((x0 + (np.arange(width) + 0.5) / ratio) - target.left()) / target.width() * image.shape[1]
        ys = ((y0 + (np.arange(height) + 0.5) / ratio) - target.top()) / target.height() * image.shape[0]
        cols = np.clip(xs.astype(np.intp), 0, image.shape[1] - 1)
        rows = np.clip(ys.astype(np.intp), 0, image.shape[0] - 1)
        sampled = image.take(rows, axis=0).take(cols, axis=1)
        return sampled, QRectF(x0, y0, x1 - x0, y1 - y0)

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt API)
        painter = QPainter(self)
        view = self.state
        if not view.ready:
            painter.fillRect(self.rect(), Qt.black)
            self._paint_status(painter, view)
            painter.end()
            return
        image, target, source = self.current_image()
        self._fill_around(painter, target)
        painter.setRenderHint(QPainter.SmoothPixmapTransform, target.width() > source.width() * 1.5)
        painter.drawImage(target, image, source)
        self._paint_missing(painter)
        if self.session.overlays:
            painter.setRenderHint(QPainter.Antialiasing, True)
            markers, rois = self.session.screen_markers(self.name), self.session.rois_on(self.name)
            rulers = self._ruler_lines()
            self._paint_markers(painter, markers)
            self._paint_rulers(painter, rulers)
            self._paint_rois(painter, rois)
            self._paint_crosshair(painter)
            self._paint_labels(painter, self._label_layout(markers, rois, rulers))
            self._paint_annotations(painter, view)
        self._paint_badge(painter)
        if self._rubber is not None:
            self._paint_rubber(painter)
        self._paint_roi_in_progress(painter)
        painter.end()
        if not self._painted_once:
            self._painted_once = True
            if os.environ.get("CNO_ANNOTATE_TIMING"):
                timing.line(f"first-image-painted {self.name} {time.time():.6f} cpu {time.process_time():.3f} "
                            f"thread {time.thread_time():.3f}")  # the process's CPU, the window thread's
            self.first_image_painted.emit()
        if self._volume_unpainted:
            self._volume_unpainted = False
            self.image_shown.emit()

    def _fill_around(self, painter: QPainter, target: QRectF) -> None:
        """Black where the (opaque) slice image will not be drawn: the widget less the image's inner pixels."""
        hole = target.toAlignedRect().adjusted(1, 1, -1, -1).intersected(self.rect())
        if hole.isEmpty():
            painter.fillRect(self.rect(), Qt.black)
            return
        w, h = self.width(), self.height()
        for x, y, width, height in ((0, 0, w, hole.top()), (0, hole.bottom() + 1, w, h - hole.bottom() - 1),
                                    (0, hole.top(), hole.left(), hole.height()),
                                    (hole.right() + 1, hole.top(), w - hole.right() - 1, hole.height())):
            if width > 0 and height > 0:
                painter.fillRect(x, y, width, height, Qt.black)

    def _paint_status(self, painter: QPainter, view: ViewState) -> None:
        painter.setPen(TEXT if view.status != "error" else QColor(255, 120, 120))
        painter.setFont(QFont(self.font().family(), 11))
        option = QTextOption(Qt.AlignCenter)
        option.setWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)  # long paths wrap inside the view
        painter.drawText(QRectF(self.rect().adjusted(12, 12, -12, -12)), self._status_text(view), option)

    @staticmethod
    def _status_text(view: ViewState) -> str:
        if view.status == "loading":
            return f"Loading {view.label} … {int(100 * view.progress)} %"
        if view.status == "error":
            return f"Cannot show {view.label or 'this series'}:\n{view.message}"
        return view.message or "No series selected"

    def _paint_missing(self, painter: QPainter) -> None:
        """Hatch the parts of the slice that have no data (unreadable files, gaps)."""
        view = self.state
        if view.missing is None or view.missing.count == 0:
            return
        from cno_annotate.display.planes import extract

        mask = extract(view.missing.mask(view.volume.shape), view.mapping, view.slice_index)
        if not mask.any():
            return
        path = QPainterPath()
        for top, bottom, left, right in _mask_boxes(np.asarray(mask)):
            corner = self.image_to_widget(top - 0.5, left - 0.5)
            far = self.image_to_widget(bottom - 0.5, right - 0.5)
            path.addRect(QRectF(corner, far))
        painter.save()
        painter.setPen(QPen(MISSING, 1))
        painter.setBrush(QBrush(QColor(MISSING.red(), MISSING.green(), MISSING.blue(), 60)))
        painter.drawPath(path)
        painter.setBrush(QBrush(MISSING, Qt.BDiagPattern))
        painter.drawPath(path)
        painter.restore()

    def _paint_badge(self, painter: QPainter) -> None:
        """A persistent badge saying how many slices of the volume are missing."""
        text = self.badge_text()
        if not text:
            return
        painter.save()
        painter.setFont(QFont(self.font().family(), 10, QFont.Bold))
        box = self.overlay_layout()["badge"]
        painter.setPen(Qt.NoPen)
        painter.setBrush(QColor(120, 50, 0, 220))
        painter.drawRoundedRect(box, 4, 4)
        painter.setPen(QColor(255, 235, 200))
        painter.drawText(box, Qt.AlignCenter, self._badge_lines(text, box.width()))
        painter.restore()

    def _badge_lines(self, text: str, width: float) -> str:
        """The badge's text, on two lines ("N slices missing" / "(hatched)") when one line is wider than ``width``."""
        metrics = QFontMetricsF(QFont(self.font().family(), 10, QFont.Bold))
        if metrics.horizontalAdvance(text) + 14 <= width + 0.5 or " (" not in text:
            return text
        return text.replace(" (", "\n(", 1)

    def _badge_box(self, text: str, out: dict[str, QRectF]) -> QRectF:
        """Where the missing-slices badge goes: the corner (above the W/L or scale texts, below the top ones)
        whose box covers the least body on the displayed slice, the lower right first; in a view too narrow
        for one line beside the centre letters, on two lines."""
        w = float(self.width())
        metrics = QFontMetricsF(QFont(self.font().family(), 10, QFont.Bold))
        half = w / 2 - max(out["top"].width(), out["bottom"].width()) / 2 - 8 - 6
        one_line = metrics.horizontalAdvance(text) + 14
        lines = self._badge_lines(text, min(one_line, half)).split("\n")
        width = min(max(metrics.horizontalAdvance(line) for line in lines) + 14, w - 16)
        height = len(lines) * metrics.height() + 8
        top_text = max(out["label"].bottom(), out["plane"].bottom()) + 6
        corners = [QRectF(w - 8 - width, out["window"].top() - 6 - height, width, height),
                   QRectF(w - 8 - width, top_text, width, height),
                   QRectF(8, out["scale"].top() - 6 - height, width, height),
                   QRectF(8, top_text, width, height)]
        return min(corners, key=lambda box: (self._body_under(box), corners.index(box)))

    def _body_under(self, box: QRectF) -> int:
        """How many voxels of the displayed slice under a widget rectangle show as tissue (see :data:`VISIBLE`).

        Worked out once per slice, window and geometry.
        """
        view = self.state
        key = (id(view.volume), view.plane, view.slice_index, view.window, self.width(), self.height(), view.zoom,
               None if view.centre is None else tuple(view.centre), box.getCoords())
        cached = self._body_counts.get(key)
        if cached is not None:
            return cached
        image = view.image()
        (r0, c0), (r1, c1) = self.widget_to_image(box.topLeft()), self.widget_to_image(box.bottomRight())
        rows = slice(max(0, math.floor(min(r0, r1))), max(0, math.ceil(max(r0, r1)) + 1))
        cols = slice(max(0, math.floor(min(c0, c1))), max(0, math.ceil(max(c0, c1)) + 1))
        window = view.window
        count = int(np.count_nonzero(image[rows, cols] > window.level - window.width / 2 + VISIBLE * window.width))
        if len(self._body_counts) > 64:
            self._body_counts.clear()
        self._body_counts[key] = count
        return count

    def image_unpainted(self) -> bool:
        """Whether the view has a volume whose image it has not painted yet."""
        return self._volume_unpainted and self.state.ready

    def badge_text(self) -> str:
        """The missing-slices badge ("" when nothing is missing)."""
        view = self.state
        return view.missing.badge() if view.ready and view.missing is not None else ""

    def _paint_crosshair(self, painter: QPainter) -> None:
        row, col = self.state.lps_to_screen(self.state.point)
        centre = self.image_to_widget(row, col)
        painter.setRenderHint(QPainter.Antialiasing, False)  # straight lines: no smoothing needed (and faster)
        painter.setRenderHint(QPainter.SmoothPixmapTransform, False)  # sharp dashes at 2x scaling too
        gap = 8
        # Dashes (4 pixels on, 2 off) cut from two prepared strips, drawn as images: a dashed pen costs
        # several times more, and a texture brush 1.2 ms per 1000-pixel vertical line (an image 0.03 ms).
        x, y = math.floor(centre.x()), math.floor(centre.y())
        w, h = self.width(), self.height()
        horizontal, vertical = _dash_strips(w, h)
        for start, length in ((0, x - gap), (x + gap, w - x - gap)):
            if length > 0:
                painter.drawImage(QRectF(start, y, length, 1), horizontal, QRectF(start, 0, length, 1))
        for start, length in ((0, y - gap), (y + gap, h - y - gap)):
            if length > 0:
                painter.drawImage(QRectF(x, start, 1, length), vertical, QRectF(0, start, 1, length))

    def _paint_markers(self, painter: QPainter, markers: list[ScreenMarker]) -> None:
        m = self.state.mapping
        scale = self.pixels_per_mm()
        for sm in markers:
            centre = self.image_to_widget(sm.row, sm.col)
            colour = QColor(sm.marker.colour)
            rx, ry = sm.col_radius * m.col_mm * scale, sm.row_radius * m.row_mm * scale
            style = Qt.SolidLine if sm.in_plane else Qt.DotLine
            painter.setBrush(Qt.NoBrush)
            polygon = None
            if sm.outline is not None:  # a polygon extent: drawn as its polygon on its plane
                polygon = QPainterPath(self.image_to_widget(*sm.outline[0]))
                for r, c in sm.outline[1:]:
                    polygon.lineTo(self.image_to_widget(float(r), float(c)))
                polygon.closeSubpath()
            for pen in (QPen(OUTLINE, 5 if sm.marker.selected else 4, style),
                        QPen(colour, 3 if sm.marker.selected else 2, style)):
                painter.setPen(pen)
                if polygon is not None:
                    painter.drawPath(polygon)
                else:
                    painter.drawEllipse(centre, rx, ry)

    def _marker_box(self, sm: ScreenMarker) -> Box:
        """The screen box a marker's outline (ellipse or polygon) takes, its pen included."""
        if sm.outline is not None:
            points = [self.image_to_widget(float(r), float(c)) for r, c in sm.outline]
            box = Box.around([(p.x(), p.y()) for p in points])
        else:
            m, scale = self.state.mapping, self.pixels_per_mm()
            centre = self.image_to_widget(sm.row, sm.col)
            rx, ry = sm.col_radius * m.col_mm * scale, sm.row_radius * m.row_mm * scale
            box = Box(centre.x() - rx, centre.y() - ry, 2 * rx, 2 * ry)
        return Box(box.left - 3, box.top - 3, box.width + 6, box.height + 6)

    def _ruler_lines(self) -> list[tuple[QPointF, QPointF, str]]:
        """Rulers of this slice, and the one being drawn: widget end points and length label."""
        lines = []
        for ruler in self.session.rulers_on(self.name):
            a = self.image_to_widget(*self.state.lps_to_screen(np.array(ruler.start)))
            b = self.image_to_widget(*self.state.lps_to_screen(np.array(ruler.end)))
            lines.append((a, b, ruler.label))
        if self._measuring is not None:
            a, b = self._measuring
            state = self.state
            ends = [state.screen_to_lps(*clip_to_image(state, *self.widget_to_image(p))) for p in (a, b)]
            lines.append((a, b, f"{float(np.linalg.norm(ends[1] - ends[0])):.1f} mm"))
        return lines

    def _paint_rulers(self, painter: QPainter, lines: list[tuple[QPointF, QPointF, str]]) -> None:
        """Ruler lines with their end points (their lengths are labels)."""
        for a, b, _ in lines:
            for pen in (QPen(OUTLINE, 4), QPen(RULER, 2)):
                painter.setPen(pen)
                painter.drawLine(a, b)
                for end in (a, b):
                    painter.drawEllipse(end, 2.5, 2.5)

    def roi_labels(self) -> list[tuple[str, str]]:
        """(title, statistics) of every ROI on the displayed slice, as painted beside it."""
        return [(sr.title, sr.stats.label if sr.stats is not None else "no voxel inside")
                for sr in self.session.rois_on(self.name)]

    def _paint_rois(self, painter: QPainter, rois: list[ScreenRoi]) -> None:
        """Outlines of the ROIs of this slice (their titles and statistics are labels)."""
        for sr in rois:
            path = self._roi_path(sr)
            colour = ROI_COLOURS[str(sr.roi.role)]
            painter.setBrush(Qt.NoBrush)
            painter.setPen(QPen(OUTLINE, 5 if sr.selected else 4))
            painter.drawPath(path)
            painter.setPen(QPen(colour, 3 if sr.selected else 1.5))
            painter.drawPath(path)

    def _roi_path(self, sr: ScreenRoi) -> QPainterPath:
        points = [self.image_to_widget(float(r), float(c)) for r, c in sr.outline]
        path = QPainterPath(points[0])
        for point in points[1:]:
            path.lineTo(point)
        path.closeSubpath()
        return path

    def label_layout(self) -> list[PaintedLabel]:
        """Every label this view paints (lesion names, ROI statistics, ruler lengths) and where it goes."""
        if not self.state.ready or not self.session.overlays:
            return []
        return self._label_layout(self.session.screen_markers(self.name), self.session.rois_on(self.name),
                                  self._ruler_lines())

    def _label_layout(self, markers: list[ScreenMarker], rois: list[ScreenRoi],
                      rulers: list[tuple[QPointF, QPointF, str]]) -> list[PaintedLabel]:
        """Place the labels with :func:`~cno_annotate.display.labels.place_labels`: none covers another
        label, another lesion's marker, another ROI or the view's corner texts."""
        plain, small = QFont(self.font()), QFont(self.font().family(), 10)
        view_box = Box(2, 2, self.width() - 4, self.height() - 4)
        wanted: list[tuple[list[str], QColor, QFont, Box, tuple[Side, ...]]] = []
        off_view: list[tuple[str, tuple[float, float]] | None] = []
        for sm in markers:
            if sm.marker.label:
                owner = self._marker_box(sm)
                anchor = edge_anchor(owner, view_box)
                if anchor is None:
                    wanted.append(([sm.marker.label], QColor(sm.marker.colour), plain, owner, MARKER_SIDES))
                    off_view.append(None)
                else:  # outside the view: named at the edge on the way to it, an arrow pointing there
                    wanted.append(([f"{anchor.arrow} {sm.marker.label}"], QColor(sm.marker.colour), plain,
                                   anchor.box, anchor.sides))
                    off_view.append((sm.marker.key, (sm.row, sm.col)))
        for sr in rois:
            lines = [sr.title] + (sr.stats.label if sr.stats is not None else "no voxel inside").split("\n")
            bounds = self._roi_path(sr).boundingRect().adjusted(-2, -2, 2, 2)
            wanted.append((lines, ROI_COLOURS[str(sr.roi.role)], small,
                           Box(bounds.left(), bounds.top(), bounds.width(), bounds.height()), BLOCK_SIDES))
        for start, end, text in rulers:  # beside the ruler, never over its line
            line = Box.around([(start.x(), start.y()), (end.x(), end.y())])
            wanted.append(([text], RULER, plain, Box(line.left - 4, line.top - 4, line.width + 8, line.height + 8),
                           MARKER_SIDES))
        if not wanted:
            return []
        requests = []
        for lines, _, font, owner, sides in wanted:
            metrics = _metrics(font)
            requests.append(LabelRequest(owner, max(metrics.horizontalAdvance(line) for line in lines),
                                         metrics.height() * len(lines), sides))
        fixed = tuple(Box(r.left(), r.top(), r.width(), r.height()) for r in self.overlay_layout().values())
        fixed += self._crosshair_row()  # the horizontal crosshair would run along a name's letters
        key = (tuple(requests), fixed, self.width(), self.height())
        if self._labels_placed is None or self._labels_placed[0] != key:
            boxes = place_labels(requests, view_box, fixed)
            self._labels_placed = (key, boxes)
        boxes = self._labels_placed[1]
        off_view += [None] * (len(wanted) - len(off_view))
        return [PaintedLabel(lines, colour, font, QRectF(b.left, b.top, b.width, b.height),
                             QRectF(o.left, o.top, o.width, o.height), away)
                for (lines, colour, font, o, _), b, away in zip(wanted, boxes, off_view)]

    def off_view_label_at(self, position: QPointF) -> tuple[str, tuple[float, float]] | None:
        """The marker (key, image row and column) whose off-view label is under a widget position, if any."""
        for label in self.label_layout():
            if label.off_view is not None and label.box.adjusted(-3, -3, 3, 3).contains(position):
                return label.off_view
        return None

    def _crosshair_row(self) -> tuple[Box, ...]:
        """The band the horizontal crosshair line is painted on (a row of pixels and one each side), if in view."""
        row, col = self.state.lps_to_screen(self.state.point)
        y = math.floor(self.image_to_widget(row, col).y())
        return (Box(0, y - 1, self.width(), 3),) if 0 <= y < self.height() else ()

    def _paint_labels(self, painter: QPainter, labels: list[PaintedLabel]) -> None:
        painter.save()
        for label in labels:
            line = leader_line(_box(label.owner), _box(label.box))  # the line place_labels kept clear of labels
            if line is not None and label.off_view is None:  # moved away from what it names: a leader line to it
                # (not for a label of a marker outside the view: its arrow points the way)
                for pen in (QPen(OUTLINE, 3), QPen(label.colour, 1)):
                    painter.setPen(pen)
                    painter.drawLine(QPointF(*line[0]), QPointF(*line[1]))
        for label in labels:
            painter.setFont(label.font)
            metrics = _metrics(label.font)
            for n, line in enumerate(label.lines):
                baseline = QPointF(label.box.left(), label.box.top() + metrics.ascent() + n * metrics.height())
                _outlined_text(painter, baseline, line, label.colour)
        painter.restore()

    def _paint_roi_in_progress(self, painter: QPainter) -> None:
        """The ellipse or rectangle being dragged, or the polygon's vertices so far."""
        pen = QPen(ROI_COLOURS["measurement"], 1.5, Qt.DashLine)
        painter.setPen(pen)
        painter.setBrush(Qt.NoBrush)
        if self._roi_drag is not None:
            start, end = self._roi_drag
            d = end - start
            if self.roi_tool == "rectangle":
                painter.drawRect(QRectF(start, end).normalized())
            else:
                painter.drawEllipse(start, abs(d.x()), abs(d.y()))
        if self._polygon:
            points = [self.image_to_widget(r, c) for r, c in self._polygon]
            if self._hover is not None:
                points.append(self._hover)
            for a, b in zip(points, points[1:]):
                painter.drawLine(a, b)
            for point in points[: len(self._polygon)]:
                painter.drawEllipse(point, 2.5, 2.5)

    def _paint_annotations(self, painter: QPainter, view: ViewState) -> None:
        w, h = self.width(), self.height()
        bold = QFont(self.font().family(), 12, QFont.Bold)
        painter.setFont(bold)
        m = view.mapping
        layout = self.overlay_layout()
        for edge in ("left", "right", "top", "bottom"):
            rect = layout[edge]
            _outlined_text(painter, rect.bottomLeft() - QPointF(0, QFontMetricsF(bold).descent()),
                           m.letters[edge], LETTERS)
        painter.setFont(QFont(self.font().family(), 10))
        metrics = QFontMetricsF(painter.font())
        texts = self._corner_texts()
        label = texts["label"]
        if metrics.horizontalAdvance(label) > layout["label"].width() + 0.5:  # the short form before a cut one
            label = short_label(label)
        label = metrics.elidedText(label, Qt.ElideRight, layout["label"].width() + 0.5)
        for key, text in (("label", label), ("plane", texts["plane"]), ("window", texts["window"])):
            rect = layout[key]
            _outlined_text(painter, QPointF(rect.left(), rect.bottom() - metrics.descent()), text, TEXT)
        self._paint_scale_bar(painter, h)
        del w

    def overlay_layout(self) -> dict[str, QRectF]:
        """Where each overlay text goes (widget coordinates): no two overlap, none leaves the view.

        The series label gets what the plane text leaves of the top line, and
        is elided to it; on a narrow view the plane text goes to a second line.
        """
        w, h = float(self.width()), float(self.height())
        small = QFontMetricsF(QFont(self.font().family(), 10))
        bold = QFontMetricsF(QFont(self.font().family(), 12, QFont.Bold))
        texts = self._corner_texts()
        line = small.height()
        plane_w = small.horizontalAdvance(texts["plane"])
        window_w = small.horizontalAdvance(texts["window"])
        out: dict[str, QRectF] = {}
        label_w = small.horizontalAdvance(texts["label"])
        room = w - plane_w - 8 - 8 - 12
        if room >= min(label_w, 120):
            out["plane"] = QRectF(w - plane_w - 8, 4, plane_w, line)
            out["label"] = QRectF(8, 4, max(0.0, min(label_w, room)), line)
        else:
            out["label"] = QRectF(8, 4, max(0.0, min(label_w, w - 16)), line)
            out["plane"] = QRectF(w - plane_w - 8, 4 + line, plane_w, line)
        top_text = out["plane"].bottom()
        out["window"] = QRectF(w - window_w - 8, h - 8 - line, window_w, line)
        m = self.state.mapping
        for edge in ("left", "right", "top", "bottom"):
            size = QRectF(0, 0, bold.horizontalAdvance(m.letters[edge]), bold.height())
            if edge == "left":
                size.moveTopLeft(QPointF(4, h / 2 - size.height() / 2))
            elif edge == "right":
                size.moveTopLeft(QPointF(w - 4 - size.width(), h / 2 - size.height() / 2))
            elif edge == "top":
                size.moveTopLeft(QPointF(w / 2 - size.width() / 2, top_text + 2))
            else:
                size.moveTopLeft(QPointF(w / 2 - size.width() / 2, h - 4 - size.height()))
            out[edge] = size
        length_px, text = self._scale_bar()
        out["scale"] = QRectF(12, h - 14 - 6 - line, max(length_px, small.horizontalAdvance(text)), line + 10)
        badge = self.badge_text()
        if badge:
            out["badge"] = self._badge_box(badge, out)
        return out

    def _corner_texts(self) -> dict[str, str]:
        view = self.state
        return {
            "label": view.label,
            "plane": f"{view.plane.capitalize()}  {view.slice_index + 1}/{view.mapping.slices}",
            "window": f"W {view.window.width:.0f}  L {view.window.level:.0f}" + ("  inverted" if view.inverted else ""),
        }

    def overlay_texts(self) -> list[str]:
        """Every string this view paints over the image (for blinding checks)."""
        view = self.state
        if not view.ready:
            return [view.label, view.message, self._status_text(view)]
        texts = list(self._corner_texts().values()) + list(view.mapping.letters.values())
        texts.append(self._scale_bar()[1])
        texts += [sm.marker.label for sm in self.session.screen_markers(self.name)]
        texts.append(self.badge_text())
        texts += [r.label for r in self.session.rulers_on(self.name)]
        texts += [line for pair in self.roi_labels() for text in pair for line in text.split("\n")]
        return texts

    def _scale_bar(self) -> tuple[float, str]:
        """Length in pixels and label of a scale bar about a fifth of the view wide."""
        scale = self.pixels_per_mm()
        target = 0.2 * self.width() / scale
        length_mm = max([n for n in _NICE_MM if n <= target], default=_NICE_MM[0])
        return length_mm * scale, (f"{length_mm / 10:g} cm" if length_mm >= 10 else f"{length_mm} mm")

    def _paint_scale_bar(self, painter: QPainter, h: int) -> None:
        length_px, text = self._scale_bar()
        y = h - 14
        painter.setRenderHint(QPainter.Antialiasing, False)
        for pen in (QPen(OUTLINE, 4), QPen(TEXT, 2)):
            painter.setPen(pen)
            painter.drawLine(QPointF(12, y), QPointF(12 + length_px, y))
            painter.drawLine(QPointF(12, y - 4), QPointF(12, y + 4))
            painter.drawLine(QPointF(12 + length_px, y - 4), QPointF(12 + length_px, y + 4))
        _outlined_text(painter, QPointF(12, y - 6), text, TEXT)

    # -- events ----------------------------------------------------------------
    def _on_session_changed(self, name, what) -> None:
        if name is None or name == self.name:
            if self._early_keys and self.state.status not in ("loading", "ready"):
                self._early_keys = []  # the volume failed or the view was emptied: they were for it
            if what == ViewChange.VOLUME:
                self._image_key = None
                self._volume_unpainted = True
                if self._early_keys and self.state.ready:
                    QTimer.singleShot(0, self._press_early_keys)  # after the image is painted
                elif self.state.status != "loading":
                    self._early_keys = []  # the volume failed or the view was emptied: they were for it
                if not self._painted_once and self.isVisible() and self.state.ready:
                    self.repaint()  # the first image now, not after the other views' volumes are set up
                    return
            self.update()

    def _press_early_keys(self) -> None:
        """Act on the navigation keys pressed before the view had an image, in order."""
        keys, self._early_keys = self._early_keys, []
        for key, modifiers, text in keys:
            self.keyPressEvent(QKeyEvent(QEvent.KeyPress, key, modifiers, text))

    def resizeEvent(self, event) -> None:  # noqa: N802
        self.session.set_viewport(self.name, self.width(), self.height())
        super().resizeEvent(event)

    def focusInEvent(self, event) -> None:  # noqa: N802
        self.activated.emit(self.name)
        super().focusInEvent(event)

    def mousePressEvent(self, event) -> None:  # noqa: N802
        self.navigated.emit()
        self.setFocus(Qt.MouseFocusReason)
        self.activated.emit(self.name)
        if not self.state.ready:
            return
        button = event.button()
        away = self.off_view_label_at(event.position()) if button == Qt.LeftButton and not self._space else None
        if away is not None:  # a lesion outside the view, named at its edge: bring it in and select it
            self._drag = None
            self.session.reveal(self.state.screen_to_lps(*away[1]))
            self.marker_clicked.emit(away[0])
            return
        if button == Qt.MiddleButton or (button == Qt.LeftButton and self._space):
            self._drag = ("pan", event.position(), self._centre_pixel())
        elif button == Qt.RightButton:
            self._drag = ("window", event.position(), self.state.window)
        elif button == Qt.LeftButton and self.roi_tool in ("ellipse", "rectangle"):
            self._drag = ("roi", event.position(), None)
            self._roi_drag = (event.position(), event.position())
        elif button == Qt.LeftButton and self.roi_tool == "polygon":
            self._add_vertex(event.position())
        elif button == Qt.LeftButton and self.ruler_mode:
            self._drag = ("ruler", event.position(), None)
            self._measuring = (event.position(), event.position())
        elif button == Qt.LeftButton and self.mark_mode:
            box = bool(event.modifiers() & Qt.ShiftModifier)
            self._drag = ("mark", event.position(), box)
            self._rubber = (event.position(), event.position(), box)
        elif button == Qt.LeftButton:
            hit = self.marker_under(event.position())
            if hit:
                self._drag = None
                self.marker_clicked.emit(hit)
                return
            roi = self.session.roi_at(self.name, *self.widget_to_image(event.position()))
            if roi is not None or self.session.selected_roi is not None:
                self.session.select_roi(roi)
                if roi is not None:
                    self.roi_clicked.emit(roi)
            self._drag = ("point", event.position(), None)
            self._move_point(event.position())

    def marker_under(self, position: QPointF) -> str:
        """The key of the marker drawn under a widget position ("" for none)."""
        row, col = self.widget_to_image(position)
        tolerance = 4.0 / self.pixels_per_mm()  # a few screen pixels around the outline
        hit = marker_at(self.session.screen_markers(self.name), row, col, self.state.mapping, tolerance)
        return hit.marker.key if hit is not None else ""

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        if not self.state.ready:
            return
        position = event.position()
        row, col = self.widget_to_image(position)
        self.hovered.emit(self.state.screen_to_lps(row, col))
        if self._polygon:
            self._hover = position
            self.update()
        if self._drag is None:
            return
        mode, start, value = self._drag
        if mode == "point":
            self._move_point(position)
        elif mode == "mark":
            self._rubber = (start, position, value)
            self.update()
        elif mode == "ruler":
            self._measuring = (start, position)
            self.update()
        elif mode == "roi":
            self._roi_drag = (start, position)
            self.update()
        elif mode == "window":
            self._drag_window(position - start, value)
        elif mode == "pan":
            self._drag_pan(position - start, value)

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802
        if self._drag is not None and self._drag[0] == "ruler" and event.button() == Qt.LeftButton:
            start, end = self._drag[1], event.position()
            if (end - start).manhattanLength() >= 4:
                self.session.add_ruler(self.name, self.state.screen_to_lps(*clip_to_image(self.state, *self.widget_to_image(start))),
                                       self.state.screen_to_lps(*clip_to_image(self.state, *self.widget_to_image(end))))
        self._measuring = None
        if self._drag is not None and self._drag[0] == "roi" and event.button() == Qt.LeftButton:
            start, end = self._drag[1], event.position()
            if (end - start).manhattanLength() >= 4:
                self.roi_drawn.emit(self.name, self.roi_tool, [self._lps_at(start), self._lps_at(end)])
        self._roi_drag = None
        if self._drag is not None and self._drag[0] == "mark" and event.button() == Qt.LeftButton:
            start, end, box = self._drag[1], event.position(), self._drag[2]
            if (end - start).manhattanLength() < 4:
                # A click: wait out a possible double click (which fits and places nothing).
                self._pending_click = (start, end)
                self._click_timer.start(QApplication.styleHints().mouseDoubleClickInterval())
            else:
                self._finish_mark(start, end, box=box)
        self._drag = None
        self._rubber = None
        self.update()

    def mouseDoubleClickEvent(self, event) -> None:  # noqa: N802
        if self.roi_tool == "polygon" and event.button() == Qt.LeftButton:
            self.close_polygon()  # a double click ends the polygon (its first click placed the last vertex)
            return
        self._click_timer.stop()
        self._pending_click = None
        self._drag = None
        self._rubber = None
        if event.button() == Qt.LeftButton and self.state.ready:
            self.session.set_zoom(self.name, None)

    def _place_pending_click(self) -> None:
        if self._pending_click is not None and self.state.ready:
            start, end = self._pending_click
            self._pending_click = None
            self._finish_mark(start, end, click=True)

    def leaveEvent(self, event) -> None:  # noqa: N802
        self.hovered.emit(None)

    def wheelEvent(self, event) -> None:  # noqa: N802
        """Scroll one slice per notch (fine wheels and trackpads add up to a notch); Ctrl zooms."""
        event.accept()
        self.navigated.emit()
        if not self.state.ready:
            return
        delta = event.angleDelta().y() or event.angleDelta().x()
        if event.modifiers() & Qt.ControlModifier:
            self.zoom_about(event.position(), _ZOOM_STEP ** (delta / WHEEL_NOTCH))
            return
        if self._wheel_rest and (self._wheel_rest > 0) != (delta > 0):
            self._wheel_rest = 0  # the wheel turned back: start again from this event
        self._wheel_rest += delta
        steps = int(self._wheel_rest / WHEEL_NOTCH)  # toward zero
        if steps:
            self._wheel_rest -= steps * WHEEL_NOTCH
            self.session.scroll(self.name, -steps)

    def navigation_keys(self) -> set[int]:
        """The keys this view acts on (the main window sends them here wherever the focus is)."""
        return set(_SCROLL_KEYS) | {Qt.Key_Home, Qt.Key_End, Qt.Key_Plus, Qt.Key_Equal, Qt.Key_Minus, Qt.Key_F,
                                    Qt.Key_0, Qt.Key_R, Qt.Key_A, Qt.Key_C, Qt.Key_S, Qt.Key_I, Qt.Key_H,
                                    *_DIGITS}

    def has_pending_click(self) -> bool:
        """Whether a mark click waits out a double click (keys typed now go to its site box)."""
        return self._pending_click is not None

    def _on_image(self, position: QPointF) -> bool:
        """Whether a widget position lies on the displayed slice (not in the black beside it)."""
        row, col = self.widget_to_image(position)
        m = self.state.mapping
        return -0.5 <= row <= m.rows - 0.5 and -0.5 <= col <= m.cols - 0.5

    def _lps_at(self, position: QPointF) -> np.ndarray:
        return self.state.screen_to_lps(*clip_to_image(self.state, *self.widget_to_image(position)))

    def _add_vertex(self, position: QPointF) -> None:
        """Place a polygon vertex; a click on the first vertex (within 6 pixels) closes the polygon."""
        if len(self._polygon) >= 3:
            first = self.image_to_widget(*self._polygon[0])
            if (first - position).manhattanLength() <= 6:
                self.close_polygon()
                return
        vertex = clip_to_image(self.state, *self.widget_to_image(position))
        if not self._polygon or vertex != self._polygon[-1]:
            self._polygon.append(vertex)
        self.update()

    def close_polygon(self) -> None:
        """Finish the polygon being drawn (three vertices or more; fewer: nothing is drawn)."""
        vertices, self._polygon, self._hover = self._polygon, [], None
        if len(vertices) >= 3 and self.state.ready:
            self.roi_drawn.emit(self.name, "polygon", [self.state.screen_to_lps(r, c) for r, c in vertices])
        self.update()

    def drawing_roi(self) -> bool:
        """Whether an ROI is being drawn (Esc cancels it)."""
        return bool(self._polygon) or self._roi_drag is not None

    def cancel_roi(self) -> None:
        """Forget the ROI being drawn."""
        self._polygon, self._hover, self._roi_drag = [], None, None
        if self._drag is not None and self._drag[0] == "roi":
            self._drag = None
        self.update()

    def cancel_pending_click(self) -> None:
        """Forget a mark click still waiting out a double click (Esc)."""
        self._click_timer.stop()
        self._pending_click = None

    def keyPressEvent(self, event) -> None:  # noqa: N802
        key = event.key()
        if key in self.navigation_keys():
            self.navigated.emit()
        if self._pending_click is not None:
            # Typing right after a mark click: place the lesion now, the keys go to its site box.
            self._click_timer.stop()
            self._place_pending_click()
            target = QApplication.focusWidget()
            if target is not None and target is not self:
                QApplication.sendEvent(target, QKeyEvent(QEvent.KeyPress, key, event.modifiers(), event.text()))
                return
        if key == Qt.Key_Space:
            self._space = True
            return
        if event.modifiers() & (Qt.ControlModifier | Qt.AltModifier | Qt.MetaModifier):
            super().keyPressEvent(event)
            return
        if key == Qt.Key_H:
            self.session.set_overlays(not self.session.overlays)
            return
        if key in (Qt.Key_Return, Qt.Key_Enter) and self._polygon:
            self.close_polygon()
            return
        if key in (Qt.Key_Delete, Qt.Key_Backspace):
            if self.session.selected_roi is not None:
                self.roi_delete.emit(self.session.selected_roi)
            else:
                self.lesion_delete.emit()
            return
        if not self.state.ready:
            if key in self.navigation_keys() and self.state.status == "loading" and len(self._early_keys) < 64:
                # a volume is on its way (a start or a case just opened): the reader's arrows act once it shows
                self._early_keys.append((key, event.modifiers(), event.text()))
                return
            super().keyPressEvent(event)
            return
        m = self.state.mapping
        planes = {Qt.Key_A: "axial", Qt.Key_C: "coronal", Qt.Key_S: "sagittal"}
        if key in _SCROLL_KEYS:
            page = max(1, m.slices // 10)
            self.session.scroll(self.name, _SCROLL_KEYS[key] * (page if key in (Qt.Key_PageUp, Qt.Key_PageDown) else 1))
        elif key == Qt.Key_Home:
            self.session.go_to_slice(self.name, 0)
        elif key == Qt.Key_End:
            self.session.go_to_slice(self.name, m.slices - 1)
        elif key in (Qt.Key_Plus, Qt.Key_Equal):
            self.zoom_about(self._zoom_anchor(), _ZOOM_STEP)
        elif key == Qt.Key_Minus:
            self.zoom_about(self._zoom_anchor(), 1 / _ZOOM_STEP)
        elif key in (Qt.Key_F, Qt.Key_0):
            self.session.set_zoom(self.name, None)
        elif key == Qt.Key_R:
            self.session.set_zoom(self.name, None)
            self.session.set_inverted(self.name, False)
            self.session.apply_preset(self.name, next(iter(self.state.presets)))
        elif key == Qt.Key_I:
            self.session.set_inverted(self.name, not self.state.inverted)
        elif key in _DIGITS:
            self.session.apply_preset_number(self.name, _DIGITS[key])
        elif key in planes:
            self.session.set_plane(self.name, planes[key])
        else:
            super().keyPressEvent(event)

    def keyReleaseEvent(self, event) -> None:  # noqa: N802
        if event.key() == Qt.Key_Space and not event.isAutoRepeat():
            self._space = False
        super().keyReleaseEvent(event)

    # -- gestures --------------------------------------------------------------
    def _finish_mark(self, start: QPointF, end: QPointF, box: bool = False, click: bool = False) -> None:
        """Turn a gesture into a lesion (the geometry: :func:`cno_annotate.display.marking.gesture_lesion`).

        A gesture that starts beside the slice (outside the field of view) places nothing: clipped to the
        image's edge, the lesion would lie where the reader did not point.
        """
        if not self._on_image(start):
            self.message.emit("That point is outside the image (the field of view): no lesion placed; "
                              "click on the image")
            return
        centre, extent = gesture_lesion(self.state, self.widget_to_image(start), self.widget_to_image(end),
                                        box=box, click=click or (end - start).manhattanLength() < 4)
        self.lesion_drawn.emit(self.name, centre, extent)

    def _paint_rubber(self, painter: QPainter) -> None:
        start, end, box = self._rubber
        painter.setPen(QPen(QColor(255, 90, 90), 1.5, Qt.DashLine))
        painter.setBrush(Qt.NoBrush)
        d = end - start
        if box:
            painter.drawRect(QRectF(start, end).normalized())
        else:
            painter.drawEllipse(start, abs(d.x()), abs(d.y()))

    def _move_point(self, position: QPointF) -> None:
        row, col = clip_to_image(self.state, *self.widget_to_image(position))
        self.session.set_point(self.name, self.state.screen_to_lps(row, col))

    def zoom_about(self, position: QPointF, factor: float) -> None:
        """Zoom by ``factor`` keeping the image point under ``position`` still."""
        row, col = self.widget_to_image(position)
        old = self.pixels_per_mm()
        new = old * factor
        c_row, c_col = self._centre_pixel()
        keep = 1 - old / new  # the centre moves this far toward the point under the mouse
        centre = (c_row + (row - c_row) * keep, c_col + (col - c_col) * keep)
        self.session.set_zoom(self.name, new, self.state.screen_to_lps(*centre))

    def _zoom_anchor(self) -> QPointF:
        """Where + and - zoom about: the crosshair while it is in view (the reader's point stays put), else the centre."""
        point = self.state.point
        if point is not None:
            at = self.image_to_widget(*self.state.lps_to_screen(point))
            if 0 <= at.x() < self.width() and 0 <= at.y() < self.height():
                return at
        return QPointF(self.width() / 2, self.height() / 2)

    def _drag_window(self, delta: QPointF, start: Window) -> None:
        sensitivity = max(start.width, 1.0) / 300.0
        self.session.set_window(self.name, start.adjusted(-delta.y() * sensitivity, delta.x() * sensitivity * 2))

    def _drag_pan(self, delta: QPointF, start_centre: tuple[float, float]) -> None:
        m = self.state.mapping
        scale = self.pixels_per_mm()
        row = start_centre[0] - delta.y() / (m.row_mm * scale)
        col = start_centre[1] - delta.x() / (m.col_mm * scale)
        self.session.set_zoom(self.name, scale, self.state.screen_to_lps(row, col))


_SCROLL_KEYS = {Qt.Key_Up: -1, Qt.Key_Down: 1, Qt.Key_Left: -1, Qt.Key_Right: 1, Qt.Key_PageUp: -1,
                Qt.Key_PageDown: 1}
_DIGITS = {getattr(Qt, f"Key_{n}"): n for n in range(1, 10)}


_TEXT_CACHE: dict[tuple, tuple[QImage, QPointF]] = {}
_TEXT_CACHE_SIZE = 512


def _outlined_text(painter: QPainter, baseline: QPointF, text: str, colour: QColor) -> None:
    """Text with a dark outline, readable over bright fat and dark air alike.

    Stroking a glyph outline is slow (about a millisecond per label), so each
    label is rendered once into an image, kept by text, font, colour and
    device pixel ratio, and drawn as an image afterwards.
    """
    if not text:
        return
    font = painter.font()
    ratio = painter.device().devicePixelRatioF() if painter.device() is not None else 1.0
    key = (text, font.key(), colour.rgba(), ratio)
    cached = _TEXT_CACHE.get(key)
    if cached is None:
        metrics = QFontMetricsF(font)
        pad = 3.0
        width = metrics.horizontalAdvance(text) + 2 * pad
        height = metrics.height() + 2 * pad
        image = QImage(max(1, math.ceil(width * ratio)), max(1, math.ceil(height * ratio)),
                       QImage.Format_ARGB32_Premultiplied)
        image.setDevicePixelRatio(ratio)
        image.fill(Qt.transparent)
        origin = QPointF(pad, pad + metrics.ascent())
        path = QPainterPath()
        path.addText(origin, font, text)
        p = QPainter(image)
        p.setRenderHint(QPainter.Antialiasing, True)
        p.setPen(QPen(OUTLINE, 3, Qt.SolidLine, Qt.RoundCap, Qt.RoundJoin))
        p.drawPath(path)
        p.setPen(Qt.NoPen)
        p.setBrush(colour)
        p.drawPath(path)
        p.end()
        if len(_TEXT_CACHE) >= _TEXT_CACHE_SIZE:
            _TEXT_CACHE.pop(next(iter(_TEXT_CACHE)))
        cached = _TEXT_CACHE[key] = (image, origin)
    image, origin = cached
    painter.drawImage(baseline - origin, image)




_STRIPS: dict[str, QImage] = {}


def _dash_strips(width: int, height: int) -> tuple[QImage, QImage]:
    """A horizontal and a vertical dashed crosshair line (4 pixels on, 2 off, from the widget's edge), long
    enough for a view of ``width`` x ``height``; made again only when a view is larger than the last."""
    for name, length in (("horizontal", width), ("vertical", height)):
        if name not in _STRIPS or max(_STRIPS[name].width(), _STRIPS[name].height()) < length:
            size = max(length, 2048)
            pattern = np.zeros(size, np.uint32)
            pattern[np.arange(size) % 6 < 4] = CROSSHAIR.rgba()
            image = QImage(pattern.data, size if name == "horizontal" else 1, 1 if name == "horizontal" else size,
                           (size if name == "horizontal" else 1) * 4, QImage.Format_ARGB32)
            _STRIPS[name] = image.convertToFormat(QImage.Format_ARGB32_Premultiplied)  # a copy: owns its pixels
    return _STRIPS["horizontal"], _STRIPS["vertical"]


def _mask_boxes(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Rectangles (top, bottom, left, right; bottom and right exclusive) covering a boolean image."""
    boxes: list[tuple[int, int, int, int]] = []
    open_runs: dict[tuple[int, int], int] = {}
    for row in range(mask.shape[0] + 1):
        runs: set[tuple[int, int]] = set()
        if row < mask.shape[0]:
            line = np.concatenate(([False], mask[row], [False]))
            edges = np.flatnonzero(line[1:] != line[:-1])
            runs = {(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])}
        for run in list(open_runs):
            if run not in runs:
                boxes.append((open_runs.pop(run), row, run[0], run[1]))
        for run in runs:
            open_runs.setdefault(run, row)
    return boxes
