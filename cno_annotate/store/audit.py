"""The audit trail: every change appended with who, when and what, hash-chained.

Each entry's hash is the SHA-256 of the hash of the entry it follows and the
entry's own canonical JSON. Since store schema 22 the entries about one object
(``read:<id>``, ``reading-study:<name>``, ``file:<path>`` ...) form that
object's own chain, so writers of different reads never wait on one another:
an entry follows the object's previous entry (``prev_seq``, ``prev_hash``),
and the first entry about an object follows the *spine*, the chain of every
object's first entry (and of every entry written before schema 22, which
were one chain). The end of each object's chain is kept in ``audit_heads``
and the end of the spine in ``audit_head``. Editing, deleting, inserting,
reordering or moving an entry to another object breaks a chain; deleting an
object's whole chain breaks the spine; cutting entries off the end of a chain
is caught by its recorded end. Entries are written in the same transaction as
the change they record.

An entry about a read or a reading study also records the content hash of
that object's whole state after the change (``state``): the read's row, its
lesions and unit marks; the reading study's settings, cases, codes, readers,
worklists and the patients and studies behind its cases. :func:`verify`
checks the chains and then the data: every read and reading study in the
store must equal the state its latest entry recorded, so a change made to
the database outside the program is found. An *anchor* (a digest of the ends
of every chain, kept by the coordinator outside the store, see
:func:`anchor`) catches chains that were rewritten and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field

from cno_annotate.errors import CnoError
from cno_annotate.store.db import now
from cno_annotate.wording import counted

GENESIS = "0" * 64
#: ``append`` without ``state_before``: nothing was written yet, so the object is checked as it is now.
CHECK_NOW = object()


def _digest(prev_hash: str, seq: int, at: str, actor: str, action: str, entity: str, detail: str,
            prev_seq: int | None = None) -> str:
    """An entry's hash. Entries written before store schema 22 (``prev_seq`` None) hash without ``prev_seq``."""
    fields = [seq, at, actor, action, entity, detail] if prev_seq is None else \
        [seq, prev_seq, at, actor, action, entity, detail]
    body = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


def append(db: sqlite3.Connection, actor: str, action: str, entity: str, before=None, after=None,
           state_before=CHECK_NOW, **extra) -> int:
    """Append an entry inside the caller's transaction; returns its sequence number.

    The entry goes on the chain of ``entity`` (its first one on the spine,
    see the module's description).

    Parameters
    ----------
    actor : str
        Who: a reader id, or ``coordinator``.
    action : str
        What: ``create``, ``change``, ``delete``, ``submit``, ``export``, ...
    entity : str
        Which object, e.g. ``read:<id>``, ``lesion:<read>/<lesion>``.
    before, after : JSON-serialisable, optional
        The state before and after the change.
    state_before : str or None, optional
        For a read or reading study: the content hash before the change, as
        :func:`require_unchanged` returned it at the start of the transaction.
        Left out, the entry writes nothing to the object and it is checked now.

    Raises
    ------
    CnoError
        If the read or reading study was changed outside the program since its
        latest entry (the caller's transaction is then rolled back).
    """
    kind, _, key = entity.partition(":")
    if kind in STATES:
        if state_before is CHECK_NOW:
            state_before = require_unchanged(db, entity)
        extra["state_before"] = state_before
        extra["state"] = STATES[kind](db, key)
    detail = json.dumps({"before": before, "after": after, **extra}, ensure_ascii=False, sort_keys=True)
    if getattr(db, "audit_by_server", False):
        # PostgreSQL: the server numbers, stamps, chains and writes the entry (the caller's login is the
        # actor it accepts), in this transaction; nobody may change it afterwards.
        return int(db.execute("SELECT cno_audit_append(?, ?, ?, ?)", (actor, action, entity, detail)).fetchone()[0])
    if not _chained(db):
        return _append_to_one_chain(db, actor, action, entity, detail)
    head = db.execute("SELECT seq, hash FROM audit_heads WHERE entity = ?", (entity,)).fetchone()
    opening = head is None
    if opening:  # the object's first entry follows the spine
        head = db.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone() or (0, GENESIS)
    prev_seq, prev = int(head[0]), str(head[1])
    seq = int(db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM audit").fetchone()[0])
    at = now()
    digest = _digest(prev, seq, at, actor, action, entity, detail, prev_seq)
    db.execute("INSERT INTO audit (seq, at, actor, action, entity, detail, prev_hash, hash, prev_seq) "
               "VALUES (?,?,?,?,?,?,?,?,?)", (seq, at, actor, action, entity, detail, prev, digest, prev_seq))
    db.execute("INSERT INTO audit_heads VALUES (?, ?, ?) ON CONFLICT (entity) DO UPDATE SET seq = excluded.seq, "
               "hash = excluded.hash", (entity, seq, digest))
    if opening:
        db.execute("INSERT INTO audit_head VALUES (1, ?, ?) ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, "
                   "hash = excluded.hash", (seq, digest))
    return seq


def _chained(db: sqlite3.Connection) -> bool:
    """Whether the store keeps a chain per object (schema 22 on); a store being migrated from before has one chain.

    On a server the program writes entries itself only while migrating, before the server writes them.
    """
    if getattr(db, "dialect", "sqlite") != "sqlite":
        return False
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_heads'").fetchone() is not None


def _append_to_one_chain(db: sqlite3.Connection, actor: str, action: str, entity: str, detail: str) -> int:
    """An entry as stores before schema 22 chained them: after the store's latest entry (while migrating)."""
    row = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS)
    at = now()
    digest = _digest(prev, seq, at, actor, action, entity, detail)
    db.execute("INSERT INTO audit (seq, at, actor, action, entity, detail, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?)",
               (seq, at, actor, action, entity, detail, prev, digest))
    db.execute("INSERT INTO audit_head VALUES (1, ?, ?) ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, "
               "hash = excluded.hash", (seq, digest))
    return seq


# -- the state of audited objects -------------------------------------------------------
_READ_COLUMNS = ("read_id", "study_uid", "reader", "scheme_id", "scheme_version", "taxonomy", "status", "started",
                 "submitted", "modified", "revision", "next_lesion", "reading_study", "role", "version",
                 "supersedes", "reason")


_STUDY_COLUMNS = ("name", "scheme_id", "scheme_version", "seed", "show_age_sex", "reveal_timepoints", "created",
                  "created_by")


def _hash(value) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_state(db: sqlite3.Connection, read_id: str, with_rois: bool = True) -> str | None:
    """Content hash of a read as stored (row, lesions, marks, grades, ROIs, follow-up); None if there is none.

    A read without ROIs, or that follows no prior read, hashes as it did before
    store schema 11 or 13 (that part is left out), so audited states recorded earlier hold.
    ``with_rois=False`` gives the hash store schema 11 recorded, which left ROIs out.
    """
    cursor = db.execute("SELECT * FROM reads WHERE read_id = ?", (read_id,))
    found = cursor.fetchone()
    if found is None:
        return None
    fields = dict(zip([c[0] for c in cursor.description], found, strict=True))
    row = [fields[c] for c in _READ_COLUMNS]
    lesions = db.execute("SELECT lesion_id, ordinal, data FROM lesions WHERE read_id = ? ORDER BY lesion_id",
                         (read_id,)).fetchall()
    marks = db.execute("SELECT unit_id, mark FROM unit_marks WHERE read_id = ? ORDER BY unit_id",
                       (read_id,)).fetchall()
    grades = db.execute("SELECT unit_id, item_id, grade FROM unit_grades WHERE read_id = ? ORDER BY unit_id, item_id",
                        (read_id,)).fetchall()
    parts = [row, [list(r) for r in lesions], [list(r) for r in marks], [list(r) for r in grades]]
    rois = db.execute("SELECT roi_id, ordinal, data, role FROM rois WHERE read_id = ? ORDER BY roi_id",
                      (read_id,)).fetchall() if with_rois and _has_rois(db) else []
    if rois:  # only then: the state of a read without ROIs keeps the hash it was audited with before ROIs existed
        parts.append([list(r) for r in rois])
    if "prior_read" in fields:  # store schema 13 on: the follow-up table exists too
        followup = _followup_state(db, read_id, fields["prior_read"])
        if followup is not None:  # only follow-up reads: the state of every other read hashes as before
            parts.append(followup)
    return _hash(parts)


def _has_rois(db: sqlite3.Connection) -> bool:
    """Whether the store has the ROI table yet (an older SQLite store being migrated may not)."""
    if getattr(db, "dialect", "sqlite") != "sqlite":
        return True  # server stores start at a schema that has it
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'rois'").fetchone() is not None


def _followup_state(db: sqlite3.Connection, read_id: str, prior: str | None) -> list | None:
    """A follow-up read's prior read and outcomes (None for a read that follows no prior one)."""
    outcomes = db.execute("SELECT tracking_uid, status FROM followup_outcomes WHERE read_id = ? "
                          "ORDER BY tracking_uid", (read_id,)).fetchall()
    if prior is None and not outcomes:
        return None
    return [prior, [list(r) for r in outcomes]]


def reading_study_state(db: sqlite3.Connection, name: str) -> str | None:
    """Content hash of a reading study: settings, cases and codes, the patients behind them, readers, worklists."""
    cursor = db.execute("SELECT * FROM reading_studies WHERE name = ?", (name,))
    found = cursor.fetchone()
    if found is None:
        return None
    fields = dict(zip([c[0] for c in cursor.description], found, strict=True))
    row = [fields[c] for c in _STUDY_COLUMNS]
    cases = db.execute(
        """
        SELECT c.reading_code, c.study_uid, c.patient_code, c.timepoint, s.study_date,
               p.patient_id, p.patient_name, p.birth_date, p.sex
        FROM rs_cases c LEFT JOIN studies s USING (study_uid) LEFT JOIN patients p USING (patient_key)
        WHERE c.reading_study = ? ORDER BY c.reading_code
        """, (name,)).fetchall()
    readers = db.execute("SELECT reader, role FROM rs_readers WHERE reading_study = ? ORDER BY reader",
                         (name,)).fetchall()
    worklists = db.execute("SELECT reader, position, reading_code FROM rs_worklists WHERE reading_study = ? "
                           "ORDER BY reader, position", (name,)).fetchall()
    parts = [row] + [[list(r) for r in rows] for rows in (cases, readers, worklists)]
    design = fields.get("design")  # store schema 14 on
    if design not in (None, "unpaired-blinded"):  # the default design hashes as before schema 14
        parts.append(design)
    return _hash(parts)


#: Entity kinds whose state every entry records, and how to compute it.
STATES: dict[str, Callable[[sqlite3.Connection, str], str | None]] = {"read": read_state, "reading-study": reading_study_state}
_TABLES = {"read": "SELECT read_id FROM reads", "reading-study": "SELECT name FROM reading_studies"}
_NAMES = {"read": "read", "reading-study": "reading study"}
_LOCKED_ROWS = {"read": ("reads", "read_id"), "reading-study": ("reading_studies", "name")}


def audited_state(db: sqlite3.Connection, entity: str) -> str | None:
    """The state the entity's latest entry recorded (None: no entry recorded one)."""
    # The latest entry nearly always records one (all since migration 7): read it alone, not the object's history.
    latest = db.execute("SELECT detail FROM audit WHERE entity = ? ORDER BY seq DESC LIMIT 1", (entity,)).fetchone()
    if latest is None:
        return None
    recorded = json.loads(latest[0])
    if "state" in recorded:
        return recorded["state"]
    for (detail,) in db.execute("SELECT detail FROM audit WHERE entity = ? ORDER BY seq DESC", (entity,)):
        recorded = json.loads(detail)
        if "state" in recorded:
            return recorded["state"]
    return None


def require_unchanged(db: sqlite3.Connection, entity: str) -> str | None:
    """The entity's current state, after checking it is the state its latest entry recorded.

    Called inside the transaction of a change, before anything is written, so
    that a change made to the database outside the program is not absorbed
    (and hidden) by the next audited change.

    Raises
    ------
    CnoError
        If the stored object differs from its audited state.
    """
    kind, _, key = entity.partition(":")
    if hasattr(db, "lock_row"):  # a server: nobody else changes the object until this transaction ends
        db.lock_row(*_LOCKED_ROWS[kind], key)
    current = STATES[kind](db, key)
    if current != audited_state(db, entity):
        raise CnoError(f"{_NAMES[kind]} {key} was changed outside the program since its last audited change; "
                       f"run cno-annotate store check")
    return current


# -- checking ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verification:
    """The result of checking the chain and the data against it.

    ``broken_at`` is the first bad entry (chain problems) or 0 (the data or
    the anchor disagree with an intact chain); ``problems`` lists every
    disagreement found, ``objects`` how many reads and reading studies were
    compared with their audited state.
    """

    entries: int
    broken_at: int | None
    reason: str
    objects: int = 0
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether the chain is intact and the data match it."""
        return self.broken_at is None


def verify(db: sqlite3.Connection, anchor_text: str | None = None) -> Verification:
    """Check the chain, then the data against it, then the anchor (if given).

    Parameters
    ----------
    anchor_text : str, optional
        An anchor printed earlier by :func:`anchor` (``cno-audit-anchor:SEQ:HASH``).

    Returns
    -------
    Verification
        The first broken entry, or every read / reading study whose stored
        content differs from its latest audited state.
    """
    chain = _verify_chain(db)
    if not chain.ok:
        return chain
    latest = _latest_states(db)
    problems = _gap_problems(db) + _data_problems(db, latest)
    objects = sum(len(db.execute(sql).fetchall()) for sql in _TABLES.values())
    if anchor_text is not None:
        problems += _anchor_problems(db, anchor_text)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return Verification(chain.entries, 0, problems[0] + more, objects, tuple(problems))
    anchored = ", anchor matches" if anchor_text is not None else ""
    return Verification(chain.entries, None, f"audit chain intact: {counted(chain.entries, 'entry', 'entries')}; "
                                             f"{counted(objects, 'read or reading study', 'reads and reading studies')} "
                                             f"{'matches its' if objects == 1 else 'match their'} audited state{anchored}",
                        objects)


@dataclass
class _Chains:
    """The chains as far as they were followed: the spine's end, each object's end, and the first break."""

    count: int = 0
    spine: tuple[int, str] = (0, GENESIS)
    spine_first: int = 0
    ends: dict[str, tuple[int, str]] = field(default_factory=dict)
    firsts: dict[str, int] = field(default_factory=dict)
    broken: Verification | None = None

    def follow(self, seq: int, at: str, actor: str, action: str, entity: str, detail: str, prev_hash: str,
               digest: str, prev_seq: int | None) -> Verification | None:
        """Check one entry against the end of the chain it must follow (entries come in ``seq`` order)."""
        self.count += 1
        chained = prev_seq is not None and entity in self.ends
        parent = self.ends[entity] if chained else self.spine
        if prev_seq is None:  # written before schema 22: on the spine, numbered one after another
            if seq != parent[0] + 1:
                return self._break(parent[0] + 1, f"entry {parent[0] + 1} is missing (next is {seq})")
        elif prev_seq > parent[0]:
            return self._break(prev_seq, f"entry {prev_seq} is missing (next is {seq})")
        elif prev_seq < parent[0]:
            return self._break(seq, f"entry {seq} does not follow entry {parent[0]} (it names entry {prev_seq})")
        if prev_hash != parent[1]:
            return self._break(seq, f"entry {seq} does not follow entry {parent[0]} (previous hash differs)")
        if _digest(prev_hash, seq, at, actor, action, entity, detail, prev_seq) != digest:
            return self._break(seq, f"entry {seq} was changed after it was written (hash differs)")
        if not chained:
            self.spine = (seq, digest)
            self.spine_first = self.spine_first or seq
        if prev_seq is not None:
            self.ends[entity] = (seq, digest)
            self.firsts.setdefault(entity, seq)
        return None

    def _break(self, seq: int, reason: str) -> Verification:
        self.broken = Verification(self.count, seq, reason)
        return self.broken

    def heads(self) -> list:
        """The end of the spine and of every object's chain, as one canonical list (what an anchor digests)."""
        return [["", *self.spine]] + [[entity, *end] for entity, end in sorted(self.ends.items())]


def _followed(db: sqlite3.Connection, upto: int | None = None) -> _Chains:
    """Follow every chain in the order the entries were written (up to entry ``upto``); stops at the first break."""
    chains = _Chains()
    sql = "SELECT seq, at, actor, action, entity, detail, prev_hash, hash, prev_seq FROM audit"
    rows = db.execute(sql + " ORDER BY seq") if upto is None else \
        db.execute(sql + " WHERE seq <= ? ORDER BY seq", (upto,))
    for row in rows:
        if chains.follow(*row) is not None:
            break
    return chains


def object_chain_problem(db: sqlite3.Connection, entity: str, check_end: bool = True) -> str | None:
    """Why the chain of one object's entries does not verify (None: it does), without following the whole trail.

    Each entry's hash is recomputed; each entry on the object's chain must follow the one before it (``prev_seq``,
    ``prev_hash``); its first entry, the spine entry it names (where this login may see it); with ``check_end``
    (a login that may read ``audit_heads``), its last entry must be the recorded end of the chain.
    """
    rows = db.execute("SELECT seq, at, actor, action, entity, detail, prev_hash, hash, prev_seq FROM audit "
                      "WHERE entity = ? ORDER BY seq", (entity,)).fetchall()
    last: tuple[int, str] | None = None  # the end of the object's own chain (entries since schema 22)
    for seq, at, actor, action, _, detail, prev_hash, digest, prev_seq in rows:
        if digest != _digest(prev_hash, seq, at, actor, action, entity, detail, prev_seq):
            return f"entry {seq} was changed after it was written (hash differs)"
        if prev_seq is None:
            continue  # written before schema 22: on the spine, which only audit verify follows whole
        if last is not None and (prev_seq, prev_hash) != last:
            return f"entry {seq} does not follow entry {last[0]} of its chain"
        if last is None and prev_seq > 0:  # the chain's first entry follows the spine
            parent = db.execute("SELECT hash FROM audit WHERE seq = ?", (prev_seq,)).fetchone()
            if parent is not None and parent[0] != prev_hash:
                return f"entry {seq} does not follow entry {prev_seq} (previous hash differs)"
        last = (int(seq), digest)
    if check_end and last is not None and _chained_anywhere(db):
        end = db.execute("SELECT seq, hash FROM audit_heads WHERE entity = ?", (entity,)).fetchone()
        if end is not None and (int(end[0]), end[1]) != last:
            return f"entry {end[0]} does not match the end of the chain (entries were removed or replaced)"
    return None


def _chained_anywhere(db: sqlite3.Connection) -> bool:
    """Whether the store records the end of each object's chain (schema 22 on, either backend)."""
    if getattr(db, "dialect", "sqlite") != "sqlite":
        return True
    return _chained(db)


def _verify_chain(db: sqlite3.Connection) -> Verification:
    """Recompute the chains; report the first entry that was edited, removed, inserted, reordered or moved."""
    chains = _followed(db)
    if chains.broken is not None:
        return chains.broken
    count = chains.count
    problems: list[tuple[int, str]] = []
    head = db.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
    if head is None and chains.spine_first:
        problems.append((chains.spine_first, "the recorded end of the chain is missing"))
    elif head is not None:
        problems += _end_problems((int(head[0]), head[1]), chains.spine)
    recorded = {entity: (int(seq), digest) for entity, seq, digest in
                db.execute("SELECT entity, seq, hash FROM audit_heads").fetchall()}
    for entity, end in chains.ends.items():
        if entity not in recorded:
            problems.append((chains.firsts[entity], f"the recorded end of the chain of {entity} is missing"))
        else:
            problems += _end_problems(recorded.pop(entity), end)
    for entity, (seq, _) in recorded.items():
        problems.append((seq, f"entry {seq} is missing (the whole chain of {entity} was removed)"))
    if problems:
        seq, reason = min(problems)
        return Verification(count, seq, reason)
    return Verification(count, None, f"audit chain intact: {counted(count, 'entry', 'entries')}")


def _end_problems(recorded: tuple[int, str], end: tuple[int, str]) -> list[tuple[int, str]]:
    """A chain's recorded end against the last entry found on it."""
    if recorded == end:
        return []
    if recorded[0] > end[0]:
        return [(recorded[0], f"entry {recorded[0]} is missing (the chain ends early)")]
    return [(recorded[0], f"entry {recorded[0]} does not match the recorded end of the chain")]


def _latest_states(db: sqlite3.Connection) -> dict[str, tuple[int, str | None]]:
    """entity -> (seq, state) of the latest entry that recorded a state."""
    latest: dict[str, tuple[int, str | None]] = {}
    for seq, entity, detail in db.execute("SELECT seq, entity, detail FROM audit ORDER BY seq"):
        if entity.partition(":")[0] in STATES:
            recorded = json.loads(detail)
            if "state" in recorded:
                latest[entity] = (seq, recorded["state"])
    return latest


def _gap_problems(db: sqlite3.Connection) -> list[str]:
    """Entries whose state before the change is not what the previous entry about the object left."""
    problems = []
    previous: dict[str, tuple[int, str | None]] = {}
    for seq, entity, detail in db.execute("SELECT seq, entity, detail FROM audit ORDER BY seq"):
        if entity.partition(":")[0] not in STATES:
            continue
        recorded = json.loads(detail)
        if "state_before" in recorded:
            last_seq, last_state = previous.get(entity, (0, None))
            if recorded["state_before"] != last_state:
                since = f"audit entry {last_seq}" if last_seq else "it first appeared"
                problems.append(f"{entity} was changed outside the program between {since} and entry {seq} "
                                f"(entry {seq} found a state that no entry recorded)")
        if "state" in recorded:
            previous[entity] = (seq, recorded["state"])
    return problems


def _data_problems(db: sqlite3.Connection, latest: dict[str, tuple[int, str | None]]) -> list[str]:
    problems = []
    present = {f"{kind}:{key}" for kind, sql in _TABLES.items() for (key,) in db.execute(sql).fetchall()}
    for entity in sorted(present | set(latest)):
        kind, _, key = entity.partition(":")
        current = STATES[kind](db, key)
        if entity not in latest:
            problems.append(f"{entity} is in the store but in no audit entry (added outside the program, or the "
                            f"trail was cut)")
        elif latest[entity][1] != current:
            seq, recorded = latest[entity]
            what = "was deleted" if current is None else ("was added" if recorded is None else "was changed")
            problems.append(f"{entity} {what} outside the program after audit entry {seq} (its content differs "
                            f"from the audited state)")
    return problems


# -- anchors ---------------------------------------------------------------------------------
ANCHOR_PREFIX = "cno-audit-anchor"


def anchor(db: sqlite3.Connection) -> str:
    """The ends of every chain as one line to keep outside the store (``cno-audit-anchor:SEQ:HASH``).

    SEQ is the newest entry; HASH the SHA-256 of the ends of the spine and of
    every object's chain as they were at that entry (or, on a store whose
    newest entry was written before schema 22, that entry's hash, which then
    covered every entry). On a server, entries still being written when the
    anchor is taken finish first, so none can later appear before SEQ.
    """
    cut = _cut(db)
    if cut == 0:
        return f"{ANCHOR_PREFIX}:0:{GENESIS}"
    return f"{ANCHOR_PREFIX}:{cut}:{_anchored_hash(db, cut)}"


def _cut(db: sqlite3.Connection) -> int:
    """The newest entry, once no entry before it can still be written."""
    if getattr(db, "dialect", "sqlite") != "sqlite" and db.execute(
            "SELECT to_regprocedure('cno_audit_cut()') IS NOT NULL").fetchone()[0]:
        return int(db.execute("SELECT cno_audit_cut()").fetchone()[0])
    return int(db.execute("SELECT COALESCE(MAX(seq), 0) FROM audit").fetchone()[0])


def _anchored_hash(db: sqlite3.Connection, seq: int) -> str | None:
    """What an anchor at entry ``seq`` holds (None: there is no such entry)."""
    row = db.execute("SELECT hash, prev_seq FROM audit WHERE seq = ?", (seq,)).fetchone()
    if row is None:
        return None
    if row[1] is None:  # written before schema 22: its hash covers every entry before it
        return str(row[0])
    return _hash(_followed(db, seq).heads())


def parse_anchor(text: str) -> tuple[int, str]:
    """(seq, hash) of an anchor line.

    Raises
    ------
    CnoError
        If the text is not an anchor.
    """
    parts = text.strip().split(":")
    if len(parts) != 3 or parts[0] != ANCHOR_PREFIX or not parts[1].isdigit() or len(parts[2]) != 64:
        raise CnoError(f"not an audit anchor: {text.strip()[:80]!r} (expected {ANCHOR_PREFIX}:SEQ:HASH, as "
                       f"printed by 'cno-annotate audit anchor')")
    return int(parts[1]), parts[2]


def _anchor_problems(db: sqlite3.Connection, text: str) -> list[str]:
    seq, digest = parse_anchor(text)
    if seq == 0:
        return []
    found = _anchored_hash(db, seq)
    if found is None:
        return [f"the anchored entry {seq} is not in the chain (entries were removed)"]
    if found != digest:
        return [f"the trail up to entry {seq} differs from the anchor kept outside the store: the trail was rewritten"]
    return []


def entries(db: sqlite3.Connection, last: int = 20) -> list[dict]:
    """The ``last`` newest entries (20 by default), oldest first."""
    rows = db.execute("SELECT seq, at, actor, action, entity, detail FROM audit ORDER BY seq DESC LIMIT ?", (last,))
    out = [dict(zip(("seq", "at", "actor", "action", "entity", "detail"), r)) for r in rows]
    for entry in out:
        entry["detail"] = json.loads(entry["detail"])
    return out[::-1]


def exported_files(db: sqlite3.Connection, action: str) -> set[str]:
    """Every file path that audited exports with this ``action`` (``report``) recorded writing."""
    files: set[str] = set()
    for (detail,) in db.execute("SELECT detail FROM audit WHERE action = ?", (action,)):
        after = (json.loads(detail) or {}).get("after") or {}
        if isinstance(after, dict) and isinstance(after.get("files"), list):
            files.update(f for f in after["files"] if isinstance(f, str))
    return files
