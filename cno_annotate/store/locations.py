"""Where the store's images live on disk: missing files, relocation, old relative paths.

Image paths are kept absolute and normalised, in the text form of
:func:`cno_annotate.paths.to_text`. A folder that was moved is re-linked
either by importing it again (the importer updates instances whose recorded
file is gone) or by :func:`relocate`, which rewrites a path prefix.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from cno_annotate import paths
from cno_annotate.errors import CnoError

#: The path of an instance whose recorded file now holds another instance (its file is unknown).
UNLINKED = ""
_CHUNK = 500


@dataclass(frozen=True)
class RecordedFile:
    """What an import recorded of one DICOM file: where, its size and time, the instance it held."""

    path: str
    size: int
    mtime_ns: int
    sop_uid: str | None


def recorded_files(db: sqlite3.Connection, file_paths: Iterable[str]) -> dict[str, RecordedFile]:
    """The import records of some files (paths as the file system spells them); path -> record."""
    texts = sorted({paths.to_text(p) for p in file_paths})
    found: dict[str, RecordedFile] = {}
    for start in range(0, len(texts), _CHUNK):
        chunk = texts[start:start + _CHUNK]
        rows = db.execute(f"SELECT path, size, mtime_ns, ref FROM files WHERE kind = 'dicom' AND path IN "
                          f"({','.join('?' * len(chunk))})", chunk)
        for text, size, mtime_ns, ref in rows:
            path = paths.from_text(text)
            found[path] = RecordedFile(path, int(size), int(mtime_ns), ref)
    return found


def unlink_replaced(db: sqlite3.Connection, holders: list[tuple[str, str]]) -> None:
    """For each (path text, SOP UID) now found in a file: other instances recorded there lose that path.

    Their file is no longer known (they count as missing until a re-import finds them elsewhere).
    """
    db.executemany("UPDATE images SET path = ? WHERE path = ? AND sop_uid != ?",
                   [(UNLINKED, text, sop_uid) for text, sop_uid in holders])


def relink(db: sqlite3.Connection, moves: list[tuple[str, str, str]]) -> None:
    """For each (old path text, new path text, SOP UID): the instance's file is now the new one."""
    db.executemany("UPDATE images SET path = ? WHERE sop_uid = ?", [(new, sop) for _old, new, sop in moves])
    db.executemany("DELETE FROM files WHERE path = ? AND ref = ?", [(old, sop) for old, _new, sop in moves])


def damaged_files(db: sqlite3.Connection) -> set[str]:
    """Files of recorded instances that a later import found unusable (cut short, damaged); their paths."""
    rows = db.execute("SELECT DISTINCT f.path FROM files f JOIN images i ON i.path = f.path WHERE f.kind = 'skipped'")
    return {paths.from_text(r[0]) for r in rows}


def stored_instances(db: sqlite3.Connection, sop_uids: list[str]) -> set[str]:
    """Which of these instances the store holds (another import may have written them meanwhile)."""
    found: set[str] = set()
    for start in range(0, len(sop_uids), _CHUNK):
        chunk = sop_uids[start:start + _CHUNK]
        found.update(r[0] for r in db.execute(
            f"SELECT DISTINCT sop_uid FROM images WHERE sop_uid IN ({','.join('?' * len(chunk))})", chunk))
    return found


def missing_files(db: sqlite3.Connection) -> Counter[str]:
    """How many distinct files each study refers to that are not on disk (study UID -> count).

    A relative path (recorded by an old version, its folder unknown) counts as missing.
    """
    missing: Counter[str] = Counter()
    rows = db.execute(
        """
        SELECT DISTINCT d.study_uid, i.path FROM images i JOIN dicom_series d USING (series_uid)
        UNION
        SELECT study_uid, source_path FROM volumes WHERE kind = 'nifti' AND source_path IS NOT NULL
        """
    )
    for study_uid, text in rows:
        if text != UNLINKED and not paths.exists(paths.from_text(text)):
            missing[study_uid] += 1
    unlinked = db.execute("SELECT d.study_uid, COUNT(DISTINCT i.sop_uid) FROM images i "
                          "JOIN dicom_series d USING (series_uid) WHERE i.path = ? GROUP BY d.study_uid", (UNLINKED,))
    for study_uid, count in unlinked:
        missing[study_uid] += count
    return missing


def relocate(db: sqlite3.Connection, old: str, new: str) -> int:
    """Rewrite the folder prefix ``old`` to ``new`` in every recorded file path, after checking the files.

    Both are made absolute and normalised; only whole path components match
    (``/data/study`` does not match ``/data/study2``). Recorded relative paths
    (from old versions) match ``old`` as typed too. Each file under ``new``
    must hold what was recorded (the same SOPInstanceUID; the same content
    for a NIfTI file): if any holds something else, or none is there, nothing
    is changed. Files not found under ``new`` keep their recorded path. Runs
    in the caller's transaction.

    Returns
    -------
    int
        How many distinct files were re-linked.

    Raises
    ------
    CnoError
        If no recorded file lies under ``old``, none of them is under ``new``,
        or a file under ``new`` holds another image (nothing is changed).
    """
    old_abs, new_abs = paths.absolute(old), paths.absolute(new)
    old_typed = os.path.normpath(os.fspath(old))
    moves = _planned_moves(db, old_abs, old_typed, new_abs)
    if not moves:
        raise CnoError(f"no file of the store lies under {paths.display(old_abs)}; nothing was changed")
    found = [m for m in moves if os.path.isfile(paths.from_text(m.new))]
    wrong = [m for m in found if not m.holds_recorded()]
    if wrong:
        raise CnoError(f"{len(wrong)} of the {len(found)} files found under {paths.display(new_abs)} hold other "
                       f"images than the ones recorded under {paths.display(old_abs)} (first: "
                       f"{paths.display(paths.from_text(wrong[0].new))}): not the same files; nothing was changed")
    if not found:
        raise CnoError(f"none of the {len(moves)} files recorded under {paths.display(old_abs)} is under "
                       f"{paths.display(new_abs)}; nothing was changed")
    pairs = [(m.new, m.old) for m in found]
    db.executemany("UPDATE images SET path = ? WHERE path = ?", pairs)
    db.executemany("UPDATE volumes SET source_path = ? WHERE source_path = ?", pairs)
    db.executemany("DELETE FROM files WHERE path = ?", [(m.new,) for m in found])  # stale records of the target
    for move in found:
        info = os.stat(paths.from_text(move.new))
        db.execute("UPDATE files SET path = ?, size = ?, mtime_ns = ? WHERE path = ?",
                   (move.new, info.st_size, info.st_mtime_ns, move.old))
    return len(found)


def rewrite_prefix(db: sqlite3.Connection, old: str, new: str) -> int:
    """Rewrite the folder prefix ``old`` to ``new`` in every recorded path, without looking at the files.

    For a store being built whose files go elsewhere (a reading package names a neutral
    folder); a user's moved folder goes through :func:`relocate`, which checks them.
    """
    moves = _planned_moves(db, paths.absolute(old), os.path.normpath(os.fspath(old)), paths.absolute(new))
    pairs = [(m.new, m.old) for m in moves]
    db.executemany("UPDATE images SET path = ? WHERE path = ?", pairs)
    db.executemany("UPDATE volumes SET source_path = ? WHERE source_path = ?", pairs)
    db.executemany("UPDATE files SET path = ? WHERE path = ?", pairs)
    return len(moves)


@dataclass(frozen=True)
class _Move:
    """One recorded file to move: its path texts and what it must hold (an instance, or NIfTI content)."""

    old: str
    new: str
    sop_uid: str | None
    digest: str | None

    def holds_recorded(self) -> bool:
        """Whether the file at the new path holds what was recorded."""
        path = paths.from_text(self.new)
        if self.sop_uid is not None:
            return sop_uid_of(path) == self.sop_uid
        return _digest_of(path) == self.digest


def _planned_moves(db: sqlite3.Connection, old_abs: str, old_typed: str, new_abs: str) -> list[_Move]:
    moves: list[_Move] = []
    rows = db.execute("SELECT path, MIN(sop_uid), NULL FROM images WHERE path != ? GROUP BY path UNION "
                      "SELECT source_path, NULL, fingerprint FROM volumes WHERE kind = 'nifti' AND source_path "
                      "IS NOT NULL", (UNLINKED,))
    for text, sop_uid, digest in rows:
        path = paths.from_text(text)
        for prefix in {old_abs, old_typed}:
            if paths.is_under(path, prefix):
                target = paths.to_text(new_abs + path[len(prefix.rstrip(os.sep)):])
                moves.append(_Move(text, target, sop_uid, digest))
                break
    return moves


def resolve_relative_paths(db: sqlite3.Connection) -> None:
    """Migration step: make the relative paths old versions recorded absolute, where that is provable.

    The folder an old import ran in was not recorded. A relative path is
    resolved against the current folder only when the file found there is
    the one recorded (same SOPInstanceUID for DICOM, same content digest for
    NIfTI); every other relative path is left as it is, and counts as a
    missing file until a re-import or ``cno-annotate relocate`` re-links it.
    """
    rows = db.execute("SELECT path, MIN(sop_uid) FROM images GROUP BY path").fetchall()
    for text, sop_uid in rows:
        if os.path.isabs(text):
            continue
        candidate = paths.absolute(text)
        if sop_uid_of(candidate) == sop_uid:
            db.execute("UPDATE images SET path = ? WHERE path = ?", (paths.to_text(candidate), text))
    rows = db.execute("SELECT volume_id, source_path, fingerprint FROM volumes WHERE kind = 'nifti'").fetchall()
    for volume_id, text, digest in rows:
        if text is None or os.path.isabs(text):
            continue
        candidate = paths.absolute(text)
        if _digest_of(candidate) == digest:
            db.execute("UPDATE volumes SET source_path = ? WHERE volume_id = ?", (paths.to_text(candidate), volume_id))


def sop_uid_of(path: str) -> str | None:
    """The SOPInstanceUID in a file's header (None if the header cannot be read).

    A plain little-endian file is read by the index's own small header reader (about ten
    times faster than pydicom); any other file by pydicom.
    """
    from cno_annotate.io.dicom_header import read_plain_header

    try:
        plain = read_plain_header(path)
    except OSError:
        return None
    if plain is not None and plain[0].get("SOPInstanceUID"):
        return str(plain[0].get("SOPInstanceUID"))
    import pydicom

    from cno_annotate.io.dicom_index import tolerant_reading

    try:
        with tolerant_reading():
            header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
        return str(header.SOPInstanceUID)
    except Exception:  # noqa: BLE001 - any unreadable file is simply not the recorded one
        return None


def _digest_of(path: str) -> str | None:
    try:
        with open(path, "rb") as fp:
            return hashlib.sha1(fp.read()).hexdigest()
    except OSError:
        return None
