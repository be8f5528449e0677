"""Blinded multi-reader reading studies.

A reading study groups cases (studies of the store), readers and a scoring
scheme. Each case gets a reading code (``CNO-0007``), which is all a reader
ever sees of it; each reader reads the cases in a seeded random order of their
own. Whether readers see age and sex, and whether they learn that two cases
are timepoints of one patient, are settings of the study (both off by
default). Every change is written to the audit trail.

The study's :class:`ReadingDesign`, fixed once reading starts (the database
refuses a change after the first read), says how the timepoints of one patient
are read: unpaired and blinded (the default: each timepoint a separate case
in random order, no prior shown), paired chronological (the prior is shown
and the order is known), or paired with hidden order (the visits are shown
side by side as A and B; which is earlier is never shown to the reader).
"""

from __future__ import annotations

import random
import unicodedata
from collections.abc import Mapping, Sequence

from cno_annotate.annotation.csv_export import FORMULA_START
from cno_annotate.annotation.documents import document_of, read_document
from cno_annotate.annotation.model import Read, ReadingRole, ReadStatus
from cno_annotate.annotation.reads import list_reads, load_read, stored_reading_time
from cno_annotate.annotation.scheme import load_scheme
from cno_annotate.annotation.timing import DEFAULT_IDLE_SECONDS
from cno_annotate.errors import CnoError
from cno_annotate.store import audit
from cno_annotate.store import reading_studies as table
from cno_annotate.store.db import DESIGN_FIXED_MESSAGE, Store, is_integrity_error, now
from cno_annotate.store.reading_studies import Case, ReadingDesign, ReadingStudy  # the store's row types
from cno_annotate.uids import stable_uid

CODE_PREFIX = "CNO-"
READING_ROLES = tuple(ReadingRole)
COORDINATOR = "coordinator"


def design_of(text: str) -> ReadingDesign:
    """The design named ``text`` (one clear line for an unknown name)."""
    try:
        return ReadingDesign(text)
    except ValueError:
        raise CnoError(f"a reading study design is one of {', '.join(ReadingDesign)}, not {text!r}") from None


def _check_settings(design: ReadingDesign, reveal_timepoints: bool) -> None:
    if design == ReadingDesign.PAIRED_HIDDEN_ORDER and reveal_timepoints:
        raise CnoError("the paired hidden-order design hides which visit is earlier: it cannot reveal timepoints")


def create(store: Store, name: str, scheme_id: str | None = None, seed: int = 0, show_age_sex: bool = False,
           reveal_timepoints: bool = False, actor: str = COORDINATOR,
           design: ReadingDesign | str = ReadingDesign.UNPAIRED_BLINDED, show_timer: bool = False,
           idle_seconds: float = DEFAULT_IDLE_SECONDS) -> ReadingStudy:
    """Create a reading study.

    ``show_timer`` lets readers see their active reading time; ``idle_seconds``
    is the input-free time after which the timer pauses.

    Raises
    ------
    CnoError
        If the name is taken, the scheme or design unknown, the settings contradict the design,
        or the idle time is not above 0.
    """
    check_identifier(name, "reading study name")
    design = design_of(str(design))
    _check_settings(design, reveal_timepoints)
    if not idle_seconds > 0 or idle_seconds != idle_seconds or idle_seconds == float("inf"):
        raise CnoError(f"the idle time must be a number of seconds above 0, not {idle_seconds!r}")
    if table.exists(store.db, name):
        raise CnoError(f"reading study {name!r} exists already")
    scheme = load_scheme(scheme_id) if scheme_id else load_scheme()
    settings = ReadingStudy(name, scheme.id, scheme.version, seed, show_age_sex, reveal_timepoints, design,
                            show_timer, float(idle_seconds))
    with store.transaction() as db:
        state = audit.require_unchanged(db, f"reading-study:{name}")
        table.add(db, settings, now(), actor)
        audit.append(db, actor, "create", f"reading-study:{name}", state_before=state,
                     after={"scheme": f"{scheme.id} {scheme.version}", "seed": seed, "show_age_sex": show_age_sex,
                            "reveal_timepoints": reveal_timepoints, "design": design.value, "show_timer": show_timer,
                            "idle_seconds": float(idle_seconds)})
    return get(store, name)


def set_design(store: Store, name: str, design: ReadingDesign | str, actor: str = COORDINATOR) -> ReadingStudy:
    """Change the design of a reading study before reading starts.

    Worklists already assigned are assigned again under the new design (a
    chronological worklist would tell a hidden-order reader which visit is earlier).

    Raises
    ------
    CnoError
        For an unknown design, a setting it contradicts, or once any read of
        the study exists (the database refuses the change too).
    """
    study = get(store, name)
    design = design_of(str(design))
    _check_settings(design, study.reveal_timepoints)
    if design == study.design:
        return study
    if reading_started(store, name):
        raise CnoError(f"reading study {name!r}: {DESIGN_FIXED_MESSAGE} (it is {study.design.value})")
    try:
        with store.transaction() as db:
            state = audit.require_unchanged(db, f"reading-study:{name}")
            table.set_design(db, name, design)
            audit.append(db, actor, "set-design", f"reading-study:{name}", before=study.design.value,
                         after=design.value, state_before=state)
    except Exception as exc:
        if is_integrity_error(exc) and DESIGN_FIXED_MESSAGE in str(exc):
            raise CnoError(f"reading study {name!r}: {DESIGN_FIXED_MESSAGE}; nothing was changed") from None
        raise
    if table.has_worklists(store.db, name):
        assign(store, name, actor=actor)  # worklists made for the old design: its order may tell the dates
    return get(store, name)


def reading_started(store: Store, name: str) -> bool:
    """Whether any read of the study exists (draft or submitted)."""
    return table.has_reads(store.db, name)


def get(store: Store, name: str) -> ReadingStudy:
    """The reading study with this name.

    Raises
    ------
    CnoError
        If there is none.
    """
    study = table.study(store.db, name)
    if study is None:
        known = table.names(store.db)
        raise CnoError(f"no reading study {name!r}" + (f" (known: {', '.join(known)})" if known else ""))
    return study


def add_cases(store: Store, name: str, study_uids: list[str], actor: str = COORDINATOR) -> list[str]:
    """Add studies as cases; returns their new reading codes.

    Codes are numbered in a seeded random order of the batch, so a code does
    not tell when a study was acquired or added; several studies of one
    patient become separate cases (timepoints).
    """
    study = get(store, name)
    known = {r.study_uid for r in store.studies(count_missing=False)}
    unknown = [uid for uid in study_uids if uid not in known]
    if unknown:
        raise CnoError(f"not in the store: {', '.join(unknown)}")
    existing = {c.study_uid for c in table.cases(store.db, name)}
    new = [uid for uid in dict.fromkeys(study_uids) if uid not in existing]
    random.Random(f"{study.seed}:{name}:codes:{len(existing)}").shuffle(new)
    first = 1 + len(existing)
    codes = [f"{CODE_PREFIX}{n:04d}" for n in range(first, first + len(new))]
    from cno_annotate.packages import record_case_keys

    with store.transaction() as db:
        state = audit.require_unchanged(db, f"reading-study:{name}")
        for uid, code in zip(new, codes):
            table.add_case(db, Case(name, code, uid, "", 0))
        record_case_keys(db, name, new)  # the stand-in each case's readers name it by (server logins)
        _number_patients(db, store, name)
        audit.append(db, actor, "add-cases", f"reading-study:{name}", after={"codes": codes, "studies": new},
                     state_before=state)
    return codes


def _number_patients(db, store: Store, name: str) -> None:
    """Give each patient a pseudonymous code and each study its timepoint number (by study date)."""
    by_patient: dict[str, list[tuple[str, str]]] = {}
    studies = {s.study_uid: s for s in store.studies(count_missing=False)}
    for case in table.cases(db, name):
        s = studies[case.study_uid]
        key = s.patient_id or s.patient_name or case.study_uid
        by_patient.setdefault(key, []).append((s.study_date or "", case.study_uid))
    ordered = sorted(by_patient, key=lambda k: stable_uid(name, "patient", k))
    for n, key in enumerate(ordered, start=1):
        for timepoint, (_, uid) in enumerate(sorted(by_patient[key]), start=1):
            table.number_case(db, name, uid, f"P-{n:03d}", timepoint)


def check_identifier(text: str, what: str) -> str:
    """``text`` when it is a usable reader id or reading study name (``what`` names which).

    Such ids end up in CSV cells, file names and worklists, so they must be non-empty,
    hold no space or control character and not start a spreadsheet formula.

    Raises
    ------
    CnoError
        Otherwise, in one line.
    """
    if not text:
        raise CnoError(f"a {what} must not be empty")
    if any(c.isspace() or unicodedata.category(c).startswith("C") for c in text):
        raise CnoError(f"{what} {text!r} holds a space or control character; use letters, digits, '-', '_' or '.'")
    if text.startswith(FORMULA_START):
        raise CnoError(f"{what} {text!r} starts with {text[0]!r}, which spreadsheets run as a formula; "
                       f"start with a letter or digit")
    return text


def add_readers(store: Store, name: str, readers: list[str], role: str = "reader",
                actor: str = COORDINATOR) -> list[str]:
    """Add readers (or adjudicators) to a reading study; returns those that were not registered already.

    A repeated id keeps its registration (a different ``role`` replaces its role).

    Raises
    ------
    CnoError
        For an unknown study or role, or a reader id refused by :func:`check_identifier`.
    """
    get(store, name)
    if role not in READING_ROLES:
        raise CnoError(f"a role is one of {', '.join(READING_ROLES)}")
    for reader in readers:
        check_identifier(reader, "reader id")
        if reader == COORDINATOR:
            raise CnoError(f"reader id {COORDINATOR!r} is reserved for the coordinator")
    with store.transaction() as db:
        state = audit.require_unchanged(db, f"reading-study:{name}")
        known = {r.reader for r in table.readers(db, name)}
        added = [r for r in dict.fromkeys(readers) if r not in known]
        for reader in readers:
            table.set_reader(db, name, reader, role)
        audit.append(db, actor, "add-readers", f"reading-study:{name}", after={"readers": readers, "role": role},
                     state_before=state)
    return added


def role_of(store: Store, name: str, reader: str) -> str:
    """A reader's role in the study.

    Raises
    ------
    CnoError
        If the reader is not part of it.
    """
    get(store, name)
    role = table.role(store.db, name, reader)
    if role is None:
        login = limited_login(store)
        if login is not None and login != reader:  # a reader's login sees only its own registration
            raise CnoError(f"the login {login!r} reads only as {login!r}, not as {reader!r}: use --reader {login}, "
                           f"or log in as {reader!r}")
        raise CnoError(f"{reader!r} is not a reader of reading study {name!r}")
    return role


def cases(store: Store, name: str) -> list[Case]:
    """Every case with its study UID, by reading code (coordinator view).

    Raises
    ------
    CnoError
        If there is no such reading study.
    """
    get(store, name)
    return table.cases(store.db, name)


def assign(store: Store, name: str, seed: int | None = None, actor: str = COORDINATOR) -> dict[str, list[str]]:
    """Give every reader all cases in a random order of their own, reproducible from the seed.

    Adjudicators get the cases in code order. Returns reader -> codes.
    """
    study = get(store, name)
    seed = study.seed if seed is None else seed
    codes = [c.reading_code for c in cases(store, name)]
    if not codes:
        raise CnoError(f"reading study {name!r} has no cases yet")
    readers = table.readers(store.db, name)
    if not readers:
        raise CnoError(f"reading study {name!r} has no readers yet")
    worklists = {}
    for registration in readers:
        order = list(codes)
        if registration.role == "reader":
            random.Random(f"{seed}:{name}:{registration.reader}").shuffle(order)
        if study.design == ReadingDesign.PAIRED_CHRONOLOGICAL:
            order = _chronological_within_patients(store, name, order)
        worklists[registration.reader] = order
    with store.transaction() as db:
        state = audit.require_unchanged(db, f"reading-study:{name}")
        dropped = _opened_dropped(db, name, worklists)
        table.replace_worklists(db, name, worklists)
        audit.append(db, actor, "assign", f"reading-study:{name}", after={"seed": seed, "readers": list(worklists),
                                                                          **({"opened_dropped": dropped} if dropped else {})},
                     state_before=state)
    return worklists


def _opened_dropped(db, name: str, worklists: dict[str, list[str]]) -> list[dict]:
    """The opened records the new worklists take off (each reader's cases they lose), with their looked-at time."""
    dropped = []
    for registration in table.readers(db, name):
        kept = set(worklists.get(registration.reader, []))
        looked = table.opened(db, name, registration.reader)
        for entry in table.worklist(db, name, registration.reader):
            if entry.reading_code not in kept and entry.study_uid in looked:
                dropped.append({"reader": registration.reader, "reading_code": entry.reading_code,
                                "looked_seconds": looked[entry.study_uid]})
    return dropped


def move_case(store: Store, name: str, code: str, reader: str, to: str | None = None,
              actor: str = COORDINATOR) -> dict:
    """Take a case off a reader's worklist, or move it to the end of another reader's (same role); audited.

    The reader's opened record of the case (looked at without a read) goes with it: the database forgets it once
    the case is off the worklist, and progress no longer counts it; the audit entry keeps its time looked.
    Returns what was done: ``reading_code``, ``from``, ``to``, ``position`` (in ``to``'s worklist) and
    ``looked_seconds`` (None if the reader had not opened the case).

    Raises
    ------
    CnoError
        In one line if the case is not on the reader's worklist, the reader has a read of it (draft or submitted:
        a read stays with its reader), ``to`` is the reader, not registered with the same role, or has the case.
    """
    get(store, name)
    role = role_of(store, name, reader)
    uid = study_uid_of(store, name, code)
    if code not in {e.reading_code for e in table.worklist(store.db, name, reader)}:
        raise CnoError(f"{code} is not on {reader}'s worklist in {name!r}; nothing was changed")
    read = next((r for r in list_reads(store, reader=reader, reading_study=name, latest_only=True)
                 if r["study_uid"] == uid), None)
    if read is not None:
        raise CnoError(f"{reader} has a {read['status']} read of {code}: a case with a read stays on its reader's "
                       f"worklist; nothing was changed")
    if to is not None:
        if to == reader:
            raise CnoError(f"{code} is on {reader}'s worklist already; name another reader with --to")
        if role_of(store, name, to) != role:
            raise CnoError(f"{to!r} is not a{'n' if role == 'adjudicator' else ''} {role} of {name!r} as {reader!r} "
                           f"is; nothing was changed")
        if code in {e.reading_code for e in table.worklist(store.db, name, to)}:
            raise CnoError(f"{code} is on {to}'s worklist already; nothing was changed")
    with store.transaction() as db:
        state = audit.require_unchanged(db, f"reading-study:{name}")
        looked = table.opened(db, name, reader).get(uid)
        table.remove_from_worklist(db, name, reader, code)
        position = table.append_to_worklist(db, name, to, code) if to is not None else None
        done = {"reading_code": code, "from": reader, "to": to, "position": position, "looked_seconds": looked}
        audit.append(db, actor, "move-case", f"reading-study:{name}", after=done, state_before=state)
    return done


def _chronological_within_patients(store: Store, name: str, order: list[str]) -> list[str]:
    """The order with each patient's visits moved, within the slots they hold, into chronological order."""
    rows = {c.reading_code: c for c in cases(store, name)}
    slots: dict[str, list[int]] = {}
    for n, code in enumerate(order):
        slots.setdefault(rows[code].patient_code, []).append(n)
    out = list(order)
    for positions in slots.values():
        visits = sorted((order[n] for n in positions), key=lambda c: rows[c].timepoint)
        for n, code in zip(positions, visits):
            out[n] = code
    return out


def visit_letters(store: Store, name: str, patient_code: str) -> dict[str, str]:
    """Reading code -> visit letter (A, B, ...) of one patient in a hidden-order study.

    Letters follow a seeded random order of the patient's cases, never their
    dates, so the letter does not tell which visit is earlier.
    """
    study = get(store, name)
    codes = sorted(c.reading_code for c in table.patient_cases(store.db, name, patient_code))
    random.Random(f"{study.seed}:{name}:visits:{patient_code}").shuffle(codes)
    return {code: chr(ord("A") + n) for n, code in enumerate(codes)}


def comparison_cases(store: Store, name: str, code: str) -> list[dict]:
    """The other visits of a case's patient that the design lets the reader open beside it.

    Unpaired blinded: none. Paired chronological: the earlier timepoints,
    latest first, labelled with their timepoint. Paired with hidden order: the
    other visits, labelled by visit letter only. Never a case of another patient.

    Returns
    -------
    list of dict
        ``reading_code``, ``study_uid`` (for the viewer to load; never shown) and ``label``.
    """
    study = get(store, name)
    if not study.design.paired:
        return []
    case = table.case(store.db, name, code)
    if case is None:
        raise CnoError(f"reading study {name!r} has no case {code!r}")
    others = [o for o in table.patient_cases(store.db, name, case.patient_code) if o.reading_code != code]
    if study.design == ReadingDesign.PAIRED_CHRONOLOGICAL:
        earlier = sorted((o for o in others if o.timepoint < case.timepoint), key=lambda o: -o.timepoint)
        return [{"reading_code": o.reading_code, "study_uid": o.study_uid,
                 "label": f"{o.reading_code} (prior, timepoint {o.timepoint})"} for o in earlier]
    letters = visit_letters(store, name, case.patient_code)
    return [{"reading_code": o.reading_code, "study_uid": o.study_uid,
             "label": f"{o.reading_code} (visit {letters[o.reading_code]})"}
            for o in sorted(others, key=lambda o: letters[o.reading_code])]


def case_of_code(store: Store, name: str, code: str) -> bool:
    """Whether ``code`` is a reading code of reading study ``name`` (a missing study has none)."""
    return table.case(store.db, name, code) is not None


def study_uid_of(store: Store, name: str, code: str) -> str:
    """The study behind a reading code."""
    case = table.case(store.db, name, code)
    if case is None:
        raise CnoError(f"reading study {name!r} has no case {code!r}")
    return case.study_uid


def worklist(store: Store, name: str, reader: str) -> list[dict]:
    """A reader's cases in their order, with the status of their read of each.

    Only what a blinded reader may see: code, position, status, and (if the
    study allows) age, sex and timepoint.
    """
    study = get(store, name)
    login = limited_login(store)
    if login is not None and login != reader:
        raise CnoError(f"the login {login!r} sees only its own worklist, not the one of {reader!r}: run it "
                       f"with '--reader {login}' (the coordinator's login sees every reader's worklist)")
    role_of(store, name, reader)
    rows = table.worklist(store.db, name, reader)
    if not rows:
        raise CnoError(f"{reader!r} has no worklist in {name!r} yet (run 'cno-annotate reading-study assign')")
    status = {r["study_uid"]: r["status"] for r in list_reads(store, reader=reader, reading_study=name,
                                                               latest_only=True)}
    opened = table.opened(store.db, name, reader)
    out = []
    for row in rows:
        entry = {"position": row.position, "reading_code": row.reading_code,
                 "status": status.get(row.study_uid, "opened" if row.study_uid in opened else "not started")}
        entry.update(case_details(store, study, row.reading_code))
        out.append(entry)
    return out


def limited_login(store: Store) -> str | None:
    """The login of a reader or adjudicator on a PostgreSQL store (it sees only its own rows); None otherwise."""
    from cno_annotate.store import postgres

    connection = getattr(store, "pg", None)
    return postgres.limited_login(connection) if connection is not None else None


def next_unsubmitted(entries: Sequence[Mapping], current: str | None) -> str | None:
    """The reading code to open after ``current``: the next case of the worklist not submitted.

    ``entries`` are worklist entries in the reader's order (``reading_code``, ``status``).
    The search starts after the open case and wraps round to the top; the open case
    itself is never "next". None when every other case is submitted.
    """
    codes = [e["reading_code"] for e in entries]
    start = codes.index(current) + 1 if current in codes else 0
    for entry in [*entries[start:], *entries[:start]]:
        if entry["status"] != ReadStatus.SUBMITTED and entry["reading_code"] != current:
            return entry["reading_code"]
    return None


def case_details(store: Store, study: ReadingStudy, code: str) -> dict:
    """What the study's settings let a reader know about a case besides its code."""
    out: dict = {}
    if study.show_age_sex:
        shown = table.age_and_sex(store.db, study.name, code)
        if shown is None:
            raise CnoError(f"reading study {study.name!r} has no case {code!r} on this login's worklist")
        out["sex"], out["age_years"] = shown
    if study.design.paired or study.reveal_timepoints:
        case = table.case(store.db, study.name, code)
        if case is None:
            raise CnoError(f"reading study {study.name!r} has no case {code!r}")
        if study.design == ReadingDesign.PAIRED_HIDDEN_ORDER:
            letters = visit_letters(store, study.name, case.patient_code)
            out.update({"patient_code": case.patient_code, "visit": letters[code], "visits": len(letters)})
        else:
            total = len(table.patient_cases(store.db, study.name, case.patient_code))
            out.update({"patient_code": case.patient_code, "timepoint": case.timepoint, "timepoints": total})
    return out


def progress(store: Store, name: str) -> list[dict]:
    """Per reader: cases not started, opened (looked at, no read yet), in draft and submitted, and active reading time.

    ``active_seconds`` sums the reader's latest reads of the study and the time spent looking at cases opened
    without a read (a read made later took that time over: it is counted once);
    ``seconds_per_submitted`` is the mean over their submitted reads (None before the first).
    """
    get(store, name)
    out = []
    for registration in table.readers(store.db, name):
        reader, role = registration.reader, registration.role
        counts = {"reader": reader, "role": role, "not started": 0, "opened": 0, "draft": 0, "submitted": 0,
                  **_reading_time(store, name, reader, role)}
        try:
            for entry in worklist(store, name, reader):
                counts[entry["status"]] += 1
        except CnoError:
            counts["not started"] = len(cases(store, name))
        out.append(counts)
    return out


def _reading_time(store: Store, name: str, reader: str, role: str) -> dict:
    """Active reading time of a reader in a study: the total (latest reads, and cases only looked at), the mean per
    submitted read."""
    reads = [r for r in list_reads(store, reader=reader, reading_study=name, latest_only=True) if r["role"] == role]
    seconds = {r["read_id"]: stored_reading_time(store.db, r["read_id"]) for r in reads}
    submitted = [seconds[r["read_id"]] for r in reads if r["status"] == "submitted"]
    read_cases = {r["study_uid"] for r in reads}
    looked = sum(t for uid, t in table.opened(store.db, name, reader).items() if uid not in read_cases)
    return {"active_seconds": round(float(sum(seconds.values()) + looked), 1),  # 0.0, not 0, with no time
            "seconds_per_submitted": round(sum(submitted) / len(submitted), 1) if submitted else None}


def roles(store: Store, name: str) -> dict[str, str]:
    """Reader id -> role ("reader" or "adjudicator") of everyone registered in the study (that this login sees)."""
    return {r.reader: r.role for r in table.readers(store.db, name)}


def names(store: Store) -> list[str]:
    """The names of the reading studies of the store, sorted."""
    return table.names(store.db)


def list_studies(store: Store) -> list[dict]:
    """Every reading study of the store: scheme, cases, readers, adjudicators and progress.

    ``submitted`` counts reader reads (latest versions) that are submitted;
    ``expected`` is cases x readers, so ``progress`` is their share in percent.
    """
    out = []
    for name in table.names(store.db):
        study = get(store, name)
        rows = progress(store, name)
        n_cases = len(cases(store, name))
        readers = [r for r in rows if r["role"] == "reader"]
        submitted = sum(r["submitted"] for r in readers)
        expected = n_cases * len(readers)
        out.append({"name": name, "scheme": f"{study.scheme_id} {study.scheme_version}", "cases": n_cases,
                    "readers": len(readers), "adjudicators": len(rows) - len(readers), "submitted": submitted,
                    "expected": expected,
                    "progress": round(100 * submitted / expected, 1) if expected else 0.0,
                    "adjudicated": sum(r["submitted"] for r in rows if r["role"] == "adjudicator")})
    return out


def pseudonymous_series_uid(name: str, series_uid: str) -> str:
    """A stable stand-in for a series UID in reader-facing output."""
    return stable_uid("cno-annotate-pseudonym", name, series_uid)


def reader_document(store: Store, name: str, reader: str, actor: str | None = None, audited: bool = True) -> dict:
    """A reader's own reads as an annotation document, blinded.

    Study UIDs become reading codes and series UIDs stable pseudonyms; no
    other reader's read is included. The export is written to the audit trail
    (unless ``audited`` is False: then the caller audits it, as the CLI does
    when it publishes the file).

    Raises
    ------
    CnoError
        If ``actor`` is another reader.
    """
    actor = actor or reader
    if actor != reader:
        raise CnoError(f"{actor} cannot export the reads of {reader}")
    role_of(store, name, reader)
    from cno_annotate.export_reads import load_for_export

    codes = {c.study_uid: c.reading_code for c in cases(store, name)}
    reads = []
    for read in load_for_export(store, [r["read_id"] for r in list_reads(store, reader=reader, reading_study=name)]):
        read.study_uid = codes[read.study_uid]
        read.lesions = [_blind_series(name, lesion) for lesion in read.lesions]
        read.rois = [_blind_series(name, roi) for roi in read.rois]
        reads.append(read)
    document = document_of(reads)
    if audited:
        with store.transaction() as db:
            audit.append(db, actor, "export", f"reading-study:{name}", after={"reader": reader, "reads": len(reads)})
    return document


def _blind_series(name: str, drawn):
    """A lesion or ROI with its series UID replaced by the study's stable pseudonym."""
    import dataclasses

    return dataclasses.replace(drawn, series_uid=pseudonymous_series_uid(name, drawn.series_uid))


def adjudication_reads(store: Store, name: str, code: str, adjudicator: str) -> list[Read]:
    """The readers' submitted reads of a case (latest versions), for its adjudicator only.

    Raises
    ------
    CnoError
        If ``adjudicator`` is not an adjudicator of the reading study.
    """
    if role_of(store, name, adjudicator) != "adjudicator":
        raise CnoError(f"{adjudicator!r} is not an adjudicator of {name!r}")
    uid = study_uid_of(store, name, code)
    return [load_read(store, row["read_id"])
            for row in list_reads(store, study_uid=uid, reading_study=name, latest_only=True)
            if row["role"] == "reader" and row["status"] == "submitted"]


def adjudication_view(store: Store, name: str, code: str, adjudicator: str) -> list[dict]:
    """The readers' submitted reads of a case, side by side, as documents naming the case by its code."""
    return [{**read_document(read), "study_uid": code} for read in adjudication_reads(store, name, code, adjudicator)]
