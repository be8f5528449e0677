"""Viewer benchmark: windowing, reformatting, repaint per scroll step, time to first image.

On the 5-station, 400-file study of the import benchmark (generated, then deleted):

- window/level of one slice to an 8-bit image, 448 x 448 and 512 x 512: our preallocated path
  against a naive numpy expression and SimpleITK's IntensityWindowing (the peers);
- slice extraction per plane (coronal, axial, sagittal) of the composed STIR volume, windowed;
- repaint of both linked views per scroll, zoom and pan step, window 1920 x 1080, offscreen
  (``--repaint-only`` measures only this, on a smaller generated study if asked);
- finding the missing slices of the composed volume (done once per volume shown);
- wall time from starting ``cno-annotate view`` to the first STIR image painted (cold: the
  composed volume is built; warm: it comes from the cache), and the whole process's CPU time; the
  peer is the floor of any such start, Python with numpy and Qt painting one slice in a window
  (``--first-image-only``; ``--before DIR`` times an older version in the same rounds).

Run: ``python bench/view_bench.py [--repeats N]``. Nothing here is a test.
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

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# CNO_BENCH_CODE: a folder with other cno_annotate and cno_annotate_ui packages to measure (--before)
sys.path.insert(0, os.environ.get("CNO_BENCH_CODE") or str(REPO))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from cno_annotate.display.planes import extract, plane_mapping  # noqa: E402
from cno_annotate.display.windowing import Window, Windowing  # noqa: E402
from cno_annotate.importer import import_paths  # noqa: E402
from cno_annotate.sample import StudyPlan, generate_study  # noqa: E402
from cno_annotate.store import Store  # noqa: E402
from cno_annotate.volumes import load_volume  # noqa: E402


def per_call_ms(fn, repeats: int) -> float:
    """Median milliseconds per call over ``repeats`` calls (after 10 warm-up calls)."""
    for _ in range(10):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def naive(image: np.ndarray, window: Window) -> np.ndarray:
    return (np.clip((image - window.low) / window.width, 0, 1) * 255).astype(np.uint8)


def sitk_window(image: np.ndarray, window: Window):
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.IntensityWindowing(
        sitk.GetImageFromArray(image), window.low, window.high, 0, 255))


def windowing_figures(repeats: int) -> dict:
    out = {}
    rng = np.random.default_rng(0)
    for size in (448, 512):
        image = rng.normal(500, 200, (size, size)).astype(np.float32)
        window = Window(500, 800)
        ours = Windowing()
        out[size] = {
            "ours_ms": per_call_ms(lambda: ours.apply(image, window), repeats),
            "naive_ms": per_call_ms(lambda: naive(image, window), repeats),
            "sitk_ms": per_call_ms(lambda: sitk_window(image, window), max(50, repeats // 10)),
        }
        assert np.abs(ours.apply(image, window).astype(int) - naive(image, window).astype(int)).max() <= 1
    return out


def reformat_figures(volume, repeats: int) -> dict:
    out = {}
    windowing = Windowing()
    window = Window(500, 1000)
    for plane in ("coronal", "axial", "sagittal"):
        mapping = plane_mapping(volume.affine, volume.shape, plane)
        indices = np.linspace(0, mapping.slices - 1, 50).astype(int)
        counter = iter(np.tile(indices, 10_000))
        out[plane] = {
            "shape": list(extract(volume.array, mapping, 0).shape),
            "extract_and_window_ms": per_call_ms(
                lambda: windowing.apply(extract(volume.array, mapping, next(counter)), window), repeats),
        }
    return out


def repaint_figures(store_dir: Path, steps: int, size: tuple[int, int] = (1920, 1080), layout: str = "1x2") -> dict:
    """Median CPU ms to change the left view and repaint every visible view, per kind of step."""
    from cno_annotate_ui.main_window import MainWindow
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    window = MainWindow(store_dir)
    window.resize(*size)
    window.show()
    window.select_study(window.store.studies()[0].study_uid)
    window.loader.wait()
    if layout != "1x2" and hasattr(window, "set_layout"):
        window.set_layout(layout)
        window.loader.wait()
    for _ in range(5):
        app.processEvents()
    views = [p.view for p in window.panels.values() if p.view.isVisible()]
    session = window.session

    def timed(step) -> float:
        # CPU time of this thread (painting offscreen is all in it): steady on a shared, loaded machine.
        # One step, then one paint of every visible view, as Qt paints a frame: each view marked dirty,
        # and one repaint() paints every dirty view of the window once. (Until issue 12 was closed each view was
        # repainted in turn, and the first repaint already painted the other linked view: 3 paints for 2.)
        times = []
        for n in range(steps):
            start = time.thread_time()
            step(n)
            for v in views:
                v.update()
            views[0].repaint()
            times.append(time.thread_time() - start)
        return 1000 * statistics.median(times[5:])

    def scroll(n: int) -> None:
        session.scroll("left", 1 if (n // 20) % 2 == 0 else -1)

    def zoom(n: int) -> None:
        factor = 1.25 if (n // 6) % 2 == 0 else 0.8  # in and out again, through fit and zoomed in
        views[0].zoom_about(views[0].rect().center(), factor)

    def pan(n: int) -> None:
        state = session.views["left"]
        centre = state.centre_pixel() if hasattr(state, "centre_pixel") else views[0]._centre_pixel()
        dx = 3.0 if (n // 20) % 2 == 0 else -3.0
        session.set_zoom("left", views[0].pixels_per_mm(), state.screen_to_lps(centre[0], centre[1] + dx))

    results = {"window": list(size), "layout": layout, "views": len(views), "view_height_px": views[0].height()}
    for plane in ("coronal", "axial"):
        session.set_plane("left", plane)
        app.processEvents()
        results[plane] = timed(scroll)
    session.set_plane("left", "coronal")
    session.set_zoom("left", None)
    results["zoom"] = timed(zoom)
    session.set_zoom("left", views[0].pixels_per_mm() * 3)
    results["pan_zoomed"] = timed(pan)
    window.close()
    return results


def paired_repaints(store_dir: Path, size: str, layout: str, pairs: int, before: Path | None) -> dict:
    """Repaint figures of this version and of ``before``, each in its own process, alternating ``pairs`` times.

    Alternating pairs on a shared machine: both versions see the same load; the medians of the runs
    and the ratio after / before per step are what to compare.
    """
    runs: dict[str, list[dict]] = {"after": [], "before": []}
    for _ in range(pairs):
        for name, code in (("after", None), ("before", before)):
            if name == "before" and code is None:
                continue
            env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
            if code is not None:
                env["CNO_BENCH_CODE"] = str(code)
                env["PYTHONPATH"] = str(code)
            result = subprocess.run([sys.executable, __file__, "--repaint-only", "--size", size, "--layout", layout,
                                     "--store", str(store_dir)], capture_output=True, text=True, env=env, check=True)
            runs[name].append(json.loads(result.stdout.strip().splitlines()[-1]))
    steps = ("coronal", "axial", "zoom", "pan_zoomed")
    out = {"window": size, "layout": layout, "pairs": pairs, "runs": runs}
    for name, figures in runs.items():
        if figures:
            out[name] = {step: statistics.median(f[step] for f in figures) for step in steps}
    if runs["before"]:
        out["after_over_before"] = {step: out["after"][step] / out["before"][step] for step in steps}
    return out


def missing_figures(volume, repeats: int) -> dict:
    """Time to find the missing slices of a volume (once per volume shown), if this version has it."""
    try:
        from cno_annotate.display.missing import find_missing_slices
    except ImportError:
        return {}
    return {"find_missing_ms": per_call_ms(lambda: find_missing_slices(volume.array), repeats),
            "voxels": int(np.prod(volume.shape))}


#: The floor for the first image: Python, numpy and Qt loaded, one window painting one windowed slice of the
#: composed STIR's size (2081 x 448), nothing of ours. The viewer's start is given as a ratio to it.
FLOOR_SCRIPT = """
import sys, time
import numpy as np
from PySide6.QtGui import QImage, QPainter
from PySide6.QtWidgets import QApplication, QWidget

class View(QWidget):
    def paintEvent(self, event):
        slice_ = np.clip((np.arange(2081 * 448, dtype=np.float32).reshape(2081, 448) % 255), 0, 255).astype(np.uint8)
        image = QImage(slice_.data, 448, 2081, 448, QImage.Format_Grayscale8)
        painter = QPainter(self)
        painter.drawImage(self.rect(), image)
        painter.end()
        print(f"first-image-painted left {time.time():.6f} cpu {time.process_time():.3f} "
              f"thread {time.thread_time():.3f}", flush=True)
        app.quit()

app = QApplication(sys.argv[:1])
view = View()
view.resize(1400, 900)
view.show()
app.exec()
"""


def _child_environment(pythonpath: Path | None, user_cache: Path | None = None) -> dict[str, str]:
    """The environment of a timed start: offscreen, timing printed, and bytecode kept (as an installed program has
    it: a start that compiles every module measures the compiler); ``user_cache``: the per-user cache folder."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(CNO_ANNOTATE_TIMING="1", QT_QPA_PLATFORM="offscreen")
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    if user_cache is not None:
        env["CNO_ANNOTATE_USER_CACHE"] = str(user_cache)
    return env


def _first_paint(command: list[str], env: dict[str, str], cwd: Path) -> tuple:
    """Wall seconds from starting ``command`` to its first painted STIR image, the CPU seconds of the whole
    process (user + system, from the kernel's accounting of the finished child, to its exit), the CPU
    seconds the process had used when it painted (all its threads; None: an older version that does not say)
    and those of its window's thread alone (None if not said)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=True, cwd=cwd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = (result.stderr + result.stdout).splitlines()  # stderr now; stdout in older versions (--before)
    painted = [line.split() for line in lines if line.startswith("first-image-painted left")]
    at_paint = float(painted[0][4]) if len(painted[0]) > 4 else None
    thread_at_paint = float(painted[0][6]) if len(painted[0]) > 6 else None
    phases: dict[str, float] = {}  # when each step of the start ended (s from the start; CNO_ANNOTATE_TIMING)
    for words in (line.split() for line in lines if line.startswith("start-phase ")):
        phases.setdefault(words[1], float(words[2]) - start)  # a step seen twice (the right view's): the first
    return (float(painted[0][2]) - start, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            at_paint, thread_at_paint, phases)


def drop_from_page_cache(folder: Path) -> None:
    """Ask the kernel to forget the cached pages of every file under ``folder`` (no root needed)."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


#: How cold a start is: "warm" (a second start), "cold" (no cached volume: the composed volumes are built from
#: the study's files, as in the earlier figures), "cold_disk" (cold, and the study's files dropped from the page
#: cache: read from the disk) and "first" (cold_disk, and the per-user cache empty too: the first start after
#: an install, which validates the data files once).
CONDITIONS = ("warm", "cold", "cold_disk", "first")


def first_image_seconds(store_dir: Path, runs: int, cold: bool = False, pythonpath: Path | None = None,
                        with_cpu: bool = False, condition: str | None = None, user_cache: Path | None = None) -> list:
    """Seconds from starting ``cno-annotate view`` to the first STIR image painted (cold: the cache emptied first);
    with ``with_cpu``, (wall, whole-process CPU, CPU at the paint) triples. ``condition`` (one of
    :data:`CONDITIONS`) overrides ``cold``."""
    condition = condition or ("cold" if cold else "warm")
    out: list = []
    env = _child_environment(pythonpath, user_cache)
    for _ in range(runs):
        if condition != "warm":
            for cached in (store_dir / "cache").glob("*"):
                if cached.is_file():
                    cached.unlink()
        if condition in ("cold_disk", "first"):
            drop_from_page_cache(store_dir.parent / "study")
        if condition == "first" and user_cache is not None:
            shutil.rmtree(user_cache, ignore_errors=True)
        shot = Path(tempfile.mkstemp(suffix=".png")[1])
        timed = _first_paint([sys.executable, "-m", "cno_annotate", "view", "--store", str(store_dir),
                              "--screenshot", str(shot)], env, store_dir.parent)  # not the checkout: -m would
        shot.unlink()                                                           # import its code first
        out.append(timed if with_cpu else timed[0])
    return out


def floor_seconds(work: Path) -> tuple[float, float, float | None]:
    """The floor's start to first paint (wall) and its whole-process CPU seconds."""
    script = work / "floor.py"
    script.write_text(FLOOR_SCRIPT, encoding="utf-8")
    return _first_paint([sys.executable, str(script)], _child_environment(None), work)


def checkout(revision: str, folder: Path) -> Path:
    """This repository's packages (and the data they read) as they were at ``revision``, for ``--before``."""
    folder.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision, "cno_annotate", "ui", "schemas"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    (folder / "ui").rename(folder / "cno_annotate_ui")
    return folder


def first_image_pairs(store_dir: Path, work: Path, runs: int, before: Path | None) -> dict:
    """Alternating starts: this version warm, cold and first, the floor, and ``before`` the same (if given).

    Every version has a per-user cache folder of its own (emptied for "first"). The older version gets a
    store of its own, made by its own import of the same study (it may not open a store that a newer version
    migrated)."""
    before_store = work / "store-before"
    if before:
        subprocess.run([sys.executable, "-m", "cno_annotate", "import", "--store", str(before_store),
                        str(work / "study")], env=_child_environment(before), cwd=work, check=True,
                       capture_output=True)
    versions = [("", store_dir, None)] + ([("_before", before_store, before)] if before else [])
    for suffix, store, code in versions:  # bytecode compiled and data files validated once, untimed
        first_image_seconds(store, 1, pythonpath=code, user_cache=work / f"user-cache{suffix}")
    floor_seconds(work)
    rows: dict[str, list] = {f"{c}{suffix}": [] for suffix, _, _ in versions for c in CONDITIONS}
    rows["floor"] = []
    for _ in range(runs):
        for condition in CONDITIONS:
            for suffix, store, code in versions:
                rows[f"{condition}{suffix}"] += first_image_seconds(
                    store, 1, pythonpath=code, with_cpu=True, condition=condition,
                    user_cache=work / f"user-cache{suffix}")
        rows["floor"].append(floor_seconds(work))
    medians = {}
    for name, runs_ in rows.items():
        if runs_:
            medians[name] = {"wall": statistics.median(r[0] for r in runs_), "cpu": statistics.median(r[1] for r in runs_)}
            if runs_[0][2] is not None:
                medians[name]["cpu_at_paint"] = statistics.median(r[2] for r in runs_)
            if len(runs_[0]) > 3 and runs_[0][3] is not None:
                medians[name]["thread_cpu_at_paint"] = statistics.median(r[3] for r in runs_)
            steps = [step for step in runs_[0][4] if all(step in r[4] for r in runs_)] if len(runs_[0]) > 4 else []
            if steps:
                medians[name]["phases_s"] = {step: round(statistics.median(r[4][step] for r in runs_), 3)
                                             for step in steps}
    for name in medians:
        if name == "floor":
            continue
        medians[name]["wall_x_floor"] = medians[name]["wall"] / medians["floor"]["wall"]
        medians[name]["cpu_x_floor"] = medians[name]["cpu"] / medians["floor"]["cpu"]
        for figure in ("cpu_at_paint", "thread_cpu_at_paint"):
            if figure in medians[name]:
                medians[name][f"{figure}_x_floor"] = medians[name][figure] / medians["floor"][figure]
    for name in CONDITIONS:
        if f"{name}_before" in medians:
            old = medians[f"{name}_before"]
            medians[name]["wall_x_before"] = medians[name]["wall"] / old["wall"]
            medians[name]["cpu_x_before"] = medians[name]["cpu"] / old["cpu"]
            if "cpu_at_paint" in old:
                medians[name]["cpu_at_paint_x_before"] = medians[name]["cpu_at_paint"] / old["cpu_at_paint"]
    return {"runs": rows, "medians": medians, "load_average": os.getloadavg(), "cpus": os.cpu_count()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=500)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    parser.add_argument("--repaint-only", action="store_true", help="only the repaint figures")
    parser.add_argument("--size", default="1920x1080", help="window size for the repaint figures")
    parser.add_argument("--layout", default="1x2", help="layout for --repaint-only (1x2 or 2x2)")
    parser.add_argument("--pairs", type=int, default=0, help="with --repaint-only: this many alternating process "
                        "runs of this version and of --before (if given), the medians of each")
    parser.add_argument("--first-image-only", type=int, default=0, metavar="ROUNDS",
                        help="only the start to first STIR image: this many rounds of a cold and a warm start of "
                        "this version, the floor (Python, numpy and Qt painting one slice) and, with --before, a "
                        "cold and a warm start of the older version; medians, ratios to the floor and to --before")
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)  # a child of --pairs: measure this store
    parser.add_argument("--before", type=Path, help="a folder with older cno_annotate and cno_annotate_ui packages "
                        "(and the schemas folder): its start to first image is timed in the same runs, alternating")
    parser.add_argument("--before-rev", metavar="REV", help="as --before, with the packages of this git revision")
    args = parser.parse_args(argv)
    size = tuple(int(n) for n in args.size.split("x"))
    args.out.mkdir(parents=True, exist_ok=True)
    if args.store is not None:  # one measuring process of --pairs
        print(json.dumps(repaint_figures(args.store, 120, size, args.layout)))
        return 0
    work = Path(tempfile.mkdtemp(prefix="cno-view-bench-"))
    if args.before_rev:
        args.before = checkout(args.before_rev, work / "before")
    try:
        generate_study(work / "study", StudyPlan(stations=5, slices=40, matrix=448, seed=0))
        store = Store.open(work / "store")
        import_paths(store, [work / "study"])
        row = next(r for r in store.volumes() if r.kind == "composed" and r.role == "STIR")
        volume = load_volume(store, row.volume_id, use_cache=False)
        store.close()
        for cache in (work / "store" / "cache").glob("*.npy"):
            cache.unlink()  # the first viewer start below builds the cache: a cold start
        if args.first_image_only:
            print(json.dumps(first_image_pairs(work / "store", work, args.first_image_only, args.before), indent=2))
            return 0
        if args.repaint_only and args.pairs:
            print(json.dumps(paired_repaints(work / "store", args.size, args.layout, args.pairs, args.before),
                             indent=2))
            return 0
        if args.repaint_only:
            figures = {"repaint_ms": repaint_figures(work / "store", 120, size, args.layout)}
            print(json.dumps(figures, indent=2))
            return 0
        cold, cold_before = [], []
        for _ in range(4):  # alternating, cold cache each time
            cold += first_image_seconds(work / "store", 1, cold=True)
            if args.before:
                cold_before += first_image_seconds(work / "store", 1, cold=True, pythonpath=args.before)
        warm = first_image_seconds(work / "store", 4)
        figures = {
            "first_image_s": {"cold": cold, "warm": warm, "cold_before": cold_before},
            "windowing": windowing_figures(args.repeats),
            "reformat": reformat_figures(volume, args.repeats // 5),
            "missing": missing_figures(volume, 10),
            "repaint_ms": repaint_figures(work / "store", 120, size),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    (args.out / "view_bench.json").write_text(json.dumps(figures, indent=2))
    print(report(figures))
    return 0


def report(f: dict) -> str:
    lines = ["| window/level of one slice | ours ms | naive numpy ms | SimpleITK ms | naive / ours | SimpleITK / ours |",
             "|---|---|---|---|---|---|"]
    for size, w in f["windowing"].items():
        lines.append(f"| {size} x {size} float32 -> uint8 | {w['ours_ms']:.3f} | {w['naive_ms']:.3f} | "
                     f"{w['sitk_ms']:.3f} | {w['naive_ms'] / w['ours_ms']:.1f} | {w['sitk_ms'] / w['ours_ms']:.1f} |")
    lines += ["", "| plane of the composed STIR | slice shape | extract + window ms |", "|---|---|---|"]
    for plane, r in f["reformat"].items():
        lines.append(f"| {plane} | {r['shape'][0]} x {r['shape'][1]} | {r['extract_and_window_ms']:.3f} |")
    rp = f["repaint_ms"]
    lines += ["", f"repaint of both linked views per step (window {rp['window'][0]} x {rp['window'][1]}, views "
              f"{rp['view_height_px']} px tall, offscreen): scroll coronal {rp['coronal']:.2f} ms, axial "
              f"{rp['axial']:.2f} ms; zoom {rp['zoom']:.2f} ms; pan (zoomed in) {rp['pan_zoomed']:.2f} ms"]
    if f.get("missing"):
        lines.append(f"finding missing slices of the composed STIR ({f['missing']['voxels'] / 1e6:.0f} M voxels): "
                     f"{f['missing']['find_missing_ms']:.1f} ms")
    first = f["first_image_s"]
    lines.append(f"process start to first STIR image painted: cold cache {statistics.median(first['cold']):.2f} s, "
                 f"warm cache {statistics.median(first['warm']):.2f} s (medians of {len(first['cold'])})")
    if first["cold_before"]:
        lines.append(f"the older version, same runs alternating, cold cache: "
                     f"{statistics.median(first['cold_before']):.2f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
