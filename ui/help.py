"""Every mouse and keyboard action of the viewer, shown by F1."""

from __future__ import annotations

import html

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QTextBrowser, QVBoxLayout

from cno_annotate.keymap import ACTIONS, Keymap, default_keymap, keymap_path

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
        ("+ / -", "Zoom in / out about the crosshair (about the centre when it is off the view)"),
        ("F or 0", "Zoom to fit"),
        ("R", "Reset: fit, automatic window, not inverted"),
        ("A / C / S", "Axial / coronal / sagittal plane"),
        ("1 - 9", "Window / level presets (1 = automatic, then the series' own, as listed in the view)"),
        ("I", "Invert the grey scale"),
        ("H", "Hide / show markers, crosshair and text over the images"),
        ("Esc", "Leave mark, ruler or ROI mode (an ROI being drawn is dropped); the keyboard goes back to the image"),
    ]),
    ("Measuring: regions of interest (ROIs)", [
        ("Beside each ROI", "Mean, SD, min, max of the voxels of the series shown in that view, and area in mm²"),
        ("Click inside an ROI", "Select it"),
        ("Delete (on the image)", "Delete the selected ROI, else the selected lesion; Ctrl+Z brings it back"),
    ]),
    ("Marking lesions", [
        ("Click (mark mode)", "Place a lesion at the point; the side is proposed from the side of the body"),
        ("Drag (mark mode)", "Draw the lesion's extent as an ellipse from its centre"),
        ("Shift + drag (mark mode)", "Draw the lesion's extent as a box from corner to corner"),
        ("Site box", "Type to search (e.g. 'dist fem'), Enter picks the first match and moves to the side"),
        ("R / L or Enter (side)", "Set the side or keep the proposed one, then the first grade"),
        ("Digits in a grade row", "Set the grade and move to the next item; after the last, back to the image"),
        ("N / Delete (grade row)", "Not assessable / clear the grade"),
        ("Enter (lesion panel)", "Done: the keyboard goes back to the image"),
        ("Delete lesion", "Deletes at once; Ctrl+Z brings it back"),
        ("Click a bone unit (Bone units)", "Go to the unit: the views move to its place in this patient"),
        ("Right click a bone unit", "Mark it no lesion or not assessable, or clear its mark"),
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
        ("Light theme", "A light theme instead of the dark reading-room one (or start with "
                        "CNO_ANNOTATE_THEME=light)"),
    ]),
]


def help_html(bindings: dict[str, list[str]] | None = None, keymap: Keymap | None = None) -> str:
    """Every action as HTML; the window's actions with the keys they have (default: the default keymap).

    Parameters
    ----------
    bindings : dict, optional
        Action id -> key strings, as the window's actions have them.
    keymap : Keymap, optional
        The keymap loaded (its file and problems are listed).
    """
    keys = bindings if bindings is not None else {a: list(k) for a, k in default_keymap().keys.items()}
    parts = ["<h2>cno-annotate viewer</h2>"]
    for title, rows in SHORTCUTS:
        parts.append(f"<h3>{title}</h3><table cellpadding='3'>")
        parts += [f"<tr><td><b>{key}</b></td><td>{action}</td></tr>" for key, action in rows]
        parts.append("</table>")
    source = keymap.source if keymap is not None and keymap.source is not None else keymap_path()
    parts.append(f"<h3>Window actions (your keymap: {html.escape(str(source))})</h3><table cellpadding='3'>")
    for action_id, (description, _) in ACTIONS.items():
        if action_id in keys:
            shown = " or ".join(html.escape(k) for k in keys[action_id]) or "(no key)"
            parts.append(f"<tr><td><b>{shown}</b></td><td>{html.escape(description)} "
                         f"<span style='color:gray'>[{action_id}]</span></td></tr>")
    parts.append("</table>")
    if keymap is not None and keymap.problems:
        parts.append("<p><b>Keymap problems (defaults kept):</b><br>"
                     + "<br>".join(html.escape(p) for p in keymap.problems) + "</p>")
    parts.append("<p>Change a key: write {\"schema_version\": \"1.0.0\", \"keys\": {\"mark_lesion\": \"K\"}} "
                 "(action ids in brackets above) to that file and restart the viewer.</p>")
    parts.append("<p>Orientation letters follow the radiological convention: the patient's right is on "
                 "the screen's left; sagittal images show anterior on the left.</p>")
    return "".join(parts)


class HelpDialog(QDialog):
    """A dialog listing every action."""

    def __init__(self, parent=None, bindings: dict[str, list[str]] | None = None, keymap: Keymap | None = None):
        super().__init__(parent)
        self.setWindowTitle("Mouse and keyboard")
        layout = QVBoxLayout(self)
        text = QTextBrowser(self)
        text.setHtml(help_html(bindings, keymap))
        layout.addWidget(text)
        buttons = QDialogButtonBox(QDialogButtonBox.Close, parent=self)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.resize(560, 560)
