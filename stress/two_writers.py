"""Several processes on one store at once: lost updates, duplicate drafts and versions, schema races.

Run ``python stress/two_writers.py`` (see ``--help`` and stress/README.md). It prints one JSON
object of figures; every "lost", "wrong" and "duplicate" figure must be 0.

Scenarios
---------
same-read
    ``--processes`` workers hold the same read open, as two windows would, and make ``--ops``
    changes each (add a lesion, or change the comment of a random lesion) without reloading
    between changes. A refused change (ReadConflict / ReadLocked) is counted and the worker
    goes on with the reloaded read. Afterwards the audit trail of the read is replayed:
    an entry whose "before" differs from the replayed state is a *wrong before*; a committed
    value overwritten by a change that never saw it is a *lost update*; a committed lesion
    missing from the store is a *lost update* too.
drafts
    Workers open the same never-opened case at the same moment and each add a lesion: the store
    must end with one read of the case (duplicate drafts).
successors
    Workers ask for a new version of the same submitted read at the same moment: at most one
    successor (duplicate successors).
schema
    Workers open a store that does not exist yet at the same moment: every one must succeed
    (schema races).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STUDY = "1.2.826.0.1.3680043.99.77"
SERIES = "1.2.826.0.1.3680043.99.77.1"

try:  # the figures of an older version of the program can be measured with the same script
    from cno_annotate.errors import ReadConflict, ReadLocked

    REFUSALS: tuple[type[BaseException], ...] = (ReadConflict, ReadLocked)
except ImportError:  # pragma: no cover - older program
    REFUSALS = ()


# -- workers (run in child processes) ------------------------------------------------------------
def _wait_until(start_at: float) -> None:
    delay = start_at - time.time()
    if delay > 0:
        time.sleep(delay)


def worker_same_read(store_dir: str, read_id: str, name: str, seed: int, ops: int, start_at: float) -> None:
    """Make ``ops`` changes to one read held open; print each committed change as a JSON line."""
    from cno_annotate.annotation.reads import ReadSession
    from cno_annotate.store import Store

    rng = random.Random(seed)
    session = ReadSession.open(Store.open(store_dir), read_id)
    _wait_until(start_at)
    for k in range(ops):
        value = f"{name}-{k}"
        lesions = [l.lesion_id for l in session.read.lesions]
        try:
            if not lesions or rng.random() < 0.4:
                lesion_id = session.add_lesion((k, 0, 0), SERIES, (k, 0, 0), comment=value)
                print(json.dumps({"op": "add", "lesion": lesion_id, "comment": value}), flush=True)
            else:
                lesion_id = rng.choice(lesions)
                session.update_lesion(lesion_id, comment=value)
                print(json.dumps({"op": "edit", "lesion": lesion_id, "comment": value}), flush=True)
        except REFUSALS as exc:
            print(json.dumps({"op": "refused", "why": type(exc).__name__}), flush=True)


def worker_open_case(store_dir: str, start_at: float) -> None:
    """Open a never-opened case and add one lesion."""
    from cno_annotate.annotation.reads import ReadSession
    from cno_annotate.store import Store

    store = Store.open(store_dir)
    _wait_until(start_at)
    session = ReadSession.open_or_create(store, STUDY, "dr-race")
    try:
        session.add_lesion((1, 2, 3), SERIES, (1, 2, 3))
        print(json.dumps({"op": "add", "read": session.read.read_id}), flush=True)
    except REFUSALS as exc:
        print(json.dumps({"op": "refused", "why": type(exc).__name__}), flush=True)


def worker_new_version(store_dir: str, read_id: str, start_at: float) -> None:
    """Ask for a new version of a submitted read."""
    from cno_annotate.annotation.reads import ReadSession
    from cno_annotate.errors import CnoError
    from cno_annotate.store import Store

    store = Store.open(store_dir)
    _wait_until(start_at)
    try:
        session = ReadSession.new_version(store, read_id, "dr-race", "race")
        print(json.dumps({"op": "version", "read": session.read.read_id}), flush=True)
    except CnoError as exc:
        print(json.dumps({"op": "refused", "why": str(exc)[:80]}), flush=True)


def worker_open_store(store_dir: str, start_at: float) -> None:
    """Open (create) a store."""
    from cno_annotate.errors import CnoError
    from cno_annotate.store import Store

    _wait_until(start_at)
    try:
        store = Store.open(store_dir)
        print(json.dumps({"op": "opened", "version": store.schema_version}), flush=True)
    except CnoError as exc:
        print(json.dumps({"op": "failed", "why": str(exc)}), flush=True)


# -- the coordinator ---------------------------------------------------------------------------------
def _spawn(args: list[str]) -> subprocess.Popen:
    # The program under test: $PYTHONPATH if given (to measure another version), else this checkout.
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH") or str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen([sys.executable, __file__, "--worker", *args], stdout=subprocess.PIPE, text=True, env=env)


def _collect(children: list[subprocess.Popen]) -> list[list[dict]]:
    out = []
    for child in children:
        stdout, _ = child.communicate()
        if child.returncode != 0:
            raise RuntimeError(f"a worker failed with exit code {child.returncode}")
        out.append([json.loads(line) for line in stdout.splitlines() if line.startswith("{")])
    return out


def _start_at(processes: int) -> str:
    return str(time.time() + 0.6 + 0.15 * processes)


def same_read(root: Path, processes: int, ops: int, seed: int) -> dict:
    """Workers change one read at once; replay its audit trail."""
    from cno_annotate.annotation.reads import ReadSession, load_read
    from cno_annotate.store import Store

    store_dir = root / "same-read"
    store = Store.open(store_dir)
    session = ReadSession.open_or_create(store, STUDY, "dr-both")
    session.add_lesion((0, 0, 0), SERIES, (0, 0, 0), comment="start")
    read_id = session.read.read_id
    start = _start_at(processes)
    logs = _collect([_spawn(["same-read", str(store_dir), read_id, f"w{n}", str(seed * 100 + n), str(ops), start])
                     for n in range(processes)])
    committed = [entry for log in logs for entry in log if entry["op"] in ("add", "edit")]
    refused = sum(entry["op"] == "refused" for log in logs for entry in log)
    final = {l.lesion_id: l.comment for l in load_read(Store.open(store_dir), read_id).lesions}
    wrong_before, overwritten, replayed = _replay(Store.open(store_dir), read_id)
    values = {entry["comment"] for entry in committed}
    missing = [e for e in committed if e["op"] == "add" and e["lesion"] not in final]
    return {
        "processes": processes, "changes_committed": len(committed), "conflicts_reported": refused,
        "lost_updates": len(missing) + len([v for v in overwritten if v in values]),
        "wrong_audit_before": wrong_before,
        "store_differs_from_audit_replay": int(replayed != final),
        "lesions": len(final),
    }


def _replay(store, read_id: str) -> tuple[int, list[str], dict]:
    """Apply the read's audit entries in order; count befores that differ and values overwritten unseen."""
    rows = store.db.execute("SELECT detail FROM audit WHERE entity = ? ORDER BY seq", (f"read:{read_id}",))
    model: dict[str, str] = {}
    wrong, overwritten = 0, []
    for (detail,) in rows:
        detail = json.loads(detail)
        before, after = detail.get("before"), detail.get("after")
        if not isinstance(after, dict) or "lesions" not in after:
            continue
        for lesion_id, lesion in after["lesions"].items():
            seen = (before or {}).get("lesions", {}).get(lesion_id)
            seen_comment = None if seen is None else seen["comment"]
            if seen_comment != model.get(lesion_id):
                wrong += 1
                if model.get(lesion_id) is not None:
                    overwritten.append(model[lesion_id])
            if lesion is None:
                model.pop(lesion_id, None)
            else:
                model[lesion_id] = lesion["comment"]
    return wrong, overwritten, model


def drafts(root: Path, processes: int, rounds: int) -> dict:
    """Workers open one new case at once; count reads of the case."""
    from cno_annotate.store import Store

    duplicates = refused = 0
    for n in range(rounds):
        store_dir = root / f"drafts-{n}"
        Store.open(store_dir).close()
        logs = _collect([_spawn(["open-case", str(store_dir), _start_at(processes)]) for _ in range(processes)])
        refused += sum(e["op"] == "refused" for log in logs for e in log)
        reads = Store.open(store_dir).db.execute("SELECT COUNT(*) FROM reads").fetchone()[0]
        duplicates += max(0, reads - 1)
    return {"rounds": rounds, "duplicate_drafts": duplicates, "conflicts_reported": refused}


def successors(root: Path, processes: int, rounds: int) -> dict:
    """Workers ask for a new version of one submitted read at once; count successors."""
    from cno_annotate.annotation.reads import ReadSession
    from cno_annotate.store import Store

    duplicates = 0
    for n in range(rounds):
        store_dir = root / f"versions-{n}"
        store = Store.open(store_dir)
        session = ReadSession.open_or_create(store, STUDY, "dr-race")
        session.add_lesion((1, 2, 3), SERIES, (1, 2, 3), site_id="femur.distal", side="R")
        session.submit()
        read_id = session.read.read_id
        _collect([_spawn(["new-version", str(store_dir), read_id, _start_at(processes)]) for _ in range(processes)])
        count = Store.open(store_dir).db.execute("SELECT COUNT(*) FROM reads WHERE supersedes = ?",
                                                 (read_id,)).fetchone()[0]
        duplicates += max(0, count - 1)
    return {"rounds": rounds, "duplicate_successors": duplicates}


def schema(root: Path, processes: int, rounds: int) -> dict:
    """Workers create one new store at once; count failures."""
    failures = 0
    for n in range(rounds):
        logs = _collect([_spawn(["open-store", str(root / f"new-{n}"), _start_at(processes)])
                         for _ in range(processes)])
        failures += sum(e["op"] != "opened" for log in logs for e in log)
    return {"rounds": rounds, "schema_race_failures": failures}


def main(argv: list[str] | None = None) -> int:
    """Run the scenarios and print their figures as JSON."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        kind, rest = argv[1], argv[2:]
        if kind == "same-read":
            worker_same_read(rest[0], rest[1], rest[2], int(rest[3]), int(rest[4]), float(rest[5]))
        elif kind == "open-case":
            worker_open_case(rest[0], float(rest[1]))
        elif kind == "new-version":
            worker_new_version(rest[0], rest[1], float(rest[2]))
        else:
            worker_open_store(rest[0], float(rest[1]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--ops", type=int, default=200, help="changes per worker on the shared read")
    parser.add_argument("--rounds", type=int, default=20, help="rounds of the drafts, successors and schema races")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scenarios", default="same-read,drafts,successors,schema")
    args = parser.parse_args(argv)
    wanted = args.scenarios.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        figures: dict = {}
        if "same-read" in wanted:
            figures["same_read"] = same_read(root, args.processes, args.ops, args.seed)
        if "drafts" in wanted:
            figures["drafts"] = drafts(root, args.processes, args.rounds)
        if "successors" in wanted:
            figures["successors"] = successors(root, args.processes, args.rounds)
        if "schema" in wanted:
            figures["schema"] = schema(root, args.processes, args.rounds)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
