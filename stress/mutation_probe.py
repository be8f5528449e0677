"""Plant small bugs in the core, one at a time, and check that the tests catch each.

A hand-written mutation run: every mutant below is a bug that a plausible edit could
introduce (a swapped weight, a removed audit row, a transaction that commits on error...).
For each, the source tree is copied to a temporary folder, the one change is applied, and
the named tests run there (``python -m pytest`` with the copy first on ``sys.path``). A
mutant is *killed* when the tests fail, *survived* when they pass (a gap in the suite) and
*stale* when its pattern is no longer in the code (update the list).

    python stress/mutation_probe.py            # every mutant, its tests only
    python stress/mutation_probe.py --full     # every mutant against the whole suite (slow)
    python stress/mutation_probe.py M04 M05    # some mutants

Prints one line per mutant and the score (killed / applicable).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    """One planted bug: a regex replaced once in one file, and the tests that should catch it."""

    id: str
    what: str
    path: str
    pattern: str
    replacement: str
    tests: tuple[str, ...]


MUTANTS = [
    Mutant("M01", "linear weighted kappa computed as quadratic", "cno_annotate/analysis/agreement.py",
           r"cohens_kappa\(table, wt=weights\)", 'cohens_kappa(table, wt="quadratic" if weights else None)',
           ("tests/test_analysis.py",)),
    Mutant("M02", "no audit row for a new read version", "cno_annotate/annotation/reads.py",
           r'audit\.append\(db, actor, "new-version"', '(lambda *a, **k: None)(db, actor, "new-version"',
           ("tests/test_reading_study.py", "tests/test_reads.py", "tests/test_audit_content.py")),
    Mutant("M03", "audit hash ignores the before/after content", "cno_annotate/store/audit.py",
           r"\[seq, prev_seq, at, actor, action, entity, detail\]", "[seq, prev_seq, at, actor, action, entity]",
           ("tests/test_reading_study.py", "tests/test_audit_content.py")),
    Mutant("M04", "a failed transaction is committed instead of rolled back", "cno_annotate/store/sqlite.py",
           r'connection\.execute\("ROLLBACK"\)', 'connection.execute("COMMIT")',
           ("tests/test_reads.py", "tests/test_store_transactions.py")),
    Mutant("M05", "the per-unit cap of 7 removed", "cno_annotate/annotation/scoring.py",
           r"score = min\(score, cap\)", "score = score",
           ("tests/test_scoring.py", "tests/test_worklists_and_lookup.py")),
    Mutant("M06", "migrations start from version 0 on every open", "cno_annotate/store/sqlite.py",
           r'before = connection\.execute\("PRAGMA user_version"\)\.fetchone\(\)\[0\]', "before = 0",
           ("tests/test_migrations.py", "tests/test_cli.py")),
    Mutant("M07", "volume-id prefix lookup disabled", "cno_annotate/store/db.py",
           r"if not rows and len\(volume_id\) >= 8:", "if False:",
           ("tests/test_cli.py", "tests/test_worklists_and_lookup.py")),
    Mutant("M08", "adjudicators given shuffled worklists", "cno_annotate/reading_study.py",
           r'if registration\.role == "reader":', "if True:",
           ("tests/test_reading_study.py", "tests/test_worklists_and_lookup.py")),
    Mutant("M09", "edits written with no transaction at all", "cno_annotate/store/sqlite.py",
           r'connection\.execute\("BEGIN IMMEDIATE"\)\n(?P<body>(.|\n)*?)connection\.execute\("COMMIT"\)',
           r'None\n\g<body>None', ("tests/test_reads.py", "tests/test_store_transactions.py")),
    Mutant("M10", "Randolph's kappa computed as Fleiss'", "cno_annotate/analysis/agreement.py",
           r"sm_fleiss\(table, method=method\)", 'sm_fleiss(table, method="fleiss")',
           ("tests/test_analysis.py",)),
    Mutant("M11", "audit verify never looks at the hashes", "cno_annotate/store/audit.py",
           r"if _digest\(prev_hash, seq, at, actor, action, entity, detail, prev_seq\) != digest:", "if False:",
           ("tests/test_reading_study.py",)),
    Mutant("M12", "not-assessable grades scored as 0", "cno_annotate/annotation/scoring.py",
           r"grades = \[int\(lesion\.grades\[item\.id\]\) for lesion in lesions\n(?P<indent>\s*)"
           r"if lesion\.grades\.get\(item\.id, NOT_ASSESSABLE\) != NOT_ASSESSABLE\]",
           r"grades = [0 if lesion.grades[item.id] == NOT_ASSESSABLE else int(lesion.grades[item.id]) "
           r"for lesion in lesions\n\g<indent>if item.id in lesion.grades]", ("tests/test_scoring.py",)),
]


def _copy_tree(target: Path) -> None:
    ignore = shutil.ignore_patterns(".venv*", ".git", "__pycache__", ".pytest_cache", ".mypy_cache",
                                    ".ruff_cache", ".hypothesis", "build", "*.egg-info", "bench/out")
    shutil.copytree(REPO, target, ignore=ignore)


def run(mutant: Mutant, full: bool) -> tuple[str, float]:
    """Apply one mutant in a copy of the tree and run its tests: killed, survived or stale."""
    with tempfile.TemporaryDirectory(prefix="mutant-") as tmp:
        tree = Path(tmp) / "tree"
        _copy_tree(tree)
        source = tree / mutant.path
        text = source.read_text()
        mutated, n = re.subn(mutant.pattern, mutant.replacement, text, count=1)
        if n == 0:
            return "stale", 0.0
        source.write_text(mutated)
        tests = [] if full else [t for t in mutant.tests if (tree / t).exists()]
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                              cwd=tree, capture_output=True, text=True, env=_env(tree))
        elapsed = time.perf_counter() - start
        return ("killed" if proc.returncode != 0 else "survived"), elapsed


def _env(tree: Path) -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree)
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    return env


def main(argv: list[str] | None = None) -> int:
    """Run the mutants; exit 1 if any survived."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ids", nargs="*", help="mutant ids (default: all)")
    parser.add_argument("--full", action="store_true", help="run the whole suite for each mutant")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.ids or m.id in args.ids]
    results = {}
    for mutant in chosen:
        outcome, seconds = run(mutant, args.full)
        results[mutant.id] = outcome
        print(f"{mutant.id}  {outcome:8}  {seconds:6.1f} s  {mutant.what}", flush=True)
    applicable = [o for o in results.values() if o != "stale"]
    killed = applicable.count("killed")
    print(f"mutation score: {killed}/{len(applicable)} killed"
          + (f", {len(results) - len(applicable)} stale" if len(applicable) < len(results) else ""))
    return 0 if killed == len(applicable) else 1


if __name__ == "__main__":
    sys.exit(main())
