"""The bone-unit checklist: a clickable schematic skeleton coloured by each unit's state.

A click on a unit asks the window to move the views to it; a right click marks
it (no lesion, not assessable, clear). The states come from
:func:`cno_annotate.display.checklist.unit_states`; this widget only draws them.
"""

from __future__ import annotations

import math

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPen, QTransform
from PySide6.QtWidgets import QMenu, QSizePolicy, QToolTip, QWidget

from cno_annotate.annotation.model import UnitMark
from cno_annotate.annotation.taxonomy import Taxonomy
from cno_annotate.display.checklist import STATE_LABELS, UnitShape, UnitState, shape_bounds, unit_shapes

#: Fill of each state (Okabe-Ito colours, told apart with colour-blind vision); not reviewed: no fill.
STATE_COLOURS = {UnitState.LESION: QColor("#e3591c"), UnitState.NO_LESION: QColor("#1fa37a"),
                 UnitState.NOT_ASSESSABLE: QColor("#c979b0"), UnitState.NOT_REVIEWED: QColor(0, 0, 0, 0)}
EDGE = QColor(170, 170, 176)
LEGEND_ROW = 16.0
MARGIN = 6.0


def unit_label(taxonomy: Taxonomy, unit_id: str) -> str:
    """A unit as a reader names it, the taxonomy's display name: ``Distal femur R``."""
    return taxonomy.unit_label(unit_id)


def _path(shape) -> QPainterPath:
    """A schematic shape as a path in schematic mm (x right-to-left of the patient, z up)."""
    path = QPainterPath()
    if shape.kind == "capsule":
        (ax, az), (bx, bz) = shape.a, shape.b
        length = ((bx - ax) ** 2 + (bz - az) ** 2) ** 0.5 + shape.width * 0.3
        local = QPainterPath()
        local.addRoundedRect(QRectF(-length / 2, -shape.width / 2, length, shape.width), shape.width / 2,
                             shape.width / 2)
        turn = QTransform()
        turn.translate((ax + bx) / 2, (az + bz) / 2)
        turn.rotate(math.degrees(math.atan2(bz - az, bx - ax)))
        return turn.map(local)
    if shape.kind == "circle":
        path.addEllipse(QPointF(*shape.centre), shape.radius, shape.radius)
        return path
    x0, x1, z0, z1 = shape_bounds(shape)
    if shape.kind == "rectangle":
        path.addRect(QRectF(x0, z0, x1 - x0, z1 - z0))
    else:
        path.addEllipse(QRectF(x0, z0, x1 - x0, z1 - z0))
    return path


#: A click this many pixels beside a unit's outline still takes the unit.
NEAR_PX = 4.0


class SkeletonChecklist(QWidget):
    """Every bone unit on a front-view skeleton, filled by state, with a legend below.

    Signals
    -------
    unit_clicked(unit_id)
        A left click on a unit (go to it).
    mark_requested(unit_id, mark)
        A mark chosen from the right-click menu (``no_lesion``, ``not_assessable`` or ``""`` to clear).
    """

    unit_clicked = Signal(str)
    mark_requested = Signal(str, str)

    def __init__(self, taxonomy: Taxonomy, parent=None):
        super().__init__(parent)
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.NoFocus)  # a click never takes the keyboard from the image
        self.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Expanding)
        self.setMinimumSize(120, 220)
        self.states: dict[str, UnitState] = {}
        self.editable = False
        self.set_taxonomy(taxonomy)

    def set_taxonomy(self, taxonomy: Taxonomy) -> None:
        """Draw the units of this taxonomy."""
        self.taxonomy = taxonomy
        self.shapes: list[UnitShape] = unit_shapes(taxonomy)
        self._paths = [_path(u.shape) for u in self.shapes]
        bounds = [shape_bounds(u.shape) for u in self.shapes]
        self._extent = (min(b[0] for b in bounds), max(b[1] for b in bounds),
                        min(b[2] for b in bounds), max(b[3] for b in bounds))
        self.update()

    def set_states(self, states: dict[str, UnitState], editable: bool) -> None:
        """Show each unit's state (units missing from ``states`` are not reviewed)."""
        self.states, self.editable = dict(states), editable
        self.update()

    # -- geometry ----------------------------------------------------------------------
    def _legend_columns(self) -> int:
        """Two legend columns when every entry fits in half the width, else one."""
        widest = max(self.fontMetrics().horizontalAdvance(f"{label} 000") for label in STATE_LABELS.values())
        return 2 if (self.width() - 2 * MARGIN) / 2 >= widest + 16 else 1

    def _legend_height(self) -> float:
        return (len(UnitState) // self._legend_columns()) * LEGEND_ROW + MARGIN

    def transform(self) -> QTransform:
        """Schematic mm -> widget pixels: the patient's right on the screen's left, head up."""
        x0, x1, z0, z1 = self._extent
        width = self.width() - 2 * MARGIN
        height = self.height() - 2 * MARGIN - self._legend_height()
        scale = max(1e-6, min(width / (x1 - x0), height / (z1 - z0)))
        left = MARGIN + (width - scale * (x1 - x0)) / 2
        return QTransform(scale, 0, 0, -scale, left - scale * x0, MARGIN + scale * z1)

    def drawn_at(self, pos: QPointF) -> str | None:
        """The unit whose shape is drawn at a widget position (the topmost), or None."""
        point = self.transform().inverted()[0].map(QPointF(pos))
        for unit_shape, path in zip(reversed(self.shapes), reversed(self._paths)):
            if path.contains(point):
                return unit_shape.unit_id
        return None

    def unit_at(self, pos: QPointF) -> str | None:
        """The unit drawn at a widget position (the topmost shape), else the one within :data:`NEAR_PX` of it.

        Long bones are a few pixels wide at 1280 x 800: a click just beside one still takes it (of
        several within reach, the one whose outline passes nearest).
        """
        drawn = self.drawn_at(pos)
        if drawn is not None:
            return drawn
        transform = self.transform()
        point = transform.inverted()[0].map(QPointF(pos))
        reach = NEAR_PX / max(transform.m11(), 1e-6)  # widget pixels -> schematic mm
        near = []
        for unit_shape, path in zip(self.shapes, self._paths):
            for step in range(1, 5):  # growing squares: the first that touches the outline gives the distance
                size = reach * step / 4
                if path.intersects(QRectF(point.x() - size, point.y() - size, 2 * size, 2 * size)):
                    near.append((step, unit_shape.unit_id))
                    break
        return min(near)[1] if near else None

    def unit_point(self, unit_id: str) -> QPointF:
        """A widget position where a click lands on the unit (near the middle of one of its shapes).

        Raises
        ------
        KeyError
            If the unit is not drawn or is covered everywhere by other shapes.
        """
        transform = self.transform()
        for unit_shape, path in zip(self.shapes, self._paths):
            if unit_shape.unit_id != unit_id:
                continue
            box = transform.mapRect(path.boundingRect())
            for fx, fy in ((0.5, 0.5), (0.5, 0.3), (0.5, 0.7), (0.3, 0.5), (0.7, 0.5), (0.5, 0.15), (0.5, 0.85)):
                point = QPointF(box.left() + fx * box.width(), box.top() + fy * box.height())
                if self.unit_at(point) == unit_id:
                    return point
        raise KeyError(unit_id)

    # -- drawing -------------------------------------------------------------------------
    def paintEvent(self, _event) -> None:  # noqa: N802
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        painter.fillRect(self.rect(), self.palette().base())
        transform = self.transform()
        for unit_shape, path in zip(self.shapes, self._paths):
            state = self.states.get(unit_shape.unit_id, UnitState.NOT_REVIEWED)
            painter.setPen(QPen(EDGE, 1.0))
            painter.setBrush(STATE_COLOURS[state])
            painter.drawPath(transform.map(path))
        self._draw_legend(painter)
        painter.end()

    def _draw_legend(self, painter: QPainter) -> None:
        counts = {state: 0 for state in UnitState}
        for unit_shape in {u.unit_id for u in self.shapes}:
            counts[self.states.get(unit_shape, UnitState.NOT_REVIEWED)] += 1
        top = self.height() - self._legend_height()
        columns = self._legend_columns()
        column = (self.width() - 2 * MARGIN) / columns
        for n, state in enumerate(UnitState):
            x = MARGIN + (n % columns) * column
            y = top + (n // columns) * LEGEND_ROW
            painter.setPen(QPen(EDGE, 1.0))
            painter.setBrush(STATE_COLOURS[state])
            painter.drawRect(QRectF(x, y + 3, 10, 10))
            painter.setPen(self.palette().text().color())
            text = f"{STATE_LABELS[state]} {counts[state]}"
            painter.drawText(QRectF(x + 14, y, column - 16, LEGEND_ROW), Qt.AlignVCenter | Qt.AlignLeft,
                             painter.fontMetrics().elidedText(text, Qt.ElideRight, int(column - 16)))

    # -- mouse ---------------------------------------------------------------------------
    def mousePressEvent(self, event) -> None:  # noqa: N802
        unit = self.unit_at(event.position())
        if unit is None:
            return
        if event.button() == Qt.LeftButton:
            self.unit_clicked.emit(unit)
        elif event.button() == Qt.RightButton and self.editable:
            self._menu(unit, event.globalPosition().toPoint())

    def _menu(self, unit: str, where) -> None:
        menu = QMenu(self)
        menu.addSection(unit_label(self.taxonomy, unit))
        for text, mark in (("No lesion", UnitMark.NO_LESION), ("Not assessable", UnitMark.NOT_ASSESSABLE), ("Clear mark", "")):
            menu.addAction(text, lambda m=mark: self.mark_requested.emit(unit, m))
        menu.exec(where)

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        unit = self.unit_at(event.position())
        if unit is None:
            QToolTip.hideText()
            self.setCursor(Qt.ArrowCursor)
            return
        self.setCursor(Qt.PointingHandCursor)
        state = self.states.get(unit, UnitState.NOT_REVIEWED)
        QToolTip.showText(event.globalPosition().toPoint(),
                          f"{unit_label(self.taxonomy, unit)}: {STATE_LABELS[state].lower()} "
                          "(click: go to it; right click: mark it)", self)
