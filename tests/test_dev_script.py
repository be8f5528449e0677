"""`sh dev run ARGS` runs the command from the caller's folder, whatever folder that is."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_dev_run_resolves_relative_paths_against_the_callers_folder(tmp_path):
    caller = tmp_path / "somewhere"
    caller.mkdir()
    env = {**os.environ, "CNO_VENV": sys.prefix}  # this test's venv: nothing new to set up
    proc = subprocess.run(["sh", str(REPO / "dev"), "run", "sample", "--out", "rel-study", "--stations", "1",
                           "--slices", "2", "--matrix", "16"],
                          cwd=caller, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (caller / "rel-study").is_dir()
    assert not (REPO / "rel-study").exists()
