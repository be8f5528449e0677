"""The layers keep to their places: SQL is run only by the store (``cno_annotate/store/``), never by
another core module or by the front end (``ui/``)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: The program's packages: the headless core and the Qt front end.
PACKAGES = (REPO / "cno_annotate", REPO / "ui")
SQL_CALLS = {"execute", "executemany", "executescript"}


def sql_calls(path: Path) -> list[int]:
    """The lines of ``path`` that call ``.execute``, ``.executemany`` or ``.executescript`` on anything."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return sorted(node.lineno for node in ast.walk(tree)
                  if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SQL_CALLS)


def test_only_the_store_runs_sql():
    outside = {}
    for path in sorted(p for package in PACKAGES for p in package.rglob("*.py")):
        name = path.relative_to(REPO).as_posix()
        if name.startswith("cno_annotate/store/"):
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


#: The one module that says how planes lie in LPS (and how array, affine and command line order axes).
AXES_MODULE = "cno_annotate/io/axes.py"
PLANE_NAMES = {"axial", "coronal", "sagittal"}


def plane_tables(path: Path) -> list[int]:
    """Lines of ``path`` with a literal table of the three planes: a dict keyed by them, or a tuple/list of them."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            names = [k.value for k in node.keys if isinstance(k, ast.Constant)]
        elif isinstance(node, ast.Tuple | ast.List):
            names = [e.value for e in node.elts if isinstance(e, ast.Constant)]
        else:
            continue
        if len(names) == 3 and set(names) == PLANE_NAMES:
            lines.append(node.lineno)
    return lines


def test_the_plane_axis_table_is_written_once():
    tables = {}
    for path in sorted(p for package in PACKAGES for p in package.rglob("*.py")):
        name = path.relative_to(REPO).as_posix()
        if name != AXES_MODULE and plane_tables(path):
            tables[name] = plane_tables(path)
    assert tables == {}, f"plane tables outside {AXES_MODULE} (use PLANES / PLANE_SCREEN / PLANE_AXES there): {tables}"
    assert plane_tables(REPO / AXES_MODULE)  # the check sees the table where it is


def string_event_checks(path: Path) -> list[int]:
    """Lines of ``path`` that compare a view event (a name ``what``) with a string instead of a ViewChange member."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == "what":
            for right in node.comparators:
                items = right.elts if isinstance(right, ast.Tuple | ast.List | ast.Set) else [right]
                if any(isinstance(item, ast.Constant) and isinstance(item.value, str) for item in items):
                    lines.append(node.lineno)
    return lines


def test_widgets_observe_typed_view_events():
    """The session says what changed with ViewChange members; a widget that compares strings would miss a rename."""
    found = {p.relative_to(REPO).as_posix(): string_event_checks(p) for p in sorted((REPO / "ui").rglob("*.py"))}
    assert {name: lines for name, lines in found.items() if lines} == {}


def test_reports_and_the_viewer_logic_do_not_depend_on_the_sample_generator():
    """The skeleton map and the bone-unit checklist draw the schematic skeleton kept as data, not the phantom."""
    import subprocess
    import sys

    script = ("import sys\n"
              "import cno_annotate.analysis.report, cno_annotate.analysis.figures, cno_annotate.display.checklist\n"
              "import cno_annotate.display.overlay, cno_annotate.display.marking, cno_annotate.annotation.skeleton\n"
              "print(sorted(m for m in sys.modules if m.split('.')[-1] in "
              "('phantom', 'sample', 'sample_lesions', 'sample_visits')))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def enum_value_comparisons(path: Path, values: set[str]) -> list[int]:
    """Lines of ``path`` comparing something with a string that is an enumeration's value (use the member)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                items = side.elts if isinstance(side, ast.Tuple | ast.List | ast.Set) else [side]
                if any(isinstance(item, ast.Constant) and item.value in values for item in items):
                    lines.append(node.lineno)
    return lines


def test_widgets_compare_read_states_and_roles_with_their_enumerations():
    from cno_annotate.annotation.model import ReadingRole, ReadStatus, UnitMark

    values = {str(member) for enum in (ReadStatus, UnitMark, ReadingRole) for member in enum}
    found = {p.relative_to(REPO).as_posix(): enum_value_comparisons(p, values) for p in sorted((REPO / "ui").rglob("*.py"))}
    assert {name: lines for name, lines in found.items() if lines} == {}
