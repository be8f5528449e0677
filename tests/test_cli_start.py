"""What a start of the command line builds and looks up (issue 12, start-up).

A command named gets a parser of that command only, and the commands other packages add
(the viewer's ``view``) are found from the kept result of an earlier entry-point lookup
while nothing was installed or removed. Help, errors and ``--version`` are as before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cno_annotate import cli, plugins


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNO_ANNOTATE_USER_CACHE", str(tmp_path / "user-cache"))
    return tmp_path / "user-cache"


def test_a_named_command_gets_a_parser_of_that_command_only():
    parser = cli._parser_for(["--store", "x", "studies", "--json"])
    assert cli._command_names(parser) == {"studies"}
    assert parser.parse_args(["--store", "x", "studies", "--json"]).json is True
    every = cli._command_names(cli.build_parser())
    for argv in (["--version"], [], ["-h"], ["no-such-command"]):
        assert cli._command_names(cli._parser_for(argv)) == every  # the whole parser says what there is


def test_a_plugin_command_gets_its_own_parser_and_unknown_words_list_every_command(capsys):
    pytest.importorskip("cno_annotate_ui")
    assert cli._command_names(cli._parser_for(["view", "--help"])) == {"view"}
    assert cli.main(["no-such-command"]) == 2
    error = capsys.readouterr().err
    assert "invalid choice: 'no-such-command'" in error and "'view'" in error and "'studies'" in error


def test_plugin_entries_are_kept_and_looked_up_again_when_an_installation_changes(user_cache, monkeypatch):
    pytest.importorskip("cno_annotate_ui")
    found = plugins.command_entries(refresh=True)
    assert ("view", "cno_annotate_ui.commands:register") in found
    kept = json.loads((user_cache / plugins.KEPT_NAME).read_text())
    assert kept["schema_version"] == plugins.KEPT_SCHEMA

    import importlib.metadata

    looked_up = []
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **kw: looked_up.append(kw) or real(**kw))
    assert plugins.command_entries() == found and looked_up == []  # kept: no lookup
    kept["key"][0][1] = -1  # a folder on sys.path changed (a package installed or removed)
    (user_cache / plugins.KEPT_NAME).write_text(json.dumps(kept))
    assert plugins.command_entries() == found and len(looked_up) == 1
    (user_cache / plugins.KEPT_NAME).write_text("{damaged")
    assert plugins.command_entries() == found and len(looked_up) == 2


def test_a_kept_plugin_that_no_longer_imports_is_looked_up_again(user_cache, monkeypatch, capsys):
    pytest.importorskip("cno_annotate_ui")
    plugins.command_entries(refresh=True)
    kept = json.loads((user_cache / plugins.KEPT_NAME).read_text())
    kept["entries"] = [["view", "cno_annotate_ui.no_such_module:register"]]  # e.g. the front end was upgraded
    (user_cache / plugins.KEPT_NAME).write_text(json.dumps(kept))
    assert cli._command_names(cli._parser_for(["view"])) == {"view"}
    assert capsys.readouterr().err == ""
    assert ["view", "cno_annotate_ui.commands:register"] in json.loads(
        (user_cache / plugins.KEPT_NAME).read_text())["entries"]


def test_the_core_modules_of_the_window_are_imported_before_qt():
    """PySide6 reads the source of every module imported after it: the window's core modules come first."""
    pytest.importorskip("PySide6")
    script = (
        "import sys\n"
        "import cno_annotate_ui.app as app\n"
        "app._import_core_before_qt()\n"
        "before = set(sys.modules)\n"
        "import cno_annotate_ui.main_window\n"
        "print(sorted(m for m in set(sys.modules) - before if m.startswith('cno_annotate.')))\n"
    )
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", "add these to cno_annotate_ui.app.CORE_BEFORE_QT"


def test_start_timing_goes_to_stderr_so_a_commands_json_stays_json(sample_store):
    """``CNO_ANNOTATE_TIMING=1`` (README) must not mix its ``start-phase`` lines into what a command prints."""
    env = {**os.environ, "CNO_ANNOTATE_TIMING": "1"}
    result = subprocess.run([sys.executable, "-m", "cno_annotate", "studies", "--json", "--store", str(sample_store.root)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    studies = json.loads(result.stdout)  # the whole of stdout is the JSON document
    assert [s["study_uid"] for s in studies] == [s.study_uid for s in sample_store.studies()]
    assert "start-phase parser" in result.stderr  # the timeline is still printed, beside it


def test_a_screenshot_not_named_png_is_refused_before_the_viewer_starts(tmp_path, capsys):
    """`view --screenshot shots/noext` said only "cannot write shots/noext", after the whole start (trial)."""
    pytest.importorskip("cno_annotate_ui")
    code = cli.main(["view", "--store", str(tmp_path / "store"), "--screenshot", str(tmp_path / "noext")])
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert error == f"cno-annotate: error: --screenshot writes a PNG image: name it FILE.png, not {tmp_path / 'noext'}"
    assert not (tmp_path / "store").exists()  # refused before anything was opened or made
