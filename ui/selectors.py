"""Selectors that never show a cut name: the whole name when it fits, else its short form."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QComboBox, QStyle, QStyleOptionComboBox, QStylePainter


class FittedCombo(QComboBox):
    """A combo box showing its current item's whole text, or ``shorten(text)`` when the whole one does not fit.

    The list that opens, the tooltip and :meth:`currentText` keep the whole names.
    """

    def __init__(self, shorten: Callable[[str], str], parent=None):
        super().__init__(parent)
        self._shorten = shorten

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

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt API)
        painter = QStylePainter(self)
        option = QStyleOptionComboBox()
        self.initStyleOption(option)
        option.currentText = self.displayed_text()
        if self.currentIndex() < 0:  # the placeholder, in the palette's placeholder colour (as QComboBox paints it)
            option.palette.setBrush(QPalette.ButtonText, option.palette.placeholderText())
        painter.drawComplexControl(QStyle.CC_ComboBox, option)
        painter.drawControl(QStyle.CE_ComboBoxLabel, option)
