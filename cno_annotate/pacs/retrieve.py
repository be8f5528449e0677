"""Retrieve a study from a PACS into the store, importing each series as it arrives; resumable.

Instances are written to ``STORE/retrieved/<study UID>/<series UID>/<SOP UID>.dcm``
(each through a temporary name, so no half-written file is left behind) and each
series is imported through :func:`cno_annotate.importer.import_paths` as soon
as it is complete. An interrupted retrieve (cancel, Ctrl-C, a lost connection)
keeps and imports what arrived; the next retrieve of the study imports any file
left un-imported, asks the PACS only for the instances the store does not hold,
and fetches nothing for series that are complete.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from cno_annotate.importer import import_paths
from cno_annotate.pacs.client import PacsClient
from cno_annotate.pacs.config import PacsError, SeriesFailed
from cno_annotate.pacs.query import SeriesMatch
from cno_annotate.store import catalog
from cno_annotate.store.db import Store

RETRIEVED = "retrieved"
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
#: Called as ``progress(received, expected)`` as instances arrive (possibly from another thread).
Progress = Callable[[int, int], None]


class SeriesResult(Enum):
    """What became of one retrieved series in the store."""

    IMPORTED = "imported"  # its images are in the store
    KEPT = "kept"  # kept as files that are not images (SR, SEG, key objects, presentation states)
    REFUSED = "refused"  # the importer refused its files (the reason says why)


#: Non-image storage classes by the short name the messages give them.
_NON_IMAGE = {"1.2.840.10008.5.1.4.1.1.66.4": "SEG", "1.2.840.10008.5.1.4.1.1.88.11": "SR",
              "1.2.840.10008.5.1.4.1.1.88.22": "SR", "1.2.840.10008.5.1.4.1.1.88.33": "SR",
              "1.2.840.10008.5.1.4.1.1.88.34": "SR", "1.2.840.10008.5.1.4.1.1.88.59": "key objects",
              "1.2.840.10008.5.1.4.1.1.11.1": "presentation state", "1.2.840.10008.5.1.4.1.1.4.2": "spectroscopy"}


@dataclass(frozen=True)
class SeriesOutcome:
    """What the importer made of one retrieved series."""

    series: SeriesMatch
    result: SeriesResult
    instances: int
    reason: str = ""  # why refused; for KEPT, the kinds of files ("SR", "SEG")

    def as_dict(self) -> dict:
        """JSON-ready fields."""
        return {"series_uid": self.series.series_uid, "number": self.series.number,
                "description": self.series.description, "result": self.result.value,
                "instances": self.instances, "reason": self.reason}


#: Called in the retrieving thread after each series is imported: ``series_imported(outcome, seconds)``.
SeriesDone = Callable[[SeriesOutcome, float], None]


@dataclass
class RetrieveReport:
    """What one retrieve did."""

    study_uid: str
    folder: Path
    series: int = 0
    expected: int = 0
    #: Instances the store held before: images in the store, and files kept or refused before.
    already_in_store: int = 0
    already_kept: int = 0
    already_refused: int = 0
    received: int = 0
    imported_series: list[str] = field(default_factory=list)
    #: Per series retrieved now: :meth:`SeriesOutcome.as_dict` each.
    outcomes: list[dict] = field(default_factory=list)
    #: Series the PACS refused: ``{"series_uid", "number", "description", "reason"}`` each.
    failed: list[dict] = field(default_factory=list)
    cancelled: bool = False
    seconds: float = 0.0

    def as_dict(self) -> dict:
        """JSON-ready fields."""
        return {**self.__dict__, "folder": str(self.folder)}


def series_line(outcome: dict) -> str:
    """What the importer made of one retrieved series, as a line (``SeriesOutcome.as_dict``)."""
    number = outcome["number"] if outcome["number"] is not None else "-"
    name = f"series {number} {outcome['description'] or outcome['series_uid']}"
    count = f"{outcome['instances']} instance{'s' if outcome['instances'] != 1 else ''}"
    if outcome["result"] == "imported":
        return f"imported {name} ({count})" + (f"; some files refused: {outcome['reason']}" if outcome["reason"] else "")
    if outcome["result"] == "kept":
        return f"kept {name} as non-image files ({outcome['reason']}, {count}; not imported as images)"
    return f"refused {name} ({count}): {outcome['reason']}"


def study_folder(store: Store, study_uid: str) -> Path:
    """Where a study's retrieved files go inside the store."""
    if not _UID.fullmatch(study_uid) or len(study_uid) > 64:
        raise PacsError(f"{study_uid!r} is not a study instance UID (digits and dots)")
    return Path(store.root) / RETRIEVED / study_uid


def _sop_uids_held(store: Store, folder: Path, study_uid: str) -> dict[str, set[str]]:
    """Instances the store holds: imported images, and every file retrieved before (SR, SEG too)."""
    held = catalog.instances_of_study(store.db, study_uid)
    if folder.is_dir():
        for path in folder.glob("*/*.dcm"):
            held.setdefault(path.parent.name, set()).add(path.stem)
    return held


def _non_image_kind(path: Path) -> str:
    """"SR", "SEG" ... for a file of a non-image storage class, else "" (unreadable too)."""
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except (OSError, ValueError, InvalidDicomError, AttributeError, EOFError):
        return ""
    return _NON_IMAGE.get(str(header.get("SOPClassUID", "")), "")


def _files_not_imported(folder: Path, sop_uids: set[str]) -> dict[str, int]:
    """How many of these retrieved files are of each non-image kind ("" for refused images)."""
    counts: dict[str, int] = {}
    for sop_uid in sop_uids:
        kind = _non_image_kind(folder / f"{sop_uid}.dcm")
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def _import_series(store: Store, folder: Path, series: SeriesMatch) -> SeriesOutcome:
    """Import one series folder and say what became of it."""
    result = import_paths(store, [folder])
    imported = result.new_instances + result.already_imported + result.relinked + result.duplicates
    kinds: set[str] = set()
    reasons: list[str] = []
    for skipped in result.skipped:
        kind = _non_image_kind(Path(skipped["path"]))
        if kind:
            kinds.add(kind)
        elif skipped["reason"] not in reasons:
            reasons.append(skipped["reason"])
    if imported:
        return SeriesOutcome(series, SeriesResult.IMPORTED, imported, "; ".join(reasons))
    if kinds and not reasons:
        return SeriesOutcome(series, SeriesResult.KEPT, len(result.skipped), ", ".join(sorted(kinds)))
    return SeriesOutcome(series, SeriesResult.REFUSED, len(result.skipped), "; ".join(reasons) or "no image found")


def _reading_order(series: list[SeriesMatch]) -> list[SeriesMatch]:
    """STIR series first (the reader starts there), then by series number."""
    def key(s: SeriesMatch) -> tuple:
        stir = bool(re.search(r"stir|tirm|\bir\b", s.description, re.IGNORECASE))
        return (not stir, s.number if s.number is not None else 1 << 30, s.series_uid)
    return sorted(series, key=key)


class _Writer:
    """Writes arriving instances to the study folder (thread-safe) and counts them.

    Between :meth:`open` and :meth:`close` instances are written; ``close`` waits for a
    write in flight, and an instance arriving after it (a C-MOVE storage thread that
    outlived a cancel) is dropped, so what is counted is exactly what the import sees.
    """

    def __init__(self, folder: Path, progress: Progress | None, expected: int):
        self.folder = folder
        self.progress = progress
        self.expected = expected
        self.received = 0
        self.lock = threading.Lock()
        self.accepting = False

    def open(self) -> None:
        with self.lock:
            self.accepting = True

    def close(self) -> None:
        with self.lock:
            self.accepting = False

    def __call__(self, series_uid: str, sop_uid: str, data: bytes) -> None:
        if not _UID.fullmatch(series_uid) or not _UID.fullmatch(sop_uid):
            raise PacsError(f"an instance arrived with an invalid UID ({sop_uid!r} in series {series_uid!r})")
        target = self.folder / series_uid / f"{sop_uid}.dcm"
        with self.lock:
            if not self.accepting:
                return  # arrived after the retrieve of its series ended: fetched again on resume
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{sop_uid}.{threading.get_ident()}.part")
            partial.write_bytes(data)
            os.replace(partial, target)
            self.received += 1
            received = self.received
        if self.progress is not None:
            self.progress(received, self.expected)


def _clear_partials(folder: Path) -> None:
    for partial in folder.glob("*/.*.part"):
        partial.unlink(missing_ok=True)


def retrieve_study(store: Store, client: PacsClient, study_uid: str, progress: Progress | None = None,
                   cancel: threading.Event | None = None, series_imported: SeriesDone | None = None) -> RetrieveReport:
    """Retrieve ``study_uid`` into ``store``, series by series (STIR first), importing each as it completes.

    Parameters
    ----------
    store : Store
        The open store (used from this thread only).
    client : PacsClient
        The PACS connection.
    study_uid : str
        The study to retrieve.
    progress : callable, optional
        ``progress(received, expected)`` after each instance written.
    cancel : threading.Event, optional
        Set it to stop after the instance in flight; what arrived is imported.
    series_imported : callable, optional
        ``series_imported(series, seconds_since_start)`` after each series is imported.

    Returns
    -------
    RetrieveReport

    Raises
    ------
    PacsError
        If the PACS fails; whatever arrived before is imported first. A series the PACS
        refuses does not stop the others: it is listed in the report's ``failed``.
    """
    started = time.monotonic()
    folder = study_folder(store, study_uid)
    report = RetrieveReport(study_uid, folder)
    if folder.is_dir():  # what an interrupted retrieve wrote but did not import
        _clear_partials(folder)
        import_paths(store, [folder])
    series = _reading_order(client.find_series(study_uid))
    if not series:
        raise PacsError(f"{client.node.name} holds no study {study_uid}")
    held = _sop_uids_held(store, folder, study_uid)
    in_store = catalog.instances_of_study(store.db, study_uid)
    plan: list[tuple[SeriesMatch, list[str] | None, int]] = []
    missing: list[str] | None
    for item in series:
        have = held.get(item.series_uid, set())
        if not have:
            plan.append((item, None, item.instances or 0))
            continue
        missing = [uid for uid in client.instance_uids(study_uid, item.series_uid) if uid not in have]
        images = have & in_store.get(item.series_uid, set())
        report.already_in_store += len(images)
        for kind, count in _files_not_imported(folder / item.series_uid, have - images).items():
            if kind:
                report.already_kept += count
            else:
                report.already_refused += count
        if missing:
            plan.append((item, missing, len(missing)))
    report.series = len(series)
    report.expected = sum(n for _, _, n in plan)
    writer = _Writer(folder, progress, report.expected)
    cancelled = cancel.is_set if cancel is not None else (lambda: False)
    try:
        for item, missing, _ in plan:
            if cancelled():
                break
            before = writer.received
            writer.open()
            try:
                client.fetch(study_uid, item.series_uid, missing, writer, cancelled)
            except SeriesFailed as exc:  # one series refused: the others may still come
                report.failed.append({"series_uid": item.series_uid, "number": item.number,
                                      "description": item.description, "reason": str(exc)})
            finally:
                writer.close()
                if writer.received > before:
                    outcome = _import_series(store, folder / item.series_uid, item)
                    report.outcomes.append(outcome.as_dict())
                    if outcome.result is SeriesResult.IMPORTED:
                        report.imported_series.append(item.series_uid)
                    if series_imported is not None:
                        series_imported(outcome, time.monotonic() - started)
    finally:
        report.received = writer.received
        report.cancelled = cancelled()
        report.seconds = time.monotonic() - started
    return report


def remaining(store: Store, client: PacsClient, study_uid: str) -> int:
    """How many instances of the study the PACS holds that the store does not (asks the PACS)."""
    held = _sop_uids_held(store, study_folder(store, study_uid), study_uid)
    return sum(len([u for u in client.instance_uids(study_uid, s.series_uid) if u not in held.get(s.series_uid, set())])
               for s in client.find_series(study_uid))
