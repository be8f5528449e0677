"""Reads as JSON documents (``schemas/annotation.schema.json``), and back.

Export writes primary fields (site id, side, sub-site id, position, extent,
grades...) with their derived forms (labels, codes, sizes, volume, scores);
import validates the whole document against the schema and the taxonomy and
schemes, then writes every read in one transaction: a document with any
error is refused whole, and the message names the file, the JSON path and why.
"""

from __future__ import annotations

from pathlib import Path

from cno_annotate import __version__
from cno_annotate.annotation.model import Followup, Lesion, Read
from cno_annotate.annotation.reads import list_reads, load_read, write_read
from cno_annotate.annotation.resources import schemas_dir, validate, versioned_schema
from cno_annotate.annotation.scheme import Scheme, load_scheme
from cno_annotate.annotation.scoring import score_read
from cno_annotate.annotation.taxonomy import Taxonomy, load_taxonomy
from cno_annotate.annotation.validation import (
    InvalidLesion,
    dumps_strict,
    load_strict_json,
    make_lesion,
    read_problems,
    reference_problems,
    roi_from_fields,
)
from cno_annotate.errors import CnoError
from cno_annotate.fileio import atomic_write_text, check_parent_folder
from cno_annotate.store.db import Store

SCHEMA = "annotation-1.2.0.schema.json"
SCHEMA_VERSION = "1.2.0"


def split_name(name: str) -> tuple[str, str]:
    """``cno-sites-1.0.0`` -> (``cno-sites``, ``1.0.0``)."""
    ident, _, version = name.rpartition("-")
    return ident, version


def read_document(read: Read) -> dict:
    """The export form of one read, scores included."""
    scheme = load_scheme(read.scheme_id, read.scheme_version)
    taxonomy = load_taxonomy(read.taxonomy)
    scores = score_read(read.lesions, read.unit_marks, scheme, taxonomy, read.unit_grades)
    tax_id, tax_version = split_name(read.taxonomy)
    return {
        "read_id": read.read_id,
        "study_uid": read.study_uid,
        "reader": read.reader,
        "status": read.status,
        "started": read.started,
        "submitted": read.submitted,
        "modified": read.modified,
        "revision": read.revision,
        "scheme": scheme.ref,
        "taxonomy": {"id": tax_id, "version": tax_version},
        "reading_study": read.reading_study,
        "role": read.role,
        "version": read.version,
        "supersedes": read.supersedes,
        "reason": read.reason,
        "lesions": [_lesion_document(l, taxonomy, scores.lesions[l.lesion_id]) for l in read.lesions],
        "unit_marks": [{"unit_id": u, "mark": m} for u, m in sorted(read.unit_marks.items())],
        "unit_grades": [{"unit_id": u, "item_id": i, "grade": g} for u, items in sorted(read.unit_grades.items())
                        for i, g in sorted(items.items())],
        "rois": [roi.to_dict() for roi in read.rois],
        "scores": scores.as_dict(),
        "active_seconds": round(read.active_seconds, 1),
        "followup": None if read.followup is None else {
            "prior_read_id": read.followup.prior_read_id,
            "outcomes": [{"tracking_uid": u, "status": str(s)} for u, s in sorted(read.followup.outcomes.items())],
        },
    }


def _lesion_document(lesion: Lesion, taxonomy: Taxonomy, score) -> dict:
    site = taxonomy.site(lesion.site_id) if lesion.site_id else None
    unit_id = None
    if site is not None and (lesion.side or not site.lateral):
        unit_id = taxonomy.unit_id(site.id, lesion.side)
    return {
        "lesion_id": lesion.lesion_id,
        "tracking_uid": lesion.tracking_uid,
        "site": None if site is None else {
            "id": site.id, "label": site.label, "code": site.code, "bone_code": site.bone_code,
            "region": site.region, "group": site.group, "unit_id": unit_id,
        },
        "subsite": None if lesion.subsite is None else {
            "id": lesion.subsite, "label": taxonomy.subsites[lesion.subsite]["label"],
            "code": taxonomy.subsites[lesion.subsite]["code"],
        },
        "laterality": None if lesion.side is None else {"side": lesion.side, "code": taxonomy.laterality[lesion.side]},
        "position": {"lps_mm": list(lesion.position), "series_uid": lesion.series_uid, "voxel": list(lesion.voxel)},
        "extent": lesion.extent,
        "sizes_mm": None if lesion.sizes_mm is None else [round(s, 3) for s in lesion.sizes_mm],
        "volume_ml": None if lesion.volume_ml is None else round(lesion.volume_ml, 4),
        "grades": dict(sorted(lesion.grades.items())),
        "score": score,
        "comment": lesion.comment,
        "confidence": lesion.confidence,
        "stir_muscle_ratio": lesion.stir_muscle_ratio,
        "created": {"by": lesion.created_by, "at": lesion.created_at},
        "modified": {"by": lesion.modified_by, "at": lesion.modified_at},
    }


def export_document(store: Store, study_uid: str | None = None, reader: str | None = None,
                    reading_study: str | None = None, latest_only: bool = False) -> dict:
    """Every matching read of the store as one validated document."""
    rows = list_reads(store, study_uid, reader, reading_study, latest_only=latest_only)
    return document_of([load_read(store, r["read_id"]) for r in rows])


def document_of(reads: list[Read]) -> dict:
    """A validated document holding these reads."""
    document = {
        "schema_version": SCHEMA_VERSION,
        "generator": f"cno-annotate {__version__}",
        "reads": [read_document(r) for r in reads],
    }
    validate(document, SCHEMA, "export")
    return document


def write_document(document: dict, path: Path) -> Path:
    """Write a document atomically (temporary file, fsync, rename)."""
    check_parent_folder(Path(path))
    return atomic_write_text(path, dumps_strict(document) + "\n")


def reads_from_document(document: dict, source: str) -> list[Read]:
    """Validate a document (schema, then every lesion and read through the one validator) and build its reads.

    Raises
    ------
    CnoError
        Naming ``source``, the JSON path of the first problem and why.
    """
    version = document.get("schema_version") if isinstance(document, dict) else None
    known = schemas_dir() / versioned_schema("annotation", str(version))
    validate(document, known.name if isinstance(version, str) and known.exists() else SCHEMA, source)
    reads = []
    seen = set()
    for r, data in enumerate(document["reads"]):
        where = f"$.reads[{r}]"
        if data["read_id"] in seen:
            raise CnoError(f"{source}: {where}.read_id: read {data['read_id']!r} appears twice")
        seen.add(data["read_id"])
        taxonomy_name = f"{data['taxonomy']['id']}-{data['taxonomy']['version']}"
        taxonomy = _load(lambda: load_taxonomy(taxonomy_name), source, f"{where}.taxonomy")
        scheme = _load(lambda: load_scheme(data["scheme"]["id"], data["scheme"]["version"]), source, f"{where}.scheme")
        lesions = [_lesion_from(l, taxonomy, scheme, source, f"{where}.lesions[{n}]")
                   for n, l in enumerate(data["lesions"])]
        ids = [l.lesion_id for l in lesions]
        if len(set(ids)) != len(ids):
            raise CnoError(f"{source}: {where}.lesions: lesion ids repeat")
        marks = {}
        for n, mark in enumerate(data["unit_marks"]):
            if mark["unit_id"] in marks:
                raise CnoError(f"{source}: {where}.unit_marks[{n}].unit_id: {mark['unit_id']} is marked twice")
            marks[mark["unit_id"]] = mark["mark"]
        read = Read(data["read_id"], data["study_uid"], data["reader"], scheme.id, scheme.version,
                    taxonomy_name, data["status"], data["started"], data["submitted"], data["modified"],
                    data["revision"], lesions, marks, data["reading_study"], data["role"], data["version"],
                    data["supersedes"], data["reason"], _unit_grades_from(data, taxonomy, scheme, source, where),
                    _rois_from(data, source, where),
                    active_seconds=float(data.get("active_seconds", 0.0)),
                    followup=_followup_from(data.get("followup"), source, where))
        problems = read_problems(read, taxonomy)
        if problems:
            raise CnoError(f"{source}: {problems[0].at(where)}")
        reads.append(read)
    return reads


def _rois_from(data: dict, source: str, where: str) -> list:
    """A read's ROIs (schema 1.2.0), each through the one ROI validator."""
    rois = []
    for n, entry in enumerate(data.get("rois", [])):
        try:
            rois.append(roi_from_fields(entry))
        except InvalidLesion as exc:
            raise CnoError(f"{source}: {exc.problem.at(f'{where}.rois[{n}]')}") from None
    return rois


def _unit_grades_from(data: dict, taxonomy: Taxonomy, scheme: Scheme, source: str, where: str) -> dict:
    """A read's unit grades (schema 1.1.0), each checked: a known unit, an item graded per unit that applies."""
    grades: dict[str, dict] = {}
    for n, entry in enumerate(data.get("unit_grades", [])):
        path = f"{where}.unit_grades[{n}]"
        site, _ = _load(lambda: taxonomy.unit_site(entry["unit_id"]), source, f"{path}.unit_id")
        _load(lambda: scheme.check_unit_grade(entry["item_id"], entry["grade"], site.unit_type), source,
              f"{path}.grade")
        if entry["item_id"] in grades.get(entry["unit_id"], {}):
            raise CnoError(f"{source}: {path}: {entry['unit_id']} {entry['item_id']} is graded twice")
        grades.setdefault(entry["unit_id"], {})[entry["item_id"]] = entry["grade"]
    return grades


def _followup_from(data: dict | None, source: str, where: str) -> Followup | None:
    """A read's follow-up link (schema 1.2.0); an outcome repeated for one prior lesion is refused."""
    if data is None:
        return None
    outcomes: dict[str, str] = {}
    for n, entry in enumerate(data["outcomes"]):
        if entry["tracking_uid"] in outcomes:
            raise CnoError(f"{source}: {where}.followup.outcomes[{n}].tracking_uid: prior lesion "
                           f"{entry['tracking_uid']} has two outcomes")
        outcomes[entry["tracking_uid"]] = entry["status"]
    return Followup(data["prior_read_id"], outcomes)  # type: ignore[arg-type]


def _load(fn, source: str, where: str):
    try:
        return fn()
    except CnoError as exc:
        raise CnoError(f"{source}: {where}: {exc}") from None


def _lesion_from(data: dict, taxonomy: Taxonomy, scheme: Scheme, source: str, where: str) -> Lesion:
    try:
        return make_lesion(
            taxonomy, scheme,
            lesion_id=data["lesion_id"],
            position=data["position"]["lps_mm"],
            series_uid=data["position"]["series_uid"],
            voxel=data["position"]["voxel"],
            site_id=data["site"]["id"] if data["site"] else None,
            side=data["laterality"]["side"] if data["laterality"] else None,
            subsite=data["subsite"]["id"] if data["subsite"] else None,
            extent=data["extent"],
            grades=data["grades"],
            comment=data["comment"],
            confidence=data["confidence"],
            created_by=data["created"]["by"], created_at=data["created"]["at"],
            modified_by=data["modified"]["by"], modified_at=data["modified"]["at"],
            stir_muscle_ratio=data.get("stir_muscle_ratio"),
            tracking_uid=data.get("tracking_uid"),  # documents before 1.2.0: a new UID
        )
    except InvalidLesion as exc:
        raise CnoError(f"{source}: {exc.problem.at(where)}") from None


def _refuse_reader_exports(store: Store, reads: list[Read], source: str) -> None:
    """Refuse a reader's blinded export (``reading-study export``): its study UIDs are reading codes."""
    from cno_annotate.reading_study import case_of_code

    for read in reads:
        if read.reading_study and case_of_code(store, read.reading_study, read.study_uid):
            raise CnoError(f"{source}: study {read.study_uid} is a reading code of reading study "
                           f"{read.reading_study}: a reader export is a blinded record for the coordinator and "
                           f"cannot be imported back (its reads are in the store already); nothing was imported")


def _refuse_other_readers(store: Store, reads: list[Read], source: str) -> None:
    """On a server, a reader's or adjudicator's login imports no read of another reader (the server would refuse
    it anyway, with a message about a table): one line saying whose the document is."""
    from cno_annotate.reading_study import limited_login

    login = limited_login(store)
    others = sorted({read.reader for read in reads} - {login}) if login is not None else []
    if others:
        raise CnoError(f"{source}: this document holds reads of {', '.join(others)}; the login {login!r} imports only "
                       f"its own reads (the coordinator's login imports anyone's); nothing was imported")


def import_document(store: Store, path: Path, replace: bool = False, actor: str = "coordinator") -> list[str]:
    """Import every read of a JSON file, all or nothing; returns the read ids.

    The file is read as strict JSON, every lesion is built through
    :func:`~cno_annotate.annotation.validation.make_lesion`, every read is
    checked by :func:`~cno_annotate.annotation.validation.read_problems` (the
    editor's rules) and against the store by
    :func:`~cno_annotate.annotation.validation.reference_problems`.

    Raises
    ------
    CnoError
        If the file is unreadable or invalid (naming the JSON path), or a read
        exists already (unless ``replace``); the store is unchanged.
    """
    source = str(path)
    reads = reads_from_document(load_strict_json(path), source)
    _refuse_reader_exports(store, reads, source)
    _refuse_other_readers(store, reads, source)
    existing = {r["read_id"]: r for r in list_reads(store)}
    clashes = [r.read_id for r in reads if r.read_id in existing]
    locked = [read_id for read_id in clashes if existing[read_id]["status"] == "submitted"]
    if locked:
        raise CnoError(f"{source}: the store's read {locked[0]} is submitted and locked: it cannot be replaced; "
                       f"submitted reads change only through a new version ('cno-annotate reading-study new-version'); nothing was imported")
    if clashes and not replace:
        raise CnoError(f"{source}: the store already has read {clashes[0]} (use --replace to overwrite)")
    problems = reference_problems(store, reads)
    if problems:
        raise CnoError(f"{source}: {problems[0]}")
    with store.transaction():
        for read in reads:
            write_read(store, read, actor=actor, in_transaction=True)
    return [r.read_id for r in reads]
