"""Run the command line in-process and capture what it printed (stdout and stderr together)."""

from __future__ import annotations

import contextlib
import io

from cno_annotate.cli import main


def run_cli(*args: object) -> tuple[int, str]:
    """Exit code and combined output of ``cno-annotate ARGS`` (outside a test's capsys, e.g. in fixtures)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main([str(a) for a in args])
    return code, out.getvalue()
