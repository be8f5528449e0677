"""Load on one shared store: N reader processes x M edits each, on PostgreSQL and on one local SQLite store.

Readers work in pairs: both processes of a pair are one reader with the same read open (two windows,
or two machines), each editing its own lesion of that read. Every edit is revision-checked, so the
pair's edits conflict; a refused edit reloads the read and is repeated, as a reader would. Counted:

- lost edits: a lesion's final comment is not the last edit its process saw succeed, or fewer audit
  entries than acknowledged edits;
- duplicated edits: more audit entries for a process's edits than it made;
- conflicts reported (refused, reloaded, repeated), audit verification, p50/p95 latency of an edit.

    python bench/store_load.py [--processes 10] [--edits 200] [--backend both|sqlite|postgresql]
                               [--commit-delay US] [--no-wait-sampling]

Also reported: the readers' client CPU and (PostgreSQL) the server's CPU per acknowledged edit, where the
server's sessions were (pg_stat_activity sampled every 5 ms, unless --no-wait-sampling) and its functions'
calls per edit and time per call.

PostgreSQL: a throwaway server (Debian postgresql; initdb/pg_ctl in a temporary folder, fsync on,
127.0.0.1), readers connect with their own login roles (row-level security on).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

STUDY = "1.2.826.0.1.3680043.99.77"
SERIES = "1.2.3"
SIDES = ("R", "L")


def worker(location: str, reader: str, read_id: str, lesion: str, tag: str, edits: int) -> dict:
    """One process: ``edits`` comment changes of its lesion; conflicts reload and repeat."""
    from cno_annotate.annotation.reads import ReadSession
    from cno_annotate.errors import ReadConflict, StoreWriteError
    from cno_annotate.store import Store

    store = Store.open(location)
    session = ReadSession.open(store, read_id, reader)
    latencies, conflicts, refused, acknowledged = [], 0, 0, None
    cpu = time.process_time()
    for n in range(edits):
        while True:
            start = time.perf_counter()
            try:
                session.update_lesion(lesion, comment=f"{tag}:{n}")
            except ReadConflict:
                conflicts += 1  # refused and reloaded: repeat on the fresh copy
                continue
            except StoreWriteError:
                refused += 1
                session.reload()
                continue
            latencies.append(time.perf_counter() - start)
            acknowledged = f"{tag}:{n}"
            break
    cpu = time.process_time() - cpu
    store.close()
    return {"tag": tag, "latencies": latencies, "conflicts": conflicts, "refused": refused, "last": acknowledged,
            "cpu_s": cpu}


def _prepare(location: str, readers: list[str]) -> dict[str, tuple[str, list[str]]]:
    """Each reader's read with one lesion per process of the pair; reader -> (read id, lesion ids)."""
    from cno_annotate.annotation.reads import ReadSession
    from cno_annotate.store import Store

    out = {}
    for reader in readers:
        store = Store.open(_as(location, reader))
        session = ReadSession.open_or_create(store, STUDY, reader)
        lesions = [session.add_lesion((-70.0, 0.0, -400.0), SERIES, (1, 2, 3), site_id="femur.distal", side=side)
                   for side in SIDES]
        out[reader] = (session.read.read_id, lesions)
        store.close()
    return out


def _as(location: str, reader: str) -> str:
    """The store location as a reader's login (PostgreSQL), or as it is (SQLite)."""
    if location.startswith("postgresql://"):
        return location.replace("cno_owner@", f"{reader}@")
    return location


def run(location: str, processes: int, edits: int, server_cpu: Callable[[], float] | None = None,
        sample_waits: bool = True) -> dict:
    from cno_annotate.store import Store, audit

    readers = [f"reader-{k:02d}" for k in range(processes // 2)]
    reads = _prepare(location, readers)
    per_edit = statements_per_edit(_as(location, readers[0]), reads[readers[0]][0], reads[readers[0]][1][0])
    sampler = WaitSampler(location) if sample_waits and location.startswith("postgresql://") else None
    jobs = []
    for reader in readers:
        read_id, lesions = reads[reader]
        for lesion, side in zip(lesions, SIDES):
            tag = f"{reader}/{side}"
            command = [sys.executable, __file__, "--worker", _as(location, reader), reader, read_id, lesion, tag,
                       str(edits)]
            jobs.append((tag, read_id, lesion, subprocess.Popen(command, stdout=subprocess.PIPE, text=True)))
    started, cpu_started = time.perf_counter(), server_cpu() if server_cpu else 0.0
    results = {}
    for tag, read_id, lesion, job in jobs:
        out, _ = job.communicate()
        if job.returncode != 0:
            raise SystemExit(f"worker {tag} failed ({job.returncode})")
        results[tag] = {**json.loads(out), "read_id": read_id, "lesion": lesion}
    wall = time.perf_counter() - started
    spent_on_server = server_cpu() - cpu_started if server_cpu else None
    waits = sampler.stop() if sampler is not None else {}
    store = Store.open(location)
    from cno_annotate.annotation.reads import load_read

    lost = duplicated = 0
    entries = audit.entries(store.db, 10**7)
    for tag, result in results.items():
        read = load_read(store, result["read_id"])
        final = next(l.comment for l in read.lesions if l.lesion_id == result["lesion"])
        made = [e for e in entries if e["action"] == "edit comment" and _comment(e, result["lesion"]) is not None
                and _comment(e, result["lesion"]).startswith(tag + ":")]
        lost += int(final != result["last"]) + max(0, edits - len(made))
        duplicated += max(0, len(made) - edits)
    verification = audit.verify(store.db)
    store.close()
    latencies = [x for r in results.values() for x in r["latencies"]]
    cuts = statistics.quantiles(latencies, n=20)
    return {"edits": len(latencies), "lost": lost, "duplicated": duplicated,
            "conflicts": sum(r["conflicts"] for r in results.values()),
            "refused": sum(r["refused"] for r in results.values()),
            "audit": verification.reason if verification.ok else f"BROKEN: {verification.reason}",
            "audit_ok": verification.ok, "entries": verification.entries,
            "p50_ms": 1000 * statistics.median(latencies), "p95_ms": 1000 * cuts[18], "wall_s": wall,
            "edits_per_s": len(latencies) / wall, "floor_ms": floor_ms(location), "per_edit": per_edit,
            "client_cpu_ms": 1000 * sum(r["cpu_s"] for r in results.values()) / len(latencies),
            "server_cpu_ms": None if spent_on_server is None else 1000 * spent_on_server / len(latencies),
            "waits": waits, "functions": server_functions(location)}


class WaitSampler:
    """Where the server's sessions of the program spend the run: pg_stat_activity sampled every few ms.

    Each sample counts every client session of the program once: waiting on a lock (which kind), on the
    write-ahead log's flush (the commit's fsync), running (no wait event), or idle (the server waits for the
    client: Python, the network, the other processes on the cores).
    """

    def __init__(self, location: str, interval: float = 0.005) -> None:
        import threading

        import psycopg

        self.counts: dict[str, int] = {}
        self._connection = psycopg.connect(location, autocommit=True)
        self._interval = interval
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.wait(self._interval):
            for state, kind, event in self._connection.execute(
                    "SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
                    "WHERE application_name = 'cno-annotate' AND backend_type = 'client backend' "
                    "AND pid <> pg_backend_pid()").fetchall():
                key = "idle (waiting for the client)" if state != "active" else \
                    "running" if kind is None else f"{kind}: {event}"
                self.counts[key] = self.counts.get(key, 0) + 1

    def stop(self) -> dict[str, float]:
        """Share of session samples per state, largest first."""
        self._done.set()
        self._thread.join()
        self._connection.close()
        total = sum(self.counts.values()) or 1
        return {k: v / total for k, v in sorted(self.counts.items(), key=lambda kv: -kv[1])}


def server_functions(location: str) -> dict[str, tuple[int, float, float]]:
    """PostgreSQL: calls, mean total ms and mean own ms of the store's functions (track_functions = pl)."""
    if not location.startswith("postgresql://"):
        return {}
    import psycopg

    with psycopg.connect(location, autocommit=True) as connection:
        rows = connection.execute("SELECT funcname, calls, total_time, self_time FROM pg_stat_user_functions "
                                  "WHERE funcname LIKE 'cno_%' ORDER BY total_time DESC").fetchall()
    return {name: (calls, total / calls, own / calls) for name, calls, total, own in rows if calls}


def statements_per_edit(location: str, read_id: str, lesion: str) -> int:
    """Statements one lesion edit sends (PostgreSQL: round trips on the wire; SQLite: statements run), warm."""
    from cno_annotate.annotation.reads import ReadSession
    from cno_annotate.store import Store

    store = Store.open(location)
    try:
        session = ReadSession.open(store, read_id)
        session.update_lesion(lesion, comment="warm-up")
        if store.folder is None:
            from cno_annotate.store.postgres import round_trips

            with round_trips(store.db) as counted:
                session.update_lesion(lesion, comment="counted")
            return counted.total
        statements: list[str] = []
        store.db.set_trace_callback(statements.append)
        session.update_lesion(lesion, comment="counted")
        store.db.set_trace_callback(None)
        return len(statements)
    finally:
        store.close()


def floor_ms(location: str, repeats: int = 200) -> float:
    """Median ms of a bare one-row UPDATE + COMMIT on the same backend, one process: the floor of a durable write."""
    if location.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(location, autocommit=True) as connection:
            connection.execute("CREATE TABLE IF NOT EXISTS floor (id INTEGER PRIMARY KEY, n INTEGER)")
            connection.execute("INSERT INTO floor VALUES (1, 0) ON CONFLICT DO NOTHING")
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                with connection.transaction():
                    connection.execute("UPDATE floor SET n = n + 1 WHERE id = 1")
                times.append(time.perf_counter() - start)
        return 1000 * statistics.median(times)
    import sqlite3

    connection = sqlite3.connect(Path(location) / "floor.sqlite", isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("CREATE TABLE IF NOT EXISTS floor (id INTEGER PRIMARY KEY, n INTEGER)")
    connection.execute("INSERT OR IGNORE INTO floor VALUES (1, 0)")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("UPDATE floor SET n = n + 1 WHERE id = 1")
        connection.execute("COMMIT")
        times.append(time.perf_counter() - start)
    connection.close()
    return 1000 * statistics.median(times)


def _comment(entry: dict, lesion: str) -> str | None:
    after = (entry["detail"].get("after") or {}).get("lesions") or {}
    value = after.get(lesion)
    return value.get("comment") if isinstance(value, dict) else None


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        location, reader, read_id, lesion, tag, edits = sys.argv[2:8]
        print(json.dumps(worker(location, reader, read_id, lesion, tag, int(edits))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=10, help="reader processes (pairs share a read)")
    parser.add_argument("--edits", type=int, default=200, help="edits per process")
    parser.add_argument("--backend", choices=("both", "sqlite", "postgresql"), default="both")
    parser.add_argument("--commit-delay", type=int, default=0, metavar="US",
                        help="PostgreSQL group commit: commit_delay in microseconds (commit_siblings 4); 0: off")
    parser.add_argument("--no-wait-sampling", action="store_true",
                        help="PostgreSQL: do not sample pg_stat_activity (every 5 ms; it costs the server CPU too)")
    args = parser.parse_args()
    rows = {}
    if args.backend in ("both", "sqlite"):
        with tempfile.TemporaryDirectory() as folder:
            os.chmod(folder, 0o755)
            rows["SQLite (one local file, WAL, synchronous=FULL)"] = run(str(Path(folder) / "store"),
                                                                        args.processes, args.edits)
    if args.backend in ("both", "postgresql"):
        name = "PostgreSQL 127.0.0.1 (fsync on, reader logins, RLS)"
        if args.commit_delay:
            name = name[:-1] + f", commit_delay {args.commit_delay} us)"
        if args.no_wait_sampling:
            name = name[:-1] + ", no wait sampling)"
        rows[name] = _on_server(args.processes, args.edits, args.commit_delay, not args.no_wait_sampling)
    print(f"{args.processes} processes x {args.edits} edits, on {os.cpu_count()} cores")
    print("| store | statements per edit | edits | lost | duplicated | conflicts reported | audit | p50 ms | p95 ms | "
          "edits/s | bare UPDATE+COMMIT ms | p50 x bare |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['per_edit']} | {r['edits']} | {r['lost']} | {r['duplicated']} | {r['conflicts']} | "
              f"{'intact' if r['audit_ok'] else 'BROKEN'} ({r['entries']} entries) | {r['p50_ms']:.1f} | "
              f"{r['p95_ms']:.1f} | {r['edits_per_s']:.0f} | {r['floor_ms']:.2f} | "
              f"{r['p50_ms'] / r['floor_ms']:.1f} |")
    for name, r in rows.items():
        print(f"\n{name}: client CPU {r['client_cpu_ms']:.2f} ms per acknowledged edit (the readers' processes, "
              f"conflicts and reloads included)")
        if r["server_cpu_ms"] is not None:
            print(f"{name}: server CPU {r['server_cpu_ms']:.2f} ms per acknowledged edit (all the server's processes "
                  f"during the run{', the wait sampler included' if r['waits'] else ''})")
        if r["waits"]:
            print(f"\n{name}: where the program's server sessions were, share of samples during the run")
            for key, share in r["waits"].items():
                print(f"- {key}: {100 * share:.1f} %")
        if r["functions"]:
            print(f"\n{name}: server functions (calls, calls per acknowledged edit, mean ms in all, mean ms in its "
                  f"own code)")
            for function, (calls, total, own) in r["functions"].items():
                print(f"- {function}: {calls} calls, {calls / r['edits']:.2f} per edit, {total:.2f} ms, {own:.2f} ms")


def _on_server(processes: int, edits: int, commit_delay: int = 0, sample_waits: bool = True) -> dict:
    import psycopg

    from cno_annotate.store import Store, pg_local, postgres

    server = pg_local.start(durable=True)
    os.environ["PGPASSFILE"] = str(server.passfile)
    try:
        server.create_database("load")
        location = server.plain_url("load")
        with psycopg.connect(location, autocommit=True) as connection:  # the owner made the cluster: superuser
            connection.execute("ALTER DATABASE load SET track_functions = 'pl'")
            if commit_delay:  # group commit: still synchronous, a commit is acknowledged once on disk
                connection.execute(f"ALTER DATABASE load SET commit_delay = {int(commit_delay)}")
                connection.execute("ALTER DATABASE load SET commit_siblings = 4")
        store = Store.open(location)
        for k in range(processes // 2):
            reader = f"reader-{k:02d}"
            password = f"pw-{reader}"
            if postgres.grant(store.pg, reader, "reader", password):
                server.remember(reader, password)
        store.close()
        return run(location, processes, edits, lambda: _server_cpu_seconds(server.folder / "data"), sample_waits)
    finally:
        server.stop()


def _server_cpu_seconds(data: Path) -> float:
    """CPU seconds (user + system) the server has used: the postmaster, its live children and those it reaped."""
    postmaster = int((data / "postmaster.pid").read_text().split()[0])
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile (its time is now its parent's)
            continue
        pid, parent = int(stat.parent.name), int(fields[1])
        if pid == postmaster:
            total += sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
        elif parent == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


if __name__ == "__main__":
    main()
