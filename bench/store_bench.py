"""Store costs: an edit with synchronous=NORMAL vs FULL, and the quick check at open.

Run ``python bench/store_bench.py`` (figures in bench/README.md). Peer rows: a bare SQLite
UPDATE + COMMIT of one row under the same settings (the floor of any durable edit).
"""

from __future__ import annotations

import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

EDITS = 200


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def edit_latency(root: Path, synchronous: str) -> float:
    """Median ms of one lesion edit (revision-checked UPDATE, lesion row, audit entry, commit)."""
    from cno_annotate.annotation.reads import ReadSession
    from cno_annotate.store import Store

    store = Store.open(root)
    store.db.execute(f"PRAGMA synchronous={synchronous}")
    session = ReadSession.open_or_create(store, "1.2.3", "dr-bench")
    lesion = session.add_lesion((0.0, 0.0, 0.0), "1.2.3", (0, 0, 0))
    samples = []
    for n in range(EDITS):
        start = time.perf_counter()
        session.update_lesion(lesion, comment=f"edit {n}")
        samples.append(time.perf_counter() - start)
    store.close()
    return _median_ms(samples)


def bare_commit(path: Path, synchronous: str) -> float:
    """Median ms of one UPDATE + COMMIT in WAL mode: the floor."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
    db.execute("INSERT OR IGNORE INTO t VALUES (1, '')")
    samples = []
    for n in range(EDITS):
        start = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        db.execute("UPDATE t SET v = ? WHERE id = 1", (str(n),))
        db.execute("COMMIT")
        samples.append(time.perf_counter() - start)
    db.close()
    return _median_ms(samples)


def open_cost(root: Path, images: int) -> tuple[float, float, float]:
    """Median ms of Store.open without and with the quick check, for a store with ``images`` image rows; MB."""
    from cno_annotate.store import Store

    store = Store.open(root)
    with store.transaction() as db:
        db.execute("INSERT INTO patients VALUES (1, 'P', 'N', '', '')")
        db.execute("INSERT INTO studies VALUES ('s', 1, '', '', '', '')")
        db.execute("INSERT INTO dicom_series VALUES ('se', 's', 'MR', 1, '{}')")
        db.executemany("INSERT INTO images VALUES (?,0,'se',?,'1.2',0,1,'u2','M2',12,448,448,'[0,0,0]',"
                       "'[1,0,0,0,1,0]','[1,1]',5,'[1,0]',60,1,1,'{}')",
                       [(f"1.2.3.{n}", f"/data/study/IM{n:06d}") for n in range(images)])
    store.close()
    size = (root / "store.sqlite").stat().st_size / 1e6
    timings = {}
    for check in (False, True):
        samples = []
        for _ in range(15):
            start = time.perf_counter()
            Store.open(root, quick_check=check).close()
            samples.append(time.perf_counter() - start)
        timings[check] = _median_ms(samples)
    return timings[False], timings[True], size


def main() -> int:
    """Print the figures as Markdown tables."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print("| synchronous | cno-annotate edit, median ms | bare UPDATE+COMMIT, median ms | x bare |")
        print("|---|---|---|---|")
        for mode in ("NORMAL", "FULL"):
            edit = edit_latency(root / f"edit-{mode}", mode)
            bare = bare_commit(root / f"bare-{mode}.sqlite", mode)
            print(f"| {mode} | {edit:.2f} | {bare:.2f} | {edit / bare:.1f} |")
        print()
        print("| image rows | store MB | open ms | open + quick_check ms | check share |")
        print("|---|---|---|---|---|")
        for images in (1_000, 20_000, 100_000):
            plain, checked, size = open_cost(root / f"open-{images}", images)
            print(f"| {images} | {size:.1f} | {plain:.1f} | {checked:.1f} | {(checked - plain) / checked:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
