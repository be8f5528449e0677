"""Reading-room themes: dark by default (a light one as an option).

Radiologists read in dim rooms: a dark frame around the images keeps the eye
adapted to the greys that matter. The theme is Qt's Fusion style with a
palette; the overlay drawn over the images has its own colours (outlined
text, markers distinct from the crosshair) and does not change with it.
"""

from __future__ import annotations

import os

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

THEMES = ("dark", "light")
THEME_ENV = "CNO_ANNOTATE_THEME"


def default_theme() -> str:
    """The theme to start with: ``$CNO_ANNOTATE_THEME`` if it names one, else dark."""
    wanted = os.environ.get(THEME_ENV, "dark").strip().lower()
    return wanted if wanted in THEMES else "dark"


def dark_palette() -> QPalette:
    """A dim palette: dark grey surfaces, light text, a muted blue highlight."""
    palette = QPalette()
    colours = {
        QPalette.Window: QColor(37, 37, 40), QPalette.WindowText: QColor(220, 220, 220),
        QPalette.Base: QColor(26, 26, 28), QPalette.AlternateBase: QColor(44, 44, 48),
        QPalette.ToolTipBase: QColor(50, 50, 54), QPalette.ToolTipText: QColor(230, 230, 230),
        QPalette.Text: QColor(220, 220, 220), QPalette.PlaceholderText: QColor(130, 130, 135),
        QPalette.Button: QColor(48, 48, 52), QPalette.ButtonText: QColor(220, 220, 220),
        QPalette.BrightText: QColor(255, 90, 90), QPalette.Highlight: QColor(42, 100, 170),
        QPalette.HighlightedText: QColor(255, 255, 255), QPalette.Link: QColor(110, 170, 255),
    }
    for role, colour in colours.items():
        palette.setColor(role, colour)
    palette.setColor(QPalette.Disabled, QPalette.Button, QColor(40, 40, 44))
    _readable_when_disabled(palette, QColor(190, 190, 195))
    return palette


def light_palette() -> QPalette:
    """Fusion's light palette, its disabled texts darkened so a submitted (read-only) read stays readable."""
    palette = QApplication.style().standardPalette()
    palette.setColor(QPalette.Highlight, QColor(0, 95, 180))  # white on Fusion's blue was 3.7:1, this 6.6:1
    _readable_when_disabled(palette, QColor(85, 85, 85))
    return palette


def _readable_when_disabled(palette: QPalette, colour: QColor) -> None:
    """Disabled texts (a submitted read's panel) in a grey still 4.5:1 (WCAG AA) on the disabled surfaces.

    Qt's disabled greys were about 1.6:1 on the light surfaces and 3.2:1 on the dark ones: the read
    after Submit was hard to read. The grey stays apart from the enabled text, so disabled still shows.
    """
    for role in (QPalette.WindowText, QPalette.Text, QPalette.ButtonText):
        palette.setColor(QPalette.Disabled, role, colour)


def apply_theme(name: str) -> None:
    """Apply a theme (``dark`` or ``light``) to the whole application.

    Raises
    ------
    ValueError
        For an unknown theme name.
    """
    if name not in THEMES:
        raise ValueError(f"unknown theme {name!r}; expected one of {', '.join(THEMES)}")
    app = QApplication.instance()
    app.setStyle("Fusion")
    app.setPalette(dark_palette() if name == "dark" else light_palette())
    for widget in app.allWidgets():  # a widget with a style sheet keeps the palette it was polished with
        if widget.styleSheet():
            widget.setStyleSheet(widget.styleSheet())
