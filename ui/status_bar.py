"""A status bar whose text never runs off its right edge: cut in the middle, the whole text in the tooltip.

At 2x scaling a 1024 x 768 window in the 2x2 layout is 1024 logical pixels wide; the position line (LPS point,
each series' value and slices) and long messages are wider. Both keep their start and end (the point and the
last series), with "…" between, and the tooltip holds the whole text.
"""

from __future__ import annotations

from PySide6.QtCore import QRect, QSize, Qt
from PySide6.QtGui import QPainter
from PySide6.QtWidgets import QLabel, QStatusBar, QStyle, QStyleOption, QWidget

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
