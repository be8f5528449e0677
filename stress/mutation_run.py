"""Mutation testing of the core with mutmut: which small changes would the suite not notice?

Where ``mutation_probe.py`` plants a dozen hand-written bugs, this runs mutmut (the
mutation-testing tool of the Python ecosystem) over whole modules of the core: every
comparison, operator, constant, keyword argument and return value it can change, one at a
time. mutmut records which tests cover each function and runs only those per mutant.

The tree is cloned (``git clone`` of HEAD, so uncommitted edits are not measured) into a
temporary folder, a ``[tool.mutmut]`` section naming the modules and the test files is
added there, and ``mutmut run`` works in that clone; the checkout is never touched.

    python stress/mutation_run.py                        # the default modules (below)
    python stress/mutation_run.py cno_annotate/store/audit.py --tests tests/test_audit_content.py
    python stress/mutation_run.py --keep mutants-clone   # keep the clone (a new folder) to inspect survivors
    python stress/mutation_run.py --minutes 60           # stop after an hour; score the mutants checked
    python stress/mutation_run.py --deselect tests/test_analysis.py::test_html_report_renders_in_headless_chromium

Prints killed / survived / other per module, the score (killed / all checked), and every survivor's
diff, and writes them as JSON (``--json``). mutmut must be installed (``pip install mutmut``);
it is a tool for this script only, not a dependency of the project.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: The core whose logic the study's numbers depend on, and the tests that exercise it.
DEFAULT_MODULES = (
    "cno_annotate/annotation/scoring.py",
    "cno_annotate/store/audit.py",
    "cno_annotate/analysis/agreement.py",
)
DEFAULT_TESTS = (
    "tests/test_scoring.py",
    "tests/test_unit_scoring.py",
    "tests/test_reads.py",
    "tests/test_audit_content.py",
    "tests/test_audit_tamper.py",
    "tests/test_reading_study.py",
    "tests/test_analysis.py",
    "tests/test_agreement_ci.py",
    "tests/test_concordance.py",
    "tests/test_exports.py",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", default=list(DEFAULT_MODULES), help="source files to mutate")
    parser.add_argument("--tests", nargs="+", default=list(DEFAULT_TESTS), help="test files mutmut may run")
    parser.add_argument("--deselect", action="append", default=[], metavar="NODEID",
                        help="a slow test mutmut must not run (pytest --deselect; may be given several times)")
    parser.add_argument("--only", nargs="+", default=[], metavar="PATTERN",
                        help="run only the mutants whose names match (mutmut's names with * wildcards, e.g. "
                             "'cno_annotate.analysis.agreement.x_bland_altman*'); mutmut runs the cheapest first, "
                             "so a run stopped by --minutes never reaches the functions slow tests cover")
    parser.add_argument("--children", type=int, default=2, help="mutants tested at once (default 2)")
    parser.add_argument("--minutes", type=float,
                        help="stop mutmut after this many minutes and report the mutants it finished")
    parser.add_argument("--keep", type=Path, help="clone into this folder and keep it")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if shutil.which("mutmut", path=str(Path(sys.executable).parent)) is None:
        print("mutation_run: mutmut is not installed here (pip install mutmut)", file=sys.stderr)
        return 2
    work = args.keep or Path(tempfile.mkdtemp(prefix="cno-mutmut-"))
    started = time.monotonic()
    try:
        _clone(work, args.modules, args.tests, args.deselect)
        mutmut = str(Path(sys.executable).parent / "mutmut")
        finished = _run(mutmut, work, args.children, args.minutes, args.only)
        results = _results(mutmut, work)
        results["finished"] = finished
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    results["seconds"] = round(time.monotonic() - started)
    _print(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _clone(work: Path, modules: list[str], tests: list[str], deselect: list[str]) -> None:
    if work.exists() and any(work.iterdir()):
        raise SystemExit(f"mutation_run: {work} is not empty")
    subprocess.run(["git", "clone", "-q", str(REPO), str(work)], check=True)
    config = "\n".join([
        "",
        "[tool.mutmut]",
        f"paths_to_mutate = {json.dumps(modules)}",
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}",
        "pytest_add_cli_args = " + json.dumps(["-q", "-x", "-p", "no:cacheprovider",
                                               *(arg for test in deselect for arg in ("--deselect", test))]),
        'also_copy = ["schemas", "sample_scans", "tests", "cno_annotate", "ui", "setup.py"]',
        "",
    ])
    with (work / "pyproject.toml").open("a") as file:
        file.write(config)


def _run(mutmut: str, work: Path, children: int, minutes: float | None, only: list[str]) -> bool:
    """Run mutmut in ``work``; stop its whole process group after ``minutes``. True if it ended by itself."""
    process = subprocess.Popen([mutmut, "run", "--max-children", str(children), *only], cwd=work,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        process.wait(timeout=None if minutes is None else minutes * 60)
        return True
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        return False


def _results(mutmut: str, work: Path) -> dict:
    listing = subprocess.run([mutmut, "results", "--all", "true"], cwd=work, capture_output=True,
                             text=True, check=False).stdout
    per_module: dict[str, Counter] = defaultdict(Counter)
    survivors = []
    for line in listing.splitlines():
        match = re.match(r"\s*(\S+): (.+)$", line)
        if not match:
            continue
        name, status = match.groups()
        module = name.split(".x")[0]
        per_module[module][status.strip()] += 1
        if status.strip() == "survived":
            shown = subprocess.run([mutmut, "show", name], cwd=work, capture_output=True, text=True,
                                   check=False).stdout
            diff = [l for l in shown.splitlines() if re.match(r"^[-+][^-+]", l)]
            survivors.append({"mutant": name, "diff": diff})
    unchecked = ("not checked", "check was interrupted by user")
    total = sum(n for c in per_module.values() for status, n in c.items() if status not in unchecked)
    killed = sum(c["killed"] for c in per_module.values())
    return {"modules": {m: dict(c) for m, c in per_module.items()}, "killed": killed, "total": total,
            "score": round(killed / total, 3) if total else None, "survivors": survivors}


def _print(results: dict) -> None:
    for module, counts in sorted(results["modules"].items()):
        print(f"{module}: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
    print(f"score: {results['killed']} killed of {results['total']} mutants ({results['score']}) "
          f"in {results['seconds']} s" + ("" if results.get("finished", True) else " (stopped by --minutes)"))
    for survivor in results["survivors"]:
        print(f"\n{survivor['mutant']}")
        print("\n".join("    " + line for line in survivor["diff"]))


if __name__ == "__main__":
    sys.exit(main())
