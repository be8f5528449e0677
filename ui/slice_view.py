"""One image view: draws a :class:`ViewState` and turns gestures into session calls.

Mouse: left click / drag moves the crosshair (the linked point); wheel
scrolls slices; Ctrl+wheel zooms about the mouse; right drag changes window
(horizontal) and level (vertical); middle drag or Space+left drag pans;
double click fits. Keyboard: see :data:`cno_annotate_ui.help.SHORTCUTS`.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from cno_annotate.display.session import ViewerSession, ViewState
from cno_annotate.display.windowing import Window, Windowing

CROSSHAIR = QColor(255, 220, 0, 170)
TEXT = QColor(230, 230, 230)
LETTERS = QColor(255, 210, 90)
_NICE_MM = (5, 10, 20, 50, 100, 200, 500)
_ZOOM_STEP = 1.25


class SliceView(QWidget):
    """A view of one :class:`ViewState` of a :class:`ViewerSession`."""

    hovered = Signal(object)  # LPS point under the mouse (numpy array) or None
    first_image_painted = Signal()
    lesion_drawn = Signal(str, object, object)  # view name, LPS centre, extent dict or None

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
        self._drawn: tuple | None = None
        self._buffer = None
        self._drag = None  # (mode, start position, start value)
        self._space = False
        self._painted_once = False
        self.mark_mode = False  # left click / drag places a lesion instead of moving the crosshair
        self._rubber: tuple[QPointF, QPointF] | None = None
        session.changed.connect(self._on_session_changed)

    @property
    def state(self) -> ViewState:
        """The view's state in the session."""
        return self.session.views[self.name]

    # -- geometry --------------------------------------------------------------
    def pixels_per_mm(self) -> float:
        """Current zoom: screen pixels per millimetre (fit when the zoom is unset)."""
        view = self.state
        if view.zoom is not None:
            return view.zoom
        m = view.mapping
        width_mm, height_mm = m.cols * m.col_mm, m.rows * m.row_mm
        return 0.98 * min(self.width() / width_mm, self.height() / height_mm)

    def _centre_pixel(self) -> tuple[float, float]:
        """Image (row, column) shown at the widget's centre."""
        view = self.state
        if view.centre is None:
            return (view.mapping.rows - 1) / 2, (view.mapping.cols - 1) / 2
        return view.lps_to_screen(view.centre)

    def image_to_widget(self, row: float, col: float) -> QPointF:
        """Widget position of the centre of image pixel (row, column)."""
        m = self.state.mapping
        scale = self.pixels_per_mm()
        c_row, c_col = self._centre_pixel()
        return QPointF(self.width() / 2 + (col - c_col) * m.col_mm * scale,
                       self.height() / 2 + (row - c_row) * m.row_mm * scale)

    def widget_to_image(self, point: QPointF) -> tuple[float, float]:
        """Image (row, column) under a widget position."""
        m = self.state.mapping
        scale = self.pixels_per_mm()
        c_row, c_col = self._centre_pixel()
        return (c_row + (point.y() - self.height() / 2) / (m.row_mm * scale),
                c_col + (point.x() - self.width() / 2) / (m.col_mm * scale))

    # -- painting --------------------------------------------------------------
    def current_image(self) -> tuple[QImage, QRectF, QRectF]:
        """The windowed slice as an 8-bit image, with its target and source rectangles.

        Zoomed out (an image pixel smaller than a screen pixel), the visible
        part of the slice is sampled at screen resolution (nearest voxel)
        before windowing, and drawn 1:1; zoomed in, the whole slice is
        windowed and Qt scales it smoothly. Cached until slice, window or
        geometry change.
        """
        view = self.state
        m = view.mapping
        scale = self.pixels_per_mm()
        sample = scale * m.col_mm <= 1.0 and scale * m.row_mm <= 1.0
        geometry = (self.width(), self.height(), scale, self._centre_pixel()) if sample else None
        key = (id(view.volume), view.plane, view.slice_index, view.window, geometry)
        if key == self._image_key:
            return self._drawn
        image = view.image()
        top_left = self.image_to_widget(-0.5, -0.5)
        bottom_right = self.image_to_widget(m.rows - 0.5, m.cols - 0.5)
        target = QRectF(top_left, bottom_right)
        source = QRectF(0, 0, m.cols, m.rows)
        if sample:
            image, target = self._screen_sample(image, target)
            source = QRectF(0, 0, image.shape[1], image.shape[0])
        display = self._windowing.apply(image, view.window)
        self._buffer = display
        rows, cols = display.shape
        self._drawn = (QImage(display.data, cols, rows, cols, QImage.Format_Grayscale8), target, source)
        self._image_key = key
        return self._drawn

    def _screen_sample(self, image: np.ndarray, target: QRectF) -> tuple[np.ndarray, QRectF]:
        """The nearest image pixel for every visible screen pixel of ``target``."""
        x0, y0 = max(0, math.floor(target.left())), max(0, math.floor(target.top()))
        x1, y1 = min(self.width(), math.ceil(target.right())), min(self.height(), math.ceil(target.bottom()))
        if x1 <= x0 or y1 <= y0:
            return image[:1, :1], QRectF(0, 0, 0, 0)
        xs = (np.arange(x0, x1) + 0.5 - target.left()) / target.width() * image.shape[1]
        ys = (np.arange(y0, y1) + 0.5 - target.top()) / target.height() * image.shape[0]
        cols = np.clip(xs.astype(np.intp), 0, image.shape[1] - 1)
        rows = np.clip(ys.astype(np.intp), 0, image.shape[0] - 1)
        sampled = image.take(rows, axis=0).take(cols, axis=1)
        return sampled, QRectF(x0, y0, x1 - x0, y1 - y0)

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt API)
        painter = QPainter(self)
        painter.fillRect(self.rect(), Qt.black)
        view = self.state
        if not view.ready:
            self._paint_status(painter, view)
            painter.end()
            return
        image, target, source = self.current_image()
        painter.setRenderHint(QPainter.SmoothPixmapTransform, target.width() > source.width() * 1.5)
        painter.drawImage(target, image, source)
        painter.setRenderHint(QPainter.Antialiasing, True)
        self._paint_markers(painter)
        self._paint_crosshair(painter)
        if self._rubber is not None:
            self._paint_rubber(painter)
        self._paint_annotations(painter, view)
        painter.end()
        if not self._painted_once:
            self._painted_once = True
            if os.environ.get("CNO_ANNOTATE_TIMING"):
                print(f"first-image-painted {self.name} {time.time():.6f}", flush=True)
            self.first_image_painted.emit()

    def _paint_status(self, painter: QPainter, view: ViewState) -> None:
        painter.setPen(TEXT if view.status != "error" else QColor(255, 120, 120))
        painter.setFont(QFont(self.font().family(), 11))
        if view.status == "loading":
            text = f"Loading {view.label} … {int(100 * view.progress)} %"
        elif view.status == "error":
            text = f"Cannot show {view.label or 'this series'}:\n{view.message}"
        else:
            text = "No series selected"
        painter.drawText(self.rect().adjusted(12, 12, -12, -12), Qt.AlignCenter | Qt.TextWordWrap, text)

    def _paint_crosshair(self, painter: QPainter) -> None:
        row, col = self.state.lps_to_screen(self.state.point)
        centre = self.image_to_widget(row, col)
        pen = QPen(CROSSHAIR, 1, Qt.DashLine)
        painter.setPen(pen)
        gap = 8
        painter.drawLine(QPointF(0, centre.y()), QPointF(centre.x() - gap, centre.y()))
        painter.drawLine(QPointF(centre.x() + gap, centre.y()), QPointF(self.width(), centre.y()))
        painter.drawLine(QPointF(centre.x(), 0), QPointF(centre.x(), centre.y() - gap))
        painter.drawLine(QPointF(centre.x(), centre.y() + gap), QPointF(centre.x(), self.height()))

    def _paint_markers(self, painter: QPainter) -> None:
        m = self.state.mapping
        scale = self.pixels_per_mm()
        for sm in self.session.screen_markers(self.name):
            centre = self.image_to_widget(sm.row, sm.col)
            colour = QColor(sm.marker.colour)
            pen = QPen(colour, 3 if sm.marker.selected else 2, Qt.SolidLine if sm.in_plane else Qt.DotLine)
            painter.setPen(pen)
            painter.setBrush(Qt.NoBrush)
            painter.drawEllipse(centre, sm.col_radius * m.col_mm * scale, sm.row_radius * m.row_mm * scale)
            if sm.marker.label:
                painter.drawText(centre + QPointF(sm.col_radius * m.col_mm * scale + 3, -3), sm.marker.label)

    def _paint_annotations(self, painter: QPainter, view: ViewState) -> None:
        m = view.mapping
        painter.setFont(QFont(self.font().family(), 10))
        metrics = painter.fontMetrics()
        w, h = self.width(), self.height()
        painter.setPen(LETTERS)
        bold = QFont(self.font().family(), 12, QFont.Bold)
        painter.setFont(bold)
        painter.drawText(QRectF(4, 0, 30, h), Qt.AlignVCenter | Qt.AlignLeft, m.letters["left"])
        painter.drawText(QRectF(w - 34, 0, 30, h), Qt.AlignVCenter | Qt.AlignRight, m.letters["right"])
        painter.drawText(QRectF(0, metrics.height() + 6, w, 24), Qt.AlignHCenter | Qt.AlignTop, m.letters["top"])
        painter.drawText(QRectF(0, h - 26, w, 24), Qt.AlignHCenter | Qt.AlignBottom, m.letters["bottom"])
        painter.setFont(QFont(self.font().family(), 10))
        painter.setPen(TEXT)
        line = metrics.height() + 2
        texts = self._corner_texts()
        painter.drawText(QPointF(8, line), texts["label"])
        painter.drawText(QPointF(w - metrics.horizontalAdvance(texts["plane"]) - 8, line), texts["plane"])
        painter.drawText(QPointF(w - metrics.horizontalAdvance(texts["window"]) - 8, h - 8), texts["window"])
        self._paint_scale_bar(painter, h)

    def _corner_texts(self) -> dict[str, str]:
        view = self.state
        return {
            "label": view.label,
            "plane": f"{view.plane.capitalize()}  {view.slice_index + 1}/{view.mapping.slices}",
            "window": f"W {view.window.width:.0f}  L {view.window.level:.0f}",
        }

    def overlay_texts(self) -> list[str]:
        """Every string this view paints over the image (for blinding checks)."""
        view = self.state
        if not view.ready:
            return [view.label, view.message]
        texts = list(self._corner_texts().values()) + list(view.mapping.letters.values())
        texts.append(self._scale_bar()[1])
        texts += [sm.marker.label for sm in self.session.screen_markers(self.name)]
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
        painter.setPen(QPen(TEXT, 2))
        painter.drawLine(QPointF(12, y), QPointF(12 + length_px, y))
        painter.drawLine(QPointF(12, y - 4), QPointF(12, y + 4))
        painter.drawLine(QPointF(12 + length_px, y - 4), QPointF(12 + length_px, y + 4))
        painter.drawText(QPointF(12, y - 6), text)

    # -- events ----------------------------------------------------------------
    def _on_session_changed(self, name, what) -> None:
        if name is None or name == self.name:
            if what == "volume":
                self._image_key = None
            self.update()

    def mousePressEvent(self, event) -> None:  # noqa: N802
        self.setFocus()
        if not self.state.ready:
            return
        button = event.button()
        if button == Qt.MiddleButton or (button == Qt.LeftButton and self._space):
            self._drag = ("pan", event.position(), self._centre_pixel())
        elif button == Qt.RightButton:
            self._drag = ("window", event.position(), self.state.window)
        elif button == Qt.LeftButton and self.mark_mode:
            box = bool(event.modifiers() & Qt.ShiftModifier)
            self._drag = ("mark", event.position(), box)
            self._rubber = (event.position(), event.position(), box)
        elif button == Qt.LeftButton:
            self._drag = ("point", event.position(), None)
            self._move_point(event.position())

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        if not self.state.ready:
            return
        position = event.position()
        row, col = self.widget_to_image(position)
        self.hovered.emit(self.state.screen_to_lps(row, col))
        if self._drag is None:
            return
        mode, start, value = self._drag
        if mode == "point":
            self._move_point(position)
        elif mode == "mark":
            self._rubber = (start, position, value)
            self.update()
        elif mode == "window":
            self._drag_window(position - start, value)
        elif mode == "pan":
            self._drag_pan(position - start, value)

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802
        if self._drag is not None and self._drag[0] == "mark" and event.button() == Qt.LeftButton:
            self._finish_mark(self._drag[1], event.position(), box=self._drag[2])
        self._drag = None
        self._rubber = None
        self.update()

    def mouseDoubleClickEvent(self, event) -> None:  # noqa: N802
        if event.button() == Qt.LeftButton and self.state.ready:
            self.session.set_zoom(self.name, None)

    def leaveEvent(self, event) -> None:  # noqa: N802
        self.hovered.emit(None)

    def wheelEvent(self, event) -> None:  # noqa: N802
        if not self.state.ready:
            return
        steps = event.angleDelta().y() / 120 or event.angleDelta().x() / 120
        if event.modifiers() & Qt.ControlModifier:
            self.zoom_about(event.position(), _ZOOM_STEP ** steps)
        else:
            self.session.scroll(self.name, -int(math.copysign(max(1, round(abs(steps))), steps)) if steps else 0)

    def keyPressEvent(self, event) -> None:  # noqa: N802
        key = event.key()
        if key == Qt.Key_Space:
            self._space = True
            return
        if not self.state.ready:
            super().keyPressEvent(event)
            return
        m = self.state.mapping
        scroll = {Qt.Key_Up: -1, Qt.Key_Down: 1, Qt.Key_Left: -1, Qt.Key_Right: 1,
                  Qt.Key_PageUp: -max(1, m.slices // 10), Qt.Key_PageDown: max(1, m.slices // 10)}
        planes = {Qt.Key_A: "axial", Qt.Key_C: "coronal", Qt.Key_S: "sagittal"}
        if key in scroll:
            self.session.scroll(self.name, scroll[key])
        elif key == Qt.Key_Home:
            self.session.go_to_slice(self.name, 0)
        elif key == Qt.Key_End:
            self.session.go_to_slice(self.name, m.slices - 1)
        elif key in (Qt.Key_Plus, Qt.Key_Equal):
            self.zoom_about(QPointF(self.width() / 2, self.height() / 2), _ZOOM_STEP)
        elif key == Qt.Key_Minus:
            self.zoom_about(QPointF(self.width() / 2, self.height() / 2), 1 / _ZOOM_STEP)
        elif key in (Qt.Key_F, Qt.Key_0):
            self.session.set_zoom(self.name, None)
        elif key == Qt.Key_R:
            self.session.set_zoom(self.name, None)
            self.session.apply_preset(self.name, next(iter(self.state.presets)))
        elif key in planes:
            self.session.set_plane(self.name, planes[key])
        else:
            super().keyPressEvent(event)

    def keyReleaseEvent(self, event) -> None:  # noqa: N802
        if event.key() == Qt.Key_Space and not event.isAutoRepeat():
            self._space = False
        super().keyReleaseEvent(event)

    # -- gestures --------------------------------------------------------------
    def _finish_mark(self, start: QPointF, end: QPointF, box: bool = False) -> None:
        """Turn a gesture into a lesion.

        A click places a point; a drag draws an ellipse from its centre; a
        Shift+drag draws a box from corner to corner. The extent's depth across
        the slices is the narrower in-plane half-size, on both sides of the slice.
        """
        view = self.state
        m = view.mapping
        row0, col0 = self._clipped(start)
        row1, col1 = self._clipped(end)
        a, b = abs(col1 - col0) * m.col_mm, abs(row1 - row0) * m.row_mm
        normal = {"axial": 2, "coronal": 1, "sagittal": 0}[view.plane]
        if (end - start).manhattanLength() < 4 or max(a, b) < 1.0:
            self.lesion_drawn.emit(self.name, view.screen_to_lps(row0, col0), None)
            return
        if box:
            corners = np.array([view.screen_to_lps(row0, col0), view.screen_to_lps(row1, col1)])
            depth = max(min(a, b) / 2, m.slice_mm / 2)
            low, high = corners.min(axis=0), corners.max(axis=0)
            low[normal], high[normal] = corners[0][normal] - depth, corners[0][normal] + depth
            extent = {"kind": "box", "min_mm": [round(v, 2) for v in low], "max_mm": [round(v, 2) for v in high]}
            self.lesion_drawn.emit(self.name, (low + high) / 2, extent)
            return
        centre = view.screen_to_lps(row0, col0)
        a, b = max(a, 1.0), max(b, 1.0)
        depth = min(a, b)
        extent = {"kind": "ellipse", "plane": view.plane, "radii_mm": [round(a, 2), round(b, 2)],
                  "slice_range_mm": [round(centre[normal] - depth, 2), round(centre[normal] + depth, 2)]}
        self.lesion_drawn.emit(self.name, centre, extent)

    def _clipped(self, point: QPointF) -> tuple[float, float]:
        row, col = self.widget_to_image(point)
        m = self.state.mapping
        return float(np.clip(row, 0, m.rows - 1)), float(np.clip(col, 0, m.cols - 1))

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
        row, col = self.widget_to_image(position)
        m = self.state.mapping
        row = float(np.clip(row, 0, m.rows - 1))
        col = float(np.clip(col, 0, m.cols - 1))
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

    def _drag_window(self, delta: QPointF, start: Window) -> None:
        sensitivity = max(start.width, 1.0) / 300.0
        self.session.set_window(self.name, start.adjusted(-delta.y() * sensitivity, delta.x() * sensitivity * 2))

    def _drag_pan(self, delta: QPointF, start_centre: tuple[float, float]) -> None:
        m = self.state.mapping
        scale = self.pixels_per_mm()
        row = start_centre[0] - delta.y() / (m.row_mm * scale)
        col = start_centre[1] - delta.x() / (m.col_mm * scale)
        self.session.set_zoom(self.name, scale, self.state.screen_to_lps(row, col))
