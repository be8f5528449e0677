"""SQL lives in store/: modules whose SQL was moved there run none themselves (issue 10)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Modules whose SQL moved into cno_annotate/store/ (add yours when you move one).
MOVED = ["cno_annotate/annotation/reads.py"]
_SQL_CALLS = {"execute", "executemany", "executescript", "script"}


def _sql_calls(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [f"{path.name}:{node.lineno} .{node.func.attr}()" for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _SQL_CALLS]


@pytest.mark.parametrize("module", MOVED)
def test_module_runs_no_sql_of_its_own(module):
    assert _sql_calls(REPO / module) == []


def test_the_probe_finds_sql_calls(tmp_path):
    """The check above can fail: a module with a database call is caught."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f(db):\n    return db.execute('SELECT 1').fetchone()\n")
    assert _sql_calls(probe) == ["probe.py:2 .execute()"]
