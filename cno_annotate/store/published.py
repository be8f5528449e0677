"""The store's side of a study PACS: which cases were published there, under which stand-in study UID.

A coordinator publishes de-identified copies of a reading study's cases to a
study PACS (:mod:`cno_annotate.study_pacs`); ``rs_published`` (migration 17)
records each case's stand-in study UID, and ``package_uids`` every source UID
with its stand-in (as reading packages do), for mapping back. On a PostgreSQL
store a reader or adjudicator sees the rows of their own worklist only.
"""

from __future__ import annotations

from pathlib import Path

from cno_annotate.errors import CnoError
from cno_annotate.store import Store, audit
from cno_annotate.store.db import now


def case_files(store: Store, study_uid: str) -> list[Path]:
    """A case's DICOM files (each once), in series and instance order (coordinator: needs the image index)."""
    rows = store.db.execute(
        "SELECT i.path, MIN(d.series_number) AS number, MIN(i.instance_number) AS instance FROM images i "
        "JOIN dicom_series d USING (series_uid) WHERE d.study_uid = ? GROUP BY i.path ORDER BY number, instance, i.path",
        (study_uid,)).fetchall()
    return [Path(r[0]) for r in rows]


def record_case(store: Store, name: str, code: str, pacs_study_uid: str, instances: int, pairs: dict[str, str],
                pacs: str, actor: str) -> None:
    """One case is on the study PACS: its stand-in study UID, the UID pairs it used; audited."""
    with store.transaction() as db:
        db.execute("DELETE FROM rs_published WHERE reading_study = ? AND reading_code = ?", (name, code))
        db.execute("INSERT INTO rs_published VALUES (?,?,?,?,?)", (name, code, pacs_study_uid, instances, now()))
        db.executemany("INSERT OR IGNORE INTO package_uids VALUES (?,?,?)",
                       [(name, source, new) for source, new in sorted(pairs.items())])
        audit.append(db, actor, "publish", f"reading-study:{name}",
                     after={"reading_code": code, "pacs": pacs, "instances": instances})


def pacs_study_uid(store: Store, name: str, code: str) -> str:
    """The stand-in study UID under which the study PACS holds a case.

    Raises
    ------
    CnoError
        If the case was not published (or is not on this login's worklist).
    """
    row = store.db.execute("SELECT pacs_study_uid FROM rs_published WHERE reading_study = ? AND reading_code = ?",
                           (name, code)).fetchone()
    if row is None:
        raise CnoError(f"{code} of {name} is not on the study PACS; ask the coordinator to run "
                       f"'cno-annotate reading-study publish {name} --pacs NODE'")
    return str(row[0])


def may_map_back(store: Store) -> bool:
    """Whether this login may read the stand-in UID pairs: a coordinator (anyone on an SQLite store)."""
    if getattr(store.db, "dialect", "sqlite") == "sqlite":
        return True
    return bool(store.db.execute("SELECT cno_is_coordinator()").fetchone()[0])
