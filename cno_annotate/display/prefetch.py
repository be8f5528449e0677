"""Load the volume a viewer shows first while the viewer itself is still starting.

Starting the viewer is mostly imports (Qt, the window's modules) and building
the window, all in one thread, a few hundred ms during which the volume of the
left view could already be read: its cached voxels mapped and their facts read,
or, on a cold start, the first station of the whole-body composition read from
its files. :class:`Prefetch` does that in a thread of its own, started before
Qt is imported; the viewer's loader takes it over (:meth:`Prefetch.attach`), or,
when it has finished by the time the window asks for it, shows it at once.

On Linux the volumes are loaded by a child process instead: forked before any
thread or Qt exists, so it imports nothing again. A volume it composes (a cold
start) is written into memory shared with the viewer; a cached one the viewer maps
itself once the child has checked it. In a thread of the viewer's process the work
held the interpreter's lock, and the window's thread, importing Qt and building
the window at the same time, waited for it: the composition's 0.3-0.6 s of CPU made
a cold start 0.1-0.2 s slower than a warm one, and a warm start's file checks and
facts 40-70 ms (bench/README.md, start-up).
"""

from __future__ import annotations

import mmap
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

import numpy as np

from cno_annotate import timing
from cno_annotate.display.facts import VolumeFacts, keep_facts, kept_facts, volume_facts
from cno_annotate.errors import CnoError
from cno_annotate.io.volume import Volume

#: What a prefetch reports, in order: ("progress", done, total), ("preview", volume, facts),
#: then ("loaded", volume, facts) or ("failed", message).
Sink = Callable[..., None]


class Prefetch:
    """A volume of a store being loaded, with its display facts, in a thread of its own.

    Parameters
    ----------
    store_root : Path
        The store's folder.
    volume_id : str
        The volume to load.

    Notes
    -----
    What happens before a sink is attached is recorded and replayed to it; after,
    it is passed on as it happens (from the prefetch's thread).
    """

    def __init__(self, store_root: Path | str, volume_id: str):
        self.store_root, self.volume_id = store_root, volume_id
        self._lock = threading.Lock()
        self._events: list[tuple] = []
        self._sink: Sink | None = None
        self._ended = threading.Event()  # "loaded" or "failed" reported
        self._by_child = False
        self._abandoned = False
        self._thread = threading.Thread(target=self._run, name=f"prefetch {volume_id}", daemon=True)

    @classmethod
    def start(cls, store_root: Path | str, volume_id: str, shape: tuple[int, int, int] | None = None) -> Prefetch:
        """A prefetch of ``volume_id``, started in its thread.

        With ``shape`` (the volume's, as the store knows it), where a process can be forked safely
        (Linux, no other thread yet), the volume is loaded by a child process: composed into memory
        shared with this one, or, cached, mapped here once the child has checked it; the thread only
        relays what the child reports.
        """
        return cls.start_several(store_root, [(volume_id, shape)])[0]

    @classmethod
    def start_several(cls, store_root: Path | str,
                      volumes: Sequence[tuple[str, tuple[int, int, int] | None]]) -> list[Prefetch]:
        """Prefetches of ``(volume_id, shape)`` pairs, as :meth:`start` makes them, in order.

        Those with a shape are loaded by one child process, one after the other (the first one shown
        first); the others in a thread each.
        """
        prefetches = [cls(store_root, volume_id) for volume_id, _ in volumes]
        by_child = [(prefetch, (int(shape[0]), int(shape[1]), int(shape[2])))
                    for prefetch, (_, shape) in zip(prefetches, volumes)
                    if shape is not None and int(np.prod(shape)) > 0]
        if by_child and can_fork():
            _start_child(store_root, by_child)  # forked before any thread of ours starts
        for prefetch in prefetches:
            if not prefetch._by_child:
                prefetch._thread.start()
        return prefetches

    def run(self) -> None:
        """Load in the calling thread instead (a prefetch that was not started)."""
        self._run()

    def attach(self, sink: Sink) -> None:
        """Send ``sink`` what was reported so far, then everything reported from now on."""
        with self._lock:
            for event in self._events:
                sink(*event)
            self._events = []
            self._sink = sink

    def loaded(self) -> tuple[Volume, VolumeFacts] | None:
        """The loaded volume and its facts if loading has ended well and nothing took them over yet."""
        with self._lock:
            if self._sink is None and self._events and self._events[-1][0] == "loaded":
                return self._events[-1][1], self._events[-1][2]
        return None

    def join(self, timeout: float | None = None) -> None:
        """Wait for loading to end, or for :meth:`abandon` (at once for a prefetch that was not started)."""
        if self._by_child or self._abandoned:
            self._ended.wait(timeout)  # a child may go on with the next volume
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._thread.is_alive() and not self._ended.is_set():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            self._ended.wait(0.1 if left is None else min(left, 0.1))  # abandon() wakes it too

    @property
    def in_child(self) -> bool:
        """Whether a child process loads it (it ends, cleaning up, when this process ends)."""
        return self._by_child

    def abandon(self) -> None:
        """Stop waiting for this load (the viewer is closing): :meth:`join` returns, nothing more is reported.

        Meant for a load :attr:`in_child`: the child ends with the viewer's process and removes what it was
        writing. A thread would be stopped by the interpreter's exit in the middle of writing the cache.
        """
        with self._lock:
            self._abandoned = True
            self._events = []
        self._ended.set()

    def _report(self, *event) -> None:
        if event[0] != "progress":
            timing.mark(f"prefetch-{event[0]}")
        with self._lock:
            if self._abandoned:
                return
            sink = self._sink
            if sink is None:
                self._events.append(event)
        if sink is not None:
            sink(*event)
        if event[0] in ("loaded", "failed"):
            self._ended.set()

    def _run(self) -> None:
        _load(self.store_root, self.volume_id, self._report)


def _start_child(store_root: Path | str, wanted: list[tuple[Prefetch, tuple[int, int, int]]]) -> None:
    """Fork the process that loads each volume (into memory shared with this one, or, cached, for this one to
    map), and the thread that relays what it reports to the prefetch of each."""
    shared = [np.frombuffer(mmap.mmap(-1, int(np.prod(shape)) * 4, flags=mmap.MAP_SHARED),
                            dtype=np.float32).reshape(shape) for _, shape in wanted]
    read_end, write_end = os.pipe()
    sys.stdout.flush()  # what this process printed is not printed again by the child
    sys.stderr.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read_end)
        _load_in_child(store_root, [prefetch.volume_id for prefetch, _ in wanted], shared, write_end, parent)
    os.close(write_end)
    prefetches = [prefetch for prefetch, _ in wanted]
    relay = threading.Thread(target=_relay, args=(pid, read_end, prefetches, shared), daemon=True,
                             name=f"prefetch {' '.join(p.volume_id for p in prefetches)} (process {pid})")
    for prefetch in prefetches:
        prefetch._by_child, prefetch._thread = True, relay
    relay.start()


def _relay(pid: int, read_end: int, prefetches: list[Prefetch], shared: list[np.ndarray]) -> None:
    """Report what the child reports, its volumes on the shared arrays; a child that died is a failed load."""
    with os.fdopen(read_end, "rb") as stream:
        while True:
            try:
                index, *event = pickle.load(stream)
            except (EOFError, OSError, pickle.UnpicklingError, ValueError):
                break
            prefetch = prefetches[index]
            if event[0] in ("preview", "loaded"):
                kind, affine, header, load, facts, cached = event
                try:
                    voxels = shared[index] if cached is None else np.load(cached, mmap_mode="r")
                except (OSError, ValueError) as exc:  # evicted or replaced since the child checked it
                    prefetch._report("failed", f"the cached volume could not be opened ({exc}); open it again")
                    continue
                shared[index] = voxels  # (a cached volume's shared memory, never written, is let go)
                volume = Volume(voxels, affine, header=header)
                volume.load = load
                prefetch._report(kind, volume, facts)
            else:
                prefetch._report(*event)
    _pid, status = os.waitpid(pid, 0)
    for prefetch in prefetches:
        if not prefetch._ended.is_set():
            prefetch._report("failed", f"the process reading the images ended unexpectedly ({_exit_reason(status)})")


def can_fork() -> bool:
    """Whether a child process can be forked safely here: Linux, and no thread but this one.

    Not only Python's threads: a library's (Qt's, a BLAS pool's) could hold a lock that the child
    would wait for forever. The viewer forks before Qt is imported, with one BLAS thread
    (``OPENBLAS_NUM_THREADS=1``, which numpy then runs in the calling thread).
    """
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return False
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return threading.active_count() == 1


def _load(store_root: Path | str, volume_id: str, report: Sink, into: np.ndarray | None = None) -> None:
    """Load a volume and its facts, reporting as :data:`Sink` says (``into``: the array to compose into)."""
    from cno_annotate.store import Store
    from cno_annotate.volumes import load_volume

    try:
        store = Store.open(store_root)
        try:
            volume = load_volume(store, volume_id, lambda done, total: report("progress", done, total),
                                 preview=lambda v: report("preview", v, volume_facts(v)), into=into)
            facts = kept_facts(store, volume)
            if facts is not None:
                report("loaded", volume, facts)
            else:
                facts = volume_facts(volume)
                report("loaded", volume, facts)
                keep_facts(store, volume, facts)
        finally:
            store.close()
    except CnoError as exc:
        report("failed", str(exc))
    except Exception as exc:  # the viewer shows why in the view
        report("failed", f"{type(exc).__name__}: {exc}")
    except BaseException as exc:  # a Rust decoder's panic is not an Exception
        from cno_annotate.io.pixels import is_decoder_panic

        if not is_decoder_panic(exc):
            raise
        report("failed", f"the image decoder crashed: {exc}")


def _load_in_child(store_root: Path | str, volume_ids: list[str], shared: list[np.ndarray], write_end: int,
                   parent: int) -> NoReturn:
    """The child's whole life: load each volume into its shared array, in order, send each report down the
    pipe (with the volume's index), exit without cleanup.

    It ends with its parent (the viewer closed before composition ended): the cache file being
    written is then removed, not left half-written.
    """
    code = 1
    try:
        signal.signal(signal.SIGTERM, _exit_on_signal)
        signal.signal(signal.SIGINT, _exit_on_signal)
        _end_with_parent(parent)
        stream = os.fdopen(write_end, "wb")
        for index, (volume_id, into) in enumerate(zip(volume_ids, shared)):
            _load(store_root, volume_id, _sender(stream, index, into), into=into)
        code = 0
    except BaseException:  # noqa: BLE001 - the parent says a load ended without a report
        pass
    os._exit(code)


def _sender(stream, index: int, shared: np.ndarray) -> Sink:
    """A sink that sends a volume's reports down the pipe: volumes as their affine, header and load report, their
    voxels in ``shared`` or, cached, the file the viewer maps; progress in steps of 2 % (fewer wake-ups)."""
    sent = [-1.0]

    def send(kind: str, *payload) -> None:
        if kind == "progress":
            done, total = payload
            if done != total and done / max(total, 1) - sent[0] < 0.02:
                return
            sent[0] = done / max(total, 1)
        elif kind in ("preview", "loaded"):
            volume, facts = payload
            array = volume.array
            cached = array.filename if isinstance(array, np.memmap) and array.filename else None
            if cached is None and not np.shares_memory(array, shared):
                np.copyto(shared, array)  # a stack or NIfTI volume read here
            payload = (volume.affine, volume.header, volume.load, facts, cached)
        pickle.dump((index, kind, *payload), stream, protocol=pickle.HIGHEST_PROTOCOL)
        stream.flush()

    return send


def _exit_on_signal(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds: a cache file being written is removed (fileio.atomic_write)


def _end_with_parent(parent: int) -> None:
    """Ask Linux to send this process SIGTERM when its parent ends; end now if it already has."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        raise SystemExit(1)


def _exit_reason(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.WEXITSTATUS(status)}"
