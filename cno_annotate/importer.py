"""Batch import of DICOM and NIfTI files into the study store.

:func:`import_paths` walks files and folders (CD exports without extensions
included), indexes headers only, and records patients, studies, series and
images. Nothing stops an import: every file that cannot be used is listed
with its reason, and what the store already holds is never touched. After
indexing, :func:`rebuild_volumes` derives the volumes of each touched study:
slice stacks, their sequence role, and composed whole-body volumes.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cno_annotate.io import compose, nifti
from cno_annotate.io.dicom_index import ImageRecord, SkipFile, header_value_cache, index_dicom_file
from cno_annotate.io.roles import classify_sequence
from cno_annotate.io.series import build_stacks
from cno_annotate.io.volume import orientation_name
from cno_annotate.store.db import Store, now
from cno_annotate.uids import stable_uid

Progress = Callable[[int, int], None]
_BATCH = 200
#: Imports of at least this many files index headers in parallel.
PARALLEL_FROM = 256
MAX_WORKERS = 4
_CHUNK = 32


@dataclass
class ImportReport:
    """What one import run did."""

    run_id: int
    files: int = 0
    instances: int = 0
    new_instances: int = 0
    already_imported: int = 0
    nifti: int = 0
    studies: set[str] = field(default_factory=set)
    series: set[str] = field(default_factory=set)
    skipped: list[dict] = field(default_factory=list)
    duplicates: int = 0

    def as_dict(self, store: Store) -> dict:
        """JSON-ready summary, with the volumes of the studies touched."""
        volumes = [v for s in sorted(self.studies) for v in store.volumes(s)]
        return {
            "run_id": self.run_id,
            "files": self.files,
            "studies": len(self.studies),
            "series": len(self.series),
            "instances": self.instances,
            "new_instances": self.new_instances,
            "already_imported": self.already_imported,
            "nifti": self.nifti,
            "duplicates": self.duplicates,
            "volumes": len(volumes),
            "composed": sum(v["kind"] == "composed" for v in volumes),
            "skipped": self.skipped,
        }


def iter_files(paths: Iterable[Path], missing: list[dict]) -> Iterator[Path]:
    """Every file under the given paths, sorted, following no symlinked folders.

    Paths that do not exist are appended to ``missing`` with a reason.
    """
    for path in paths:
        path = Path(path)
        if path.is_file():
            yield path
        elif path.is_dir():
            for folder, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    yield Path(folder) / name
        else:
            missing.append({"path": str(path), "reason": "no such file or folder"})


def import_paths(store: Store, paths: list[Path], progress: Progress | None = None) -> ImportReport:
    """Import files and folders into the store.

    Parameters
    ----------
    store : Store
        The open store.
    paths : list of Path
        Files and folders; folders are walked recursively.
    progress : callable, optional
        Called as ``progress(done, total)`` while files are indexed.

    Returns
    -------
    ImportReport
        Counts, the studies and series found, and every skipped file.
    """
    missing: list[dict] = []
    files = list(iter_files(paths, missing))
    with store.transaction():
        run_id = store.db.execute(
            "INSERT INTO import_runs (started, paths) VALUES (?, ?)",
            (now(), json.dumps([str(p) for p in paths])),
        ).lastrowid
    report = ImportReport(run_id=int(run_id or 0), files=len(files), skipped=missing)
    known = {row[0]: row[1] for row in store.db.execute("SELECT sop_uid, path FROM images WHERE frame = 0")}
    batch: list[ImageRecord] = []
    with header_value_cache():
        for n, (path, indexed) in enumerate(_indexed(files), start=1):
            _record_one(store, path, indexed, known, batch, report)
            if len(batch) >= _BATCH:
                _write_images(store, batch)
                batch = []
            if progress is not None:
                progress(n, len(files))
    _write_images(store, batch)
    rebuild_volumes(store, sorted(report.studies))
    with store.transaction():
        for item in report.skipped:
            store.db.execute("INSERT INTO skipped VALUES (?, ?, ?)", (run_id, item["path"], item["reason"]))
        store.db.execute(
            "UPDATE import_runs SET finished = ?, summary = ? WHERE run_id = ?",
            (now(), json.dumps(report.as_dict(store)), run_id),
        )
    return report


def index_file(path: Path) -> list[ImageRecord] | str | None:
    """Index one DICOM file: its image records, or the reason it is skipped (None: NIfTI)."""
    if nifti.is_nifti_path(path):
        return None
    try:
        return index_dicom_file(path)
    except SkipFile as exc:
        return str(exc)
    except OSError as exc:
        return f"cannot read: {exc.strerror}"


def _index_chunk(paths: list[Path]) -> list:
    return [index_file(p) for p in paths]


def _indexed(files: list[Path]):
    """(path, result of :func:`index_file`) for every file, in order.

    Large imports read headers in worker processes (one per core, forked, on
    Linux): header parsing is CPU-bound pure Python.
    """
    workers = min(os.cpu_count() or 1, MAX_WORKERS)
    if workers < 2 or len(files) < PARALLEL_FROM or sys.platform != "linux":
        for path in files:
            yield path, index_file(path)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    chunks = [files[i:i + _CHUNK] for i in range(0, len(files), _CHUNK)]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        for chunk, results in zip(chunks, pool.map(_index_chunk, chunks)):
            yield from zip(chunk, results)


def _record_one(store: Store, path: Path, indexed, known: dict, batch: list, report: ImportReport) -> None:
    """Add one indexed file to ``batch``, or record why it was skipped."""
    if indexed is None:
        try:
            _import_nifti(store, path, report)
        except SkipFile as exc:
            report.skipped.append({"path": str(path), "reason": str(exc)})
        except OSError as exc:
            report.skipped.append({"path": str(path), "reason": f"cannot read: {exc.strerror}"})
        return
    if isinstance(indexed, str):
        report.skipped.append({"path": str(path), "reason": indexed})
        return
    records = indexed
    first = records[0]
    report.studies.add(first.study["study_uid"])
    report.series.add(first.series["series_uid"])
    previous = known.get(first.sop_uid)
    if previous is not None:
        if previous == str(path):
            report.already_imported += 1
            report.instances += 1
        else:
            report.duplicates += 1
            report.skipped.append(
                {"path": str(path), "reason": f"duplicate of {previous} (same SOPInstanceUID)"}
            )
        return
    known[first.sop_uid] = str(path)
    report.instances += 1
    report.new_instances += 1
    batch.extend(records)


def _write_images(store: Store, records: list[ImageRecord]) -> None:
    """Insert a batch of image records (and their patients, studies, series)."""
    if not records:
        return
    with store.transaction() as db:
        for record in {r.series["series_uid"]: r for r in records}.values():
            _upsert_hierarchy(db, record)
        db.executemany(
            "INSERT OR IGNORE INTO images VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    r.sop_uid, r.frame, r.series["series_uid"], r.path, r.transfer_syntax,
                    r.pixel_offset, r.frames, r.dtype, r.photometric, r.bits_stored,
                    r.rows, r.columns, json.dumps(r.position), json.dumps(r.orientation),
                    json.dumps(r.pixel_spacing), r.slice_thickness, json.dumps(r.rescale),
                    r.echo_time, r.instance_number, int(r.geometry_known), json.dumps(r.split_values),
                )
                for r in records
            ],
        )


def _upsert_hierarchy(db, record: ImageRecord) -> None:
    p, s, se = record.patient, record.study, record.series
    db.execute(
        "INSERT OR IGNORE INTO patients (patient_id, patient_name, birth_date, sex) VALUES (?,?,?,?)",
        (p["patient_id"], p["patient_name"], p["birth_date"], p["sex"]),
    )
    key = db.execute(
        "SELECT patient_key FROM patients WHERE patient_id = ? AND patient_name = ? AND birth_date = ?",
        (p["patient_id"], p["patient_name"], p["birth_date"]),
    ).fetchone()[0]
    db.execute(
        "INSERT OR IGNORE INTO studies VALUES (?,?,?,?,?,?)",
        (s["study_uid"], key, s["study_date"], s["description"], s["accession"], s["institution"]),
    )
    db.execute(
        "INSERT OR IGNORE INTO dicom_series VALUES (?,?,?,?,?)",
        (se["series_uid"], s["study_uid"], se["modality"], se["series_number"], json.dumps(se["attributes"])),
    )


def _import_nifti(store: Store, path: Path, report: ImportReport) -> None:
    """Record a 3-D NIfTI file as a volume in a study named after its folder."""
    affine, shape = nifti.read_nifti_geometry(path)
    digest = hashlib.sha1(path.read_bytes()).hexdigest()
    volume_id = stable_uid("nifti", digest)
    row = store.db.execute("SELECT source_path FROM volumes WHERE volume_id = ?", (volume_id,)).fetchone()
    if row is not None and row[0] != str(path):
        report.duplicates += 1
        report.skipped.append({"path": str(path), "reason": f"duplicate of {row[0]} (same content)"})
        return
    folder = path.resolve().parent
    study_uid = stable_uid("nifti-study", str(folder))
    name = path.name
    role, reason = classify_sequence({"SeriesDescription": name})
    normal = affine[:3, 2] / np.linalg.norm(affine[:3, 2])
    with store.transaction() as db:
        db.execute(
            "INSERT OR IGNORE INTO studies VALUES (?, NULL, '', ?, '', '')",
            (study_uid, f"NIfTI files in {folder.name}"),
        )
        db.execute(
            "INSERT OR REPLACE INTO volumes VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                volume_id, study_uid, "nifti", None, role, reason, orientation_name(normal),
                json.dumps(shape), json.dumps(affine.tolist()), 1, "[]", "[]", 0, name, str(path), digest, 1,
                "", "{}",
            ),
        )
    report.nifti += 1
    report.studies.add(study_uid)
    report.series.add(volume_id)


def rebuild_volumes(store: Store, study_uids: list[str]) -> None:
    """Derive the stacks and composed volumes of studies from their images.

    Role overrides (kept in their own table) survive a rebuild; composition
    uses the effective role, so overriding a station's role re-plans chains.
    """
    overrides = {r[0]: r[1] for r in store.db.execute("SELECT volume_id, role FROM role_overrides")}
    for study_uid in study_uids:
        series_rows = store.db.execute(
            "SELECT series_uid, attributes FROM dicom_series WHERE study_uid = ?", (study_uid,)
        ).fetchall()
        if not series_rows:
            continue  # a NIfTI study: nothing to derive
        rows, geometries = [], []
        for series_uid, attributes_json in series_rows:
            attributes = json.loads(attributes_json)
            role, reason = classify_sequence(attributes)
            description = attributes.get("SeriesDescription") or attributes.get("ProtocolName") or ""
            for stack in build_stacks(series_uid, store.images(series_uid)):
                rows.append(_stack_row(study_uid, stack, role, reason, description))
                if not stack.patient_geometry:
                    continue
                geometries.append(
                    compose.StackGeometry(
                        stack.volume_id, study_uid, overrides.get(stack.volume_id, role),
                        stack.orientation, description, stack.affine, stack.shape, variant=stack.variant,
                    )
                )
        for chain in compose.plan_chains(geometries):
            rows.append(_composed_row(study_uid, chain, rows))
        with store.transaction() as db:
            db.execute("DELETE FROM volumes WHERE study_uid = ? AND kind != 'nifti'", (study_uid,))
            db.executemany("INSERT INTO volumes VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)


def _stack_row(study_uid, stack, role, reason, description) -> tuple:
    paths = "\n".join(sorted(i["path"] + f"#{i['frame']}" for i in stack.images))
    name = f"{description} ({stack.variant})".strip() if stack.variant else description
    return (
        stack.volume_id, study_uid, "stack", stack.series_uid, role, reason, stack.orientation,
        json.dumps(stack.shape), json.dumps(stack.affine.tolist()), 1, json.dumps([stack.volume_id]),
        json.dumps(stack.gaps), stack.duplicates, name, None,
        hashlib.sha1(paths.encode()).hexdigest(), int(stack.patient_geometry), stack.variant, "{}",
    )


def _composed_row(study_uid, chain, stack_rows) -> tuple:
    members = [g.volume_id for g in chain]
    affine, shape = compose.composed_geometry([(g.affine, g.shape) for g in chain])
    fingerprints = {r[0]: r[15] for r in stack_rows}
    fingerprint = hashlib.sha1("".join(fingerprints[m] for m in members).encode()).hexdigest()
    gaps = [{"member": r[0], **g} for r in stack_rows if r[0] in members for g in json.loads(r[11])]
    return (
        compose.composed_volume_id(members), study_uid, "composed", None, chain[0].role,
        f"composed from {len(members)} {chain[0].role} stations ({chain[0].orientation})",
        chain[0].orientation, json.dumps(shape), json.dumps(affine.tolist()), len(members),
        json.dumps(members), json.dumps(gaps), 0, chain[0].description, None, fingerprint, 1,
        chain[0].variant, "{}",
    )
