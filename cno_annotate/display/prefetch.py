"""Load the volume a viewer shows first while the viewer itself is still starting.

Starting the viewer is mostly imports (Qt, the window's modules) and building
the window, all in one thread, a few hundred ms during which the volume of the
left view could already be read: its cached voxels mapped and their facts read,
or, on a cold start, the first station of the whole-body composition read from
its files. :class:`Prefetch` does that in a thread of its own, started before
Qt is imported; the viewer's loader takes it over (:meth:`Prefetch.attach`), or,
when it has finished by the time the window asks for it, shows it at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

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
    def start(cls, store_root: Path | str, volume_id: str) -> Prefetch:
        """A prefetch of ``volume_id``, started in its thread."""
        prefetch = cls(store_root, volume_id)
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
        with self._lock:
            if self._sink is None:
                self._events.append(event)
                return
            sink = self._sink
        sink(*event)

    def _run(self) -> None:
        from cno_annotate.store import Store
        from cno_annotate.volumes import load_volume

        try:
            store = Store.open(self.store_root)
            try:
                volume = load_volume(store, self.volume_id, lambda done, total: self._report("progress", done, total),
                                     preview=lambda v: self._report("preview", v, volume_facts(v)))
                facts = kept_facts(store, volume)
                if facts is not None:
                    self._report("loaded", volume, facts)
                else:
                    facts = volume_facts(volume)
                    self._report("loaded", volume, facts)
                    keep_facts(store, volume, facts)
            finally:
                store.close()
        except CnoError as exc:
            self._report("failed", str(exc))
        except Exception as exc:  # the viewer shows why in the view
            self._report("failed", f"{type(exc).__name__}: {exc}")
        except BaseException as exc:  # a Rust decoder's panic is not an Exception
            from cno_annotate.io.pixels import is_decoder_panic

            if not is_decoder_panic(exc):
                raise
            self._report("failed", f"the image decoder crashed: {exc}")
