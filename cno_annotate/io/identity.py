"""Whether a file on disk is still the one the store indexed.

The store records, for every imported file, its size, modification time
(ns) and the SOPInstanceUID it held. A file whose size and time are
unchanged is taken as the same file without reading it; otherwise its
header's SOPInstanceUID is read again. A file that now holds another
instance, or whose header cannot be read, is not the indexed one: its pixels
are never shown (a folder swapped for another child's with the same file
names would otherwise show that child's images).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cno_annotate.store.instances import ImageRow
from cno_annotate.store.locations import RecordedFile, sop_uid_of

#: Reason given for a file that is not on disk.
NOT_FOUND = "file not found"
#: Start of the reason given for a file that holds another image now.
REPLACED = "the file holds another image than the one imported"


@dataclass(frozen=True)
class FileCheck:
    """The outcome of checking one recorded file: ``reason`` is empty when it is the indexed file."""

    path: str
    reason: str = ""

    @property
    def ok(self) -> bool:
        """Whether the file is the one indexed."""
        return not self.reason

    @property
    def missing(self) -> bool:
        """Whether the file is not on disk at all."""
        return self.reason == NOT_FOUND


def check_file(path: str, sop_uid: str, recorded: RecordedFile | None) -> FileCheck:
    """Whether ``path`` still holds instance ``sop_uid`` (a stat, and a header read only if it changed)."""
    try:
        info = os.stat(path) if os.path.isabs(path) else None
    except OSError:
        info = None
    if info is None:
        return FileCheck(path, NOT_FOUND)
    if (recorded is not None and recorded.sop_uid == sop_uid and recorded.size == info.st_size
            and recorded.mtime_ns == info.st_mtime_ns):
        return FileCheck(path)
    found = sop_uid_of(path)
    if found is None:
        return FileCheck(path, f"{REPLACED} (its header cannot be read any more)")
    if found != sop_uid:
        return FileCheck(path, f"{REPLACED} (SOPInstanceUID {found}, imported {sop_uid})")
    return FileCheck(path)


def check_files(images: Iterable[ImageRow], recorded: Mapping[str, RecordedFile]) -> dict[str, FileCheck]:
    """Check each distinct file of some image rows (``path``, ``sop_uid``); path -> its check.

    ``recorded`` maps a path (as the file system spells it) to what the store recorded at import.
    """
    checks: dict[str, FileCheck] = {}
    for image in images:
        path = image.path
        if path not in checks:
            checks[path] = check_file(path, image.sop_uid, recorded.get(path))
    return checks
