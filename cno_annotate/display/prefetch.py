"""Load the volume a viewer shows first while the viewer itself is still starting.

Starting the viewer is mostly imports (Qt, the window's modules) and building
the window, all in one thread, a few hundred ms during which the volume of the
left view could already be read: its cached voxels mapped and their facts read,
or, on a cold start, the first station of the whole-body composition read from
its files. :class:`Prefetch` does that in a thread of its own, started before
Qt is imported; the viewer's loader takes it over (:meth:`Prefetch.attach`), or,
when it has finished by the time the window asks for it, shows it at once.

A volume that has to be composed from its files (a cold start) is composed in a
child process instead, on Linux: forked before any thread or Qt exists, so it
imports nothing again, and writing into memory it shares with the viewer, which
maps the result without a copy. In a thread of the viewer's process the
composition held the interpreter's lock for most of its 0.3-0.6 s of CPU, and the
window's thread, importing Qt and building the window at the same time, waited
for it: on two cores a cold start was 0.1-0.2 s slower than a warm one for that
alone (bench/README.md, start-up).
"""

from __future__ import annotations

import mmap
import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable
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
        self._thread = threading.Thread(target=self._run, name=f"prefetch {volume_id}", daemon=True)

    @classmethod
    def start(cls, store_root: Path | str, volume_id: str,
              compose_shape: tuple[int, int, int] | None = None) -> Prefetch:
        """A prefetch of ``volume_id``, started in its thread.

        With ``compose_shape`` (the shape of a composed volume that is not cached: it will be composed
        from its files), where a process can be forked safely (Linux, no other thread yet), the volume
        is composed in a child process that fills memory shared with this one; the thread only relays
        what the child reports.
        """
        prefetch = cls(store_root, volume_id)
        if compose_shape is not None and can_fork() and int(np.prod(compose_shape)) > 0:
            k, j, i = (int(n) for n in compose_shape)
            prefetch._start_child((k, j, i))
        else:
            prefetch._thread.start()
        return prefetch

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
        """Wait for the thread to end (at once for a prefetch that was not started)."""
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _report(self, *event) -> None:
        if event[0] != "progress":
            timing.mark(f"prefetch-{event[0]}")
        with self._lock:
            if self._sink is None:
                self._events.append(event)
                return
            sink = self._sink
        sink(*event)

    def _run(self) -> None:
        _load(self.store_root, self.volume_id, self._report)

    def _start_child(self, shape: tuple[int, int, int]) -> None:
        """Fork the process that composes the volume into shared memory; relay its reports from a thread."""
        shared = np.frombuffer(mmap.mmap(-1, int(np.prod(shape)) * 4, flags=mmap.MAP_SHARED),
                               dtype=np.float32).reshape(shape)
        read_end, write_end = os.pipe()
        sys.stdout.flush()  # what this process printed is not printed again by the child
        sys.stderr.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child
            os.close(read_end)
            _compose_in_child(self.store_root, self.volume_id, shared, write_end, parent)
        os.close(write_end)
        self._thread = threading.Thread(target=self._relay, args=(pid, read_end, shared), daemon=True,
                                        name=f"prefetch {self.volume_id} (process {pid})")
        self._thread.start()

    def _relay(self, pid: int, read_end: int, shared: np.ndarray) -> None:
        """Report what the child reports, its volumes on the shared array; a child that died is a failed load."""
        ended = False
        with os.fdopen(read_end, "rb") as stream:
            while not ended:
                try:
                    event = pickle.load(stream)
                except (EOFError, OSError, pickle.UnpicklingError):
                    break
                ended = event[0] in ("loaded", "failed")
                if event[0] in ("preview", "loaded"):
                    kind, affine, header, load, facts = event
                    volume = Volume(shared, affine, header=header)
                    volume.load = load
                    self._report(kind, volume, facts)
                else:
                    self._report(*event)
        _pid, status = os.waitpid(pid, 0)
        if not ended:
            self._report("failed", f"the process reading the images ended unexpectedly ({_exit_reason(status)})")


def can_fork() -> bool:
    """Whether a child process can be forked safely here: Linux, and no thread but this one."""
    return sys.platform.startswith("linux") and hasattr(os, "fork") and threading.active_count() == 1


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


def _compose_in_child(store_root: Path | str, volume_id: str, shared: np.ndarray, write_end: int,
                      parent: int) -> NoReturn:
    """The child's whole life: load into ``shared``, send each report down the pipe, exit without cleanup.

    It ends with its parent (the viewer closed before composition ended): the cache file being
    written is then removed, not left half-written.
    """
    code = 1
    try:
        signal.signal(signal.SIGTERM, _exit_on_signal)
        signal.signal(signal.SIGINT, _exit_on_signal)
        _end_with_parent(parent)
        stream = os.fdopen(write_end, "wb")
        sent = [-1.0]

        def send(kind: str, *payload) -> None:
            if kind == "progress":
                done, total = payload
                if done != total and done / max(total, 1) - sent[0] < 0.02:
                    return  # the viewer shows whole percents: fewer wake-ups of its process
                sent[0] = done / max(total, 1)
            elif kind in ("preview", "loaded"):
                volume, facts = payload
                if not np.shares_memory(volume.array, shared):
                    np.copyto(shared, volume.array)  # e.g. another viewer cached it meanwhile
                payload = (volume.affine, volume.header, volume.load, facts)
            pickle.dump((kind, *payload), stream, protocol=pickle.HIGHEST_PROTOCOL)
            stream.flush()

        _load(store_root, volume_id, send, into=shared)
        code = 0
    except BaseException:  # noqa: BLE001 - the parent says a load ended without a report
        pass
    os._exit(code)


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
