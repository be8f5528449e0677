"""The reader's keymap file: validated entry by entry, defaults kept for anything wrong; used by the window and F1."""

from __future__ import annotations

import json

import pytest

from cno_annotate.keymap import ACTIONS, default_keymap, keymap_path, load_keymap, normalise_key


def write(tmp_path, keys) -> object:
    path = tmp_path / "keymap.json"
    path.write_text(json.dumps({"schema_version": "1.0.0", "keys": keys}), encoding="utf-8")
    return path


def test_the_keymap_lives_in_the_per_user_config_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("CNO_ANNOTATE_CONFIG", str(tmp_path / "conf"))
    assert keymap_path() == tmp_path / "conf" / "keymap.json"
    monkeypatch.delenv("CNO_ANNOTATE_CONFIG")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert keymap_path() == tmp_path / "xdg" / "cno-annotate" / "keymap.json"


def test_no_file_means_the_defaults_and_defaults_never_clash(tmp_path):
    keymap = load_keymap(tmp_path / "absent.json")
    assert keymap.keys == default_keymap().keys and not keymap.problems
    keys = [k for keys in keymap.keys.values() for k in keys]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("text, expected", [("ctrl+shift+z", "Ctrl+Shift+Z"), ("Shift+Ctrl+Z", "Ctrl+Shift+Z"),
                                            ("g", "G"), ("F12", "F12"), ("ctrl+pageup", "Ctrl+PgUp"),
                                            ("Ctrl++", "Ctrl++"), ("alt+escape", "Alt+Esc")])
def test_key_strings_are_normalised(text, expected):
    assert normalise_key(text) == expected


@pytest.mark.parametrize("text", ["", "Ctrl+", "Hyper+K", "Ctrl+Ctrl+K", "KK", "F36", "é", "Ctrl+Banana"])
def test_bad_key_strings_are_refused(text):
    with pytest.raises(ValueError):
        normalise_key(text)


def test_a_good_entry_changes_its_action_and_swapping_two_keys_works(tmp_path):
    keymap = load_keymap(write(tmp_path, {"mark_lesion": "D", "ruler": "m", "redo": ["ctrl+y"]}))
    assert not keymap.problems
    assert keymap.keys["mark_lesion"] == ("D",) and keymap.keys["ruler"] == ("M",) and keymap.keys["redo"] == ("Ctrl+Y",)


@pytest.mark.parametrize("keys, words", [
    ({"teleport": "T"}, "unknown action 'teleport'"),
    ({"mark_lesion": "Ctrl+Banana"}, "mark_lesion: 'Ctrl+Banana'"),
    ({"mark_lesion": "Ctrl+Q"}, "mark_lesion: Ctrl+Q is already the key of quit"),
    ({"mark_lesion": "G", "ruler": "g"}, "is already the key of"),
    ({"mark_lesion": "A"}, "A is a key of the image view"),
    ({"mark_lesion": "X"}, "mark_lesion: X is already the key of polygon_extent"),
    ({"ruler": "Ctrl+Shift+P"}, "ruler: Ctrl+Shift+P is already the key of pacs"),
    ({"mark_lesion": 7}, "a key string or a list of them"),
])
def test_each_bad_entry_gets_one_line_and_keeps_its_default(tmp_path, keys, words):
    keymap = load_keymap(write(tmp_path, {**keys, "help": "F2"}))
    assert len(keymap.problems) == 1 and words in keymap.problems[0] and "\n" not in keymap.problems[0]
    assert "default kept" in keymap.problems[0]
    assert keymap.keys["help"] == ("F2",)  # the good entry still applies
    broken = [a for a in keys if a in ACTIONS]
    assert any(keymap.keys[a] == ACTIONS[a][1] for a in broken) or not broken


def test_a_file_that_is_not_json_keeps_every_default(tmp_path):
    path = tmp_path / "keymap.json"
    path.write_text("{mark_lesion: K", encoding="utf-8")
    keymap = load_keymap(path)
    assert keymap.keys == default_keymap().keys
    assert len(keymap.problems) == 1 and "every default kept" in keymap.problems[0]


@pytest.mark.gui
def test_the_window_uses_the_readers_keys_and_f1_lists_them(open_viewer, qtbot, tmp_path, monkeypatch):
    pytest.importorskip("PySide6")
    from cno_annotate_ui.help import help_html
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication

    monkeypatch.setenv("CNO_ANNOTATE_CONFIG", str(tmp_path / "conf"))
    (tmp_path / "conf").mkdir()
    write(tmp_path / "conf", {"mark_lesion": "G", "mark_remaining": "Ctrl+Alt+N"})
    window = open_viewer(reader="dr-test")
    assert not window.keymap.problems
    view = QApplication.focusWidget()
    assert view is window.active_view()
    qtbot.keyClick(view, Qt.Key_M)
    assert not window.mark_action.isChecked()  # M is no longer the key
    qtbot.keyClick(view, Qt.Key_G)
    assert window.mark_action.isChecked()
    qtbot.keyClick(QApplication.focusWidget(), Qt.Key_Escape)
    assert not window.mark_action.isChecked()
    text = help_html(window.key_bindings(), window.keymap)
    assert "<b>G</b></td><td>Mark mode" in text and "<b>Ctrl+Alt+N</b>" in text and "Ctrl+Shift+N" not in text
    assert str(tmp_path / "conf" / "keymap.json") in text


@pytest.mark.gui
def test_a_bad_keymap_is_told_in_one_line_and_the_defaults_work(open_viewer, qtbot, tmp_path, monkeypatch):
    pytest.importorskip("PySide6")
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication

    monkeypatch.setenv("CNO_ANNOTATE_CONFIG", str(tmp_path / "conf"))
    (tmp_path / "conf").mkdir()
    write(tmp_path / "conf", {"mark_lesion": "Ctrl+Q", "fly": "G"})
    shown = []
    window = open_viewer(reader="dr-test")
    shown.append(window.statusBar().currentMessage())
    assert len(window.keymap.problems) == 2
    assert any(m.startswith("Keymap: ") and "(and 1 more: see F1)" in m and "\n" not in m for m in shown)
    qtbot.keyClick(QApplication.focusWidget(), Qt.Key_M)
    assert window.mark_action.isChecked()  # the default kept
