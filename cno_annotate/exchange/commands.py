"""``read export-sr``, ``read import-sr`` and ``read export-seg``: audited coordinator exports and the import.

SR and SEG carry the study's identifiers (patient, study and series UIDs), so
in reading studies they are coordinator exports: each is written through
:func:`~cno_annotate.exports.audited_export` (staged, audited, then published).
"""

from __future__ import annotations

from pathlib import Path

from cno_annotate.annotation.reads import list_reads, write_read
from cno_annotate.annotation.validation import reference_problems
from cno_annotate.errors import CnoError
from cno_annotate.exchange.seg_export import build_segs
from cno_annotate.exchange.sr_export import build_sr
from cno_annotate.exchange.sr_import import ImportedSR, read_sr
from cno_annotate.exchange.stations import Stations
from cno_annotate.export_reads import load_for_export
from cno_annotate.exports import audited_export


def _reads(store, study_uid: str | None, reader: str | None):
    rows = list_reads(store, study_uid, reader)
    if not rows:
        raise CnoError("no reads match (see 'cno-annotate read list')")
    return load_for_export(store, [r["read_id"] for r in rows])


def export_sr(store, study_uid: str | None, reader: str | None, out: Path, force: bool) -> list[Path]:
    """Write one SR per matching read into ``out`` (``<read id>.sr.dcm``); returns the files."""
    reads = _reads(store, study_uid, reader)
    stations = Stations(store)

    def write(folder: Path):
        for read in reads:
            build_sr(read, stations).save_as(folder / f"{read.read_id}.sr.dcm", enforce_file_format=True)
        return None, {"format": "dicom-sr", "study_uid": study_uid, "reader": reader,
                      "reads": [r.read_id for r in reads]}

    return audited_export(store, out, force, "export-sr", "reads", write)[1]


def export_seg(store, study_uid: str | None, reader: str | None, out: Path, force: bool) -> tuple[list[Path], dict]:
    """Write one SEG per read and station series (``<read id>.<n>.seg.dcm``); returns files and lesions left out."""
    reads = _reads(store, study_uid, reader)
    stations = Stations(store)

    def write(folder: Path):
        skipped = {}
        for read in reads:
            segs, without = build_segs(read, stations)
            for n, seg in enumerate(segs, start=1):
                seg.save_as(folder / f"{read.read_id}.{n}.seg.dcm", enforce_file_format=True)
            if without:
                skipped[read.read_id] = without
        return skipped, {"format": "dicom-seg", "study_uid": study_uid, "reader": reader,
                         "reads": [r.read_id for r in reads], "without_extent": skipped}

    skipped, paths = audited_export(store, out, force, "export-seg", "reads", write)
    return paths, skipped


def import_srs(store, files: list[Path], replace: bool = False, actor: str = "coordinator") -> list[ImportedSR]:
    """Import SRs as reads, all or nothing; returns each read with what could not be mapped.

    Raises
    ------
    CnoError
        If a file cannot be read, a read exists (unless ``replace``) or breaks a rule;
        then the store is unchanged.
    """
    stations = Stations(store)
    imported = [read_sr(Path(f), store, stations) for f in files]
    existing = {r["read_id"] for r in list_reads(store)}
    for path, item in zip(files, imported):
        if item.read.read_id in existing and not replace:
            raise CnoError(f"{path}: the store already has read {item.read.read_id} (use --replace to overwrite)")
    problems = reference_problems(store, [i.read for i in imported])
    if problems:
        raise CnoError(f"{problems[0]}")
    with store.transaction():
        for item in imported:
            write_read(store, item.read, actor=actor, in_transaction=True)
    return imported
