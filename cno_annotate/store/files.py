"""Checks of the store's files made before SQLite touches them.

Everything here reads bytes only: a store that is refused is left exactly as
it was (no write-ahead log created, no journal-mode change, no migration).

The SQLite file format (https://www.sqlite.org/fileformat2.html) gives the
magic string, page size, page count and ``user_version`` in the first 100
bytes; the WAL index (``-shm``) header gives how many frames of the
write-ahead log hold committed transactions and how many of them were
already copied into the main file.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from cno_annotate.errors import CnoError

MAGIC = b"SQLite format 3\x00"
_WAL_INDEX_VERSION = 3007000
_WAL_HEADER_BYTES = 32
_WAL_FRAME_HEADER_BYTES = 24


def sidecar(path: Path, suffix: str) -> Path:
    """``store.sqlite-wal`` / ``store.sqlite-shm`` next to ``path``."""
    return path.with_name(path.name + suffix)


def check_file(path: Path, newest_version: int) -> None:
    """Refuse a store file that is empty, not SQLite, newer than this program, truncated or lost its WAL.

    Raises
    ------
    CnoError
        With a one-line reason; the file is not touched.
    """
    size = path.stat().st_size
    if size == 0:
        raise CnoError(f"{path} is an empty file (0 bytes), not a store: it was probably truncated or not "
                       f"written completely; restore it from a backup (nothing was changed)")
    with open(path, "rb") as fp:
        header = fp.read(100)
    if len(header) < 100 or header[:16] != MAGIC:
        raise CnoError(f"cannot open the store at {path.parent}: {path.name} is not an SQLite database (not a "
                       f"cno-annotate store; nothing was changed)")
    version = int.from_bytes(header[60:64], "big")
    if version > newest_version:
        raise CnoError(newer_message(path.parent, version, newest_version))
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    counter_valid = header[24:28] == header[92:96]
    if counter_valid and pages and size < pages * page_size:
        raise CnoError(f"the store at {path.parent} is damaged: the file is {size} bytes but holds {pages} pages "
                       f"of {page_size} bytes (truncated); restore it from a backup (nothing was changed)")
    lost = lost_wal_frames(path)
    if lost:
        raise CnoError(
            f"the store at {path.parent} lost committed changes: its write-ahead log {sidecar(path, '-wal').name} "
            f"is missing or cut short while the log index says {lost} pages of committed transactions were "
            f"in it; restore the store from a backup. To accept the loss and go on with what the main file "
            f"holds, delete {sidecar(path, '-shm').name} (nothing was changed)")


def newer_message(root: Path, version: int, newest: int) -> str:
    """The refusal of a store written by a newer program."""
    return (f"the store at {root} is newer than this program (schema version {version}; this program knows up "
            f"to {newest}): update cno-annotate (the store itself is fine; nothing was changed)")


def lost_wal_frames(path: Path) -> int:
    """How many committed WAL frames the log index records that the ``-wal`` file no longer holds.

    0 when there is no index, it is not initialised or is being written,
    every frame was copied into the main file, or the log is whole.
    """
    shm = sidecar(path, "-shm")
    try:
        with open(shm, "rb") as fp:
            data = fp.read(100)
    except OSError:
        return 0
    if len(data) < 100 or data[:48] != data[48:96]:
        return 0
    version, _unused, _change, is_init, _big_endian, size_code, max_frame = struct.unpack("=IIIBBHI", data[:20])
    if version != _WAL_INDEX_VERSION or not is_init:
        return 0
    (backfilled,) = struct.unpack("=I", data[96:100])
    if max_frame <= backfilled:
        return 0
    page_size = (size_code & 0xFE00) + ((size_code & 0x0001) << 16)
    needed = _WAL_HEADER_BYTES + max_frame * (page_size + _WAL_FRAME_HEADER_BYTES)
    try:
        wal_size = sidecar(path, "-wal").stat().st_size
    except FileNotFoundError:
        wal_size = 0
    return 0 if wal_size >= needed else max_frame - backfilled


def writable(path: Path) -> bool:
    """Whether this process may write ``path`` (False on read-only media)."""
    return os.access(path, os.W_OK)


def file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of a file, None if it does not exist."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino
