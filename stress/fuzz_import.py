"""Fuzz the DICOM import: mutated real files must be imported or refused, never crash anything.

Each mutant (see ``dicom_mutations.py``) is imported beside two unmutated
files of its series into a fresh store, imported a second time, and every
volume of the store is then loaded and shown in a headless viewer session.
Each trial runs in a forked child with a memory cap and a timeout, so a hang
or a memory explosion is counted instead of stopping the run.

Outcomes
--------
ok          imported or refused with a reason; everything loads and displays
traceback   an exception escaped import, re-import, loading or the viewer session
memory      MemoryError, or the child died (e.g. killed at the memory cap)
hang        the trial ran past the timeout
garbage     a volume loaded with NaN/inf voxels, no voxels or a non-finite/singular affine
merged      one series holds images of two patients
lost        an unmutated sibling file was not imported

Usage::

    python stress/fuzz_import.py --mutants 1200 --seed 1 [--timeout 30] [--memory-mb 3000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import select
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dicom_mutations import Seed, mutate, seed_files  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def run_trial(workdir: Path, seed: Seed, data: bytes) -> dict:
    """Import one mutant beside its siblings, re-import, load and display every volume."""
    from cno_annotate.display.planes import PLANES
    from cno_annotate.display.session import ViewerSession
    from cno_annotate.errors import CnoError
    from cno_annotate.importer import import_paths
    from cno_annotate.store import Store
    from cno_annotate.volumes import load_volume

    folder = workdir / "in"
    folder.mkdir(parents=True)
    siblings = []
    for n, sibling in enumerate(seed.siblings, start=1):
        target = folder / f"SIB{n}"
        shutil.copyfile(sibling, target)
        siblings.append(str(target))
    (folder / "ZMUTANT").write_bytes(data)  # sorted last: siblings come first
    store = Store.open(workdir / "store")
    stage = "import"
    try:
        report = import_paths(store, [folder])
        stage = "re-import"
        import_paths(store, [folder])
        stored = {row[0] for row in store.db.execute("SELECT path FROM images")}
        if any(s not in stored for s in siblings):
            skipped = {s["path"]: s["reason"] for s in report.skipped}
            return {"outcome": "lost", "detail": [skipped.get(s, "not stored") for s in siblings]}
        merged = _merged_series(store)
        if merged:
            return {"outcome": "merged", "detail": merged}
        for row in store.volumes():
            stage = "load"
            try:
                volume = load_volume(store, row.volume_id)
            except CnoError:
                continue  # refused with a reason
            problem = _garbage(volume)
            if problem:
                return {"outcome": "garbage", "detail": problem}
            stage = "display"
            session = ViewerSession()
            session.set_volume("left", volume)
            for plane in PLANES:
                session.set_plane("left", plane)
                session.scroll("left", 1)
        refused = [s["reason"] for s in report.skipped if s["path"].endswith("ZMUTANT")]
        return {"outcome": "ok", "detail": refused[0] if refused else "imported"}
    except MemoryError:
        return {"outcome": "memory", "detail": stage}
    except Exception as exc:
        return {"outcome": "traceback", "detail": f"{stage}: {type(exc).__name__}: {exc}"[:300],
                "traceback": traceback.format_exc()[-2000:]}
    except BaseException as exc:  # e.g. a decoder panic (pyo3 PanicException)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return {"outcome": "traceback", "detail": f"{stage}: {type(exc).__name__}: {exc}"[:300],
                "traceback": traceback.format_exc()[-2000:]}
    finally:
        store.close()


def _merged_series(store) -> list[str]:
    """Series whose files name more than one patient."""
    import pydicom

    patients: dict[str, set] = {}
    for series_uid, path in store.db.execute("SELECT DISTINCT series_uid, path FROM images"):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            who = (str(ds.get("PatientID", "")), str(ds.get("PatientName", "")))
        except Exception:
            continue
        patients.setdefault(series_uid, set()).add(who)
    return [uid for uid, who in patients.items() if len(who) > 1]


def _garbage(volume) -> str:
    import numpy as np

    array = np.asarray(volume.array)
    if array.size == 0:
        return f"empty volume {array.shape}"
    if not np.isfinite(array).all():
        return f"non-finite voxels ({int((~np.isfinite(array)).sum())})"
    affine = np.asarray(volume.affine, dtype=float)
    if not np.isfinite(affine).all():
        return "non-finite affine"
    with np.errstate(all="ignore"):
        det = float(np.linalg.det(affine[:3, :3]))
    if not np.isfinite(det) or det == 0:
        return f"singular affine (det {det})"
    return ""


def isolated(function: Callable[[], dict], timeout: float, memory_mb: int) -> dict:
    """Run ``function`` in a forked child with a memory cap; its dict result, or hang/crash."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read_end)
        code = 0
        try:
            limit = memory_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            result = function()
        except BaseException as exc:  # noqa: BLE001 - the parent must get an answer
            result = {"outcome": "traceback", "detail": f"{type(exc).__name__}: {exc}"[:300]}
        try:
            with os.fdopen(write_end, "wb") as out:
                out.write(json.dumps(result, default=str).encode())
        except BaseException:  # noqa: BLE001
            code = 1
        os._exit(code)
    os.close(write_end)
    chunks = []
    deadline = time.monotonic() + timeout
    with os.fdopen(read_end, "rb") as pipe:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return {"outcome": "hang", "detail": f"no answer in {timeout:g} s"}
            ready, _, _ = select.select([pipe], [], [], left)
            if ready:
                chunk = os.read(pipe.fileno(), 65536)
                if not chunk:
                    break
                chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    if not chunks:
        how = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit {os.WEXITSTATUS(status)}"
        return {"outcome": "memory", "detail": f"child died ({how})"}
    return json.loads(b"".join(chunks))


def mutants(count: int, seed: int, repo: Path = REPO):
    """``count`` (seed, description, bytes) mutants, the same for the same seed."""
    rng = random.Random(seed)
    seeds = seed_files(repo)
    originals = {s.name: s.path.read_bytes() for s in seeds}
    for n in range(count):
        source = seeds[n % len(seeds)]
        data = originals[source.name]
        descriptions = []
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            data, description = mutate(data, rng)
            descriptions.append(description)
        yield source, "; ".join(descriptions), data


def fuzz(count: int, seed: int, timeout: float, memory_mb: int, log=None) -> list[dict]:
    """Run ``count`` trials; one result dict per mutant."""
    # Import once in the parent so that each forked child starts warm.
    import cno_annotate.display.session  # noqa: F401
    import cno_annotate.importer  # noqa: F401
    import cno_annotate.volumes  # noqa: F401

    results = []
    with tempfile.TemporaryDirectory(prefix="cno-fuzz-") as tmp:
        for n, (source, description, data) in enumerate(mutants(count, seed)):
            workdir = Path(tmp) / f"t{n}"
            result = isolated(lambda: run_trial(workdir, source, data), timeout, memory_mb)
            shutil.rmtree(workdir, ignore_errors=True)
            result.update({"n": n, "seed_file": source.name, "mutation": description})
            results.append(result)
            if log is not None and result["outcome"] != "ok":
                log(f"{n:5d} {result['outcome']:9s} {source.name}: {description}: {result.get('detail')}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutants", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per trial")
    parser.add_argument("--memory-mb", type=int, default=3000, help="address-space cap per trial")
    parser.add_argument("--json", type=Path, help="write every result here")
    args = parser.parse_args(argv)
    started = time.monotonic()
    results = fuzz(args.mutants, args.seed, args.timeout, args.memory_mb, log=print)
    counts = Counter(r["outcome"] for r in results)
    refused = sum(r["outcome"] == "ok" and r["detail"] != "imported" for r in results)
    print(f"\n{len(results)} mutants in {time.monotonic() - started:.0f} s: "
          + ", ".join(f"{k} {counts.get(k, 0)}" for k in
                      ("ok", "traceback", "memory", "hang", "garbage", "merged", "lost"))
          + f" (refused with a reason: {refused})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    bad = len(results) - counts.get("ok", 0)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
