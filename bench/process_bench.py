"""Whole-process benchmark: ``cno-annotate import`` as a user runs it, against ``dcm2niix -z n``.

A user runs a whole process, so this times processes from outside: Python
start-up, module imports, indexing, the store writes and the printed summary
all count. Runs of the two tools alternate (paired), several times, and the
figures are medians of wall time and of CPU time (user + system of the child,
from ``getrusage``), which varies less on a busy machine.

- warm: every file of the study is in the page cache;
- cold: the study's files are dropped from the page cache before each run
  (``posix_fadvise(DONTNEED)``, no root needed; the programs' own files stay cached);
- re-import of the imported folder (into the same store), against the first import;
- start-up: ``python -c pass`` and ``import cno_annotate.cli`` in a fresh process;
- in-process: ``import_paths`` alone, for comparison with ``bench/import_bench.py``;
- growth: 20 studies of 400 files imported one after the other into one store, each import
  timed, then ``studies`` and ``series`` on the full store.

Python modules run from cached bytecode, as after ``pip install`` (which compiles them):
the children run without ``PYTHONDONTWRITEBYTECODE`` and with a bytecode cache of their
own (``PYTHONPYCACHEPREFIX`` in the work folder), filled by one untimed run first.
``--no-bytecode`` times them compiling every module on every run instead.

Run: ``python bench/process_bench.py [--repeats N] [--studies 20] [--study DIR] [--out bench/out]``.
Needs ``dcm2niix`` (Debian package). Nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cno_annotate.sample import StudyPlan, generate_study  # noqa: E402

PLAN = dict(stations=5, slices=40, matrix=448)
_SCRIPT = Path(sys.executable).parent / "cno-annotate"
#: The command a user types (the installed script), else ``python -m cno_annotate``.
CLI = [str(_SCRIPT)] if _SCRIPT.exists() and not os.environ.get("PYTHONPATH") else [sys.executable, "-m", "cno_annotate"]


#: The environment of the timed programs (see the module notes); set by :func:`use_bytecode`.
CHILD_ENV: dict[str, str] = dict(os.environ)


def use_bytecode(work: Path, cached: bool) -> None:
    """Let the timed Python programs keep compiled modules in ``work`` (``cached``), or compile every run."""
    CHILD_ENV.pop("PYTHONDONTWRITEBYTECODE", None)
    CHILD_ENV.pop("PYTHONPYCACHEPREFIX", None)
    if cached:
        CHILD_ENV["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    else:
        CHILD_ENV["PYTHONDONTWRITEBYTECODE"] = "1"


def run(command: list[str], cwd: Path | None = None, env: dict | None = None) -> tuple[float, float]:
    """Run a command to completion, output discarded; (wall s, CPU s of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd,
                   env={**CHILD_ENV, **(env or {})})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def files_of(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def warm(root: Path) -> None:
    for path in files_of(root):
        with open(path, "rb") as fp:
            while fp.read(1 << 22):
                pass


def drop_from_page_cache(root: Path) -> None:
    """Ask the kernel to forget the cached pages of every file of the study."""
    for path in files_of(root):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def median_pair(samples: list[tuple[float, float]]) -> dict:
    return {"wall_s": statistics.median(s[0] for s in samples), "cpu_s": statistics.median(s[1] for s in samples)}


def paired(study: Path, work: Path, repeats: int, cold: bool, before: Path | None = None) -> dict:
    """Alternate cno-annotate import (fresh store), dcm2niix (fresh folder) and, if given, an older version."""
    ours, theirs, reimport, older = [], [], [], []
    for n in range(repeats):
        store, out = work / f"store-{cold}-{n}", work / f"nii-{cold}-{n}"
        out.mkdir()
        order = ["ours", "theirs"] + (["before"] if before else [])
        order = order[n % len(order):] + order[:n % len(order)]
        for who in order:
            if cold:
                drop_from_page_cache(study)
            else:
                warm(study)
            if who == "ours":
                ours.append(run([*CLI, "import", str(study), "--store", str(store)]))
            elif who == "before":
                older_store = work / f"before-{cold}-{n}"
                older.append(run([sys.executable, "-m", "cno_annotate", "import", str(study), "--store",
                                  str(older_store)], env={"PYTHONPATH": str(before)}))
                shutil.rmtree(older_store)
            else:
                theirs.append(run(["dcm2niix", "-z", "n", "-b", "n", "-o", str(out), "-f", "%s_%p", str(study)]))
        if cold:
            drop_from_page_cache(study)
        reimport.append(run([*CLI, "import", str(study), "--store", str(store)]))
        shutil.rmtree(store)
        shutil.rmtree(out)
    result = {"cno_import": median_pair(ours), "dcm2niix": median_pair(theirs), "cno_reimport": median_pair(reimport)}
    if older:
        result["before"] = median_pair(older)
    return result


def in_process(study: Path, work: Path, repeats: int) -> float:
    script = (
        "import sys, time; from pathlib import Path\n"
        "from cno_annotate.importer import import_paths\n"
        "from cno_annotate.store import Store\n"
        "store = Store.open(sys.argv[2])\n"
        "start = time.perf_counter(); import_paths(store, [Path(sys.argv[1])])\n"
        "print(time.perf_counter() - start)\n"
    )
    times = []
    for n in range(repeats):
        warm(study)
        store = work / f"inproc-{n}"
        out = subprocess.run([sys.executable, "-c", script, str(study), str(store)], check=True,
                             capture_output=True, text=True, env=CHILD_ENV).stdout
        times.append(float(out))
        shutil.rmtree(store)
    return statistics.median(times)


def startup(repeats: int) -> dict:
    empty = [run([sys.executable, "-c", "pass"]) for _ in range(repeats)]
    cli = [run([sys.executable, "-c", "import cno_annotate.cli"]) for _ in range(repeats)]
    version = [run([*CLI, "--version"]) for _ in range(repeats)]
    return {"python": median_pair(empty), "import_cli": median_pair(cli), "cli_version": median_pair(version)}


def growth(studies: list[Path], work: Path, repeats: int) -> dict:
    store = work / "growth-store"
    imports = []
    for study in studies:
        warm(study)
        imports.append(run([*CLI, "import", str(study), "--store", str(store)]))
    listing = {}
    for name, command in [("studies", ["studies"]), ("series", ["series"]), ("series_json", ["series", "--json"])]:
        listing[name] = median_pair([run([*CLI, *command, "--store", str(store)]) for _ in range(repeats)])
    again = [run([*CLI, "import", str(studies[0]), "--store", str(store)]) for _ in range(repeats)]
    return {
        "import_wall_s": [w for w, _ in imports],
        "import_cpu_s": [c for _, c in imports],
        "listing": listing,
        "reimport_first_study": median_pair(again),
    }


def report(results: dict) -> str:
    lines = [f"study: {results['files']} files, {results['bytes'] / 1e6:.0f} MB; {results['repeats']} paired runs", ""]
    lines += ["| whole process | cno-annotate import s (wall / CPU) | dcm2niix -z n s (wall / CPU) | ratio wall | ratio CPU |",
              "|---|---|---|---|---|"]
    for key in ("warm", "cold"):
        r = results[key]
        ours, theirs = r["cno_import"], r["dcm2niix"]
        lines.append(f"| {key} | {ours['wall_s']:.2f} / {ours['cpu_s']:.2f} | {theirs['wall_s']:.2f} / "
                     f"{theirs['cpu_s']:.2f} | {ours['wall_s'] / theirs['wall_s']:.2f} | "
                     f"{ours['cpu_s'] / theirs['cpu_s']:.2f} |")
    for key in ("warm", "cold"):
        r = results[key]
        if "before" in r:
            b, theirs = r["before"], r["dcm2niix"]
            lines.append(f"| before ({results['before_version']}), {key} | {b['wall_s']:.2f} / {b['cpu_s']:.2f} | | "
                         f"{b['wall_s'] / theirs['wall_s']:.2f} | {b['cpu_s'] / theirs['cpu_s']:.2f} |")
    for key in ("warm", "cold"):
        r = results[key]
        lines.append(f"| re-import, {key} (same store) | {r['cno_reimport']['wall_s']:.2f} / {r['cno_reimport']['cpu_s']:.2f} "
                     f"| | {r['cno_reimport']['wall_s'] / r['dcm2niix']['wall_s']:.2f} | "
                     f"{r['cno_reimport']['cpu_s'] / r['dcm2niix']['cpu_s']:.2f} |")
    s = results["startup"]
    lines += ["", f"start-up (wall / CPU s): python -c pass {s['python']['wall_s']:.3f} / {s['python']['cpu_s']:.3f}; "
              f"import cno_annotate.cli {s['import_cli']['wall_s']:.3f} / {s['import_cli']['cpu_s']:.3f}; "
              f"cno-annotate --version {s['cli_version']['wall_s']:.3f} / {s['cli_version']['cpu_s']:.3f}",
              f"in-process import_paths (warm): {results['in_process_s']:.3f} s",
              f"re-import / first import (warm, wall): {results['warm']['cno_reimport']['wall_s'] / results['warm']['cno_import']['wall_s']:.2f}"]
    g = results.get("growth")
    if g:
        n = len(g["import_wall_s"])
        first, last = statistics.median(g["import_cpu_s"][:3]), statistics.median(g["import_cpu_s"][-3:])
        lines += ["", f"growth: {n} studies imported one after the other into one store; CPU s per import, "
                  f"first three {first:.2f}, last three {last:.2f} (last / first {last / first:.2f})",
                  "per import (wall s): " + " ".join(f"{w:.2f}" for w in g["import_wall_s"])]
        for name, value in g["listing"].items():
            lines.append(f"{name} on {n} studies: {value['wall_s']:.3f} s wall, {value['cpu_s']:.3f} s CPU")
        lines.append(f"re-import of one study into the {n}-study store: {g['reimport_first_study']['wall_s']:.3f} s wall")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--studies", type=int, default=20, help="studies for the growth run (0: skip)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    parser.add_argument("--study", type=Path, help="time this generated study (ground_truth.json removed) instead "
                        "of generating one; the growth run then needs --studies 0")
    parser.add_argument("--no-bytecode", action="store_true", help="compile every module on every run")
    parser.add_argument("--before", type=Path, help="a folder holding an older cno_annotate package, timed in the "
                        "same paired runs (e.g. from: git archive COMMIT cno_annotate | tar -x -C DIR)")
    args = parser.parse_args(argv)
    if not shutil.which("dcm2niix"):
        print("dcm2niix is needed (Debian package dcm2niix)", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="cno-process-bench-"))
    use_bytecode(work, cached=not args.no_bytecode)
    try:
        studies = [args.study] if args.study else []
        for seed in range(len(studies), max(1, args.studies)):
            root = work / f"study{seed:02d}"
            generate_study(root, StudyPlan(seed=seed, **PLAN))
            (root / "ground_truth.json").unlink()  # both tools see DICOM files only
            studies.append(root)
        study = studies[0]
        for who in (CLI, [sys.executable, "-m", "cno_annotate"]):  # fill the bytecode cache (untimed)
            run([*who, "--version"], env={"PYTHONPATH": str(args.before)} if args.before and who != CLI else None)
            run([*who, "import", str(study), "--store", str(work / "untimed")],
                env={"PYTHONPATH": str(args.before)} if args.before and who != CLI else None)
            shutil.rmtree(work / "untimed")
        results: dict = {"files": len(files_of(study)), "bytes": sum(p.stat().st_size for p in files_of(study)),
                         "repeats": args.repeats, "bytecode": not args.no_bytecode}
        results["startup"] = startup(args.repeats)
        results["before_version"] = str(args.before) if args.before else ""
        results["warm"] = paired(study, work, args.repeats, cold=False, before=args.before)
        results["cold"] = paired(study, work, args.repeats, cold=True, before=args.before)
        results["in_process_s"] = in_process(study, work, args.repeats)
        if args.studies:
            results["growth"] = growth(studies, work, args.repeats)
        (args.out / "process_bench.json").write_text(json.dumps(results, indent=2))
        print(report(results))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
