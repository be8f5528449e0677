"""The command line: help, exit codes, messages, JSON output, headless core."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cno_annotate.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
def _commands(parser, prefix=()):
    """Every leaf command as a tuple of words (``("read", "export")``)."""
    import argparse

    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not actions:
        return [prefix]
    return [c for name, sub in actions[0].choices.items() for c in _commands(sub, prefix + (name,))]


SUBCOMMANDS = sorted(_commands(build_parser()))


def test_the_command_list_is_complete():
    assert {("import",), ("series",), ("view",), ("read", "export"), ("read", "import"), ("export-csv",)} <= set(SUBCOMMANDS)


@pytest.mark.parametrize("command", SUBCOMMANDS, ids=" ".join)
def test_every_subcommand_has_help(cli, command):
    code, out, err = cli(*command, "--help")
    assert code == 0 and "usage: cno-annotate " + " ".join(command) in out and "--store" in out


def test_usage_errors_exit_2(cli):
    assert cli()[0] == 2
    assert cli("import")[0] == 2
    assert cli("no-such-command")[0] == 2
    assert cli("set-role", "x", "T2")[0] == 2


def test_expected_failures_exit_1_with_one_line(cli, tmp_path):
    store = tmp_path / "store"
    cases = [
        ("series", "no-such-study", "--store", store),
        ("export-nifti", "1.2.3", "--out", tmp_path / "x.nii", "--store", store),
        ("export-nifti", "1.2.3", "--out", tmp_path / "x.png", "--store", store),
        ("export-nifti", "1.2.3", "--out", tmp_path / "missing" / "x.nii", "--store", store),
        ("sample", "--out", tmp_path / "s", "--stations", "0"),
    ]
    for args in cases:
        code, out, err = cli(*args)
        assert code == 1, args
        assert err.startswith("cno-annotate: error: ") and err.count("\n") == 1, err
        assert "Traceback" not in err


def test_file_system_errors_are_one_line_messages(cli, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, out, err = cli("export-csv", "--out", blocker / "sub", "--store", tmp_path / "store")
    assert code == 1 and err.startswith("cno-annotate: error: ") and err.count("\n") == 1 and "Traceback" not in err
    code, out, err = cli("sample", "--out", blocker / "sub")
    assert code == 1 and "Not a directory" in err


def test_store_from_environment(cli, small_study, tmp_path, monkeypatch):
    monkeypatch.setenv("CNO_ANNOTATE_STORE", str(tmp_path / "env-store"))
    assert cli("import", small_study)[0] == 0
    code, out, _ = cli("studies", "--json")
    assert code == 0 and len(json.loads(out)) == 1
    assert (tmp_path / "env-store" / "store.sqlite").exists()


def test_series_json_fields(cli, small_study, tmp_path):
    store = tmp_path / "store"
    cli("import", small_study, "--store", store)
    code, out, _ = cli("series", "--store", store, "--json")
    rows = json.loads(out)
    required = {"study_uid", "volume_id", "dicom_series_uid", "series_uid", "role", "role_reason", "orientation", "composed", "stations", "shape", "spacing_mm"}
    assert all(required <= set(r) for r in rows)
    composed = [r for r in rows if r["composed"]]
    assert sorted(r["role"] for r in composed) == ["STIR", "T1"]
    assert all(r["stations"] == 3 and r["shape"][0] == 48 and r["shape"][2] == 6 for r in composed)
    study = rows[0]["study_uid"]
    code, out, _ = cli("series", study, "--store", store, "--json")
    assert len(json.loads(out)) == len(rows)


def test_studies_and_series_listings_keep_their_fields_order_and_lines(cli, small_study, tmp_path):
    """The listings scripts read: every key, in order, the counts, and the one-line text form of a study."""
    store = tmp_path / "store"
    cli("import", small_study, "--store", store)
    code, out, _ = cli("studies", "--store", store, "--json")
    (study,) = json.loads(out)
    assert list(study) == ["study_uid", "study_date", "description", "accession", "institution", "patient_id",
                           "patient_name", "birth_date", "sex", "series", "volumes", "images", "missing_files"]
    assert (study["series"], study["volumes"], study["images"], study["missing_files"]) == (6, 8, 36, 0)
    assert all(isinstance(study[k], str) for k in ("study_uid", "study_date", "patient_id", "description"))
    code, out, _ = cli("studies", "--store", store)
    assert out == (f"{study['study_uid']}  {study['study_date']:8}  {study['patient_id']:12}    6 series    "
                   f"8 volumes  {study['description']}\n")
    code, out, _ = cli("series", "--store", store, "--json")
    rows = json.loads(out)
    assert [list(r) for r in rows] == [[
        "study_uid", "volume_id", "series_uid", "dicom_series_uid", "kind", "role", "role_reason", "orientation",
        "composed", "stations", "members", "shape", "spacing_mm", "gaps", "duplicate_slices", "patient_geometry",
        "description", "variant", "composition", "source_path", "sequence"]] * 8
    composed = next(r for r in rows if r["composed"])
    assert composed["members"] and all(isinstance(m, str) for m in composed["members"])
    assert composed["kind"] == "composed" and composed["source_path"] is None and composed["gaps"] == []


def test_human_output_names_roles_and_composition(cli, small_study, tmp_path):
    code, out, _ = cli("import", small_study, "--store", tmp_path / "store")
    assert code == 0
    assert "2 volumes" not in out and "(2 composed whole-body)" in out
    assert out.count("STIR") >= 4 and "3 stations" in out


def test_sample_refuses_a_non_empty_folder(cli, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    code, _, err = cli("sample", "--out", tmp_path / "busy")
    assert code == 1 and "not empty" in err


def test_python_dash_m_runs_the_cli(tmp_path):
    result = subprocess.run([sys.executable, "-m", "cno_annotate", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("cno-annotate ")


BLOCK_QT = textwrap.dedent(
    """
    import importlib.abc, sys

    class BlockQt(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"PySide6", "PyQt5", "PyQt6", "PySide2", "shiboken6", "qtpy", "pytestqt"}:
                raise ImportError(f"Qt is not installed here ({name})")
            return None

    sys.meta_path.insert(0, BlockQt())
    """
)


def test_core_and_cli_run_with_no_qt(tmp_path, small_study):
    """Import every core module and run an import + listing with Qt unavailable."""
    script = BLOCK_QT + textwrap.dedent(
        f"""
        import pkgutil, importlib, sys
        import cno_annotate
        for module in pkgutil.walk_packages(cno_annotate.__path__, "cno_annotate."):
            if module.name != "cno_annotate.__main__":
                importlib.import_module(module.name)
        from cno_annotate.cli import main
        assert main(["import", {str(small_study)!r}, "--store", {str(tmp_path / 's')!r}]) == 0
        assert main(["series", "--store", {str(tmp_path / 's')!r}, "--json"]) == 0
        from cno_annotate.store import Store
        from cno_annotate.volumes import load_volume
        store = Store.open({str(tmp_path / 's')!r})
        for v in store.volumes():
            load_volume(store, v.volume_id)
        loaded = [m for m in sys.modules if m.split(".")[0] in ("PySide6", "shiboken6", "PyQt5", "PyQt6")]
        assert not loaded, loaded
        print("HEADLESS-OK")
        """
    )
    env = {**os.environ, "QT_QPA_PLATFORM": ""}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "HEADLESS-OK" in result.stdout


def test_no_core_source_mentions_qt():
    for path in (REPO / "cno_annotate").rglob("*.py"):
        text = path.read_text()
        for binding in ("PySide", "PyQt", "qtpy", "shiboken"):
            assert f"import {binding}" not in text and f"from {binding}" not in text, path


def _arguments(parser, prefix=()):
    """(command words, argument) for every argument of every parser: the main one, groups and leaf commands."""
    import argparse

    own = [(prefix, a) for a in parser._actions
           if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return own + [x for sub in subs for name, child in sub.choices.items() for x in _arguments(child, prefix + (name,))]


def test_every_argument_of_every_command_has_help():
    arguments = _arguments(build_parser())
    assert {words for words, _ in arguments} >= {(), ("view",), ("pacs", "find"), ("reading-study", "package")}
    missing = [f"{' '.join(words)} {a.option_strings or a.dest}" for words, a in arguments
               if not (a.help or "").strip()]
    assert missing == []


def test_a_shared_flag_says_the_same_thing_in_every_command():
    """--store, --json, --force, --timeout and the reading study's name come from one helper each (cli_args)."""
    from cno_annotate.cli_args import FORCE_HELP, JSON_HELP, STORE_HELP

    helps: dict[str, set] = {}
    for words, action in _arguments(build_parser()):
        for name in action.option_strings or [f"{words[0] if words else ''}:{action.dest}"]:
            helps.setdefault(name, set()).add(action.help)
    assert helps["--store"] == {STORE_HELP}
    assert helps["--json"] <= set(JSON_HELP.values()) and helps["--force"] <= set(FORCE_HELP.values())
    assert len(helps["--timeout"]) == 1 and helps["reading-study:name"] == helps["link:name"] == {"reading study"}
    assert helps["pacs:name"] == {"your name for it", "the PACS (as registered with pacs add)"}


def _leaf_parsers(parser, prefix=()):
    import argparse

    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [(prefix, parser)]
    return [x for name, child in subs[0].choices.items() for x in _leaf_parsers(child, prefix + (name,))]


def test_every_command_takes_store_after_it_without_overriding_one_given_before():
    import argparse

    for words, parser in _leaf_parsers(build_parser()):
        store = [a for a in parser._actions if "--store" in a.option_strings]
        assert len(store) == 1 and store[0].default is argparse.SUPPRESS, words


@pytest.mark.parametrize("words", [("studies",), ("read", "list"), ("reading-study", "progress", "RS"),
                                   ("pacs", "list"), ("audit", "show"), ("report", "all", "RS", "--out", "o"),
                                   ("view",)], ids=" ".join)
def test_store_is_parsed_before_and_after_the_command(words, tmp_path):
    parser = build_parser()
    before, after = tmp_path / "before", tmp_path / "after"
    assert parser.parse_args(["--store", str(before), *words]).store == before
    assert parser.parse_args([*words, "--store", str(after)]).store == after
    assert parser.parse_args(["--store", str(before), *words, "--store", str(after)]).store == after
    assert parser.parse_args(list(words)).store is None  # the default store, decided when the store is opened


def test_store_is_accepted_before_the_command(cli, tmp_path):
    from cno_annotate.store import Store

    store = tmp_path / "before"
    Store.open(store).close()
    assert cli("--store", store, "studies", "--json")[0] == 0
    after = tmp_path / "after"  # no store there: the refusal names it, so the later --store wins
    code, _out, err = cli("--store", store, "studies", "--store", after)
    assert code == 1 and f"no store at {after}" in err
