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
import os
import stat
import sys
import warnings
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cno_annotate import paths
from cno_annotate.derive import rebuild_volumes
from cno_annotate.errors import StoreWriteError
from cno_annotate.io import nifti
from cno_annotate.io.dicom_index import ImageRecord, SkipFile, header_value_cache, index_dicom_file
from cno_annotate.io.identity import check_file
from cno_annotate.io.roles import classify_sequence
from cno_annotate.io.volume import VolumeKind, orientation_name
from cno_annotate.store import instances
from cno_annotate.store.db import DB_NAME, Store, now
from cno_annotate.store.locations import UNLINKED, RecordedFile, relink, stored_instances, unlink_replaced
from cno_annotate.uids import stable_uid
from cno_annotate.wording import counted

Progress = Callable[[int, int], None]
_BATCH = 200
#: Imports of at least this many files index headers in worker processes. Below, the
#: workers cost more than they save for the whole process (400 files: serial 0.70 s CPU,
#: parallel 0.80 s CPU and no shorter wall time; see bench/README.md).
PARALLEL_FROM = 2000
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
    relinked: int = 0
    #: Instances whose recorded file now holds another instance (their file is no longer known).
    replaced: int = 0
    nifti: int = 0
    studies: set[str] = field(default_factory=set)
    series: set[str] = field(default_factory=set)
    skipped: list[dict] = field(default_factory=list)
    #: Known files that are not images (DICOMDIR, the sample's ground_truth.json...), by name: not listed as skipped.
    ignored: list[str] = field(default_factory=list)
    #: Warnings raised while a file was read (pydicom's, for instance), one entry per message and file.
    warnings: list[dict] = field(default_factory=list)
    duplicates: int = 0
    #: Studies whose volumes are derived again: those with a file that was read (not
    #: recognised as unchanged since an earlier import by path, size and time).
    rederive: set[str] = field(default_factory=set)

    def skip(self, path: str, reason: str) -> None:
        """List a file or folder as skipped, its name printable whatever its bytes."""
        self.skipped.append({"path": paths.display(path), "reason": reason})

    def warn(self, path: str, messages: list[str]) -> None:
        """Record the warnings raised while a file was read."""
        self.warnings.extend({"path": paths.display(path), "message": m} for m in messages)

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
            "relinked": self.relinked,
            "replaced": self.replaced,
            "nifti": self.nifti,
            "duplicates": self.duplicates,
            "volumes": len(volumes),
            "composed": sum(v.kind == VolumeKind.COMPOSED for v in volumes),
            "composition": [
                {"study_uid": n.study_uid, **n.detail} for s in sorted(self.studies) for n in store.compositions(s)
            ],
            "skipped": self.skipped,
            "ignored": sorted({os.path.basename(p) for p in self.ignored}, key=str.lower),
            "ignored_files": len(self.ignored),
            "warnings": self.warnings,
        }


#: Files that are known not to be images, by name (lower case): quietly counted, never listed as skipped.
KNOWN_NON_IMAGES = frozenset({"dicomdir", "ground_truth.json", ".ds_store", "thumbs.db", "desktop.ini"})


def is_known_non_image(path: str) -> bool:
    """Whether a file's name says it is a known non-image file (a DICOMDIR, the sample's ground truth...)."""
    return os.path.basename(path).lower() in KNOWN_NON_IMAGES


@dataclass(frozen=True)
class FoundFile:
    """A file to import: its absolute path (as the OS spells it), size and modification time."""

    path: str
    size: int
    mtime_ns: int


def iter_files(roots: Iterable[str | os.PathLike[str]], skipped: list[dict]) -> Iterator[FoundFile]:
    """Every file under the given files and folders, sorted per folder.

    Paths are made absolute and normalised; a DICOMDIR file stands for the
    folder it sits in (a CD's images). Symbolic links to folders are
    followed once each, after the folder that holds them; a link to a folder
    already walked (a loop, or a second way to the same folder) is listed in
    ``skipped`` with the reason, as are broken links, paths that do not
    exist and folders without any file.
    """
    walked: set[tuple[int, int]] = set()
    for root in roots:
        path = paths.absolute(root)
        if os.path.basename(path).upper() == "DICOMDIR" and os.path.isfile(path):
            path = os.path.dirname(path)  # a CD's DICOMDIR: its images are in the folder it sits in
        try:
            info = os.stat(path)
        except OSError:
            reason = "broken symbolic link" if os.path.islink(path) else "no such file or folder"
            skipped.append({"path": paths.display(path), "reason": reason})
            continue
        if stat.S_ISREG(info.st_mode):
            yield FoundFile(path, info.st_size, info.st_mtime_ns)
        elif stat.S_ISDIR(info.st_mode):
            before = len(skipped)
            found = yield from _walk(path, walked, skipped)
            if not found and len(skipped) == before:
                skipped.append({"path": paths.display(path), "reason": "no files in this folder"})
        else:
            skipped.append({"path": paths.display(path), "reason": "not a regular file or folder"})


def _walk(top: str, walked: set[tuple[int, int]], skipped: list[dict]) -> Generator[FoundFile, None, int]:
    """Files under ``top`` (then under the folder links found there); returns how many."""
    info = os.stat(top)
    if (info.st_dev, info.st_ino) in walked:
        skipped.append({"path": paths.display(top), "reason": "symbolic link to a folder already imported "
                        f"in this run ({paths.display(os.path.realpath(top))})"})
        return 0
    walked.add((info.st_dev, info.st_ino))
    found, links, folders = 0, [], [top]
    while folders:
        folder = folders.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            skipped.append({"path": paths.display(folder), "reason": f"cannot list: {exc.strerror}"})
            continue
        subfolders = []
        for entry in entries:
            try:
                if entry.is_symlink():
                    if entry.is_dir():
                        links.append(entry.path)
                        continue
                    if not entry.is_file():
                        skipped.append({"path": paths.display(entry.path), "reason": "broken symbolic link"})
                        continue
                if entry.is_dir(follow_symlinks=False):
                    sub = entry.stat(follow_symlinks=False)
                    if (sub.st_dev, sub.st_ino) not in walked:
                        walked.add((sub.st_dev, sub.st_ino))
                        subfolders.append(entry.path)
                elif entry.is_file():
                    sub = entry.stat()
                    found += 1
                    yield FoundFile(entry.path, sub.st_size, sub.st_mtime_ns)
            except OSError as exc:
                skipped.append({"path": paths.display(entry.path), "reason": f"cannot read: {exc.strerror}"})
        folders.extend(reversed(subfolders))
    for link in links:
        found += yield from _walk(link, walked, skipped)
    return found


def _store_files(store: Store) -> Callable[[str], bool]:
    """Whether a path is one of the store's own files (database, its journals, cached volumes)."""
    if store.folder is None:  # a server store: none of its files is on this machine
        return lambda path: False
    root = paths.absolute(store.root)
    database = os.path.join(root, DB_NAME)
    own = {database + suffix for suffix in ("", "-wal", "-shm", "-journal")}
    cache = paths.absolute(store.root / "cache")  # not store.cache_dir: that makes the folder
    return lambda path: path in own or paths.is_under(path, cache)


@dataclass
class _Known:
    """What the store already holds, looked up once per import."""

    images: dict[str, instances.KnownInstance]  # SOP UID -> the instance, its recorded file, series and study
    files: dict[str, instances.FileState]  # path text -> what an earlier import made of the file
    nifti: dict[str, instances.NiftiSource]  # volume id -> the volume and its recorded file
    held: dict[str, set[str]] = field(default_factory=dict)  # path text -> SOP UIDs recorded in that file

    def __post_init__(self) -> None:
        for sop_uid, instance in self.images.items():
            self.held.setdefault(instance.path, set()).add(sop_uid)

    def add(self, instance: instances.KnownInstance) -> None:
        """Record a new instance and its file."""
        self.images[instance.sop_uid] = instance
        self.held.setdefault(instance.path, set()).add(instance.sop_uid)

    def move(self, sop_uid: str, text: str) -> None:
        """Record that an instance's file is now ``text``."""
        old = self.images[sop_uid]
        self.held.get(old.path, set()).discard(sop_uid)
        self.add(instances.KnownInstance(sop_uid, text, old.series_uid, old.study_uid))

    def still_holds(self, text: str, sop_uid: str) -> bool:
        """Whether the recorded file ``text`` is still on disk and still holds instance ``sop_uid``."""
        state = self.files.get(text)
        recorded = RecordedFile(text, state.size, state.mtime_ns, state.ref) if state and state.kind == "dicom" else None
        return check_file(paths.from_text(text), sop_uid, recorded).ok

    @classmethod
    def of(cls, store: Store) -> _Known:
        return cls({i.sop_uid: i for i in instances.known_instances(store.db)},
                   {f.path: f for f in instances.file_states(store.db)},
                   {n.volume_id: n for n in instances.nifti_sources(store.db)})


@dataclass
class _Pending:
    """Writes collected while files are indexed, flushed in batches."""

    records: list[ImageRecord] = field(default_factory=list)
    relinks: list[tuple[str, str, str]] = field(default_factory=list)  # (old path text, new path text, SOP UID)
    holders: list[tuple[str, str]] = field(default_factory=list)  # (path text, SOP UID it holds now)
    files: list[instances.FileState] = field(default_factory=list)
    #: How many of the records' instances another import had written by the time they were flushed.
    raced: int = 0

    def __len__(self) -> int:
        return len(self.records) + len(self.relinks) + len(self.holders) + len(self.files)


def import_paths(store: Store, roots: list[Path], progress: Progress | None = None) -> ImportReport:
    """Import files and folders into the store.

    A file whose path, size and modification time are recorded from an
    earlier import is not read again (and a study none of whose files was
    read keeps its derived volumes as they are). An instance already in the store whose
    recorded file is gone is re-linked to the file found now.

    Parameters
    ----------
    store : Store
        The open store.
    roots : list of Path
        Files and folders; folders are walked recursively.
    progress : callable, optional
        Called as ``progress(done, total)`` while files are indexed.

    Returns
    -------
    ImportReport
        Counts, the studies and series found, and every skipped file.
    """
    missing: list[dict] = []
    own = _store_files(store)
    listed = [f for f in iter_files(roots, missing) if not own(f.path)]
    files = [f for f in listed if not is_known_non_image(f.path)]
    with store.transaction() as db:
        run_id = instances.start_import_run(db, now(), [paths.display(paths.absolute(p)) for p in roots])
    report = ImportReport(run_id=run_id, files=len(listed), skipped=missing,
                          ignored=[f.path for f in listed if is_known_non_image(f.path)])
    known = _Known.of(store)
    owners = _Owners.from_store(store)
    unchanged = [_recorded_outcome(known, f) for f in files]
    pending = _Pending()
    saved = 0
    try:
        # Commits until the run's last one below are flushed to disk with it (Store.deferred_flush).
        with store.deferred_flush():
            with header_value_cache():
                indexed = _indexed([f.path for f, done in zip(files, unchanged) if done is None])
                for n, (found, outcome) in enumerate(zip(files, unchanged), start=1):
                    if outcome is not None:
                        _count_unchanged(outcome, found, report)
                    else:
                        _, (result, notes) = next(indexed)
                        if notes:
                            report.warn(found.path, notes)
                        _record_one(store, found, result, known, owners, pending, report)
                    if len(pending) >= _BATCH:
                        _flush(store, pending)
                        _count_raced(pending, report)
                        saved, pending = saved + len(pending.records), _Pending()
                    if progress is not None:
                        progress(n, len(files))
            _flush(store, pending)
            _count_raced(pending, report)
            saved += len(pending.records)
            for problem in rebuild_volumes(store, sorted(report.rederive)):
                report.skip(problem["path"], problem["reason"])
    except StoreWriteError as exc:
        raise StoreWriteError(_stopped_message(store, exc, saved), exc.reason) from None
    with store.transaction() as db:
        instances.finish_import_run(db, run_id, now(), report.as_dict(store),
                                    [(item["path"], item["reason"]) for item in report.skipped])
    return report


def _recorded_outcome(known: _Known, found: FoundFile) -> tuple | None:
    """What an earlier import made of this very file (same path, size, mtime), if it still holds."""
    text = paths.to_text(found.path)
    state = known.files.get(text)
    if state is None or state.size != found.size or state.mtime_ns != found.mtime_ns:
        return None
    kind, ref = state.kind, state.ref
    if kind == "dicom" and ref in known.images and known.images[ref].path == text:
        return (kind, known.images[ref].series_uid, known.images[ref].study_uid)
    if kind == "nifti" and ref in known.nifti and known.nifti[ref].path == text:
        return (kind, ref, known.nifti[ref].study_uid)
    if kind == "skipped":
        return (kind, state.reason, None)
    return None


def _count_unchanged(outcome: tuple, found: FoundFile, report: ImportReport) -> None:
    kind, a, b = outcome
    if kind == "skipped":
        report.skip(found.path, a)
        return
    report.series.add(a)
    report.studies.add(b)
    if kind == "nifti":
        report.nifti += 1
    else:
        report.instances += 1
        report.already_imported += 1


def _stopped_message(store: Store, exc: StoreWriteError, saved: int) -> str:
    """What a write failure in the middle of an import left behind, truthfully."""
    if not saved:
        return str(exc)
    return (f"the store at {store.root} could not be written ({exc.reason}): the import stopped after saving "
            f"{counted(saved, 'image')} (kept in the store, their series may be incomplete); run the import again to "
            f"finish it")


def index_file(path: str | Path) -> tuple[list[ImageRecord] | str | None, list[str]]:
    """Index one DICOM file: its image records, or the reason it is skipped (None: NIfTI).

    Returns
    -------
    (result, warnings)
        The result, and the messages of the warnings raised while the file
        was read (caught here, for this file only, so that they go into the
        import report instead of to stderr).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = _index_file(Path(path))
    return result, list(dict.fromkeys(" ".join(str(w.message).split()) for w in caught))


def _index_file(path: Path) -> list[ImageRecord] | str | None:
    if nifti.is_nifti_path(path):
        return None
    try:
        return index_dicom_file(path)
    except SkipFile as exc:
        return str(exc)
    except OSError as exc:
        return f"cannot read: {exc.strerror}"
    except MemoryError:
        return "not enough memory to read its header"


def _index_chunk(chunk: list[str]) -> list:
    return [index_file(p) for p in chunk]


def _indexed(files: list[str]) -> Iterator[tuple[str, tuple[list[ImageRecord] | str | None, list[str]]]]:
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


@dataclass
class _Owners:
    """Which patient each study belongs to and which study each series belongs to.

    Files of different patients never share a study or a series, even when
    they carry the same UIDs: the first file seen (in the store, then in
    import order) owns the UID and the others are refused with the reason.
    """

    study_patient: dict[str, tuple[str, str, str]]
    series_study: dict[str, str]

    @classmethod
    def from_store(cls, store: Store) -> _Owners:
        """What the store already holds."""
        studies = {o.study_uid: (o.patient_id, o.patient_name, o.birth_date) for o in instances.study_owners(store.db)}
        return cls(studies, {s.series_uid: s.study_uid for s in instances.series_studies(store.db)})

    def conflict(self, record: ImageRecord) -> str:
        """Why a record may not join its study or series ("" if it may); claims them if free."""
        p, study_uid, series_uid = record.patient, record.study["study_uid"], record.series["series_uid"]
        patient = (p["patient_id"], p["patient_name"], p["birth_date"])
        owner = self.study_patient.setdefault(study_uid, patient)
        if owner != patient:
            return (f"StudyInstanceUID {study_uid} already belongs to another patient "
                    "(PatientID, PatientName or birth date differ): not merged")
        study = self.series_study.setdefault(series_uid, study_uid)
        if study != study_uid:
            return f"SeriesInstanceUID {series_uid} already belongs to another study ({study}): not merged"
        return ""


def _record_one(store: Store, found: FoundFile, indexed, known: _Known, owners: _Owners, pending: _Pending,
                report: ImportReport) -> None:
    """Add one indexed file to the pending writes, or record why it was skipped."""
    path, text = found.path, paths.to_text(found.path)
    if indexed is None:
        try:
            volume_id = _import_nifti(store, Path(path), report)
        except SkipFile as exc:
            report.skip(path, str(exc))
        except OSError as exc:
            report.skip(path, f"cannot read: {exc.strerror}")
        else:
            if volume_id is not None:
                known.nifti[volume_id] = instances.NiftiSource(volume_id, text, "")
                pending.files.append(instances.FileState(text, found.size, found.mtime_ns, "nifti", volume_id, None))
        return
    if isinstance(indexed, str):
        for sop_uid in known.held.get(text, ()):  # an imported file now unusable: its slice becomes a gap
            report.rederive.add(known.images[sop_uid].study_uid)
        report.skip(path, indexed)
        pending.files.append(instances.FileState(text, found.size, found.mtime_ns, "skipped", None, indexed))
        return
    records = indexed
    first = records[0]
    conflict = owners.conflict(first)
    if conflict:
        report.skip(path, conflict)
        pending.files.append(instances.FileState(text, found.size, found.mtime_ns, "skipped", None, conflict))
        return
    study_uid, series_uid = first.study["study_uid"], first.series["series_uid"]
    report.studies.add(study_uid)
    report.series.add(series_uid)
    report.rederive.add(study_uid)
    previous = known.images.get(first.sop_uid)
    if previous is None:
        report.new_instances += 1
        pending.records.extend(records)
    elif previous.path == text or paths.same_file(paths.from_text(previous.path), path):
        report.already_imported += 1
        if previous.path != text:
            return  # the same file by another way (a link): keep the recorded path
    elif not known.still_holds(previous.path, first.sop_uid):
        report.relinked += 1
        report.rederive.add(previous.study_uid)
        pending.relinks.append((previous.path, text, first.sop_uid))
    else:
        report.duplicates += 1
        report.skip(path, f"duplicate of {paths.display(paths.from_text(previous.path))} (same SOPInstanceUID)")
        return
    _unlink_others(text, first.sop_uid, known, pending, report)
    if previous is None:
        known.add(instances.KnownInstance(first.sop_uid, text, series_uid, study_uid))
    else:
        known.move(first.sop_uid, text)
    report.instances += 1
    pending.files.append(instances.FileState(text, found.size, found.mtime_ns, "dicom", first.sop_uid, None))


def _unlink_others(text: str, sop_uid: str, known: _Known, pending: _Pending, report: ImportReport) -> None:
    """The file ``text`` holds ``sop_uid`` now: instances recorded there before lose that path."""
    others = known.held.get(text, set()) - {sop_uid}
    if not others:
        return
    for other in sorted(others):
        known.move(other, UNLINKED)
        report.rederive.add(known.images[other].study_uid)
    report.replaced += len(others)
    pending.holders.append((text, sop_uid))


def _count_raced(pending: _Pending, report: ImportReport) -> None:
    """Instances another import wrote while this one read them count as already imported, not new."""
    report.new_instances -= pending.raced
    report.already_imported += pending.raced


def _flush(store: Store, pending: _Pending) -> None:
    """Write the pending image records, re-links and file states in one transaction.

    ``pending.raced`` is set to how many of its new instances another import wrote in the
    meantime (they are not written again).
    """
    if not len(pending):
        return
    with store.transaction() as db:
        pending.raced = len(stored_instances(db, sorted({r.sop_uid for r in pending.records})))
        unlink_replaced(db, pending.holders)
        relink(db, pending.relinks)
        _write_images(db, pending.records)
        instances.record_file_states(db, pending.files)


def _write_images(db, records: list[ImageRecord]) -> None:
    """Insert a batch of image records (and their patients, studies, series) in the open transaction."""
    if not records:
        return
    for record in {r.series["series_uid"]: r for r in records}.values():
        instances.add_series(db, _series_place(record))
    instances.add_images(db, (_image_row(r) for r in records))


def _series_place(record: ImageRecord) -> instances.SeriesPlace:
    """Where an image record's series goes: its study and patient, as the headers name them."""
    p, s, se = record.patient, record.study, record.series
    return instances.SeriesPlace(
        patient_id=p["patient_id"], patient_name=p["patient_name"], birth_date=p["birth_date"], sex=p["sex"],
        study_uid=s["study_uid"], study_date=s["study_date"], study_description=s["description"],
        accession=s["accession"], institution=s["institution"], series_uid=se["series_uid"],
        modality=se["modality"], series_number=se["series_number"], attributes=se["attributes"],
    )


def _image_row(r: ImageRecord) -> instances.ImageRow:
    """An image record as the index stores it."""
    return instances.ImageRow(
        r.sop_uid, r.frame, r.series["series_uid"], r.path, r.transfer_syntax, r.pixel_offset, r.frames, r.dtype,
        r.photometric, r.bits_stored, r.rows, r.columns, r.position, r.orientation, r.pixel_spacing,
        r.slice_thickness, r.rescale, r.echo_time, r.instance_number, r.geometry_known, r.split_values,
    )


def _import_nifti(store: Store, path: Path, report: ImportReport) -> str | None:
    """Record a 3-D NIfTI file as a volume in a study named after its folder; its volume id (None: a duplicate)."""
    affine, shape = nifti.read_nifti_geometry(path)
    digest = hashlib.sha1(path.read_bytes()).hexdigest()
    volume_id = stable_uid("nifti", digest)
    text = paths.to_text(path)
    folder = path.resolve().parent
    study_uid = stable_uid("nifti-study", str(folder))
    recorded = instances.nifti_source(store.db, volume_id)
    if recorded is not None and recorded.path is not None and recorded.path != text:
        previous = paths.from_text(recorded.path)
        if paths.exists(previous) and not paths.same_file(previous, os.fspath(path)):
            report.duplicates += 1
            report.skip(os.fspath(path), f"duplicate of {paths.display(previous)} (same content)")
            return None
        if not paths.exists(previous):
            report.relinked += 1
            study_uid = recorded.study_uid  # a moved file stays in the study its reads refer to
    name = path.name
    role, reason = classify_sequence({"SeriesDescription": name})
    normal = affine[:3, 2] / np.linalg.norm(affine[:3, 2])
    with store.transaction() as db:
        instances.add_nifti_volume(db, instances.NiftiVolume(
            volume_id, study_uid, f"NIfTI files in {folder.name}", role, reason, orientation_name(normal),
            tuple(shape), affine.tolist(), name, text, digest))
    report.nifti += 1
    report.studies.add(study_uid)
    report.series.add(volume_id)
    return volume_id
