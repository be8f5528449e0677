"""Import and load benchmark: cno-annotate against the raw-read floor, SimpleITK and dcm2niix.

Generates whole-body studies of 5 stations x 2 series (STIR, T1) x 40 coronal slices of
448 x 448 (400 files, 160 MB) and measures, warm page cache, medians of several runs:

- floor: reading every file's bytes;
- pydicom: a plain header parse of every file (the cost any pydicom-based indexer starts from);
- index: ``cno-annotate import`` into a fresh store (header indexing, stacks, roles, plans);
- load: opening both composed whole-body volumes from the store (no cache) and, separately,
  every station stack;
- SimpleITK: ``ImageSeriesReader`` (GDCM) on every station series;
- dcm2niix (Debian package): converting the folder to uncompressed NIfTI;
- peak memory of the composed load, in a child process, against the voxel bytes.

Then 1x, 2x and 4x the data (1, 2, 4 studies) to show how cost grows.

Run: ``python bench/import_bench.py [--repeats N] [--out bench/out]``. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cno_annotate.importer import import_paths  # noqa: E402
from cno_annotate.sample import StudyPlan, generate_study  # noqa: E402
from cno_annotate.store import Store  # noqa: E402
from cno_annotate.volumes import load_volume  # noqa: E402

PLAN = dict(stations=5, slices=40, matrix=448)


def median_time(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs (seconds)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != "ground_truth.json")


def read_all_bytes(files: list[Path]) -> int:
    total = 0
    for path in files:
        with open(path, "rb") as fp:
            total += len(fp.read())
    return total


def pydicom_headers(files: list[Path]) -> None:
    import pydicom

    for path in files:
        pydicom.dcmread(path, stop_before_pixels=True)


def our_load(store: Store, kind: str) -> int:
    voxels = 0
    for row in store.volumes():
        if row.kind == kind:
            voxels += load_volume(store, row.volume_id, use_cache=False).array.size
    return voxels


def sitk_series(root: Path) -> int:
    import SimpleITK as sitk

    voxels = 0
    for folder in sorted({p.parent for p in all_files(root)}):
        reader = sitk.ImageSeriesReader()
        for series_uid in reader.GetGDCMSeriesIDs(str(folder)):
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), series_uid))
            image = reader.Execute()
            voxels += image.GetNumberOfPixels()
    return voxels


def dcm2niix(root: Path, work: Path) -> None:
    out = Path(tempfile.mkdtemp(dir=work))
    subprocess.run(["dcm2niix", "-z", "n", "-b", "n", "-o", str(out), "-f", "%s_%p", str(root)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shutil.rmtree(out)


PEAK_SCRIPT = """
import sys, json
sys.path.insert(0, {repo!r})

def high_water_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1])

from cno_annotate.store import Store
from cno_annotate.volumes import load_volume
import numpy, SimpleITK, pydicom  # loaded before the baseline
store = Store.open({store!r})
rows = [r for r in store.volumes() if r.kind == "composed"]
base = high_water_kb()
kept = [load_volume(store, r.volume_id, use_cache=False) for r in rows]
peak = high_water_kb()
print(json.dumps({{"base_kb": base, "peak_kb": peak, "voxel_bytes": sum(v.array.nbytes for v in kept)}}))
"""


def peak_memory(store: Store) -> dict:
    script = PEAK_SCRIPT.format(repo=str(REPO), store=str(store.root))
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def measure(roots: list[Path], work: Path, repeats: int, peers: bool) -> dict:
    files = [f for r in roots for f in all_files(r)]
    read_all_bytes(files)  # warm the page cache
    result = {"files": len(files), "bytes": sum(f.stat().st_size for f in files)}
    result["floor_s"] = median_time(lambda: read_all_bytes(files), repeats)
    result["pydicom_headers_s"] = median_time(lambda: pydicom_headers(files), repeats)
    stores: list[Store] = []

    def index():
        stores.append(our_index_many(roots, work))

    result["index_s"] = median_time(index, repeats)
    store = stores[-1]
    result["load_composed_s"] = median_time(lambda: our_load(store, "composed"), repeats)
    result["load_stations_s"] = median_time(lambda: our_load(store, "stack"), repeats)
    if peers:
        result["sitk_series_s"] = median_time(lambda: [sitk_series(r) for r in roots], repeats)
        if shutil.which("dcm2niix"):
            result["dcm2niix_s"] = median_time(lambda: [dcm2niix(r, work) for r in roots], repeats)
        result["memory"] = peak_memory(store)
    return result


def our_index_many(roots: list[Path], work: Path) -> Store:
    store = Store.open(Path(tempfile.mkdtemp(dir=work)))
    import_paths(store, roots)
    return store


def report(results: dict) -> str:
    one = results["1x"]
    floor = one["floor_s"]
    lines = [
        f"study: {PLAN['stations']} stations x 2 series x {PLAN['slices']} slices of "
        f"{PLAN['matrix']} x {PLAN['matrix']} = {one['files']} files, {one['bytes'] / 1e6:.0f} MB (warm cache)",
        "",
        "| step | median s | x floor | x dcm2niix |",
        "|---|---|---|---|",
    ]
    d2n = one.get("dcm2niix_s")
    for key, label in [
        ("floor_s", "read all bytes (floor)"),
        ("pydicom_headers_s", "pydicom dcmread(stop_before_pixels) of every file"),
        ("index_s", "cno-annotate import (header index + stacks + plans)"),
        ("load_stations_s", "cno-annotate load, 10 station stacks"),
        ("load_composed_s", "cno-annotate load, 2 composed whole-body volumes"),
        ("sitk_series_s", "SimpleITK ImageSeriesReader, 10 station series"),
        ("dcm2niix_s", "dcm2niix -z n, whole folder"),
    ]:
        if key in one:
            ratio = f"{one[key] / d2n:.2f}" if d2n else "-"
            lines.append(f"| {label} | {one[key]:.3f} | {one[key] / floor:.1f} | {ratio} |")
    if "sitk_series_s" in one:
        lines.append("")
        lines.append(f"SimpleITK series read / our composed load: {one['sitk_series_s'] / one['load_composed_s']:.1f}x")
    mem = one.get("memory")
    if mem:
        growth = (mem["peak_kb"] - mem["base_kb"]) * 1024
        lines.append(
            f"peak memory (VmHWM) of loading both composed volumes: {growth / 1e6:.0f} MB above the baseline for "
            f"{mem['voxel_bytes'] / 1e6:.0f} MB of float32 voxels ({growth / mem['voxel_bytes']:.2f}x)"
        )
    lines += ["", "| data | files | import s | composed load s | import s / file (ms) | load s / file (ms) |", "|---|---|---|---|---|---|"]
    for scale, r in results.items():
        lines.append(
            f"| {scale} | {r['files']} | {r['index_s']:.3f} | {r['load_composed_s']:.3f} | "
            f"{1000 * r['index_s'] / r['files']:.2f} | {1000 * r['load_composed_s'] / r['files']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    parser.add_argument("--scales", default="1,2,4", help="numbers of studies (default 1,2,4)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    scales = [int(s) for s in args.scales.split(",")]
    work = Path(tempfile.mkdtemp(prefix="cno-bench-"))
    try:
        studies = []
        for seed in range(max(scales)):
            root = work / f"study{seed}"
            start = time.perf_counter()
            generate_study(root, StudyPlan(seed=seed, **PLAN))
            print(f"generated {root.name} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
            studies.append(root)
        results = {}
        for n in scales:
            repeats = args.repeats if n == 1 else max(2, args.repeats // 2)
            results[f"{n}x"] = measure(studies[:n], work, repeats, peers=n == 1)
            print(f"{n}x done", file=sys.stderr)
        text = report(results)
        (args.out / "import_bench.json").write_text(json.dumps(results, indent=2))
        print(text)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
