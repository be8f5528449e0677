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

from cno_annotate import paths
from cno_annotate.errors import CnoError


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
        if not paths.exists(paths.from_text(text)):
            missing[study_uid] += 1
    return missing


def relocate(db: sqlite3.Connection, old: str, new: str) -> int:
    """Rewrite the folder prefix ``old`` to ``new`` in every recorded file path.

    Both are made absolute and normalised; only whole path components match
    (``/data/study`` does not match ``/data/study2``). Recorded relative paths
    (from old versions) match ``old`` as typed too. Runs in the caller's
    transaction.

    Returns
    -------
    int
        How many distinct files were re-linked.

    Raises
    ------
    CnoError
        If no recorded file lies under ``old``.
    """
    old_abs, new_abs = paths.absolute(old), paths.absolute(new)
    old_typed = os.path.normpath(os.fspath(old))
    moves: dict[str, str] = {}
    for (text,) in db.execute("SELECT DISTINCT path FROM images UNION SELECT source_path FROM volumes "
                              "WHERE source_path IS NOT NULL"):
        path = paths.from_text(text)
        for prefix in {old_abs, old_typed}:
            if paths.is_under(path, prefix):
                moves[text] = paths.to_text(new_abs + path[len(prefix.rstrip(os.sep)):])
                break
    if not moves:
        raise CnoError(f"no file of the store lies under {paths.display(old_abs)}; nothing was changed")
    db.executemany("UPDATE images SET path = ? WHERE path = ?", [(n, o) for o, n in moves.items()])
    db.executemany("UPDATE volumes SET source_path = ? WHERE source_path = ?", [(n, o) for o, n in moves.items()])
    db.executemany("UPDATE files SET path = ? WHERE path = ?", [(n, o) for o, n in moves.items()])
    return len(moves)


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
        if _sop_uid_of(candidate) == sop_uid:
            db.execute("UPDATE images SET path = ? WHERE path = ?", (paths.to_text(candidate), text))
    rows = db.execute("SELECT volume_id, source_path, fingerprint FROM volumes WHERE kind = 'nifti'").fetchall()
    for volume_id, text, digest in rows:
        if text is None or os.path.isabs(text):
            continue
        candidate = paths.absolute(text)
        if _digest_of(candidate) == digest:
            db.execute("UPDATE volumes SET source_path = ? WHERE volume_id = ?", (paths.to_text(candidate), volume_id))


def _sop_uid_of(path: str) -> str | None:
    import pydicom

    try:
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
