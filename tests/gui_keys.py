"""Keys pressed where the keyboard focus is, as a reader presses them (the GUI tests' one definition)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication


def focused():
    """The widget that has the keyboard focus (None if none has)."""
    return QApplication.focusWidget()


def key(qtbot, key, modifiers=Qt.NoModifier) -> None:
    """Press and release ``key`` (with ``modifiers``) on the widget that has the keyboard focus."""
    qtbot.keyClick(focused(), key, modifiers)
