"""The layers keep to their places: SQL is run only by the store (``cno_annotate/store/``)."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "cno_annotate"
SQL_CALLS = {"execute", "executemany", "executescript"}
#: Modules still running their own SQL while their move into store/ is under way: another helper
#: moves importer.py's; the list is empty once it lands.
NOT_YET_MOVED = {"importer.py"}


def sql_calls(path: Path) -> list[int]:
    """The lines of ``path`` that call ``.execute``, ``.executemany`` or ``.executescript`` on anything."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return sorted(node.lineno for node in ast.walk(tree)
                  if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SQL_CALLS)


def test_only_the_store_runs_sql():
    outside = {}
    for path in sorted(CORE.rglob("*.py")):
        name = path.relative_to(CORE).as_posix()
        if name.startswith("store/") or name in NOT_YET_MOVED:
            continue
        lines = sql_calls(path)
        if lines:
            outside[name] = lines
    assert outside == {}, f"SQL outside cno_annotate/store/ (move it into a store module): {outside}"


def test_the_check_sees_a_call_on_any_receiver(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("def f(store, db, c):\n    store.db.execute('SELECT 1')\n    db.executemany('x', [])\n"
                       "    c.executescript('y')\n    c.execute_later()\n", encoding="utf-8")
    assert sql_calls(planted) == [2, 3, 4]
