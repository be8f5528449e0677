"""Reads in the store: the SQL of reads and their parts, returned as typed rows.

A read is one row of ``reads`` and its parts: lesions, unit marks, unit
grades, ROIs, follow-up outcomes (each one row per part, so an edit is one
small write) and the active reading time. The functions here run inside the
caller's transaction (``db`` is the store's connection, SQLite or
PostgreSQL); :mod:`cno_annotate.annotation.reads` decides what to write and
audits it.

Rows are frozen dataclasses; the JSON of a lesion, grade or ROI is returned
as stored (text) for the caller's validator to read.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cno_annotate.errors import CnoError
from cno_annotate.store import audit

#: The columns of ``reads`` up to store schema 3, in table order (``prior_read`` came with schema 13).
READ_COLUMNS = ("read_id", "study_uid", "reader", "scheme_id", "scheme_version", "taxonomy", "status", "started",
                "submitted", "modified", "revision", "next_lesion", "reading_study", "role", "version",
                "supersedes", "reason")


@dataclass(frozen=True)
class ReadRow:
    """One row of ``reads``: a read without its parts."""

    read_id: str
    study_uid: str
    reader: str
    scheme_id: str
    scheme_version: str
    taxonomy: str
    status: str
    started: str
    submitted: str | None
    modified: str
    revision: int
    next_lesion: int
    reading_study: str | None
    role: str
    version: int
    supersedes: str | None
    reason: str | None
    prior_read: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> ReadRow:
        """From a ``SELECT * FROM reads`` row (by column name)."""
        names = set(row.keys())
        return cls(**{f.name: row[f.name] for f in dataclasses.fields(cls) if f.name in names})

    def as_dict(self) -> dict:
        """The row as a dict of column -> value."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class LesionRow:
    """A stored lesion: its id and its JSON (the document form of the lesion)."""

    lesion_id: str
    data: str


@dataclass(frozen=True)
class UnitGradeRow:
    """A reader's grade of an item graded per bone unit; ``grade`` is JSON (a number or ``"NA"``)."""

    unit_id: str
    item_id: str
    grade: str


@dataclass(frozen=True)
class RoiRow:
    """A stored ROI: its id, its JSON and its role (measurement, muscle or lesion)."""

    roi_id: str
    data: str
    role: str


@dataclass(frozen=True)
class StoredRead:
    """A read as stored: its row and every part, lesions and ROIs in their order."""

    row: ReadRow
    lesions: tuple[LesionRow, ...]
    unit_marks: tuple[tuple[str, str], ...]  # (unit id, mark)
    unit_grades: tuple[UnitGradeRow, ...]
    rois: tuple[RoiRow, ...]
    outcomes: tuple[tuple[str, str], ...]  # (prior tracking UID, status)
    active_seconds: float


@dataclass(frozen=True)
class ReadRevision:
    """What a revision-checked write needs to know when it matched no row."""

    status: str
    revision: int


# -- reading -------------------------------------------------------------------------------
def select_reads(db: Any, study_uid: str | Sequence[str] | None = None, reader: str | None = None,
                 reading_study: str | None = None) -> list[ReadRow]:
    """Read rows matching every filter given, ordered by study, reader, version, start.

    ``study_uid`` may be several keys of one study (its source UID and the stand-in its readers' reads name it by).
    """
    sql, args = "SELECT * FROM reads WHERE 1", list[str]()
    keys = [study_uid] if isinstance(study_uid, str) else list(study_uid or ())
    if keys:
        sql, args = sql + f" AND study_uid IN ({', '.join('?' * len(keys))})", args + keys
    for column, value in (("reader", reader), ("reading_study", reading_study)):
        if value:
            sql, args = sql + f" AND {column} = ?", args + [value]
    return [ReadRow.from_row(r) for r in db.execute(sql + " ORDER BY study_uid, reader, version, started, read_id",
                                                      args)]


def read_ids(db: Any) -> list[str]:
    """Every read id in the store, sorted."""
    return [r[0] for r in db.execute("SELECT read_id FROM reads ORDER BY read_id").fetchall()]


def read_row(db: Any, read_id: str) -> ReadRow | None:
    """The row of one read, or None."""
    row = db.execute("SELECT * FROM reads WHERE read_id = ?", (read_id,)).fetchone()
    return None if row is None else ReadRow.from_row(row)


def stored_read(db: Any, read_id: str) -> StoredRead | None:
    """A read with all its parts, or None if the store has no such read (one statement on a server)."""
    if getattr(db, "server_edits", False):
        return _from_json(db.execute("SELECT cno_read_json(?::text)", (read_id,)).fetchone()[0])
    row = read_row(db, read_id)
    if row is None:
        return None
    lesions = tuple(LesionRow(r["lesion_id"], r["data"]) for r in db.execute(
        "SELECT lesion_id, data FROM lesions WHERE read_id = ? ORDER BY ordinal", (read_id,)))
    marks = tuple((r["unit_id"], r["mark"]) for r in db.execute(
        "SELECT unit_id, mark FROM unit_marks WHERE read_id = ?", (read_id,)))
    grades = tuple(UnitGradeRow(r["unit_id"], r["item_id"], r["grade"]) for r in db.execute(
        "SELECT unit_id, item_id, grade FROM unit_grades WHERE read_id = ?", (read_id,)))
    rois = tuple(RoiRow(r["roi_id"], r["data"], r["role"]) for r in db.execute(
        "SELECT roi_id, data, role FROM rois WHERE read_id = ? ORDER BY ordinal", (read_id,)))
    outcomes: tuple[tuple[str, str], ...] = ()
    if row.prior_read is not None:
        outcomes = tuple((r["tracking_uid"], r["status"]) for r in db.execute(
            "SELECT tracking_uid, status FROM followup_outcomes WHERE read_id = ?", (read_id,)))
    return StoredRead(row, lesions, marks, grades, rois, outcomes, reading_time(db, read_id))


def _from_json(found: dict | None) -> StoredRead | None:
    """A read as the server's cno_read_json returns it (migration 19)."""
    if found is None:
        return None
    return StoredRead(ReadRow.from_row(found["row"]),
                      tuple(LesionRow(*r) for r in found["lesions"]),
                      tuple((u, m) for u, m in found["unit_marks"]),
                      tuple(UnitGradeRow(*r) for r in found["unit_grades"]),
                      tuple(RoiRow(*r) for r in found["rois"]),
                      tuple((u, v) for u, v in found["outcomes"]),
                      float(found["active_seconds"]))


def read_status(db: Any, read_id: str) -> ReadRevision | None:
    """A read's status and revision, or None if it is not in the store."""
    row = db.execute("SELECT status, revision FROM reads WHERE read_id = ?", (read_id,)).fetchone()
    return None if row is None else ReadRevision(row["status"], int(row["revision"]))


def successor(db: Any, read_id: str) -> str | None:
    """The id of the read's newer version, if one was made."""
    row = db.execute("SELECT read_id FROM reads WHERE supersedes = ?", (read_id,)).fetchone()
    return None if row is None else str(row["read_id"])


def reading_time(db: Any, read_id: str) -> float:
    """The active reading time stored for a read (seconds; 0 when none was measured)."""
    row = db.execute("SELECT active_seconds FROM read_times WHERE read_id = ?", (read_id,)).fetchone()
    return float(row["active_seconds"]) if row else 0.0


# -- writing -------------------------------------------------------------------------------
def add_reading_time(db: Any, read_id: str, seconds: float) -> None:
    """Add active reading time to a read."""
    db.execute("INSERT INTO read_times VALUES (?, ?) ON CONFLICT (read_id) DO UPDATE "
               "SET active_seconds = read_times.active_seconds + excluded.active_seconds", (read_id, float(seconds)))


def add_draft_reading_time(db: Any, read_id: str, seconds: float) -> float | None:
    """Add active reading time to a draft read, in one statement; its time after, or None if it is not a draft.

    A read submitted (or deleted) in another program meanwhile gets nothing: its time is final.
    """
    row = db.execute("INSERT INTO read_times (read_id, active_seconds) SELECT read_id, ? FROM reads "
                     "WHERE read_id = ? AND status = 'draft' ON CONFLICT (read_id) DO UPDATE "
                     "SET active_seconds = read_times.active_seconds + excluded.active_seconds "
                     "RETURNING active_seconds", (float(seconds), read_id)).fetchone()
    return None if row is None else float(row[0])


def insert_read(db: Any, row: ReadRow) -> None:
    """Insert a read's row (``prior_read`` is set by :func:`replace_followup`)."""
    values = row.as_dict()
    db.execute(f"INSERT INTO reads ({', '.join(READ_COLUMNS)}) VALUES ({', '.join('?' * len(READ_COLUMNS))})",
               [values[k] for k in READ_COLUMNS])


def replace_read(db: Any, read: StoredRead) -> None:
    """Replace a read and all its parts: inserted as a draft, its parts added, then its status set.

    ``read.row.prior_read`` with ``read.outcomes`` is its follow-up link; the
    reading time is added to what is stored (a new read has none).
    """
    db.execute("DELETE FROM reads WHERE read_id = ?", (read.row.read_id,))
    read_id = read.row.read_id
    insert_read(db, dataclasses.replace(read.row, status="draft"))
    for n, lesion in enumerate(read.lesions):
        db.execute("INSERT INTO lesions VALUES (?,?,?,?)", (read_id, lesion.lesion_id, n, lesion.data))
    for unit_id, mark in read.unit_marks:
        db.execute("INSERT INTO unit_marks VALUES (?,?,?)", (read_id, unit_id, mark))
    for grade in read.unit_grades:
        db.execute("INSERT INTO unit_grades VALUES (?,?,?,?)", (read_id, grade.unit_id, grade.item_id, grade.grade))
    for n, roi in enumerate(read.rois):
        db.execute("INSERT INTO rois VALUES (?,?,?,?,?)", (read_id, roi.roi_id, n, roi.data, roi.role))
    if read.active_seconds > 0:
        add_reading_time(db, read_id, read.active_seconds)
    replace_followup(db, read_id, read.row.prior_read, read.outcomes)
    if read.row.status != "draft":
        db.execute("UPDATE reads SET status = ? WHERE read_id = ?", (read.row.status, read_id))


def replace_followup(db: Any, read_id: str, prior_read: str | None, outcomes: Iterable[tuple[str, str]]) -> None:
    """Replace a draft read's follow-up link and outcomes."""
    db.execute("DELETE FROM followup_outcomes WHERE read_id = ?", (read_id,))
    db.execute("UPDATE reads SET prior_read = ? WHERE read_id = ?", (prior_read, read_id))
    if prior_read is not None:
        db.executemany("INSERT INTO followup_outcomes VALUES (?,?,?)",
                       [(read_id, uid, status) for uid, status in sorted(outcomes)])


def bump_revision(db: Any, read_id: str, revision: int, stamp: str, new_lesion: int | None = None) -> int | None:
    """Bump a draft read's revision if it is still ``revision``; the next lesion number after, or None.

    With ``new_lesion`` (the number the read's next lesion should take) the
    read's lesion counter is taken too, if it is at that number.
    """
    row = db.execute("UPDATE reads SET revision = revision + 1, modified = ?, next_lesion = next_lesion + ? "
                     "WHERE read_id = ? AND revision = ? AND status = 'draft' AND next_lesion = COALESCE(?, next_lesion) "
                     "RETURNING next_lesion",
                     (stamp, int(new_lesion is not None), read_id, revision, new_lesion)).fetchone()
    return None if row is None else int(row["next_lesion"])


@dataclass(frozen=True)
class PartChange:
    """One part of a read to write: a lesion, unit mark, unit grade, ROI or follow-up outcome.

    ``value`` is what to store (a lesion's or ROI's JSON, a mark, a grade's
    JSON, an outcome's status), None to remove the part. ``existed`` says
    whether the session holds a row of it (updated in place) or not
    (inserted); ``ordinal`` places a lesion or ROI; ``role`` is an ROI's.
    """

    key: tuple[str, ...]
    value: str | None
    existed: bool = True
    ordinal: int = 0
    role: str = ""


def write_lesions(db: Any, read_id: str, changes: Iterable[PartChange]) -> None:
    """Lesion rows (key: lesion id): deleted, inserted where there was none before, else updated in place."""
    for change in changes:
        (lesion_id,) = change.key
        if change.value is None:
            db.execute("DELETE FROM lesions WHERE read_id = ? AND lesion_id = ?", (read_id, lesion_id))
        elif not change.existed:
            db.execute("INSERT INTO lesions VALUES (?,?,?,?)", (read_id, lesion_id, change.ordinal, change.value))
        else:
            db.execute("UPDATE lesions SET data = ? WHERE read_id = ? AND lesion_id = ?",
                       (change.value, read_id, lesion_id))


def write_unit_marks(db: Any, read_id: str, changes: Iterable[PartChange]) -> None:
    """Unit mark rows (key: unit id): deleted, inserted where there was none before, else updated in place."""
    for change in changes:
        (unit_id,) = change.key
        if change.value is None:
            db.execute("DELETE FROM unit_marks WHERE read_id = ? AND unit_id = ?", (read_id, unit_id))
        elif not change.existed:
            db.execute("INSERT INTO unit_marks VALUES (?,?,?)", (read_id, unit_id, change.value))
        else:
            db.execute("UPDATE unit_marks SET mark = ? WHERE read_id = ? AND unit_id = ?",
                       (change.value, read_id, unit_id))


def write_unit_grades(db: Any, read_id: str, changes: Iterable[PartChange]) -> None:
    """Unit grades (key: unit id, item id): each replaced by its new value, or removed for None."""
    for change in changes:
        unit_id, item_id = change.key
        db.execute("DELETE FROM unit_grades WHERE read_id = ? AND unit_id = ? AND item_id = ?",
                   (read_id, unit_id, item_id))
        if change.value is not None:
            db.execute("INSERT INTO unit_grades VALUES (?,?,?,?)", (read_id, unit_id, item_id, change.value))


def write_rois(db: Any, read_id: str, changes: Sequence[PartChange]) -> None:
    """ROI rows (key: ROI id): every changed row deleted first (so a muscle ROI handed on frees its place),
    then the new ones inserted."""
    for change in changes:
        db.execute("DELETE FROM rois WHERE read_id = ? AND roi_id = ?", (read_id, change.key[0]))
    for change in changes:
        if change.value is not None:
            db.execute("INSERT INTO rois VALUES (?,?,?,?,?)",
                       (read_id, change.key[0], change.ordinal, change.value, change.role))


def write_outcomes(db: Any, read_id: str, changes: Iterable[PartChange]) -> None:
    """Follow-up outcomes (key: prior tracking UID): each replaced by its new status, or removed for None."""
    for change in changes:
        (uid,) = change.key
        db.execute("DELETE FROM followup_outcomes WHERE read_id = ? AND tracking_uid = ?", (read_id, uid))
        if change.value is not None:
            db.execute("INSERT INTO followup_outcomes VALUES (?,?,?)", (read_id, uid, change.value))


# -- one edit ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Creation:
    """A read made by its first change: its row, its ``create`` entry's ``after``, reading time measured before."""

    row: ReadRow
    after: Any
    seconds: float = 0.0


def create(db: Any, creation: Creation, actor: str) -> None:
    """Insert a new read, audited (``create``), with the reading time measured before it existed."""
    entity = f"read:{creation.row.read_id}"
    state = audit.require_unchanged(db, entity)
    insert_read(db, creation.row)
    audit.append(db, actor, "create", entity, after=creation.after, state_before=state)
    if creation.seconds > 0:
        add_reading_time(db, creation.row.read_id, creation.seconds)


@dataclass(frozen=True)
class Edit:
    """One change of a draft read, written whole or not at all, with its audit entry.

    ``revision`` is the revision the editor holds: the edit is refused if the
    stored read is at another one (or submitted). ``new_lesion`` is the number
    the read's next lesion takes (the editor's copy says so; the store checks
    it while taking it). ``before``, ``after`` and ``extra`` are the audit
    entry's JSON. ``submit`` submits the read (after its parts are written:
    it is locked from then on); ``prior_read`` makes it a follow-up of that read.
    """

    read_id: str
    revision: int
    stamp: str
    actor: str
    action: str
    lesions: tuple[PartChange, ...] = ()
    unit_marks: tuple[PartChange, ...] = ()
    unit_grades: tuple[PartChange, ...] = ()
    rois: tuple[PartChange, ...] = ()
    outcomes: tuple[PartChange, ...] = ()
    new_lesion: int | None = None
    before: Any = None
    after: Any = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    submit: bool = False
    prior_read: str | None = None

    @property
    def entity(self) -> str:
        """The audit trail's name of the read."""
        return f"read:{self.read_id}"


@dataclass(frozen=True)
class Refusal:
    """An edit that matched no draft at the editor's revision: what the store holds instead (None: no read).

    ``stored``: the read as stored, when the store sent it with the refusal (a server, migration 29).
    """

    current: ReadRevision | None
    stored: StoredRead | None = None


def apply_edit(db: Any, edit: Edit, creation: Creation | None = None) -> StoredRead | Refusal:
    """Apply one edit in the caller's transaction; the read as stored after it, or why it was refused.

    With ``creation`` the read is made first (its first change). On a server this
    is one statement (``cno_change_read``, migration 23): the database makes the
    read if asked, checks, writes, audits and returns the read.

    Raises
    ------
    CnoError
        If the read was changed outside the program since its last audited change.
    """
    if getattr(db, "server_edits", False):
        return _apply_on_server(db, edit, creation)
    if creation is not None:
        create(db, creation, edit.actor)
    state = audit.require_unchanged(db, edit.entity)
    next_lesion = bump_revision(db, edit.read_id, edit.revision, edit.stamp, edit.new_lesion)
    if next_lesion is None:
        return Refusal(read_status(db, edit.read_id))
    if edit.prior_read is not None:
        db.execute("UPDATE reads SET prior_read = ? WHERE read_id = ?", (edit.prior_read, edit.read_id))
    write_lesions(db, edit.read_id, edit.lesions)
    write_unit_marks(db, edit.read_id, edit.unit_marks)
    write_unit_grades(db, edit.read_id, edit.unit_grades)
    write_rois(db, edit.read_id, edit.rois)
    write_outcomes(db, edit.read_id, edit.outcomes)
    if edit.submit:  # last: the read is locked from here on
        db.execute("UPDATE reads SET status = 'submitted', submitted = ? WHERE read_id = ?", (edit.stamp, edit.read_id))
    audit.append(db, edit.actor, edit.action, edit.entity, before=edit.before, after=edit.after, state_before=state,
                 **edit.extra)
    stored = stored_read(db, edit.read_id)
    assert stored is not None  # written in this transaction
    return stored


def _apply_on_server(db: Any, edit: Edit, creation: Creation | None) -> StoredRead | Refusal:
    from cno_annotate.store import postgres

    parts = {
        "lesions": [[c.key[0], c.ordinal, c.value, c.existed] for c in edit.lesions],
        "unit_marks": [[c.key[0], c.value, c.existed] for c in edit.unit_marks],
        "unit_grades": [[*c.key, c.value] for c in edit.unit_grades],
        "rois": [[c.key[0], c.ordinal, c.value, c.role] for c in edit.rois],
        "outcomes": [[c.key[0], c.value] for c in edit.outcomes],
    }
    detail = json.dumps({"before": edit.before, "after": edit.after, **edit.extra}, ensure_ascii=False, sort_keys=True)
    row: dict[str, str] = {}
    if edit.submit:
        row["status"] = "submitted"
    if edit.prior_read is not None:
        row["prior_read"] = edit.prior_read
    create_json = None if creation is None else json.dumps({
        "row": creation.row.as_dict(), "seconds": creation.seconds,
        "detail": json.dumps({"before": None, "after": creation.after}, ensure_ascii=False, sort_keys=True)})
    try:
        found = db.execute("SELECT cno_change_read(?::text, ?::bigint, ?::bigint, ?::text, ?::text, ?::text, "
                           "?::jsonb, ?::text, ?::jsonb, ?::jsonb)",
                           (edit.read_id, edit.revision, edit.new_lesion, edit.stamp, edit.actor, edit.action,
                            json.dumps(parts), detail, json.dumps(row), create_json)).fetchone()[0]
    except Exception as exc:
        if getattr(exc, "sqlstate", None) == postgres.CHANGED_OUTSIDE:
            raise CnoError(str(getattr(getattr(exc, "diag", None), "message_primary", None) or exc)) from None
        raise
    if "refused" in found:
        refused = found["refused"]
        return Refusal(None if refused is None else ReadRevision(refused["status"], int(refused["revision"])),
                       _from_json(found.get("read")))
    stored = _from_json(found)
    assert stored is not None
    return stored
