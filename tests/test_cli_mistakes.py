"""A mistyped path or store is reported, never silently accepted or created."""

from __future__ import annotations

import pytest

READ_ONLY_COMMANDS = [
    ["studies"],
    ["series"],
    ["import-log"],
    ["cache", "info"],
    ["read", "list"],
    ["reading-study", "list"],
    ["reading-study", "progress", "trial"],
    ["audit", "show"],
    ["audit", "verify"],
]


def test_importing_only_missing_paths_exits_1_with_one_line(cli, tmp_path):
    code, out, err = cli("import", tmp_path / "nope", "--store", tmp_path / "x")
    assert code == 1, out
    assert err.count("\n") == 1 and "nope" in err and "no such file or folder" in err, err
    assert not (tmp_path / "x").exists()  # nothing was created either


def test_importing_some_missing_paths_exits_0_and_says_so(cli, tmp_path, small_study):
    code, out, err = cli("import", small_study, tmp_path / "nope", "--store", tmp_path / "x")
    assert code == 0
    assert "1 of 2 paths given does not exist" in out, out


@pytest.mark.parametrize("command", READ_ONLY_COMMANDS, ids=" ".join)
def test_a_read_only_command_on_a_mistyped_store_refuses_and_creates_nothing(cli, tmp_path, command):
    typo = tmp_path / "typo"
    code, out, err = cli(*command, "--store", typo)
    assert code == 1
    assert err.count("\n") == 1 and f"no store at {typo}" in err and "check --store" in err, err
    assert not typo.exists()


def test_import_still_creates_a_new_store(cli, tmp_path, small_study):
    code, _out, _err = cli("import", small_study, "--store", tmp_path / "new")
    assert code == 0 and (tmp_path / "new" / "store.sqlite").exists()
    code, out, _err = cli("studies", "--store", tmp_path / "new")
    assert code == 0 and out
