"""Selectors that never show a cut name: the whole name when it fits, else its short form."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QPainter, QPalette
from PySide6.QtWidgets import QComboBox, QLabel, QSizePolicy, QStyle, QStyleOptionComboBox, QStylePainter


class FittedCombo(QComboBox):
    """A combo box showing its current item's whole text, or ``shorten(text)`` when the whole one does not fit.

    The list that opens, the tooltip and :meth:`currentText` keep the whole names.
    """

    def __init__(self, shorten: Callable[[str], str], parent=None):
        super().__init__(parent)
        self._shorten = shorten
        self.currentIndexChanged.connect(lambda _index: self.updateGeometry())  # its minimum follows the text

    def text_room(self) -> int:
        """Pixels the box has for its text."""
        option = QStyleOptionComboBox()
        self.initStyleOption(option)
        return self.style().subControlRect(QStyle.CC_ComboBox, option, QStyle.SC_ComboBoxEditField, self).width()

    def displayed_text(self) -> str:
        """The text the box shows: the whole current text if it fits, else its short form (no item chosen:
        the placeholder)."""
        if self.currentIndex() < 0:
            return self.placeholderText()
        text = self.currentText()
        if self.fontMetrics().horizontalAdvance(text) <= self.text_room():
            return text
        return self._shorten(text)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt API)
        """At least room for the short form of the current text, so a neighbour never squeezes it to a cut one."""
        hint = super().minimumSizeHint()
        if self.currentIndex() < 0:
            return hint
        option = QStyleOptionComboBox()
        self.initStyleOption(option)
        text = QSize(self.fontMetrics().horizontalAdvance(self._shorten(self.currentText())) + 2, hint.height())
        needed = self.style().sizeFromContents(QStyle.CT_ComboBox, option, text, self)
        return QSize(max(hint.width(), needed.width()), hint.height())

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt API)
        painter = QStylePainter(self)
        option = QStyleOptionComboBox()
        self.initStyleOption(option)
        option.currentText = self.displayed_text()
        if self.currentIndex() < 0:  # the placeholder, in the palette's placeholder colour (as QComboBox paints it)
            option.palette.setBrush(QPalette.ButtonText, option.palette.placeholderText())
        painter.drawComplexControl(QStyle.CC_ComboBox, option)
        painter.drawControl(QStyle.CE_ComboBoxLabel, option)



class StudyTag(QLabel):
    """The study a view shows in follow-up reading ("Prior: 2026-11-04 WB MRI ...", "R-003 (visit B)").

    It gives way to the series selector beside it, down to its first :data:`MIN_CHARS` characters
    (the whole text when shorter: a reading code and visit letter are never cut), and is then cut
    at the end; the tooltip has the whole text.
    """

    #: Characters always shown ("Prior: 2026-11-04", "Current (being re").
    MIN_CHARS = 18

    def __init__(self, text: str = "", parent=None):
        super().__init__(text, parent)
        self.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Fixed)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt API)
        hint = super().minimumSizeHint()
        kept = self.text()[: self.MIN_CHARS] + ("…" if len(self.text()) > self.MIN_CHARS else "")
        return QSize(self.fontMetrics().horizontalAdvance(kept) + 2, hint.height())

    def displayed_text(self) -> str:
        """The text as shown: whole when it fits, else cut at the end."""
        return self.fontMetrics().elidedText(self.text(), Qt.ElideRight, self.contentsRect().width())

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt API)
        painter = QPainter(self)
        painter.setPen(self.palette().color(self.foregroundRole()))
        painter.drawText(self.contentsRect(), int(self.alignment()) | int(Qt.AlignVCenter), self.displayed_text())
