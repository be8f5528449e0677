"""The cache of composed whole-body volumes: ``.npy`` files, least recently used out first.

A composed volume costs a few hundred files to build and about 150 MB to
keep, so it is cached in the store's ``cache/`` folder as
``<volume id>-<fingerprint>.npy`` and opened later as a memory map. The cache
is limited in size (``CNO_ANNOTATE_CACHE_LIMIT``, e.g. ``2G`` or ``500M``;
default :data:`DEFAULT_LIMIT`); when a new entry takes it over the limit,
the entries used longest ago are deleted. Small documents derived from an
entry (``<name>.<what>.json``, e.g. the viewer's presets and missing slices)
may be kept beside it: they go when it goes.

Eviction never breaks a volume that is open: a file is only ever unlinked
(or replaced by an atomic rename), never truncated or rewritten in place,
and an open volume is a memory map that does not go back to the path, so on
POSIX its pages stay readable until it is closed. Where the system refuses
to delete a mapped file (Windows), the file is left for a later trim.
"""

from __future__ import annotations

import os
import re
from glob import escape as glob_escape
from pathlib import Path

import numpy as np

from cno_annotate.errors import CnoError
from cno_annotate.fileio import atomic_write

LIMIT_ENV = "CNO_ANNOTATE_CACHE_LIMIT"
DEFAULT_LIMIT = 4 * 1024**3
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(text: str) -> int:
    """Bytes from ``"4G"``, ``"500M"``, ``"1.5G"`` or a plain number of bytes.

    Raises
    ------
    CnoError
        If the text is not such a size.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if match is None:
        raise CnoError(f"{LIMIT_ENV}={text!r} is not a size (write e.g. 4G, 500M or a number of bytes)")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def limit_from_environment() -> int:
    """The cache limit in bytes: ``$CNO_ANNOTATE_CACHE_LIMIT`` if set, else :data:`DEFAULT_LIMIT`."""
    text = os.environ.get(LIMIT_ENV, "").strip()
    return parse_size(text) if text else DEFAULT_LIMIT


class VolumeCache:
    """The cached composed volumes of one store.

    Parameters
    ----------
    folder : Path
        The cache folder (created by the store).
    limit : int
        Size limit in bytes.
    """

    def __init__(self, folder: Path, limit: int = DEFAULT_LIMIT):
        self.folder = Path(folder)
        self.limit = limit

    @classmethod
    def of(cls, store) -> VolumeCache:
        """The cache of an open store, limited as the environment says."""
        return cls(store.cache_dir, limit_from_environment())

    def path_for(self, volume_id: str, fingerprint: str) -> Path:
        """The file that caches one version of a volume."""
        return self.folder / f"{volume_id}-{fingerprint[:16]}.npy"

    def get(self, volume_id: str, fingerprint: str, shape: tuple[int, ...]) -> np.ndarray | None:
        """The cached voxels as a read-only memory map, or None; a hit counts as a use."""
        path = self.path_for(volume_id, fingerprint)
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError):
            return None  # absent, or damaged: the caller rebuilds and replaces it
        if tuple(array.shape) != tuple(shape):
            return None
        try:
            os.utime(path)  # the modification time records the last use
        except OSError:
            pass
        return array

    def put(self, volume_id: str, fingerprint: str, array: np.ndarray) -> None:
        """Cache a volume (older versions of it are dropped), then keep the cache within its limit."""
        if array.nbytes > self.limit:
            return
        path = self.path_for(volume_id, fingerprint)
        for derived in _beside(path):
            _remove(derived)  # derived from the voxels this file held before
        try:
            atomic_write(path, lambda fp: np.save(fp, array), ".npy")
        except OSError:
            return  # the cache is optional: a full disk only costs speed
        for stale in self.folder.glob(f"{volume_id}-*.npy"):
            if stale != path:
                _remove(stale)
        self.trim(keep=path)

    @staticmethod
    def write_beside(path: Path, name: str, text: str) -> bool:
        """Keep a small document derived from the entry ``path`` beside it (``name``: ``<stem>.<what>.json``).

        It is deleted with the entry. Returns whether it was written (the cache is optional: a
        full or read-only disk only costs the time to derive it again).
        """
        if not (name.startswith(path.stem + ".") and name.endswith(".json")):
            raise ValueError(f"{name} is not named after {path.name}")
        try:
            atomic_write(path.with_name(name), lambda fp: fp.write(text.encode("utf-8")), ".json")
        except OSError:
            return False
        return True

    def entries(self) -> list[tuple[Path, int, int]]:
        """(path, bytes, last use in ns) of every cached volume, least recently used first."""
        found = []
        for path in self.folder.glob("*.npy"):
            if path.name.startswith("."):
                continue  # a file being written
            try:
                info = path.stat()
            except OSError:
                continue
            found.append((path, info.st_size, info.st_mtime_ns))
        return sorted(found, key=lambda e: (e[2], e[0].name))

    def trim(self, keep: Path | None = None) -> int:
        """Delete the least recently used entries until the cache is within its limit; how many went."""
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        removed = 0
        for path, size, _ in entries:
            if total <= self.limit:
                break
            if path == keep:
                continue
            if _remove(path):
                total -= size
                removed += 1
        return removed

    def clear(self) -> tuple[int, int]:
        """Delete every cached volume; (how many, bytes). Open volumes stay readable."""
        removed, size = 0, 0
        for path, nbytes, _ in self.entries():
            if _remove(path):
                removed += 1
                size += nbytes
        return removed, size

    def info(self) -> dict:
        """Folder, number of files, bytes and limit, JSON-ready."""
        entries = self.entries()
        return {
            "folder": str(self.folder),
            "files": len(entries),
            "bytes": sum(size for _, size, _ in entries),
            "limit_bytes": self.limit,
        }


def _beside(path: Path) -> list[Path]:
    """The documents kept beside an entry (see :meth:`VolumeCache.write_beside`)."""
    return [p for p in path.parent.glob(f"{glob_escape(path.stem)}.*.json") if not p.name.startswith(".")]


def _remove(path: Path) -> bool:
    """Delete an entry and what is kept beside it; False if the entry could not be deleted."""
    for derived in _beside(path) if path.suffix == ".npy" else ():
        try:
            derived.unlink()
        except OSError:
            pass
    try:
        path.unlink()
    except FileNotFoundError:
        return False  # another process removed it first
    except OSError:
        return False  # e.g. mapped by a viewer on a system that forbids deleting it
    return True
