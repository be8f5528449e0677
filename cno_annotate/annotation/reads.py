"""Reads in the store, and the session that edits one with undo / redo.

Every change is written as it is made, in one transaction that also bumps
the read's revision and appends the audit entry: after a crash the store
holds every change that was committed and no half change. On a PostgreSQL
server a change of a stored read is one statement (``cno_edit_read``, store
migration 19): the database checks, writes, audits and returns the read in
one round trip. The SQL is in :mod:`cno_annotate.store.reads`. The undo
history lives in the :class:`ReadSession` (one step per user gesture) and
undoing is itself a saved change.

Two windows or programs may hold the same read. Each change is written only
if the read's revision is still the one the session loaded (and the read is
still a draft), checked in the same UPDATE that bumps it: a change based on
a stale copy is refused with :class:`~cno_annotate.errors.ReadConflict` and
the session reloads the read, so nobody's edit is silently overwritten. The
database itself refuses changes to submitted reads (triggers) and a second
first version or successor of a read (unique indexes); see store/db.py.
A session on a case that was never edited holds no read in the store yet:
the read is created with the first change.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum

from cno_annotate.annotation.model import (
    Followup,
    FollowupStatus,
    Lesion,
    Read,
    ReadingRole,
    ReadStatus,
    Roi,
    RoiRole,
    UnitMark,
)
from cno_annotate.annotation.scheme import Scheme, load_scheme
from cno_annotate.annotation.scoring import (
    UNIT_MARKS,
    UNIT_NOT_ASSESSABLE,
    ReadScores,
    score_read,
)
from cno_annotate.annotation.taxonomy import DEFAULT_TAXONOMY, Taxonomy, load_taxonomy
from cno_annotate.annotation.validation import (
    check_read,
    lesion_from_fields,
    make_roi,
    read_problems,
    reference_problems,
    roi_from_fields,
)
from cno_annotate.errors import CnoError, ReadConflict, ReadLocked
from cno_annotate.events import Event
from cno_annotate.store import audit
from cno_annotate.store import reading_studies as opened_cases
from cno_annotate.store import reads as rows
from cno_annotate.store.db import LOCKED_MESSAGE, Store, is_integrity_error, now
from cno_annotate.store.packages import uid_pairs
from cno_annotate.wording import counted

EDITABLE = {"site_id", "side", "subsite", "extent", "grades", "comment", "confidence", "position", "series_uid", "voxel"}


# -- storage ---------------------------------------------------------------------------
READ_COLUMNS = rows.READ_COLUMNS


def list_reads(store: Store, study_uid: str | None = None, reader: str | None = None,
               reading_study: str | None = None, latest_only: bool = False) -> list[dict]:
    """Read rows (without lesions) as dicts, by study, reader and version (see :func:`list_read_rows`).

    With ``latest_only``, only the newest version of each read.
    """
    return [r.as_dict() for r in list_read_rows(store, study_uid, reader, reading_study, latest_only)]


def list_read_rows(store: Store, study_uid: str | None = None, reader: str | None = None,
                   reading_study: str | None = None, latest_only: bool = False) -> list[rows.ReadRow]:
    """Read rows (without lesions), by study, reader and version.

    With ``latest_only``, only the newest version of each read.
    """
    sources = opened_cases.case_sources(store.db)
    keys = [study_uid] if study_uid else []
    keys += [key for (name, key), source in sources.items()
             if source == study_uid and reading_study in (None, name)]
    found = rows.select_reads(store.db, keys, reader, reading_study)
    if sources:
        mapped = [_by_source(row, sources) for row in found]
        if mapped != found:  # keep the store's order within each study
            found = sorted(mapped, key=lambda row: row.study_uid)
    if latest_only:
        newest = {(r.study_uid, r.reader, r.reading_study, r.role): r for r in found}
        found = [r for r in found if newest[(r.study_uid, r.reader, r.reading_study, r.role)] is r]
    return found


def _by_source(row: rows.ReadRow, sources: dict[tuple[str, str], str]) -> rows.ReadRow:
    """The row naming its study by the source UID where the read names it by its case's key (a server reader's)."""
    source = sources.get((row.reading_study or "", row.study_uid))
    return row if source is None else dataclasses.replace(row, study_uid=source)


def load_read(store: Store, read_id: str) -> Read:
    """A read with its lesions and unit marks, naming its study as this login knows it.

    A server reader's read names its case by the case's key (a stand-in UID); the coordinator's
    login gets it back under the source study UID (:func:`list_read_rows` does the same).

    Raises
    ------
    CnoError
        If the store has no such read.
    """
    stored = _load_stored(store, read_id)
    if stored.row.reading_study is not None:
        stored = dataclasses.replace(stored, row=_by_source(stored.row, opened_cases.case_sources(store.db)))
    return read_from_stored(stored)


def read_from_stored(stored: rows.StoredRead) -> Read:
    """The :class:`Read` of a stored read, every part back through the validator."""
    row, read_id = stored.row, stored.row.read_id
    taxonomy, scheme = load_taxonomy(row.taxonomy), load_scheme(row.scheme_id, row.scheme_version)
    lesions = [_stored_lesion(taxonomy, scheme, read_id, r.lesion_id, r.data) for r in stored.lesions]
    unit_grades: dict[str, dict] = {}
    for g in stored.unit_grades:
        try:
            grade = json.loads(g.grade)
        except ValueError as exc:
            raise CnoError(f"the {g.item_id} grade of {g.unit_id} in read {read_id} is damaged: "
                           f"{_one_line(exc)}; run cno-annotate store check") from None
        unit_grades.setdefault(g.unit_id, {})[g.item_id] = grade
    rois = [_stored_roi(read_id, r.roi_id, r.data) for r in stored.rois]
    fields = {k: getattr(row, k) for k in READ_COLUMNS if k != "next_lesion"}
    followup = None if row.prior_read is None else Followup(
        row.prior_read, {uid: FollowupStatus(status) for uid, status in stored.outcomes})
    return Read(**fields, lesions=lesions, unit_marks=dict(stored.unit_marks), unit_grades=unit_grades, rois=rois,
                active_seconds=stored.active_seconds, followup=followup)


def _stored_roi(read_id: str, roi_id: str, data) -> Roi:
    """An ROI row back through the validator; a damaged row is a one-line error naming read and ROI."""
    try:
        return roi_from_fields(json.loads(data))
    except (ValueError, TypeError, CnoError) as exc:
        raise CnoError(f"ROI {roi_id} of read {read_id} is damaged: {_one_line(exc)}; "
                       f"run cno-annotate store check") from None


def stored_reading_time(db, read_id: str) -> float:
    """The active reading time stored for a read (seconds; 0 when none was measured)."""
    return rows.reading_time(db, read_id)


def _stored_lesion(taxonomy: Taxonomy, scheme: Scheme, read_id: str, lesion_id: str, data) -> Lesion:
    """A lesion row back through the validator; a damaged row is a one-line error naming read and lesion."""
    try:
        fields = json.loads(data)
        if not isinstance(fields, dict):
            raise ValueError(f"not a JSON object but {type(fields).__name__}")
        return lesion_from_fields(taxonomy, scheme, fields)
    except (ValueError, TypeError, CnoError) as exc:
        raise CnoError(f"lesion {lesion_id} of read {read_id} is damaged: {_one_line(exc)}; "
                       f"run cno-annotate store check") from None


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:200]


def damaged_reads(store: Store) -> list[str]:
    """Why each read that cannot be loaded cannot be (a damaged lesion or grade row), for ``store check``."""
    problems = []
    for read_id in rows.read_ids(store.db):
        try:
            load_read(store, read_id)
        except CnoError as exc:
            problems.append(str(exc))
    return problems


def create_read(store: Store, study_uid: str, reader: str, scheme: Scheme, taxonomy: Taxonomy,
                read_id: str | None = None, reading_study: str | None = None, role: str = "reader") -> Read:
    """Create an empty draft read (and record it in the audit trail).

    Raises
    ------
    ReadConflict
        If the reader already has a read of this case (made in another program).
    """
    read = new_read(store, study_uid, reader, scheme, taxonomy, read_id, reading_study, role)
    with guarded(store, read.read_id), store.transaction() as db:
        _insert_new(db, read)
    return read


def new_read(store: Store, study_uid: str, reader: str, scheme: Scheme, taxonomy: Taxonomy,
             read_id: str | None = None, reading_study: str | None = None, role: str = "reader") -> Read:
    """An empty draft read, not yet stored (checked as ``read import`` checks one)."""
    if not reader.strip():
        raise CnoError("a read needs a reader id")
    stamp = now()
    read = Read(read_id or uuid.uuid4().hex, study_uid, reader, scheme.id, scheme.version,
                f"{taxonomy.id}-{taxonomy.version}", ReadStatus.DRAFT, stamp, None, stamp, 0,
                reading_study=reading_study, role=ReadingRole(role))
    if reading_study is not None:  # the same rules as read import: a registered reader, one adjudicator per case
        problems = reference_problems(store, [read])
        if problems:
            raise CnoError(problems[0].reason)
        read = _keyed(store.db, read)
    return read


def _keyed(db, read: Read) -> Read:
    """The read naming its case as its reader's login sees it (on a server, the case's key: never the source UID).

    A read the coordinator's program writes for a registered reader on a server (``collect``, ``read import``)
    also names the stand-ins of its lesions' and ROIs' series where the reading study's UID pairs have them (the
    copies the reader read); the coordinator's exports map them back (:class:`~cno_annotate.export_reads.SourceReferences`).
    """
    if read.reading_study is None:
        return read
    key = opened_cases.case_key(db, read.reading_study, read.reader, read.study_uid)
    if key == read.study_uid:
        return read
    pairs = uid_pairs(db, read.reading_study)
    return dataclasses.replace(
        read, study_uid=key,
        lesions=[dataclasses.replace(lesion, series_uid=pairs.get(lesion.series_uid, lesion.series_uid))
                 for lesion in read.lesions],
        rois=[dataclasses.replace(roi, series_uid=pairs.get(roi.series_uid, roi.series_uid)) for roi in read.rois])


def _insert_new(db, read: Read) -> None:
    rows.create(db, _creation(read), read.reader)


def _creation(read: Read, seconds: float = 0.0) -> rows.Creation:
    """What the store needs to make a new read: its row, its ``create`` entry, reading time measured before."""
    return rows.Creation(_read_row(read, next_lesion=1), _read_summary(read), seconds)


@contextmanager
def guarded(store: Store, read_id: str):
    """Turn the database's refusals about a read into clear errors.

    The lock triggers become :class:`ReadLocked`; the unique indexes (a second
    first version, or a second successor, of one read) :class:`ReadConflict`.
    """
    try:
        yield
    except Exception as exc:
        if not is_integrity_error(exc):
            raise
        text = str(exc)
        if LOCKED_MESSAGE in text:
            raise ReadLocked(f"read {read_id} is submitted and locked (the store refused the change)") from None
        if "unique" in text.lower() and ("reads." in text or "reads_one_" in text or "reads_pkey" in text):
            raise ReadConflict(f"read {read_id}: another window or program made a read of this case, or a new "
                               f"version of this read, at the same time; reopen the case") from None
        raise CnoError(f"the store refused the change to read {read_id}: {' '.join(text.split())}") from None


def _read_row(read: Read, next_lesion: int) -> rows.ReadRow:
    """The store row of a read (its follow-up link is written with its outcomes)."""
    return rows.ReadRow(**{k: getattr(read, k) for k in READ_COLUMNS if k != "next_lesion"}, next_lesion=next_lesion,
                        prior_read=None if read.followup is None else read.followup.prior_read_id)


def _read_summary(read: Read) -> dict:
    return {"study_uid": read.study_uid, "reader": read.reader, "status": read.status, "version": read.version,
            "reading_study": read.reading_study, "role": read.role, "scheme": f"{read.scheme_id} {read.scheme_version}"}


def write_read(store: Store, read: Read, actor: str = "coordinator", in_transaction: bool = False) -> None:
    """Write a whole read (replacing a draft with the same id), in one transaction, audited.

    With ``in_transaction`` the caller holds the transaction (to write several
    reads all or nothing).

    Raises
    ------
    ReadLocked
        If the store holds a submitted read with this id (it is never overwritten).
    """
    try:
        with guarded(store, read.read_id):
            if in_transaction:
                _write_audited(store.db, read, actor)
            else:
                with store.transaction() as db:
                    _write_audited(db, read, actor)
    except ReadLocked:
        raise ReadLocked(f"the store's read {read.read_id} is submitted and locked: it cannot be replaced "
                         f"(nothing was changed)") from None


def _write_audited(db, read: Read, actor: str) -> None:
    read = _keyed(db, read)
    state = audit.require_unchanged(db, f"read:{read.read_id}")
    _write_read(db, read)
    audit.append(db, actor, "import", f"read:{read.read_id}", after=_read_summary(read), lesions=len(read.lesions),
                 state_before=state)


def _write_read(db, read: Read) -> int:
    """Replace the read's rows: inserted as a draft, its lesions and marks added, then its status set.

    Returns the number the read's next lesion takes.
    """
    next_lesion = 1 + max((_lesion_number(l.lesion_id) for l in read.lesions), default=0)
    outcomes = () if read.followup is None else tuple((u, str(s)) for u, s in read.followup.outcomes.items())
    rows.replace_read(db, rows.StoredRead(
        _read_row(read, next_lesion),
        tuple(rows.LesionRow(l.lesion_id, json.dumps(l.to_dict())) for l in read.lesions),
        tuple((u, str(m)) for u, m in read.unit_marks.items()),
        tuple(rows.UnitGradeRow(u, i, json.dumps(g)) for u, grades in read.unit_grades.items()
              for i, g in grades.items()),
        tuple(rows.RoiRow(r.roi_id, json.dumps(r.to_dict()), str(r.role)) for r in read.rois),
        outcomes, read.active_seconds))
    return next_lesion


def _state_json(lesions: dict, marks: dict) -> dict:
    """Lesions and marks as JSON for the audit trail."""
    return {
        "lesions": {k: (v.to_dict() if v is not None else None) for k, v in lesions.items()},
        "unit_marks": dict(marks),
    }


def _lesion_number(lesion_id: str) -> int:
    digits = "".join(c for c in lesion_id if c.isdigit())
    return int(digits) if digits else 0


# -- editing --------------------------------------------------------------------------
@dataclass(frozen=True)
class _Change:
    """What one gesture changed: the affected lesions and marks, before and after."""

    label: str
    lesions_before: dict  # lesion id -> Lesion or None
    lesions_after: dict
    marks_before: dict  # unit id -> mark or None
    marks_after: dict
    grades_before: dict = dataclasses.field(default_factory=dict)  # (unit id, item id) -> unit grade or None
    grades_after: dict = dataclasses.field(default_factory=dict)
    rois_before: dict = dataclasses.field(default_factory=dict)  # ROI id -> Roi or None
    rois_after: dict = dataclasses.field(default_factory=dict)
    outcomes_before: dict = dataclasses.field(default_factory=dict)  # prior tracking UID -> FollowupStatus or None
    outcomes_after: dict = dataclasses.field(default_factory=dict)


class ReadChangeKind(StrEnum):
    """What kind of change a :class:`ReadChange` reports."""

    EDIT = "edit"  #: a lesion, mark or grade changed
    UNDO = "undo"
    REDO = "redo"
    SUBMIT = "submit"  #: the read was submitted (and is locked)
    RELOAD = "reload"  #: the read was read again from the store (another program changed it)


@dataclass(frozen=True)
class ReadChange:
    """The event a :class:`ReadSession` emits after every change.

    Attributes
    ----------
    kind : ReadChangeKind
        What happened.
    label : str
        The edit's label as the undo history names it (``""`` for submit and reload).
    """

    kind: ReadChangeKind
    label: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.label}".strip() if self.kind in (ReadChangeKind.UNDO, ReadChangeKind.REDO) \
            else (self.label or str(self.kind))


class ReadSession:
    """An open read: validated edits, autosave, undo / redo, live scores.

    Events
    ------
    changed(change)
        A :class:`ReadChange` after every edit, undo, redo, submit and reload.
    """

    def __init__(self, store: Store, read: Read, actor: str | None = None, stored: bool = True,
                 next_lesion: int | None = None):
        if actor is not None and actor != read.reader:
            raise CnoError(f"read {read.read_id} belongs to reader {read.reader}; {actor} cannot open it")
        self.store = store
        self.read = read
        self.actor = actor or read.reader
        self.scheme = load_scheme(read.scheme_id, read.scheme_version)
        self.taxonomy = load_taxonomy(read.taxonomy)
        self._undo: list[_Change] = []
        self._redo: list[_Change] = []
        self.changed = Event()
        self.stored = stored  # False until the first change creates the read in the store
        self._unsaved_seconds = 0.0  # reading time measured before the read exists in the store
        self._opened_recorded = False  # a reading study's case: its opening and looked-only time are in the store
        # The number the read's next lesion takes, as stored (None: not known yet; looked up when needed).
        self._next_lesion = next_lesion if stored else 1
        self._sent_with_refusal: rows.StoredRead | None = None  # the read a refusal came with (a server sends it)
        self._pending_prior: str | None = None  # a follow-up link chosen before the read exists: stored with its first change

    @classmethod
    def open(cls, store: Store, read_id: str, actor: str | None = None) -> ReadSession:
        """Open a stored read; an ``actor`` other than its reader is refused."""
        stored = _load_stored(store, read_id)
        return cls(store, read_from_stored(stored), actor, next_lesion=stored.row.next_lesion)

    @classmethod
    def open_or_create(cls, store: Store, study_uid: str, reader: str, scheme_id: str | None = None,
                       taxonomy: str = DEFAULT_TAXONOMY, reading_study: str | None = None,
                       role: str = "reader", scheme_version: str | None = None) -> ReadSession:
        """The reader's latest read (version) of a study, or a new draft.

        A new draft is not written to the store until its first change, so
        opening a case only to look at it leaves no read behind.
        """
        latest = _latest_read_id(store, study_uid, reader, reading_study, role)
        if latest is not None:
            return cls.open(store, latest, reader)
        scheme = load_scheme(scheme_id, scheme_version) if scheme_id else load_scheme()
        read = new_read(store, study_uid, reader, scheme, load_taxonomy(taxonomy), reading_study=reading_study,
                        role=role)
        session = cls(store, read, reader, stored=False)
        session._record_opened()
        return session

    def _record_opened(self) -> None:
        """A reading study's case opened before any read of it: recorded, with the time looked at it so far.

        A store that refuses the write (locked, read-only, a case not on the reader's worklist) leaves the time in
        memory, as outside a study.
        """
        read = self.read
        if read.reading_study is None or self.store.read_only:
            return
        try:
            with self.store.single_statement() as db:
                looked = opened_cases.record_opened(db, read.reading_study, read.reader, read.study_uid, now())
        except Exception as exc:
            if isinstance(exc, CnoError) or opened_cases.opening_refused(exc):
                return
            raise
        self._unsaved_seconds, self._opened_recorded = looked, True

    @classmethod
    def new_version(cls, store: Store, read_id: str, actor: str, reason: str) -> ReadSession:
        """Open a submitted read for change: a new draft version; the old one is kept as it was.

        Raises
        ------
        CnoError
            Without a reason, for a draft, for another reader, or if a newer version exists.
        """
        if not reason or not reason.strip():
            raise CnoError("a new version of a submitted read needs a reason")
        old = read_from_stored(_load_stored(store, read_id))  # as stored: the copy keeps the key its reader sees
        if actor != old.reader:
            raise CnoError(f"read {read_id} belongs to reader {old.reader}; {actor} cannot change it")
        if old.status != "submitted":
            raise CnoError(f"read {read_id} is a draft: change it directly")
        newer = rows.successor(store.db, read_id)
        if newer is not None:
            raise CnoError(f"read {read_id} already has a newer version {newer}")
        stamp = now()
        new = dataclasses.replace(old, read_id=uuid.uuid4().hex, status=ReadStatus.DRAFT, started=stamp, submitted=None,
                                  modified=stamp, revision=0, version=old.version + 1, supersedes=old.read_id,
                                  reason=reason.strip(), active_seconds=0.0)
        with guarded(store, read_id), store.transaction() as db:
            audit.require_unchanged(db, f"read:{old.read_id}")  # the copy must not carry a change made outside
            state = audit.require_unchanged(db, f"read:{new.read_id}")
            next_lesion = _write_read(db, new)
            audit.append(db, actor, "new-version", f"read:{new.read_id}", before={"read_id": old.read_id},
                         after=_read_summary(new), reason=new.reason, state_before=state)
        return cls(store, new, actor, next_lesion=next_lesion)

    # -- queries ---------------------------------------------------------------------------
    @property
    def editable(self) -> bool:
        """Whether this read can be changed here: a draft, in a store that can be written."""
        return self.read.status == ReadStatus.DRAFT and not self.store.read_only

    @property
    def can_undo(self) -> bool:
        """Whether there is a change to undo."""
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        """Whether there is an undone change to redo."""
        return bool(self._redo)

    def reload(self, sent: rows.StoredRead | None = None) -> None:
        """Load the read again from the store (after a conflict); the undo history is cleared.

        A session whose read was not yet stored picks up a read of the case
        that another window or program created meanwhile. ``sent``: the read as
        the store sent it with a refusal just now (it is not asked for again).
        """
        read = self.read
        if not self.stored:
            latest = _latest_read_id(self.store, read.study_uid, read.reader, read.reading_study, read.role)
            if latest is not None:
                self._loaded(_load_stored(self.store, latest))
        else:
            stored = sent if sent is not None else rows.stored_read(self.store.db, read.read_id)
            if stored is not None:
                self._loaded(stored)
        self._undo.clear()
        self._redo.clear()
        self.changed.emit(ReadChange(ReadChangeKind.RELOAD))

    def scores(self) -> ReadScores:
        """Scores of the read as it is now."""
        return score_read(self.read.lesions, self.read.unit_marks, self.scheme, self.taxonomy, self.read.unit_grades)

    # -- reading time ----------------------------------------------------------------------
    @property
    def reading_time(self) -> float:
        """Active reading time of the read so far (stored, plus what waits for the read to be created)."""
        return self.read.active_seconds + self._unsaved_seconds

    def add_reading_time(self, seconds: float) -> None:
        """Add active reading time to the read (kept until the first change stores a new read).

        Before that change, a reading study's case keeps it in the store as time looked at the opened case
        (``reading-study progress`` counts it), which the new read then takes over.

        Time never bumps the revision (it cannot conflict with an edit made
        elsewhere); time on a submitted read, or in a read-only store, is
        dropped (the read's time is final once submitted).
        """
        if not seconds > 0 or not self.editable:
            return
        study = self.read.reading_study
        if not self.stored and self._opened_recorded and study is not None:  # only looked at: kept with the case
            read = self.read
            try:
                with self.store.single_statement() as db:
                    self._unsaved_seconds = opened_cases.add_looked_time(db, study, read.reader,
                                                                         read.study_uid, seconds, now())
                return
            except Exception as exc:  # taken off the worklist meanwhile: the time stays with this window
                if not opened_cases.opening_refused(exc):
                    raise
                self._opened_recorded = False
        if not self.stored:
            self._unsaved_seconds += float(seconds)
            return
        with guarded(self.store, self.read.read_id), self.store.single_statement() as db:
            total = rows.add_draft_reading_time(db, self.read.read_id, seconds)
        if total is not None:  # else submitted (or gone) in another program meanwhile
            self.read.active_seconds = total

    # -- edits -----------------------------------------------------------------------------
    def add_lesion(self, position, series_uid: str, voxel, tracking_uid: str | None = None, **fields) -> str:
        """Place a lesion; returns its id (ids are never reused; the number is taken inside the write).

        ``tracking_uid`` is given only for a lesion of an earlier visit that the
        reader confirms as persisting (see :mod:`cno_annotate.followup`); a new
        lesion gets a new tracking UID.
        """
        self._require_draft()
        stamp = now()
        unknown = set(fields) - EDITABLE
        if unknown:
            raise CnoError(f"cannot set {', '.join(sorted(unknown))} of a lesion")
        lesion = self._validated({"lesion_id": "L0", "position": position, "series_uid": series_uid,
                                  "voxel": voxel, "created_by": self.read.reader, "created_at": stamp,
                                  "modified_by": self.read.reader, "modified_at": stamp, **fields,
                                  "tracking_uid": tracking_uid})
        self._check_whole_read({lesion.lesion_id: lesion}, {})
        added = self._write({}, {}, action="add lesion", new_lesion=lesion)
        assert added is not None
        self._remember(_Change("add lesion", {added.lesion_id: None}, {added.lesion_id: added}, {}, {}))
        return added.lesion_id

    def update_lesion(self, lesion_id: str, **fields) -> None:
        """Change fields of a lesion (site_id, side, subsite, extent, grades, comment, ...)."""
        self._require_draft()
        unknown = set(fields) - EDITABLE
        if unknown:
            raise CnoError(f"cannot edit {', '.join(sorted(unknown))} of a lesion")
        before = self._lesion(lesion_id)
        if "site_id" in fields and "side" not in fields and fields["site_id"] in self.taxonomy.sites \
                and not self.taxonomy.sites[fields["site_id"]].lateral:
            fields = {**fields, "side": None}  # a midline site has no side: the proposed side goes
        after = self._validated({**before.to_dict(), **fields, "modified_by": self.read.reader, "modified_at": now()})
        self._check_whole_read({lesion_id: after}, {})
        label = "edit " + ", ".join(sorted(fields))
        self._commit(_Change(label, {lesion_id: before}, {lesion_id: after}, {}, {}))

    def set_grade(self, lesion_id: str, item_id: str, value) -> None:
        """Grade one item of a lesion (an allowed value, ``"NA"``, or None to clear)."""
        grades = dict(self._lesion(lesion_id).grades)
        if value is None:
            grades.pop(item_id, None)
        else:
            grades[item_id] = value
        self.update_lesion(lesion_id, grades=grades)

    def delete_lesion(self, lesion_id: str) -> None:
        """Remove a lesion."""
        self._require_draft()
        before = self._lesion(lesion_id)
        rois = {r.roi_id: r for r in self.read.rois if r.lesion_id == lesion_id}  # its ROI goes with it
        outcome: dict = {}  # a persisting prior lesion deleted is unconfirmed again
        if self.read.followup is not None and before.tracking_uid in self.read.followup.outcomes:
            outcome = {before.tracking_uid: self.read.followup.outcomes[before.tracking_uid]}
        self._commit(_Change("delete lesion", {lesion_id: before}, {lesion_id: None}, {}, {},
                             rois_before=rois, rois_after=dict.fromkeys(rois),
                             outcomes_before=outcome, outcomes_after=dict.fromkeys(outcome)))

    def mark_unit(self, unit_id: str, mark: str | None) -> None:
        """Mark a bone unit "no_lesion" or "not_assessable" (None clears the mark)."""
        self._require_draft()
        self.taxonomy.unit_site(unit_id)
        if mark is not None and mark not in UNIT_MARKS:
            raise CnoError(f"a unit mark is one of {', '.join(UNIT_MARKS)}, not {mark!r}")
        if mark is not None and self._lesions_in(unit_id):
            raise CnoError(f"{self.taxonomy.unit_label(unit_id)} has lesions; delete them before marking it "
                           f"{'not assessable' if mark == UNIT_NOT_ASSESSABLE else 'without lesion'}")
        self._check_whole_read({}, {unit_id: mark})
        before = self.read.unit_marks.get(unit_id)
        self._commit(_Change(f"mark {unit_id}", {}, {}, {unit_id: before}, {unit_id: mark}))

    def remaining_units(self) -> list[str]:
        """Units not yet reviewed: neither a lesion placed in them nor a mark, in taxonomy order."""
        held = {u for u in self.taxonomy.unit_ids() if self._lesions_in(u)}
        return [u for u in self.taxonomy.unit_ids() if u not in held and u not in self.read.unit_marks]

    def mark_remaining(self, mark: str = UnitMark.NO_LESION) -> list[str]:
        """Mark every unit not yet reviewed (default: no lesion), as one change: one audit entry, one undo.

        Returns the units marked (none: nothing is written).
        """
        self._require_draft()
        if mark not in UNIT_MARKS:
            raise CnoError(f"a unit mark is one of {', '.join(UNIT_MARKS)}, not {mark!r}")
        units = self.remaining_units()
        if not units:
            return []
        after = {unit: str(mark) for unit in units}
        self._check_whole_read({}, after)
        self._commit(_Change(f"mark {counted(len(units), 'remaining unit')} {mark}", {}, {}, dict.fromkeys(units),
                             after))
        return units

    def set_unit_grade(self, unit_id: str, item_id: str, value) -> None:
        """Grade an item graded per bone unit (RAI-CROMRIS extent): confirm or change the proposal.

        ``value`` is a grade of the item, ``"NA"``, or None to go back to the
        grade the unit's lesions propose.

        Raises
        ------
        CnoError
            For a unit without lesions, an item graded per lesion, or a grade
            that the item does not have or that does not apply to the unit.
        """
        self._require_draft()
        site, _ = self.taxonomy.unit_site(unit_id)
        if not self._lesions_in(unit_id):
            raise CnoError(f"{self.taxonomy.unit_label(unit_id)} holds no lesion: place a lesion before grading the unit")
        if value is not None:
            self.scheme.check_unit_grade(item_id, value, site.unit_type)
        key = (unit_id, item_id)
        before = self.read.unit_grades.get(unit_id, {}).get(item_id)
        self._commit(_Change(f"grade {unit_id} {item_id}", {}, {}, {}, {}, {key: before}, {key: value}))

    def unit_grade(self, unit_id: str, item_id: str) -> tuple[object, bool]:
        """(grade, confirmed) of an item graded per unit: the reader's grade, or the lesions' proposal."""
        unit = self.scores().units.get(unit_id)
        if unit is None or item_id not in unit.items:
            return None, False
        return unit.items[item_id], item_id in self.read.unit_grades.get(unit_id, {})

    def add_roi(self, kind: str, plane: str, points_mm, series_uid: str) -> str:
        """Draw a measurement ROI (points in LPS mm); returns its id (R1, R2, ... never reused in a session)."""
        self._require_draft()
        taken = [_lesion_number(r.roi_id) for r in self.read.rois]
        taken += [_lesion_number(k) for c in self._undo + self._redo for k in {**c.rois_before, **c.rois_after}]
        roi = make_roi(roi_id=f"R{1 + max(taken, default=0)}", kind=kind, plane=plane, points_mm=points_mm,
                       series_uid=series_uid)
        self._commit(_Change("draw ROI", {}, {}, {}, {}, rois_before={roi.roi_id: None}, rois_after={roi.roi_id: roi}))
        return roi.roi_id

    def delete_roi(self, roi_id: str, stir=None) -> None:
        """Remove an ROI (undoable); the ratio of a lesion that loses its ROI or the muscle ROI is recomputed."""
        self._require_draft()
        self._roi(roi_id)
        self._commit_rois("delete ROI", {roi_id: None}, stir)

    def set_roi_role(self, roi_id: str, role: str, lesion_id: str | None = None, stir=None) -> None:
        """Make an ROI the read's muscle reference, a lesion's ROI, or a plain measurement, in one undo step.

        The muscle ROI that this one replaces becomes a measurement, as does
        a lesion's earlier ROI. Each lesion's STIR lesion:muscle ratio is then
        recomputed on ``stir`` (a :class:`~cno_annotate.io.volume.Volume` of
        the case's STIR series; without one, changed ratios are cleared).
        """
        self._require_draft()
        roi = self._roi(roi_id)
        if lesion_id is not None:
            self._lesion(lesion_id)
        changed = {roi_id: roi_from_fields({**roi.to_dict(), "role": role, "lesion_id": lesion_id})}
        for other in self.read.rois:
            replaced = (role == RoiRole.MUSCLE and other.role == RoiRole.MUSCLE) or (
                role == RoiRole.LESION and other.lesion_id == lesion_id)
            if other.roi_id != roi_id and replaced:
                changed[other.roi_id] = dataclasses.replace(other, role=RoiRole.MEASUREMENT, lesion_id=None)
        self._commit_rois(f"ROI {roi_id} {role}", changed, stir)

    def _commit_rois(self, label: str, changed: dict, stir) -> None:
        """One change of ROIs, with the lesion ratios it moves."""
        before = {k: next((r for r in self.read.rois if r.roi_id == k), None) for k in changed}
        rois = [r for r in [changed.get(r.roi_id, r) for r in self.read.rois] if r is not None]
        rois += [r for k, r in changed.items() if before[k] is None and r is not None]
        lesions_before, lesions_after = {}, {}
        for lesion_id, ratio in _ratios(self.read, rois, stir).items():
            lesion = self._lesion(lesion_id)
            if lesion.stir_muscle_ratio != ratio:
                lesions_before[lesion_id] = lesion
                lesions_after[lesion_id] = self._validated({**lesion.to_dict(), "stir_muscle_ratio": ratio})
        after = dataclasses.replace(self.read, rois=rois)
        problems = [p for p in read_problems(after, self.taxonomy) if p.path.startswith(".rois")]
        if problems:
            raise CnoError(problems[0].reason)
        self._commit(_Change(label, lesions_before, lesions_after, {}, {}, rois_before=before, rois_after=changed))

    def _roi(self, roi_id: str) -> Roi:
        try:
            return self.read.roi(roi_id)
        except KeyError:
            raise CnoError(f"read {self.read.read_id} has no ROI {roi_id!r}") from None

    def follow_up(self, prior_read_id: str) -> None:
        """Make this read a follow-up of ``prior_read_id`` (before any outcome is recorded).

        Raises
        ------
        CnoError
            If the prior read is not a submitted read of the same reader of another study,
            or this read already follows another read.
        """
        self._require_draft()
        prior = load_read(self.store, prior_read_id)
        if prior.reader != self.read.reader or prior.study_uid == self.read.study_uid:
            raise CnoError(f"read {prior_read_id} is not a read of {self.read.reader} of an earlier study")
        if prior.status != ReadStatus.SUBMITTED:
            raise CnoError(f"read {prior_read_id} is a draft: submit the prior read before following it up")
        if self.read.reading_study is not None:
            _check_design_allows(self.store, self.read, prior)
        current = self.read.followup
        if current is not None:
            if current.prior_read_id == prior_read_id:
                return
            raise CnoError(f"read {self.read.read_id} already follows read {current.prior_read_id}")
        if self.stored:
            self._apply(rows.Edit(self.read.read_id, self.read.revision, now(), self.actor, "follow-up",
                                  after={"prior_read": prior_read_id}, prior_read=prior_read_id))
        else:  # showing the prior is no change: the link is kept here and stored with the read's first change
            self._pending_prior = prior_read_id
            self.read = dataclasses.replace(self.read, followup=Followup(prior_read_id))
        self.changed.emit(ReadChange(ReadChangeKind.EDIT, "follow up"))

    def set_outcome(self, tracking_uid: str, status: str | None, lesion: dict | None = None) -> str | None:
        """Record what became of a prior lesion: persisting, resolved, not assessable (None: unconfirmed again).

        Persisting needs ``lesion``: the fields of the lesion on this study
        (position, series_uid, voxel, and any of site, side, grades ...); it is
        added with the prior lesion's tracking UID, in the same change (one
        undo step). Changing a persisting lesion to another outcome removes it.
        Returns the id of the lesion added, if any.
        """
        self._require_draft()
        if self.read.followup is None:
            raise CnoError(f"read {self.read.read_id} is not a follow-up read (choose the prior read first)")
        status = None if status is None else FollowupStatus(status)
        before = self.read.followup.outcomes.get(tracking_uid)
        carried = [l for l in self.read.lesions if l.tracking_uid == tracking_uid]
        lesions_before = {l.lesion_id: l for l in carried}
        lesions_after: dict = {l.lesion_id: None for l in carried}
        new_lesion = None
        if status == FollowupStatus.PERSISTING:
            if carried:
                lesions_after = {}  # already persisting: nothing to add
            else:
                if lesion is None:
                    raise CnoError("a persisting lesion needs its position on this study")
                unknown = set(lesion) - EDITABLE
                if unknown:
                    raise CnoError(f"cannot set {', '.join(sorted(unknown))} of a lesion")
                stamp = now()
                new_lesion = self._validated({"lesion_id": "L0", "created_by": self.read.reader, "created_at": stamp,
                                              "modified_by": self.read.reader, "modified_at": stamp, **lesion,
                                              "tracking_uid": tracking_uid})
        label = f"{'unconfirm' if status is None else status.value.replace('_', ' ')} prior lesion"
        if new_lesion is not None:
            added = self._write({}, {}, action=label, new_lesion=new_lesion, outcomes={tracking_uid: status})
            assert added is not None
            self._remember(_Change(label, {added.lesion_id: None}, {added.lesion_id: added}, {}, {},
                                   outcomes_before={tracking_uid: before}, outcomes_after={tracking_uid: status}))
            return added.lesion_id
        self._commit(_Change(label, lesions_before, lesions_after, {}, {},
                             outcomes_before={tracking_uid: before}, outcomes_after={tracking_uid: status}))
        return None

    def submit(self) -> None:
        """Submit the read: it is locked from then on (the database refuses later changes).

        A follow-up read is submitted only once every prior lesion has an outcome.
        """
        self._require_draft()
        if self.read.followup is not None:
            prior = load_read(self.store, self.read.followup.prior_read_id)
            open_ = [l.lesion_id for l in prior.lesions if l.tracking_uid not in self.read.followup.outcomes]
            if open_:
                raise CnoError(f"prior lesions not yet confirmed as persisting, resolved or not assessable: "
                               f"{', '.join(open_)}")
        if self.scores().unplaced_lesions:
            raise CnoError(f"lesions without a site or side: {', '.join(self.scores().unplaced_lesions)}")
        check_read(dataclasses.replace(self.read, status=ReadStatus.SUBMITTED), self.taxonomy)
        self._apply(rows.Edit(self.read.read_id, self.read.revision, now(), self.actor, "submit", before="draft",
                              after="submitted", extra={"total": self.scores().total}, submit=True))
        self._undo.clear()
        self._redo.clear()
        self.changed.emit(ReadChange(ReadChangeKind.SUBMIT))

    def undo(self) -> None:
        """Undo the last change (a no-op when there is none)."""
        if not self._undo:
            return
        self._require_draft()
        change = self._undo[-1]
        self._write(change.lesions_before, change.marks_before, action=f"undo {change.label}",
                    before=(change.lesions_after, change.marks_after), unit_grades=change.grades_before,
                    rois=(change.rois_before, change.rois_after), outcomes=change.outcomes_before)
        self._redo.append(self._undo.pop())
        self.changed.emit(ReadChange(ReadChangeKind.UNDO, change.label))

    def redo(self) -> None:
        """Redo the last undone change."""
        if not self._redo:
            return
        self._require_draft()
        change = self._redo[-1]
        self._write(change.lesions_after, change.marks_after, action=f"redo {change.label}",
                    before=(change.lesions_before, change.marks_before), unit_grades=change.grades_after,
                    rois=(change.rois_after, change.rois_before), outcomes=change.outcomes_after)
        self._undo.append(self._redo.pop())
        self.changed.emit(ReadChange(ReadChangeKind.REDO, change.label))

    # -- internals ---------------------------------------------------------------------------
    def _require_draft(self) -> None:
        if self.read.status != "draft":
            raise CnoError(f"read {self.read.read_id} is submitted and locked")

    def _lesion(self, lesion_id: str) -> Lesion:
        try:
            return self.read.lesion(lesion_id)
        except KeyError:
            raise CnoError(f"read {self.read.read_id} has no lesion {lesion_id!r}") from None

    def _lesions_in(self, unit_id: str) -> list[str]:
        out = []
        for lesion in self.read.lesions:
            if lesion.site_id and (lesion.side or not self.taxonomy.site(lesion.site_id).lateral):
                if self.taxonomy.unit_id(lesion.site_id, lesion.side) == unit_id:
                    out.append(lesion.lesion_id)
        return out

    def _validated(self, fields: dict) -> Lesion:
        """A lesion built through the one validator (the same as ``read import``)."""
        return lesion_from_fields(self.taxonomy, self.scheme, fields)

    def _check_whole_read(self, lesions: dict, marks: dict) -> None:
        """Refuse a change that would break a whole-read rule the read keeps now."""
        changed = {**{l.lesion_id: l for l in self.read.lesions}, **lesions}
        new_marks = {**self.read.unit_marks, **marks}
        after = dataclasses.replace(self.read, lesions=[l for l in changed.values() if l is not None],
                                    unit_marks={u: m for u, m in new_marks.items() if m is not None})
        known = {str(p) for p in read_problems(self.read, self.taxonomy)}
        new = [p for p in read_problems(after, self.taxonomy) if str(p) not in known]
        if new:
            raise CnoError(new[0].reason)

    def _commit(self, change: _Change) -> None:
        self._write(change.lesions_after, change.marks_after, action=change.label,
                    before=(change.lesions_before, change.marks_before), unit_grades=change.grades_after,
                    rois=(change.rois_after, change.rois_before), outcomes=change.outcomes_after)
        self._remember(change)

    def _remember(self, change: _Change) -> None:
        self._undo.append(change)
        self._redo.clear()
        self.changed.emit(ReadChange(ReadChangeKind.EDIT, change.label))

    @contextmanager
    def _refusals_reload(self):
        """A refused change (conflict, lock) reloads the read, then the refusal goes on to the caller."""
        self._sent_with_refusal = None
        try:
            yield
        except (ReadConflict, ReadLocked):
            sent, self._sent_with_refusal = self._sent_with_refusal, None
            self.reload(sent)
            raise

    def _creation(self) -> rows.Creation | None:
        """The first change makes the read: checked again (inside the write) as when it was opened; None if stored."""
        if self.stored:
            return None
        if self.read.reading_study is not None:
            problems = reference_problems(self.store, [self.read])
            if problems:
                raise CnoError(problems[0].reason)
        return _creation(self.read, self._unsaved_seconds)

    def _apply(self, edit: rows.Edit) -> None:
        """Write one change (making the read first if it is new), then hold the read as stored.

        One statement on a server (one round trip), one transaction in SQLite.

        Raises
        ------
        ReadConflict, ReadLocked
            The read changed or was submitted elsewhere; the session reloads it.
        """
        edit = self._with_pending_link(edit)
        server = getattr(self.store.db, "server_edits", False)
        writing = self.store.single_statement() if self.stored or server else self.store.transaction()
        with self._refusals_reload():
            with guarded(self.store, edit.read_id), writing as db:
                creation = self._creation()
                result = rows.apply_edit(db, edit, creation)
                if isinstance(result, rows.Refusal):
                    self._sent_with_refusal = result.stored
                    raise self._refusal(result.current)
        if creation is not None:
            self._unsaved_seconds = 0.0
        self._pending_prior = None
        self._loaded(result)

    def _with_pending_link(self, edit: rows.Edit) -> rows.Edit:
        """The read's first change carries the follow-up link chosen before it existed (same edit, same audit entry)."""
        if self._pending_prior is None or self.stored or edit.prior_read is not None:
            return edit
        after = {**edit.after, "prior_read": self._pending_prior} if isinstance(edit.after, dict) else edit.after
        return dataclasses.replace(edit, prior_read=self._pending_prior, after=after)

    def _refusal(self, row: rows.ReadRevision | None) -> CnoError:
        """Why the revision-checked write matched no row: the stored read is ``row`` (None: gone)."""
        read_id = self.read.read_id
        if row is None:
            return ReadConflict(f"read {read_id} is no longer in the store; your change was not saved")
        if row.status != ReadStatus.DRAFT:
            return ReadLocked(f"read {read_id} was submitted in another window or program and is locked; "
                              f"your change was not saved")
        return ReadConflict(f"read {read_id} was changed in another window or program (revision {row.revision}, "
                            f"this window had {self.read.revision}); your change was not saved and the read was "
                            f"reloaded: check it and repeat the change")

    def _write(self, lesions: dict, marks: dict, action: str = "change", before: tuple = ({}, {}),
               new_lesion: Lesion | None = None, unit_grades: dict | None = None,
               rois: tuple[dict, dict] = ({}, {}), outcomes: dict | None = None) -> Lesion | None:
        """Apply lesion, mark and unit-grade states, with their audit entry, in one transaction; then in memory.

        The write goes through only if the stored read is still the draft at
        the revision this session holds (checked in the UPDATE that bumps it).
        A ``new_lesion`` gets the read's next lesion number (the one this
        session's copy holds, which the store checks while taking it); it is
        returned with its id. The session then holds the read as stored.

        Raises
        ------
        ReadConflict, ReadLocked
            The read changed or was submitted elsewhere; the session reloads it.
        """
        read_id = self.read.read_id
        if new_lesion is not None:
            new_lesion = dataclasses.replace(new_lesion, lesion_id=f"L{self._lesion_counter()}")
            lesions, before = {new_lesion.lesion_id: new_lesion}, ({new_lesion.lesion_id: None}, {})
        after = _state_json(lesions, marks)
        if outcomes:
            after["followup"] = {u: (None if v is None else str(v)) for u, v in outcomes.items()}
        if rois[0]:
            after["rois"] = {k: (v.to_dict() if v is not None else None) for k, v in rois[0].items()}
        if unit_grades:
            after["unit_grades"] = {f"{u} {i}": g for (u, i), g in unit_grades.items()}
        edit = rows.Edit(
            read_id, self.read.revision, now(), self.actor, action,
            lesions=_lesion_changes(lesions, before[0], {l.lesion_id: n for n, l in enumerate(self.read.lesions)}),
            unit_marks=tuple(rows.PartChange((u, ), None if m is None else str(m), before[1].get(u) is not None)
                             for u, m in marks.items()),
            unit_grades=tuple(rows.PartChange(k, None if g is None else json.dumps(g))
                              for k, g in (unit_grades or {}).items()),
            rois=_roi_changes(rois[0], {r.roi_id: n for n, r in enumerate(self.read.rois)}),
            outcomes=tuple(rows.PartChange((u, ), None if v is None else str(v)) for u, v in (outcomes or {}).items()),
            new_lesion=None if new_lesion is None else self._lesion_counter(),
            before=_state_json(*before), after=after)
        self._apply(edit)
        return new_lesion

    def _lesion_counter(self) -> int:
        """The number the read's next lesion takes (looked up once if this session was given a read without it)."""
        if self._next_lesion is None:
            row = rows.read_row(self.store.db, self.read.read_id)
            self._next_lesion = 1 if row is None else row.next_lesion
        return self._next_lesion

    def _loaded(self, stored: rows.StoredRead) -> None:
        """Hold the read as the store holds it now."""
        self.read = read_from_stored(stored)
        self._next_lesion = stored.row.next_lesion
        self.stored = True


def _load_stored(store: Store, read_id: str) -> rows.StoredRead:
    """A stored read; a one-line error if the store has no such read."""
    stored = rows.stored_read(store.db, read_id)
    if stored is None:
        raise CnoError(f"no read {read_id!r} in the store at {store.root}")
    return stored


def _lesion_changes(lesions: dict, lesions_before: dict, ordinals: dict) -> tuple[rows.PartChange, ...]:
    """Lesion states as rows to write: a lesion without a row before is inserted at its place."""
    return tuple(rows.PartChange((lesion_id, ), None if lesion is None else json.dumps(lesion.to_dict()),
                            existed=lesions_before.get(lesion_id) is not None,
                            ordinal=ordinals.get(lesion_id, _lesion_number(lesion_id)))
                 for lesion_id, lesion in lesions.items())


def _roi_changes(rois: dict, ordinals: dict) -> tuple[rows.PartChange, ...]:
    """ROI states as rows to write (every changed row is replaced)."""
    return tuple(rows.PartChange((roi_id, ), None if roi is None else json.dumps(roi.to_dict()),
                            ordinal=ordinals.get(roi_id, _lesion_number(roi_id)),
                            role="" if roi is None else str(roi.role))
                 for roi_id, roi in rois.items())


def _ratios(read: Read, rois: list[Roi], stir) -> dict[str, float | None]:
    """The STIR lesion:muscle ratio of every lesion whose ratio the ROIs ``rois`` may change.

    A lesion with an ROI gets lesion mean / muscle mean on ``stir`` (None
    without a STIR volume or a muscle ROI); a lesion that had a ratio and
    has no ROI any more gets None.
    """
    from cno_annotate.display.measure import signal_ratio

    muscle = next((r for r in rois if r.role == RoiRole.MUSCLE), None)
    by_lesion = {r.lesion_id: r for r in rois if r.role == RoiRole.LESION}
    out: dict[str, float | None] = {}
    for lesion in read.lesions:
        roi = by_lesion.get(lesion.lesion_id)
        if roi is None:
            if lesion.stir_muscle_ratio is not None:
                out[lesion.lesion_id] = None
            continue
        ratio = None if (stir is None or muscle is None) else signal_ratio(roi, muscle, stir)
        out[lesion.lesion_id] = None if ratio is None else round(ratio, 4)
    return out


def _check_design_allows(store: Store, read: Read, prior: Read) -> None:
    """In a reading study, a prior read is carried forward only where the design shows the prior visit."""
    from cno_annotate import reading_study as rs

    study = rs.get(store, read.reading_study or "")
    if study.design != rs.ReadingDesign.PAIRED_CHRONOLOGICAL:
        raise CnoError(f"reading study {study.name} is {study.design.value}: the prior read is not carried forward")
    code = next((c.reading_code for c in rs.cases(store, study.name) if c.study_uid == read.study_uid), None)
    allowed = {c["study_uid"] for c in rs.comparison_cases(store, study.name, code)} if code else set()
    if prior.reading_study != study.name or prior.study_uid not in allowed:
        raise CnoError(f"read {prior.read_id} is not a read of an earlier visit of this case's patient in "
                       f"{study.name}")


def _latest_read_id(store: Store, study_uid: str, reader: str, reading_study: str | None, role: str) -> str | None:
    """The newest version of the reader's read of a study in this reading study and role, if any."""
    rows = [r for r in list_reads(store, study_uid, reader, reading_study, latest_only=True)
            if r["reading_study"] == reading_study and r["role"] == role]
    return rows[-1]["read_id"] if rows else None
