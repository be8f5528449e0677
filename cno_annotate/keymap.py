"""The viewer's keymap: which keys run which window action, changeable by each reader.

A reader's ``keymap.json`` in the per-user config folder (:func:`cno_annotate.paths.config_dir`)
maps action ids to key strings::

    {"schema_version": "1.0.0", "keys": {"mark_lesion": "K", "redo": ["Ctrl+Shift+Z", "Ctrl+Y"]}}

Every entry is checked here, without Qt: an unknown action, a key string that is not
``[Meta+][Ctrl+][Alt+][Shift+]KEY``, or a key that another action or the image view already
uses gets a one-line message and the action keeps its default keys; a file that is not
JSON keeps every default. Nothing of the file is ever written back.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from cno_annotate.paths import config_dir

KEYMAP_FILE = "keymap.json"
KEYMAP_VERSION = "1.0.0"

#: Action id -> (what it does, default keys). The window's actions are built from this table.
ACTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "mark_lesion": ("Mark mode for one lesion (Keep marking: stay in mark mode)", ("M",)),
    "cine": ("Cine: play the active view's slices, looping, at the rate set beside Cine (fps); again, any navigation "
             "key, the wheel or a click stops it", ("K",)),
    "ruler": ("Ruler: drag to measure a distance in mm (one ruler per view, shown on its slice)", ("D",)),
    "roi_ellipse": ("Ellipse ROI: drag from its centre (Esc cancels)", ("E",)),
    "roi_rectangle": ("Rectangle ROI: drag from corner to corner (Esc cancels)", ("B",)),
    "roi_polygon": ("Polygon ROI: click each vertex; double click, Enter or a click on the first vertex closes it",
                    ("P",)),
    "roi_muscle": ("The selected ROI becomes the read's muscle reference", ("U",)),
    "roi_lesion": ("The selected ROI becomes the selected lesion's ROI: its STIR lesion:muscle ratio is stored on it",
                   ("L",)),
    "polygon_extent": ("Draw the selected lesion's extent as a polygon: click each vertex; double click, Enter or a "
                       "click on the first vertex closes it (shown as that polygon on its plane, for readers and "
                       "adjudicators)", ("X",)),
    "undo": ("Undo, one step per gesture, from anywhere but a text field with typing of its own to undo",
             ("Ctrl+Z",)),
    "redo": ("Redo", ("Ctrl+Shift+Z", "Ctrl+Y")),
    "mark_remaining": ("Mark every bone unit not yet reviewed 'no lesion' (one confirmation, Enter accepts; "
                       "one undo takes it back)", ("Ctrl+Shift+N",)),
    "layout_1x1": ("Layout 1x1: the active view alone, full size (again: the layout before)", ("Ctrl+1",)),
    "layout_1x2": ("Layout 1x2: two views side by side", ("Ctrl+2",)),
    "layout_2x2": ("Layout 2x2: the lower row shows the series above in sagittal; each view has its own plane, "
                   "positions stay linked", ("Ctrl+4",)),
    "link_position": ("Link or unlink the views' position", ("Ctrl+L",)),
    "link_zoom": ("Link or unlink zoom and pan", ("Ctrl+Shift+L",)),
    "search": ("Search the study list (the worklist in reader mode); Enter opens the first match", ("Ctrl+F",)),
    "next_case": ("Reader mode: the next case of your worklist not yet submitted", ("Ctrl+N",)),
    "export_results": ("Reading package: write your reads as a file to send to the coordinator", ("Ctrl+E",)),
    "pacs": ("PACS: search a registered PACS and retrieve a study into the store (progress, cancel); 'Send SR to "
             "PACS' stores the open read as DICOM SR (the coordinator's own store, not in reader mode)",
             ("Ctrl+Shift+P",)),
    "help": ("This help (with your keymap)", ("F1",)),
    "quit": ("Quit", ("Ctrl+Q",)),
}

#: Keys the image view acts on by itself; no window action may take them.
VIEW_KEYS = frozenset({"Up", "Down", "Left", "Right", "PgUp", "PgDown", "Home", "End", "+", "=", "-", "F", "R",
                       "A", "C", "S", "I", "H", "Esc", "Space", "Return", "Enter", "Tab", "Backspace", "Del",
                       *(str(n) for n in range(10))})

MODIFIERS = ("Meta", "Ctrl", "Alt", "Shift")  # in the order Qt writes them
_NAMED = {name.lower(): name for name in (
    "Esc", "Tab", "Backspace", "Return", "Enter", "Ins", "Del", "Pause", "Print", "Home", "End", "Left", "Up",
    "Right", "Down", "PgUp", "PgDown", "Space")}
_ALIASES = {"escape": "Esc", "pageup": "PgUp", "pagedown": "PgDown", "page up": "PgUp", "page down": "PgDown",
            "delete": "Del", "insert": "Ins", "control": "Ctrl"}
_PUNCTUATION = set("+-=,.;/\\[]'`*<>?:!\"#$%&()_{}|~^@")


def normalise_key(text: str) -> str:
    """A key string in one spelling (``ctrl+shift+z`` -> ``Ctrl+Shift+Z``).

    Raises
    ------
    ValueError
        If it is not ``[Meta+][Ctrl+][Alt+][Shift+]KEY`` with one key: a letter, a digit,
        a punctuation mark, F1-F35 or a named key (Esc, Tab, Home, PgUp, Space ...).
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{text!r} is not a key")
    raw = text.strip()
    if raw == "+" or raw.endswith("++"):  # "Ctrl++": the plus key
        parts = (raw[:-2].split("+") if len(raw) > 2 else []) + ["+"]
    else:
        parts = raw.split("+")
    *mods, key = [p.strip() for p in parts]
    wanted = set()
    for mod in mods:
        name = _ALIASES.get(mod.lower(), mod.capitalize())
        if name not in MODIFIERS or name in wanted:
            raise ValueError(f"{text!r}: {mod!r} is not a modifier (Ctrl, Alt, Shift, Meta), or it repeats")
        wanted.add(name)
    key_name = _key_name(key)
    if key_name is None:
        raise ValueError(f"{text!r}: {key!r} is not a key (a letter, digit, F1-F35, Esc, Home, PgUp, Space ...)")
    return "+".join([m for m in MODIFIERS if m in wanted] + [key_name])


def _key_name(key: str) -> str | None:
    if len(key) == 1 and (key.isalnum() and key.isascii() or key in _PUNCTUATION):
        return key.upper()
    if re.fullmatch(r"[Ff]([1-9]|[12][0-9]|3[0-5])", key):
        return key.upper()
    name = _NAMED.get(key.lower()) or _ALIASES.get(key.lower())
    return name if name in _NAMED.values() else None


@dataclass
class Keymap:
    """Every action's keys after the reader's file was applied, and why entries of it were not."""

    keys: dict[str, tuple[str, ...]]
    problems: list[str] = field(default_factory=list)
    source: Path | None = None

    def first_key(self, action: str) -> str:
        """The action's first key ('' when it has none)."""
        return self.keys[action][0] if self.keys[action] else ""


def default_keymap() -> Keymap:
    """The keys every action has when no keymap file says otherwise."""
    return Keymap({action: keys for action, (_, keys) in ACTIONS.items()})


def keymap_path() -> Path:
    """Where the reader's keymap file lives: ``keymap.json`` in the per-user config folder."""
    return Path(config_dir()) / KEYMAP_FILE


def load_keymap(path: Path | None = None) -> Keymap:
    """The keymap of a reader's file (default: :func:`keymap_path`); a missing file means the defaults.

    Never raises for the file's content: each bad entry becomes a one-line message in
    ``problems`` and its action keeps its default keys.
    """
    path = Path(path) if path is not None else keymap_path()
    keymap = default_keymap()
    keymap.source = path
    if not path.exists():
        return keymap
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        keymap.problems.append(f"{path}: not read, every default kept ({' '.join(str(exc).split())[:120]})")
        return keymap
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, dict):
        keymap.problems.append(f'{path}: expected {{"schema_version": "{KEYMAP_VERSION}", "keys": {{ACTION: KEY}}}}; '
                               "every default kept")
        return keymap
    wanted: dict[str, tuple[str, ...]] = {}
    for action, value in entries.items():
        problem = _entry_problem(action, value)
        if problem:
            keymap.problems.append(f"{path}: {problem}; default kept")
            continue
        values = [value] if isinstance(value, str) else value
        wanted[action] = tuple(normalise_key(v) for v in values)
    keymap.keys.update(wanted)
    _drop_clashes(keymap, wanted, path)
    return keymap


def _entry_problem(action, value) -> str | None:
    if action not in ACTIONS:
        return f"unknown action {action!r} (known: {', '.join(ACTIONS)})"
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        return f"{action}: a key string or a list of them, not {value!r}"
    for text in values:
        try:
            key = normalise_key(text)
        except ValueError as exc:
            return f"{action}: {exc}"
        if key in VIEW_KEYS:
            return f"{action}: {key} is a key of the image view"
    if len({normalise_key(v) for v in values}) != len(values):
        return f"{action}: a key repeats"
    return None


def _drop_clashes(keymap: Keymap, wanted: dict[str, tuple[str, ...]], path: Path) -> None:
    """A key bound to two actions: the reader's entry goes back to its default (repeated until none clash)."""
    while True:
        owners: dict[str, list[str]] = {}
        for action, keys in keymap.keys.items():
            for key in keys:
                owners.setdefault(key, []).append(action)
        clash = next(((key, actions) for key, actions in owners.items() if len(actions) > 1), None)
        if clash is None:
            return
        key, actions = clash
        mine = [a for a in actions if a in wanted and keymap.keys[a] != ACTIONS[a][1]] or actions[1:]
        action = mine[-1]
        other = next(a for a in actions if a != action)
        keymap.problems.append(f"{path}: {action}: {key} is already the key of {other}; default kept")
        keymap.keys[action] = ACTIONS[action][1]
        wanted.pop(action, None)
