"""Atomic file writes: a crash never leaves a half-written file.

Write to a temporary file in the target folder, flush it to disk, then
rename it over the target (a rename within one file system is atomic).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: Path | str, write: Callable[[BinaryIO], object], suffix: str = "") -> Path:
    """Write a file atomically.

    Parameters
    ----------
    path : Path
        The file to create or replace.
    write : callable
        Called with a binary file object open for writing.
    suffix : str
        Suffix of the temporary name (some writers look at it).

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or ".tmp")
    try:
        with os.fdopen(handle, "wb") as fp:
            write(fp)
            fp.flush()
            os.fsync(fp.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path | str, text: str) -> Path:
    """Write UTF-8 text atomically."""
    return atomic_write(path, lambda fp: fp.write(text.encode("utf-8")))
