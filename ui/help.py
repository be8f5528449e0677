"""Every mouse and keyboard action of the viewer, shown by F1."""

from __future__ import annotations

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QTextBrowser, QVBoxLayout

SHORTCUTS = [
    ("Mouse", [
        ("Left click / drag", "Move the crosshair; linked views follow in patient coordinates"),
        ("Click on a marker", "Select its lesion"),
        ("Wheel", "Previous / next slice, one per notch (fine wheels and trackpads add up to a notch)"),
        ("Ctrl + wheel", "Zoom about the mouse"),
        ("Right drag", "Window (left-right) and level (up-down)"),
        ("Middle drag, or Space + left drag", "Pan"),
        ("Double click", "Zoom to fit (never places a lesion)"),
    ]),
    ("Keyboard (on the active view, wherever the focus is, except while typing in a text field)", [
        ("Up / Down, Left / Right", "Previous / next slice"),
        ("Page Up / Page Down", "Ten per cent of the slices back / forward"),
        ("Home / End", "First / last slice"),
        ("+ / -", "Zoom in / out"),
        ("F or 0", "Zoom to fit"),
        ("R", "Reset: fit, automatic window, not inverted"),
        ("A / C / S", "Axial / coronal / sagittal plane"),
        ("1 - 9", "Window / level presets (1 = automatic, then the series' own, as listed in the view)"),
        ("I", "Invert the grey scale"),
        ("H", "Hide / show markers, crosshair and text over the images"),
        ("K", "Cine: play the active view's slices, looping, at the rate set beside Cine (fps); K again, "
              "any navigation key, the wheel or a click stops it"),
        ("D", "Ruler: drag to measure a distance in mm (one ruler per view, shown on its slice)"),
        ("Esc", "Leave mark, ruler or ROI mode (an ROI being drawn is dropped); the keyboard goes back to the image"),
    ]),
    ("Measuring: regions of interest (ROIs)", [
        ("E", "Ellipse ROI: drag from its centre"),
        ("B", "Rectangle ROI: drag from corner to corner"),
        ("P", "Polygon ROI: click each vertex; double click, Enter or a click on the first vertex closes it"),
        ("Beside each ROI", "Mean, SD, min, max of the voxels of the series shown in that view, and area in mm²"),
        ("Click inside an ROI", "Select it"),
        ("Delete (on the image)", "Delete the selected ROI; Ctrl+Z brings it back"),
        ("U", "The selected ROI becomes the read's muscle reference"),
        ("L", "The selected ROI becomes the selected lesion's ROI: its STIR lesion:muscle ratio is stored on it"),
    ]),
    ("Marking lesions", [
        ("M", "Mark mode for one lesion (Keep marking: stay in mark mode)"),
        ("Click (mark mode)", "Place a lesion at the point; the side is proposed from the side of the body"),
        ("Drag (mark mode)", "Draw the lesion's extent as an ellipse from its centre"),
        ("Shift + drag (mark mode)", "Draw the lesion's extent as a box from corner to corner"),
        ("X", "Draw the selected lesion's extent as a polygon: click each vertex; double click, Enter or a click "
              "on the first vertex closes it (shown as that polygon on its plane, for readers and adjudicators)"),
        ("Site box", "Type to search (e.g. 'dist fem'), Enter picks the first match and moves to the side"),
        ("R / L or Enter (side)", "Set the side or keep the proposed one, then the first grade"),
        ("Digits in a grade row", "Set the grade and move to the next item; after the last, back to the image"),
        ("N / Delete (grade row)", "Not assessable / clear the grade"),
        ("Enter (lesion panel)", "Done: the keyboard goes back to the image"),
        ("Delete lesion", "Deletes at once; Ctrl+Z brings it back"),
        ("Ctrl+Z / Ctrl+Shift+Z (or Ctrl+Y)", "Undo / redo, one step per gesture, from anywhere but a text field "
                                              "with typing of its own to undo"),
    ]),
    ("Follow-up: prior beside current", [
        ("Ctrl+P", "Show the patient's earlier study (the other visit) beside this one, where the reading "
                   "study's design allows it; the views follow each other through the registration"),
        ("Alt+Left / Alt+Right", "Nudge the registration of the region in use 1 mm along the patient's "
                                 "right-left axis (kept with the studies)"),
        ("Alt+Up / Alt+Down", "Nudge it 1 mm towards the head / the feet"),
        ("Alt+PgUp / Alt+PgDown", "Nudge it 1 mm forwards / backwards"),
        ("Prior lesions", "Choose a prior lesion (or click its ghost), then Persisting, Resolved or Not "
                          "assessable"),
    ]),
    ("Window", [
        ("Ctrl+1", "Layout 1x1: the active view alone, full size (again: the layout before)"),
        ("Ctrl+2", "Layout 1x2: two views side by side"),
        ("Ctrl+4", "Layout 2x2: the lower row shows the series above in sagittal; each view has its own "
                   "plane, positions stay linked"),
        ("Ctrl+L", "Link or unlink the views' position"),
        ("Ctrl+Shift+L", "Link or unlink zoom and pan"),
        ("Ctrl+F", "Search the study list (the worklist in reader mode); Enter opens the first match"),
        ("Ctrl+N", "Reader mode: the next case of your worklist not yet submitted"),
        ("Light theme", "A light theme instead of the dark reading-room one (or start with "
                        "CNO_ANNOTATE_THEME=light)"),
        ("Ctrl+Shift+P", "PACS: search a registered PACS and retrieve a study into the store (progress, cancel); "
                         "Send SR to PACS stores the open read as DICOM SR (not in reader mode)"),
        ("F1", "This help"),
        ("Ctrl+Q", "Quit"),
    ]),
]


def help_html() -> str:
    """The shortcut table as HTML."""
    parts = ["<h2>cno-annotate viewer</h2>"]
    for title, rows in SHORTCUTS:
        parts.append(f"<h3>{title}</h3><table cellpadding='3'>")
        parts += [f"<tr><td><b>{key}</b></td><td>{action}</td></tr>" for key, action in rows]
        parts.append("</table>")
    parts.append("<p>Orientation letters follow the radiological convention: the patient's right is on "
                 "the screen's left; sagittal images show anterior on the left.</p>")
    return "".join(parts)


class HelpDialog(QDialog):
    """A dialog listing every action."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Mouse and keyboard")
        layout = QVBoxLayout(self)
        text = QTextBrowser(self)
        text.setHtml(help_html())
        layout.addWidget(text)
        buttons = QDialogButtonBox(QDialogButtonBox.Close, parent=self)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.resize(560, 560)
