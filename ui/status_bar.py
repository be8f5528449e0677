"""A status bar whose text never runs off its right edge: cut in the middle, the whole text in the tooltip.

At 2x scaling a 1024 x 768 window in the 2x2 layout is 1024 logical pixels wide; the position line (LPS point,
each series' value and slices) and long messages are wider. Both keep their start and end (the point and the
last series), with "…" between, and the tooltip holds the whole text.
"""

from __future__ import annotations

from PySide6.QtCore import QRect, QSize, Qt
from PySide6.QtGui import QPainter
from PySide6.QtWidgets import QLabel, QProgressBar, QStatusBar, QStyle, QStyleOption, QWidget

#: The gap QStatusBar leaves left and right of a message (logical pixels).
_MESSAGE_MARGIN = 6


class ElidedLabel(QLabel):
    """A one-line label showing as much of its text as fits, cut in the middle; the whole text in the tooltip."""

    def __init__(self, text: str = "", parent: QWidget | None = None):
        super().__init__(parent)
        self._full = ""
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 (Qt's name)
        """Show ``text`` (elided to the width the label has)."""
        self._full = text
        self.setToolTip(text)
        self._elide()

    def text(self) -> str:
        """The whole text (what is shown may be elided: :meth:`displayed_text`)."""
        return self._full

    def displayed_text(self) -> str:
        """The text as painted."""
        return super().text()

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        """As narrow as "…": the window, not the text, decides the width."""
        hint = super().minimumSizeHint()
        return QSize(self.fontMetrics().horizontalAdvance("…"), hint.height())

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        """The whole text's width (the status bar stretches the label to what there is)."""
        hint = super().sizeHint()
        return QSize(self.fontMetrics().horizontalAdvance(self._full) + 2 * self.margin(), hint.height())

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        width = max(0, self.contentsRect().width() - 2 * self.margin())
        QLabel.setText(self, self.fontMetrics().elidedText(self._full, Qt.TextElideMode.ElideMiddle, width))


#: Room (logical pixels) the progress bar's style keeps either side of its text.
_BAR_PADDING = 8
#: The widest the progress bar grows to show its whole text, as a share of the status bar.
_BAR_SHARE = 0.45


class LoadingBar(QProgressBar):
    """The status bar's progress of a series loading: "Loading NAME 45%" on one line, as wide as that text.

    Where the status bar has not the room (a narrow window), the series' name is cut in the middle so that
    "Loading" and the percentage stay; the whole text is in the tooltip. (A 180-pixel bar cut "Loading T1
    coronal whole body (4 stations) 45%" to "Loading T1 coronal whole", on two lines.)
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._name = ""
        self.setRange(0, 100)
        self.setTextVisible(True)

    def set_name(self, name: str) -> None:
        """Name the series loading."""
        if name != self._name:
            self._name = name
            self.updateGeometry()
        self.setToolTip(self.whole_text())
        self.update()

    def setValue(self, value: int) -> None:  # noqa: N802 (Qt's name)
        super().setValue(value)
        self.setToolTip(self.whole_text())

    def whole_text(self) -> str:
        """The text uncut."""
        return f"Loading {self._name} {self.value()}%"

    def text(self) -> str:
        """The text as painted: the series' name cut in the middle to the bar's width if need be."""
        room = self.contentsRect().width() - 2 * _BAR_PADDING
        metrics = self.fontMetrics()
        whole = self.whole_text()
        if metrics.horizontalAdvance(whole) <= room:
            return whole
        ends = f"Loading  {self.value()}%"
        name = metrics.elidedText(self._name, Qt.TextElideMode.ElideMiddle,
                                  max(0, room - metrics.horizontalAdvance(ends)))
        return f"Loading {name} {self.value()}%"

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        """Wide enough for the whole text (at 100%), up to a share of the status bar."""
        hint = super().sizeHint()
        width = self.fontMetrics().horizontalAdvance(f"Loading {self._name} 100%") + 2 * _BAR_PADDING + 4
        parent = self.parentWidget()
        if parent is not None and parent.width() > 0:
            width = min(width, int(parent.width() * _BAR_SHARE))
        return QSize(width, hint.height())

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        """Room for "Loading … 100%"."""
        hint = super().minimumSizeHint()
        return QSize(self.fontMetrics().horizontalAdvance("Loading … 100%") + 2 * _BAR_PADDING + 4, hint.height())


class StatusBar(QStatusBar):
    """A status bar painting its temporary messages cut in the middle when too long, the whole one in the tooltip."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._permanent: list[QWidget] = []
        self.messageChanged.connect(self.setToolTip)

    def addPermanentWidget(self, widget: QWidget, stretch: int | None = 0) -> None:  # noqa: N802 (Qt's name)
        """Add a widget on the right (messages stop left of it)."""
        self._permanent.append(widget)
        super().addPermanentWidget(widget, stretch or 0)

    def message_rect(self) -> QRect:
        """Where a message is painted: from the left edge to the first permanent widget shown."""
        right = min((w.geometry().left() for w in self._permanent if w.isVisible()), default=self.width())
        return QRect(_MESSAGE_MARGIN, 0, max(0, right - 2 * _MESSAGE_MARGIN), self.height())

    def displayed_message(self) -> str:
        """The current message as painted (elided in the middle to :meth:`message_rect`)."""
        width = self.message_rect().width()
        return self.fontMetrics().elidedText(self.currentMessage(), Qt.TextElideMode.ElideMiddle, width)

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        if not self.currentMessage():
            super().paintEvent(event)
            return
        painter = QPainter(self)
        option = QStyleOption()
        option.initFrom(self)
        self.style().drawPrimitive(QStyle.PrimitiveElement.PE_PanelStatusBar, option, painter, self)
        painter.setPen(self.palette().windowText().color())
        flags = Qt.AlignmentFlag.AlignLeading | Qt.AlignmentFlag.AlignVCenter | Qt.TextFlag.TextSingleLine
        painter.drawText(self.message_rect(), flags, self.displayed_message())
