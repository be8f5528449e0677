"""De-identified reading packages: everything one reader needs, nothing that identifies a patient.

Coordinator side, :func:`build` writes a folder for one reader of a reading
study::

    manifest.json        study, reader, package id, schema_version, content hash, the files' hashes
    images/CNO-0007/s001/00001.dcm ...   de-identified copies of the reader's cases (see deid.py)
    store/store.sqlite   a reader store: the de-identified images indexed, that reader's worklist
                         (reading codes), nothing else
    scheme/              the scoring scheme and site taxonomy the reads use

The stand-in UIDs and date offsets come from a secret of the reading study kept
in the coordinator's store (``package_secrets``), so every package of a study
gives a source UID the same stand-in; the pairs are recorded in
``package_uids`` for :func:`collect`, and never leave the coordinator's store.

Reader side, :func:`open_package` re-links the images wherever the folder now
lies and :func:`export_results` writes the reader's reads as a results file
signed with the package's key. :func:`collect` checks that file, maps the
reads back to the original study and series, validates them with the one
validator and writes them, audited; collecting the same results again changes
nothing.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import math
import os
import secrets
import shutil
import uuid
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cno_annotate import __version__
from cno_annotate import reading_study as rs
from cno_annotate.annotation.documents import export_document, reads_from_document, write_document
from cno_annotate.annotation.reads import list_reads, write_read
from cno_annotate.annotation.resources import schemas_dir
from cno_annotate.annotation.scheme import scheme_path
from cno_annotate.annotation.taxonomy import DEFAULT_TAXONOMY
from cno_annotate.annotation.validation import load_strict_json, reference_problems
from cno_annotate.errors import CnoError
from cno_annotate.fileio import check_parent_folder
from cno_annotate.store import Store, audit, catalog
from cno_annotate.store import packages as issued
from cno_annotate.store import reading_studies as table
from cno_annotate.store.db import DB_NAME, now
from cno_annotate.store.locations import rewrite_prefix
from cno_annotate.wording import counted

if TYPE_CHECKING:  # deid (and pydicom) load when a package is built, not when one is opened
    from cno_annotate.deid import Replacements

MANIFEST = "manifest.json"
PACKAGE_SCHEMA = "reading-package-1.0.0"
RESULTS_SCHEMA = "reading-results-1.1.0"  # 1.1.0: "opened", the cases opened without a read and the time looked
#: Results files :func:`collect` takes (1.0.0: reads only, written before cases only opened were carried).
RESULTS_SCHEMAS = ("reading-results-1.0.0", RESULTS_SCHEMA)
IMAGES, STORE, RESOURCES = "images", "store", "scheme"
#: Where the package store says its images are until the reader first opens the package.
NEUTRAL_ROOT = "/cno-reading-package"
#: Dates move back by a patient's secret number of days in this range.
OFFSET_DAYS = (365, 3 * 365)
READER_STORE_REFUSAL = ("this is a reader's package store: only the coordinator's store can set up the reading "
                        "study, issue packages or export for analysis")


@dataclass
class PackageReport:
    """What :func:`build` wrote."""

    folder: Path
    package_id: str
    cases: int
    images: int
    left_out: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what pydicom said about the source headers (once each)


@dataclass(frozen=True)
class Package:
    """An opened package (reader side): its manifest and its reader store folder."""

    folder: Path
    manifest: dict

    @property
    def reading_study(self) -> str:
        """The reading study the package belongs to."""
        return self.manifest["reading_study"]

    @property
    def reader(self) -> str:
        """The reader the package was made for."""
        return self.manifest["reader"]

    @property
    def store_root(self) -> Path:
        """The reader store inside the package."""
        return self.folder / STORE


# -- coordinator: build ---------------------------------------------------------------------------
def build(store: Store, name: str, reader: str, out: Path, actor: str = rs.COORDINATOR) -> PackageReport:
    """Write the de-identified reading package of one reader to the new folder ``out``.

    Raises
    ------
    CnoError
        If the reader has no worklist or is an adjudicator, ``out`` exists and
        is not empty, a case's files are missing, or a case keeps no image
        (all of it may carry burned-in text). Nothing is written then.
    """
    study = rs.get(store, name)
    if rs.role_of(store, name, reader) != "reader":
        raise CnoError(f"{reader!r} is an adjudicator of {name!r}: packages are for readers (adjudicators "
                       f"see the readers' reads, so they work on the coordinator's store)")
    worklist = rs.worklist(store, name, reader)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CnoError(f"{out} exists and is not an empty folder; name a new folder for the package")
    check_parent_folder(out)
    secret = _secret(store, name)
    staging = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        report, pairs = _write_package(store, study, reader, worklist, secret, staging)
        _record(store, study.name, reader, staging, report, pairs, actor)
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report.folder = out
    return report


def _write_package(store: Store, study: rs.ReadingStudy, reader: str, worklist: list[dict], secret: bytes,
                   staging: Path) -> tuple[PackageReport, dict[str, str]]:
    """The package's files in ``staging``; returns the report and the source -> stand-in UID pairs used."""
    from cno_annotate.deid import Replacements

    mapping: dict[str, str] = {}

    def stand_in(source: str) -> str:
        if source not in mapping:
            mapping[source] = stand_in_uid(secret, source)
        return mapping[source]

    cases = {c.reading_code: c for c in rs.cases(store, study.name)}
    report = PackageReport(staging, uuid.uuid4().hex, len(worklist), 0)
    for entry in worklist:
        case = cases[entry["reading_code"]]
        subject = case.patient_code if _dates_kept_in_order(study) else case.reading_code
        replacements = Replacements(case.reading_code, -offset_days(secret, subject), stand_in,
                                    study.show_age_sex)
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            report.images += _write_case(store, case, replacements, staging / IMAGES, report.left_out)
        for message in dict.fromkeys(str(w.message) for w in said):
            report.notes.append(f"{case.reading_code}: source header: {message}")
    package_store = Store.open(staging / STORE)
    try:
        from cno_annotate.importer import import_paths

        import_paths(package_store, [staging / IMAGES])
        with package_store.transaction() as db:
            rewrite_prefix(db, str(staging), NEUTRAL_ROOT)
            catalog.forget_import_log(db)  # the build's own log: the coordinator's folder names
        _record_volume_ids(store, package_store, mapping)
        _install_worklist(package_store, study, reader, worklist, cases, mapping)
        _carry_collected_reads(store, package_store, study.name, reader, mapping)
        issued.compact(package_store.db)  # no deleted row survives in a free page
    finally:
        package_store.close()
    shutil.rmtree(staging / STORE / "cache", ignore_errors=True)  # composed volumes: rebuilt where the package is read
    _copy_resources(study, staging / RESOURCES)
    _write_manifest(study, reader, staging, report)
    return report, mapping


def _write_case(store: Store, case: rs.Case, replacements: Replacements, images: Path, left_out: list[str]) -> int:
    """De-identified copies of one case's DICOM files; returns how many were written."""
    import pydicom

    from cno_annotate.deid import deidentify

    code = case.reading_code
    rows = catalog.files_of_study(store.db, case.study_uid)
    missing = [r.path for r in rows if not Path(r.path).is_file()]
    if missing:
        raise CnoError(f"{code}: {len(missing)} of its files are missing (see 'cno-annotate studies'; if the "
                       f"folder moved, run 'cno-annotate relocate OLD NEW'); no package was written")
    series: dict[str, int] = {}
    written = 0
    for row in rows:
        number = series.setdefault(row.series_uid, len(series) + 1)
        try:
            clean = deidentify(pydicom.dcmread(row.path), replacements)
        except CnoError as exc:
            left_out.append(f"{code} series {number}: {exc}")
            continue
        target = images / code / f"s{number:03d}" / f"{written + 1:05d}.dcm"
        target.parent.mkdir(parents=True, exist_ok=True)
        clean.save_as(target, enforce_file_format=True)
        written += 1
    if not written:
        raise CnoError(f"{code}: no image of this case can be packaged ({'; '.join(left_out[-3:]) or 'no images'}); "
                       f"no package was written")
    return written


def _record_volume_ids(store: Store, copies: Store, mapping: dict[str, str]) -> None:
    """Add to the UID pairs each volume of the de-identified copies (split stacks, composed volumes) with the
    coordinator's volume of the same images.

    A copy stack is paired with the one source stack holding its instances (their stand-ins), never by its
    number: the copies lose private attributes, so a series may split into stacks in another order there.
    A composed copy is paired with the source volume composed of the paired stations, if the coordinator has one.
    Pairs recorded already are kept (a source id never changes its stand-in). Used by packages and by
    ``reading-study publish`` (the online readers' copies), so both map back one way.
    """
    from cno_annotate.volumes import stack_instances

    back = {new: source for source, new in mapping.items()}
    copy_volumes = copies.volumes()
    studies = {back[v.study_uid] for v in copy_volumes if v.study_uid in back}
    sources = [v for uid in sorted(studies) for v in store.volumes(uid)]
    stack_of = {image: v.volume_id for v in sources if v.kind == "stack" for image in stack_instances(store, v)}
    stacks: dict[str, str] = {}  # copy stack -> the one source stack holding its images (a file left out: fewer)
    for volume in copy_volumes:
        if volume.kind == "stack":
            held = {stack_of.get((back.get(uid, uid), frame)) for uid, frame in stack_instances(copies, volume)}
            if len(held) == 1 and None not in held:
                stacks[volume.volume_id] = held.pop()  # type: ignore[assignment]
    composed = {tuple(v.members): v.volume_id for v in sources if v.kind == "composed"}
    pairs = {source: copied for copied, source in stacks.items()}
    for volume in copy_volumes:
        if volume.kind == "composed" and all(m in stacks for m in volume.members):
            source = composed.get(tuple(stacks[m] for m in volume.members))
            if source is not None:
                pairs[source] = volume.volume_id
    taken = set(mapping.values())
    for source, copied in pairs.items():
        if source not in mapping and copied not in taken:
            mapping[source] = copied


def _carry_collected_reads(store: Store, package_store: Store, name: str, reader: str,
                           mapping: dict[str, str]) -> None:
    """The reader's reads already in the coordinator's store, under the stand-in UIDs, locked as they are.

    A package issued again to a reader (a lost folder, a new laptop) so shows
    their submitted cases as submitted, their drafts as drafts and the cases
    they only opened as opened (with the time looked); collecting its results
    later finds these unchanged.
    """
    document = export_document(store, reader=reader, reading_study=name)
    opened = opened_without_read(store, name, reader)
    if not document["reads"] and not opened:
        return
    carried = reads_from_document(_replaced(document, mapping), f"{reader}'s collected reads")
    with package_store.transaction() as db:
        for read in carried:
            write_read(package_store, read, actor=rs.COORDINATOR, in_transaction=True)
        for case in opened:  # the cases only looked at so far, with the time looked
            table.record_opened(db, name, reader, mapping[case.study_uid], case.opened)
            table.add_looked_time(db, name, reader, mapping[case.study_uid], case.looked_seconds, case.opened)


def _replaced(value, mapping: dict[str, str]):
    """``value`` (a JSON document) with every string that is a key of ``mapping`` replaced by its value."""
    if isinstance(value, dict):
        return {key: _replaced(item, mapping) for key, item in value.items()}
    if isinstance(value, list):
        return [_replaced(item, mapping) for item in value]
    return mapping.get(value, value) if isinstance(value, str) else value


def _dates_kept_in_order(study: rs.ReadingStudy) -> bool:
    """Whether the reader may know the visits' order: one date shift per patient, true timepoints.

    Not in the hidden-order design (each case its own shift, no timepoint), nor when unpaired and unrevealed.
    """
    return study.reveal_timepoints or study.design == rs.ReadingDesign.PAIRED_CHRONOLOGICAL


def _install_worklist(package_store: Store, study: rs.ReadingStudy, reader: str, worklist: list[dict],
                      cases: dict[str, rs.Case], mapping: dict[str, str]) -> None:
    """The reading study in the reader store: same name, scheme, settings and codes; this reader only."""
    with package_store.transaction() as db:
        table.add(db, study, now(), rs.COORDINATOR)
        for entry in worklist:
            case = cases[entry["reading_code"]]
            paired = study.reveal_timepoints or study.design.paired
            patient = case.patient_code if paired else case.reading_code
            table.add_case(db, rs.Case(study.name, case.reading_code, mapping[case.study_uid], patient,
                                       case.timepoint if _dates_kept_in_order(study) else 1))
            table.add_worklist(db, study.name, reader, [(entry["position"], case.reading_code)])
        table.add_reader(db, study.name, reader, "reader")
        audit.append(db, rs.COORDINATOR, "package", f"reading-study:{study.name}", state_before=None,
                     after={"reader": reader, "cases": len(worklist)})
        issued.mark_reader_store(db, READER_STORE_REFUSAL)


def is_reader_store(store: Store) -> bool:
    """Whether ``store`` is the reader store of a package (marked when the package was made)."""
    return issued.is_reader_store(store.db)


def refuse_reader_store(store: Store, command: str) -> Store:
    """``store`` itself, unless it is a reader's package store.

    Raises
    ------
    CnoError
        In one line if ``store`` is a reader's package store: ``command`` is the coordinator's.
    """
    if is_reader_store(store):
        raise CnoError(f"{READER_STORE_REFUSAL} ('{command}' refused; nothing was changed)")
    return store


def _copy_resources(study: rs.ReadingStudy, folder: Path) -> None:
    folder.mkdir(parents=True)
    shutil.copyfile(scheme_path(study.scheme_id, study.scheme_version), folder / f"{study.scheme_id}-"
                                                                                  f"{study.scheme_version}.json")
    shutil.copyfile(schemas_dir() / "sites" / f"{DEFAULT_TAXONOMY}.json", folder / f"{DEFAULT_TAXONOMY}.json")


def _write_manifest(study: rs.ReadingStudy, reader: str, staging: Path, report: PackageReport) -> None:
    from cno_annotate.deid import options

    files = {path.relative_to(staging).as_posix(): _sha256(path)
             for folder in (IMAGES, RESOURCES) for path in sorted((staging / folder).rglob("*")) if path.is_file()}
    manifest = {
        "schema_version": PACKAGE_SCHEMA,
        "kind": "cno-annotate reading package",
        "generator": f"cno-annotate {__version__}",
        "reading_study": study.name,
        "reader": reader,
        "package_id": report.package_id,
        "created": now(),
        "scheme": {"id": study.scheme_id, "version": study.scheme_version},
        "taxonomy": DEFAULT_TAXONOMY,
        "cases": report.cases,
        "deidentification": {"standard": "DICOM PS3.15 Annex E", "options": options(study.show_age_sex)},
        "content_hash": content_hash(files),
        "files": files,
        "results_key": secrets.token_hex(32),
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _record(store: Store, name: str, reader: str, staging: Path, report: PackageReport, pairs: dict[str, str],
            actor: str) -> None:
    """The package and the UID pairs it uses, in the coordinator's store (audited)."""
    manifest = json.loads((staging / MANIFEST).read_text(encoding="utf-8"))
    codes = sorted(p.name for p in (staging / IMAGES).iterdir())
    with store.transaction() as db:
        issued.add_package(db, issued.PackageRecord(report.package_id, name, reader, manifest["created"],
                                                    manifest["content_hash"], manifest["results_key"], tuple(codes)))
        issued.add_uid_pairs(db, name, pairs)
        audit.append(db, actor, "package", f"reading-study:{name}",
                     after={"reader": reader, "package_id": report.package_id, "cases": report.cases,
                            "images": report.images, "content_hash": manifest["content_hash"]})


def content_hash(files: dict[str, str]) -> str:
    """One SHA-256 over the files' relative names and SHA-256s."""
    return hashlib.sha256("".join(f"{name}\0{digest}\n" for name, digest in sorted(files.items()))
                          .encode("utf-8")).hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _secret(store: Store, name: str) -> bytes:
    """The reading study's secret (made at its first package); never leaves the coordinator's store."""
    text = issued.secret(store.db, name)
    if text is None:
        with store.transaction() as db:
            issued.add_secret(db, name, secrets.token_hex(32))
        text = issued.secret(store.db, name)
        assert text is not None, "the secret was just kept"
    return bytes.fromhex(text)


def record_case_keys(db: Any, name: str, study_uids: Iterable[str]) -> None:
    """Record, in the reading study's UID pairs, the stand-in of each case's source study UID (in the caller's
    transaction; the study's secret is made if it has none yet).

    The stand-in is the key a server reader's login names the case by (the study PACS holds the case under it,
    packages name it so): their reads and openings never hold the source UID.
    """
    text = issued.secret(db, name)
    if text is None:
        issued.add_secret(db, name, secrets.token_hex(32))
        text = issued.secret(db, name)
        assert text is not None, "the secret was just kept"
    secret = bytes.fromhex(text)
    issued.add_uid_pairs(db, name, {uid: stand_in_uid(secret, uid) for uid in study_uids})


def stand_in_uid(secret: bytes, source: str) -> str:
    """The stand-in of a source UID: a ``2.25.`` UID from a keyed hash (the same in every package)."""
    digest = hmac.new(secret, f"uid\0{source}".encode(), hashlib.sha256).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def offset_days(secret: bytes, subject: str) -> int:
    """The secret number of days a subject's dates move back (``OFFSET_DAYS``)."""
    digest = hmac.new(secret, f"days\0{subject}".encode(), hashlib.sha256).digest()
    low, high = OFFSET_DAYS
    return low + int.from_bytes(digest[:8], "big") % (high - low + 1)


# -- reader: open and export -------------------------------------------------------------------
def is_package(folder: Path) -> bool:
    """Whether ``folder`` holds a reading package."""
    return (Path(folder) / MANIFEST).is_file() and (Path(folder) / STORE / DB_NAME).is_file()


def open_package(folder: Path) -> Package:
    """Read a package's manifest and re-link its images where the folder now lies.

    Raises
    ------
    CnoError
        If ``folder`` is not a reading package.
    """
    folder = Path(folder).resolve()
    if not is_package(folder):
        raise CnoError(f"{folder} is not a reading package (no {MANIFEST} and {STORE}/{DB_NAME})")
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CnoError(f"{folder / MANIFEST} cannot be read: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("schema_version") != PACKAGE_SCHEMA:
        raise CnoError(f"{folder / MANIFEST} is not a {PACKAGE_SCHEMA} manifest")
    package = Package(folder, manifest)
    store = Store.open(package.store_root)
    try:
        path = catalog.any_image_path(store.db)
        if path is not None:
            recorded = Path(path).parents[3]  # ROOT/images/CODE/sNNN/file.dcm
            if recorded != folder and not store.read_only:
                store.relocate(recorded, folder)
    finally:
        store.close()
    return package


def results_document(package: Package) -> dict:
    """The reader's reads of the package as a signed results document."""
    store = Store.open(package.store_root)
    try:
        document = export_document(store, reader=package.reader, reading_study=package.reading_study)
        opened = opened_without_read(store, package.reading_study, package.reader)
    finally:
        store.close()
    payload = {
        "schema_version": RESULTS_SCHEMA,
        "package_id": package.manifest["package_id"],
        "reading_study": package.reading_study,
        "reader": package.reader,
        "content_hash": package.manifest["content_hash"],
        "exported": now(),
        "document": document,
        "opened": [{"study_uid": c.study_uid, "opened": c.opened, "looked_seconds": c.looked_seconds} for c in opened],
    }
    return {**payload, "signature": _signature(package.manifest["results_key"], payload)}


def opened_without_read(store: Store, name: str, reader: str) -> list[table.OpenedCase]:
    """The cases a reader opened and looked at without making a read (a read took over the time looked before it)."""
    read_cases = {r["study_uid"] for r in list_reads(store, reader=reader, reading_study=name)}
    return [c for c in table.opened_cases(store.db, name, reader) if c.study_uid not in read_cases]


@dataclass(frozen=True)
class ResultsWritten:
    """What a results file carries: the reader's reads and the cases they only opened (looked at)."""

    reads: int
    opened: int

    def __str__(self) -> str:
        """``2 reads``, or ``0 reads and 2 opened cases`` when it carries cases only opened."""
        text = counted(self.reads, "read")
        return f"{text} and {counted(self.opened, 'opened case')}" if self.opened else text


def export_results(package: Package, out: Path, force: bool = False) -> ResultsWritten:
    """Write the reader's results file (audited in the reader store); returns what it carries."""
    from cno_annotate.exports import audited_file_export

    document = results_document(package)
    written = ResultsWritten(len(document["document"]["reads"]), len(document["opened"]))
    store = Store.open(package.store_root)
    try:
        audited_file_export(store, out, force, "export-results", f"reading-study:{package.reading_study}",
                            lambda path: (write_document(document, path),
                                          {"reader": package.reader, "reads": written.reads,
                                           "opened": written.opened}),
                            actor=package.reader)
    finally:
        store.close()
    return written

def _signature(key: str, payload: dict) -> str:
    text = json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hmac.new(bytes.fromhex(key), text.encode("utf-8"), hashlib.sha256).hexdigest()


# -- coordinator: collect ----------------------------------------------------------------------
@dataclass
class Collected:
    """What :func:`collect` did with one results file."""

    source: str
    package_id: str
    reader: str
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    older: list[str] = field(default_factory=list)  # read ids whose collected revision is newer than the file's
    opened: int = 0  # cases opened without a read, new or looked at longer than collected before
    off_worklist: int = 0  # cases opened that are no longer on the reader's worklist (not collected)


def collect(store: Store, name: str, path: Path, reader: str | None = None,
            actor: str = rs.COORDINATOR) -> Collected:
    """Import the reads of one results file under the original study and series UIDs, audited.

    Reads already collected (same read, revision and status) are left as they
    are, so collecting a file twice changes nothing; a read whose collected
    revision is newer than the file's (an older export collected after a newer
    one) is left as it is too and listed in ``Collected.older``. The cases the
    reader opened without a read come back with the time spent looking at them
    (as the online viewer records them): a case's time only grows, so an older
    file changes nothing; a case no longer on the reader's worklist is left out.

    Raises
    ------
    CnoError
        In one line, naming the file, if it is not a results file, its package
        was not issued by this store, belongs to another reading study or
        reader, was changed after export, or a read breaks a rule of the
        validator; nothing is written then.
    """
    source = str(path)
    rs.get(store, name)
    data = load_strict_json(Path(path))
    if not isinstance(data, dict) or data.get("schema_version") not in RESULTS_SCHEMAS:
        raise CnoError(f"{source}: not a reading-package results file (schema_version is not {RESULTS_SCHEMA}); "
                       f"the file was refused, nothing of it collected")
    package_id = str(data.get("package_id"))
    row = issued.package(store.db, package_id)
    if row is None:
        raise CnoError(f"{source}: package {package_id} was not issued by this store (no such package); "
                       f"the file was refused, nothing of it collected")
    payload = {k: v for k, v in data.items() if k != "signature"}
    if not hmac.compare_digest(str(data.get("signature")), _signature(row.results_key, payload)):
        raise CnoError(f"{source}: the file was changed after it was exported (its signature does not match "
                       f"package {package_id}); the file was refused, nothing of it collected")
    if row.reading_study != name or data.get("reading_study") != name:
        raise CnoError(f"{source}: package {package_id} belongs to reading study {row.reading_study!r}, "
                       f"not {name!r}; the file was refused, nothing of it collected")
    if data.get("reader") != row.reader or (reader is not None and reader != row.reader):
        raise CnoError(f"{source}: package {package_id} was issued to {row.reader!r}"
                       f"{f', not {reader!r}' if reader and reader != row.reader else ''}; the file was refused, nothing of it collected")
    reads = reads_from_document(_mapped_back(store, name, row, data["document"], source), source)
    opened = _opened_back(store, name, row, data.get("opened", []), source)
    return _write_collected(store, name, row, reads, opened, source, actor)


def _opened_back(store: Store, name: str, package: issued.PackageRecord, entries: object,
                 source: str) -> list[table.OpenedCase]:
    """The file's cases opened without a read, checked, under the original study UIDs."""
    refused = "the file was refused, nothing of it collected"
    if not isinstance(entries, list):
        raise CnoError(f"{source}: $.opened: a list of the cases opened is expected; {refused}")
    back = {new: old for old, new in issued.uid_pairs(store.db, name).items()}
    allowed = {rs.study_uid_of(store, name, code) for code in package.codes}
    out = []
    for n, entry in enumerate(entries):
        where = f"$.opened[{n}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("opened"), str):
            raise CnoError(f"{source}: {where}: an object with study_uid, opened and looked_seconds is expected; "
                           f"{refused}")
        original = back.get(str(entry.get("study_uid")))
        if original not in allowed:
            raise CnoError(f"{source}: {where}.study_uid: not a case of package {package.package_id}; {refused}")
        seconds = entry.get("looked_seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) \
                or seconds < 0:
            raise CnoError(f"{source}: {where}.looked_seconds: a number of seconds, at least 0, is expected "
                           f"(not {seconds!r}); {refused}")
        out.append(table.OpenedCase(original, entry["opened"], float(seconds)))
    return out


def _mapped_back(store: Store, name: str, package: issued.PackageRecord, document: dict, source: str) -> dict:
    """The document with the package's study and series stand-ins replaced by the original UIDs."""
    back: dict[object, str] = {new: old for old, new in issued.uid_pairs(store.db, name).items()}
    allowed = {rs.study_uid_of(store, name, code) for code in package.codes}
    mapped = copy.deepcopy(document)
    for n, read in enumerate(mapped.get("reads", []) if isinstance(mapped, dict) else []):
        where = f"$.document.reads[{n}]"
        if not isinstance(read, dict):
            continue
        original = back.get(read.get("study_uid"))
        if original not in allowed:
            raise CnoError(f"{source}: {where}.study_uid: not a case of package {package.package_id}; "
                           f"the file was refused, nothing of it collected")
        if read.get("reader") != package.reader or read.get("reading_study") != name:
            raise CnoError(f"{source}: {where}: a read of {read.get('reader')!r} in {read.get('reading_study')!r}, "
                           f"but the package was issued to {package.reader!r} in {name!r}; the file was refused, nothing of it collected")
        read["study_uid"] = original
        for m, lesion in enumerate(read.get("lesions", [])):
            position = lesion.get("position") if isinstance(lesion, dict) else None
            if isinstance(position, dict) and position.get("series_uid") in back:
                position["series_uid"] = back[position["series_uid"]]
            elif isinstance(position, dict):
                raise CnoError(f"{source}: {where}.lesions[{m}].position.series_uid: not a series of the package; "
                               f"the file was refused, nothing of it collected")
    return mapped


def _write_collected(store: Store, name: str, package: issued.PackageRecord, reads: list,
                     opened: list[table.OpenedCase], source: str, actor: str) -> Collected:
    result = Collected(source, package.package_id, package.reader)
    stored = {r["read_id"]: r for r in list_reads(store, reader=package.reader, reading_study=name)}
    changed = []
    for read in reads:
        old = stored.get(read.read_id)
        if old is not None and old["revision"] == read.revision and old["status"] == read.status:
            result.unchanged += 1
            continue
        if old is not None and (old["revision"] > read.revision or old["status"] == "submitted" != read.status):
            result.older.append(read.read_id)  # an earlier export: a collected read never goes back
            continue
        if old is not None and old["status"] == "submitted":
            raise CnoError(f"{source}: read {read.read_id} was collected submitted and now differs; a submitted "
                           f"read changes only through a new version; the file was refused, nothing of it collected")
        changed.append(read)
        result.updated += old is not None
        result.new += old is None
    looked = _looked_longer(store, name, package.reader, opened, result)
    if not changed and not looked:
        return result
    problems = reference_problems(store, changed)
    if problems:
        raise CnoError(f"{source}: {problems[0]}; the file was refused, nothing of it collected")
    codes = {c.study_uid: c.reading_code for c in rs.cases(store, name)}
    with store.transaction() as db:
        for read in changed:
            write_read(store, read, actor=actor, in_transaction=True)
        for case, more in looked:  # as the viewer records an opening and the time looked (one code path)
            table.record_opened(db, name, package.reader, case.study_uid, case.opened)
            if more > 0:
                table.add_looked_time(db, name, package.reader, case.study_uid, more, case.opened)
        audit.append(db, actor, "collect", f"reading-study:{name}",
                     after={"package_id": package.package_id, "reader": package.reader, "new": result.new,
                            "updated": result.updated, "unchanged": result.unchanged, "older": len(result.older),
                            "opened": [{"reading_code": codes[c.study_uid], "looked_seconds": c.looked_seconds}
                                       for c, _ in looked]})
    return result


#: Looked-at times closer than this (seconds) are the same time (a sum stored as REAL may differ in its last bits).
_SAME_TIME = 1e-6


def _looked_longer(store: Store, name: str, reader: str, opened: list[table.OpenedCase],
                   result: Collected) -> list[tuple[table.OpenedCase, float]]:
    """The file's opened cases that are new to the store or were looked at longer: each with the seconds to add.

    A case no longer on the reader's worklist is counted in ``result.off_worklist`` and left out.
    """
    collected = {c.study_uid: c.looked_seconds for c in table.opened_cases(store.db, name, reader)}
    on_worklist = {e.study_uid for e in table.worklist(store.db, name, reader)}
    out = []
    for case in opened:
        if case.study_uid not in on_worklist:
            result.off_worklist += 1
            continue
        before = collected.get(case.study_uid)
        if before is None or case.looked_seconds > before + _SAME_TIME:
            out.append((case, case.looked_seconds - (before or 0.0)))
    result.opened = len(out)
    return out
