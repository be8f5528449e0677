"""CLI groups for blinded reading studies, clinical linkage and the audit trail."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cno_annotate.cli_args import (
    add_json,
    add_link_key,
    add_output,
    add_reader,
    add_reading_study,
    add_replace,
    add_timeout,
    command,
)
from cno_annotate.cli_output import existing_store_root, open_store
from cno_annotate.cli_output import print_rows as _print_rows
from cno_annotate.errors import CnoError
from cno_annotate.wording import counted


def register(sub, common) -> None:
    """Add ``reading-study``, ``link``, ``clinical``, ``report`` and ``audit`` to the CLI."""
    _register_reading_study(sub, common)
    _register_link(sub, common)
    clinical = sub.add_parser("clinical", help="coordinator only: clinical records")
    actions = clinical.add_subparsers(dest="clinical_command", required=True, metavar="ACTION")
    p = command(actions, "import", common, cmd_clinical_import, "import clinical records from CSV (all or nothing)",
                "Columns: record_id, visit_date (YYYY-MM-DD), sex (F/M), age_at_onset, age_at_diagnosis (years), "
                "painful_sites ('femur.distal:R; Distal tibia L; T8'), treatments ('nsaid 2024-01-10..2024-03-01; "
                "bisphosphonate 2024-03-02..'), crp_mg_l, esr_mm_h.")
    p.add_argument("file", type=Path, metavar="FILE.csv", help="clinical records, one row per visit")
    add_link_key(p, help="the coordinator database (holds the records)")
    add_replace(p, "replace visits imported before")
    _register_report(sub, common)
    _register_audit(sub, common)


def _register_reading_study(sub, common) -> None:
    rs = sub.add_parser("reading-study", help="blinded multi-reader reading studies",
                        description="Create a reading study, add cases and readers, assign seeded random "
                                    "worklists, follow progress, export reads.")
    actions = rs.add_subparsers(dest="rs_command", required=True, metavar="ACTION")
    p = command(actions, "list", common, cmd_list, "the reading studies of the store: cases, readers, progress")
    add_json(p)
    p = command(actions, "create", common, cmd_create, "create a reading study")
    add_reading_study(p)
    p.add_argument("--scheme", help="scoring scheme id (default rai-cromris)")
    p.add_argument("--seed", type=int, default=0, help="seed of the reading codes and worklists")
    p.add_argument("--show-age-sex", action="store_true", help="let readers see age and sex")
    p.add_argument("--reveal-timepoints", action="store_true", help="let readers see timepoints of one patient")
    p.add_argument("--show-timer", action="store_true",
                   help="let readers see their active reading time in the viewer (it is measured either way)")
    p.add_argument("--idle-seconds", type=float, default=60.0, metavar="S",
                   help="the reading timer pauses after S seconds without input (default 60)")
    p.add_argument("--design", default="unpaired-blinded", choices=DESIGNS,
                   help="how a patient's timepoints are read: unpaired-blinded (default: separate cases, random "
                        "order, no prior shown), paired-chronological (prior shown, order known), "
                        "paired-hidden-order (both visits shown as A and B, which is earlier hidden); fixed once "
                        "reading starts")
    p = command(actions, "show", common, cmd_show, "a reading study's settings: scheme, seed, design, blinding")
    add_reading_study(p)
    add_json(p, "object")
    p = command(actions, "design", common, cmd_design, "change the design before reading starts")
    add_reading_study(p)
    p.add_argument("design", choices=DESIGNS, help="the new design")
    p = command(actions, "add-cases", common, cmd_add_cases, "add studies as cases (reading codes)")
    add_reading_study(p)
    p.add_argument("studies", nargs="*", metavar="STUDY", help="study UID, accession number or patient ID")
    p.add_argument("--all", action="store_true", help="add every study of the store")
    p = command(actions, "add-readers", common, cmd_add_readers, "add readers")
    add_reading_study(p)
    p.add_argument("readers", nargs="+", metavar="READER", help="reader ids (as they will log in)")
    p.add_argument("--adjudicator", action="store_true", help="add them as adjudicators")
    p = command(actions, "assign", common, cmd_assign, "give each reader a seeded random worklist")
    add_reading_study(p)
    p.add_argument("--seed", type=int, help="seed (default: the study's)")
    p = command(actions, "move", common, cmd_move, "take a case off a reader's worklist, or move it to another's")
    add_reading_study(p)
    p.add_argument("code", help="reading code of the case")
    add_reader(p, required=True, help="reader whose worklist holds the case")
    p.add_argument("--to", metavar="READER", help="the reader who takes the case (default: nobody)")
    p = command(actions, "worklist", common, cmd_worklist, "a reader's cases in order (reading codes only)")
    add_reading_study(p)
    add_reader(p, required=True)
    add_json(p)
    p = command(actions, "progress", common, cmd_progress, "cases not started / opened / draft / submitted per reader")
    add_reading_study(p)
    add_json(p)
    p = command(actions, "export", common, cmd_export, "a reader's own reads, blinded (reading codes)")
    add_reading_study(p)
    add_reader(p, required=True)
    add_output(p, "file", "JSON file to write")
    p = command(actions, "new-version", common, cmd_new_version, "open a submitted read for change (kept as it was)")
    add_reading_study(p)
    add_reader(p, required=True, help="reader id whose read changes")
    p.add_argument("--code", required=True, help="reading code of the case")
    p.add_argument("--reason", required=True, help="why the submitted read must change")
    p = command(actions, "export-unblinded", common, cmd_export_unblinded,
                "coordinator only: reads joined with clinical records (JSON and CSV)")
    add_reading_study(p)
    add_link_key(p)
    add_output(p, "folder", "output folder")
    p = command(actions, "package", common, cmd_package, "coordinator: a de-identified reading package for one reader",
                "Write into a new folder everything one reader needs and nothing more: de-identified copies of the "
                "reader's cases (DICOM PS3.15 Basic Profile with Clean Descriptors and shifted dates; UIDs replaced "
                "the same way in every package of the study), a reader store with the worklist, the scheme and the "
                "taxonomy. The reader opens it with 'cno-annotate view --package DIR'.")
    add_reading_study(p)
    add_reader(p, required=True, help="the reader the package is for")
    add_output(p, "folder", "new (or empty) folder to write", force=False)
    p = command(actions, "publish", common, cmd_publish, "coordinator: de-identified copies of the cases to a study PACS",
                "Send a de-identified copy of every case (or --code CODE ...) to a study PACS registered with "
                "'cno-annotate pacs add' (the de-identification of reading packages: same stand-in UIDs, shifted "
                "dates, the reading code as patient). Online readers' viewers fetch their cases from there "
                "('view --pacs NODE').")
    add_reading_study(p)
    p.add_argument("--pacs", required=True, metavar="NODE", help="the study PACS (a node of 'cno-annotate pacs list')")
    p.add_argument("--code", action="append", metavar="CODE", help="only this case (repeatable)")
    add_timeout(p)
    p = command(actions, "export-results", common, cmd_export_results,
                "reader: your reads of a package, as a file for the coordinator",
                "Write the reads made in a reading package (drafts and submitted) as a signed results file; send "
                "it to the coordinator, who runs 'reading-study collect'.")
    p.add_argument("--package", type=Path, required=True, help="the package folder")
    add_output(p, "file", "results file to write (JSON)")
    p = command(actions, "collect", common, cmd_collect, "coordinator: import readers' results files",
                "Import the reads of results files exported from reading packages, under the original study and "
                "series UIDs, audited. Collecting a file again changes nothing. A file from another study, another "
                "reader, a package this store did not issue, or changed after export is refused.")
    add_reading_study(p)
    p.add_argument("results", nargs="+", type=Path, metavar="RESULTS", help="results files")
    add_reader(p, help="refuse results of any other reader")


def _register_link(sub, common) -> None:
    link = sub.add_parser("link", help="coordinator only: the link key (reading code <-> clinical record id)")
    actions = link.add_subparsers(dest="link_command", required=True, metavar="ACTION")
    p = command(actions, "add", common, cmd_link_add, "link one reading code to a record id")
    add_reading_study(p)
    p.add_argument("code", help="reading code of the case (CNO-0007)")
    p.add_argument("record", help="clinical record id of that patient")
    add_link_key(p)
    add_replace(p, "replace the code's existing link")
    p = command(actions, "list", common, cmd_link_list, "list the reading code -> record id links (coordinator only)")
    add_reading_study(p)
    add_link_key(p)
    add_json(p)
    p = command(actions, "from-patient-ids", common, cmd_link_patient_ids, "link every case to its DICOM PatientID")
    add_reading_study(p)
    add_link_key(p)


def _register_report(sub, common) -> None:
    p = command(sub, "report", common, cmd_report, "cohort reports: agreement, concordance, distribution, ...",
                "Build a report of a reading study into a folder: report.json, CSV tables, PNG and SVG figures "
                "and a self-contained report.html.")
    p.add_argument("kind", choices=["design", "agreement", "concordance", "distribution", "followup", "skeleton", "all"],
                   help="which section to build (all: every section)")
    add_reading_study(p)
    add_output(p, "folder", "output folder")
    add_link_key(p, required=False, help="the coordinator database (needed for concordance)")
    add_reader(p, help="use this reader's reads instead of the adjudicated ones")
    p.add_argument("--threshold-mm", type=float, default=20.0, help="lesion matching distance (default 20 mm)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="case-level bootstrap resamples for the confidence intervals (default 1000)")
    p.add_argument("--seed", type=int, default=20261128, help="seed of the bootstrap (default 20261128)")
    p.add_argument("--visit-window-days", type=int, default=90, metavar="DAYS",
                   help="use the clinical visit nearest the study date within DAYS days (default 90); cases "
                        "without one have missing clinical data")
    p.add_argument("--include-tampered", action="store_true",
                   help="build the report even if reads it uses were changed outside the program (audit verify "
                        "finds them); the report lists them. Without it such a report is refused")
    add_json(p, "report")


def _register_audit(sub, common) -> None:
    audit = sub.add_parser("audit", help="the audit trail")
    actions = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    p = command(actions, "verify", common, cmd_audit_verify, "check the hash chain and the data against it",
                "Check the hash chain (name the first broken entry), then every read and reading study against the "
                "state its latest entry recorded; with --anchor, also that the chain still holds the head recorded "
                "earlier.")
    p.add_argument("--anchor", metavar="FILE_OR_VALUE",
                   help="an anchor from 'audit anchor' (the line itself, or a file holding it)")
    p = command(actions, "anchor", common, cmd_audit_anchor, "print (or write) the chain head to keep outside the store",
                "Print the current head of the audit chain as one line. Keep it where the store's users cannot "
                "write (e-mail it, print it); 'audit verify --anchor' later proves the trail up to that entry was "
                "not rewritten.")
    p.add_argument("--out", type=Path, help="also write the anchor to this file")
    p = command(actions, "show", common, cmd_audit_show, "the latest entries")
    p.add_argument("--last", type=int, default=20, help="how many of the newest entries (default 20)")
    add_json(p)


def register_store(sub, common) -> None:
    """Add ``store check`` and ``store grant`` to the CLI."""
    st = sub.add_parser("store", help="the study store itself")
    actions = st.add_subparsers(dest="store_command", required=True, metavar="ACTION")
    command(actions, "check", common, cmd_store_check, "integrity check of the database and the audit trail",
            "Run SQLite's full integrity check, then 'audit verify'. Exit 1 on any problem.")
    p = command(actions, "grant", common, cmd_store_grant, "give a person a login on a PostgreSQL store",
                "Create a login role on the PostgreSQL server of --store (run by the store's owner) in the "
                "coordinator, reader or adjudicator group. The role's name is the reader id. Readers see only their "
                "own reads and worklist; the server enforces it. A new role's password is printed once.")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--reader", metavar="ID", help="a reader (sees their own reads and worklist only)")
    who.add_argument("--adjudicator", metavar="ID", help="an adjudicator (also the submitted reads of their cases)")
    who.add_argument("--coordinator", metavar="ID", help="a coordinator (sees and manages everything)")


DESIGNS = ("unpaired-blinded", "paired-chronological", "paired-hidden-order")


def _store(args):
    return open_store(args.store)


def _coordinator_store(args, command: str):
    """The store of a coordinator's command; a reader's package store or server login is refused in one line.

    Refused before anything is written (a link key file, a package folder).
    """
    from cno_annotate import reading_study as rs
    from cno_annotate.packages import refuse_reader_store

    store = refuse_reader_store(_store(args), command)
    login = rs.limited_login(store)
    if login is not None:
        raise CnoError(f"'{command}' is the coordinator's: the login {login!r} is a reader's or adjudicator's "
                       f"(nothing was changed)")
    return store


def cmd_list(args) -> int:
    """Run ``cno-annotate reading-study list`` (see its ``--help``)."""
    from cno_annotate import reading_study as rs

    _print_rows(rs.list_studies(_store(args)), args.json, "no reading studies in this store",
                lambda r: f"{r['name']:16} {r['scheme']:20} cases {r['cases']:4}  readers {r['readers']:2}  "
                          f"adjudicators {r['adjudicators']:2}  submitted {r['submitted']}/{r['expected']} "
                          f"({r['progress']:.0f} %)  adjudicated {r['adjudicated']}/{r['cases']}")
    return 0


def cmd_create(args) -> int:
    """Run ``cno-annotate reading-study create`` (see its ``--help``)."""
    from cno_annotate import reading_study as rs

    study = rs.create(_coordinator_store(args, "reading-study create"), args.name, args.scheme, args.seed,
                      args.show_age_sex, args.reveal_timepoints, design=args.design,
                      show_timer=args.show_timer, idle_seconds=args.idle_seconds)
    print(f"created reading study {study.name} ({study.scheme_id} {study.scheme_version}, seed {study.seed}, "
          f"design {study.design.value})")
    return 0


def cmd_show(args) -> int:
    """Run ``cno-annotate reading-study show`` (see its ``--help``)."""
    import json

    from cno_annotate import reading_study as rs

    store = _store(args)
    study = rs.get(store, args.name)
    info = {"name": study.name, "scheme": f"{study.scheme_id} {study.scheme_version}", "seed": study.seed,
            "design": study.design.value, "design_text": study.design.label,
            "design_fixed": rs.reading_started(store, study.name), "show_age_sex": study.show_age_sex,
            "reveal_timepoints": study.reveal_timepoints or study.design == rs.ReadingDesign.PAIRED_CHRONOLOGICAL,
            "cases": len(rs.cases(store, study.name))}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"reading study {study.name}")
    print(f"  scheme      {info['scheme']}")
    print(f"  seed        {study.seed}")
    print(f"  design      {study.design.value}: {study.design.label}"
          + (" (fixed: reading has started)" if info["design_fixed"] else ""))
    print(f"  age and sex {'shown' if study.show_age_sex else 'hidden'}")
    print(f"  timepoints  {'revealed' if info['reveal_timepoints'] else 'hidden'}")
    print(f"  cases       {info['cases']}")
    return 0


def cmd_design(args) -> int:
    """Run ``cno-annotate reading-study design`` (see its ``--help``)."""
    from cno_annotate import reading_study as rs

    study = rs.set_design(_coordinator_store(args, "reading-study design"), args.name, args.design)
    print(f"reading study {study.name}: design {study.design.value}")
    return 0


def cmd_add_cases(args) -> int:
    """Run ``cno-annotate reading-study add-cases`` (see its ``--help``)."""
    from cno_annotate import reading_study as rs

    store = _coordinator_store(args, "reading-study add-cases")
    if args.all:
        uids = [s.study_uid for s in store.studies(count_missing=False)]
    elif args.studies:
        uids = [store.study_uid_for(s) for s in args.studies]
    else:
        raise CnoError("name studies to add, or --all")
    codes = rs.add_cases(store, args.name, uids)
    print(f"added {_plural(len(codes), 'case')} to {args.name}: {', '.join(codes) or 'none new'}")
    return 0


def cmd_add_readers(args) -> int:
    """Run ``cno-annotate reading-study add-readers`` (see its ``--help``)."""
    from cno_annotate import reading_study as rs

    role = "adjudicator" if args.adjudicator else "reader"
    store = _coordinator_store(args, "reading-study add-readers")
    before = rs.roles(store, args.name)  # an unknown study: add_readers says so
    added = rs.add_readers(store, args.name, args.readers, role)
    print(f"added {len(added)} {role}{'' if len(added) == 1 else 's'} to {args.name}")
    for reader in dict.fromkeys(r for r in args.readers if r not in added):
        if before.get(reader, role) == role:
            print(f"  {reader} is already {_a(role)} of {args.name}")
        else:
            print(f"  {reader} was {_a(before[reader])} of {args.name} and is now {_a(role)}")
    return 0


def _a(role: str) -> str:
    return f"{'an' if role[0] in 'aeiou' else 'a'} {role}"


def cmd_assign(args) -> int:
    """Run ``cno-annotate reading-study assign`` (see its ``--help``)."""
    from cno_annotate import reading_study as rs

    worklists = rs.assign(_coordinator_store(args, "reading-study assign"), args.name, args.seed)
    for reader, codes in worklists.items():
        print(f"{reader}: {' '.join(codes)}")
    return 0


def cmd_move(args) -> int:
    """Run ``cno-annotate reading-study move`` (see its ``--help``)."""
    from cno_annotate import reading_study as rs

    done = rs.move_case(_coordinator_store(args, "reading-study move"), args.name, args.code, args.reader, args.to)
    looked = "" if done["looked_seconds"] is None else \
        f"; {args.reader} had opened it ({_minutes(done['looked_seconds'])} looked at, kept in the audit)"
    if done["to"]:
        print(f"moved {args.code} from {args.reader}'s worklist to {done['to']}'s (position {done['position']})"
              f"{looked}")
    else:
        print(f"took {args.code} off {args.reader}'s worklist{looked}")
    return 0


def cmd_worklist(args) -> int:
    """Run ``cno-annotate reading-study worklist`` (see its ``--help``)."""
    from cno_annotate import reading_study as rs

    def line(row: dict) -> str:
        extra = "".join(f"  {k} {v}" for k, v in row.items() if k not in ("position", "reading_code", "status"))
        return f"{row['position']:4}  {row['reading_code']}  {row['status']}{extra}"

    _print_rows(rs.worklist(_store(args), args.name, args.reader), args.json, "empty worklist", line)
    return 0


def cmd_progress(args) -> int:
    """Run ``cno-annotate reading-study progress`` (see its ``--help``)."""
    from cno_annotate import reading_study as rs

    _print_rows(rs.progress(_store(args), args.name), args.json, "no readers yet",
                lambda r: f"{r['reader']:16} {r['role']:11} not started {r['not started']:3}  "
                          f"opened {r['opened']:3}  draft {r['draft']:3}  "
                          f"submitted {r['submitted']:3}  active {_minutes(r['active_seconds'])}"
                          + (f" ({_minutes(r['seconds_per_submitted'])} per submitted case)"
                             if r["seconds_per_submitted"] is not None else ""))
    return 0


def _minutes(seconds: float) -> str:
    """Seconds as minutes and seconds: ``12 min 05 s``."""
    whole = int(round(seconds))
    return f"{whole // 60} min {whole % 60:02d} s"


def _own_reads_only(store, reader: str, what: str) -> str | None:
    """The login of a reader or adjudicator on a server (None for the coordinator), refusing another reader's reads.

    Raises
    ------
    CnoError
        If such a login names another reader: the server shows it only its own reads.
    """
    from cno_annotate import reading_study as rs

    login = rs.limited_login(store)
    if login is not None and reader != login:
        raise CnoError(f"the login {login!r} can {what} its own reads only, not those of {reader!r}: run it with "
                       f"'--reader {login}', or ask the coordinator (nothing was changed)")
    return login


def cmd_export(args) -> int:
    """Run ``cno-annotate reading-study export`` (see its ``--help``)."""
    from cno_annotate import reading_study as rs
    from cno_annotate.annotation.documents import write_document
    from cno_annotate.exports import audited_file_export
    from cno_annotate.fileio import check_output_file

    check_output_file(args.out, args.force)
    store = _store(args)
    login = _own_reads_only(store, args.reader, "export")
    document = rs.reader_document(store, args.name, args.reader, audited=False)
    if login is None:
        entity, detail = f"reading-study:{args.name}", {"reader": args.reader, "reads": len(document["reads"])}
    else:  # a reader's login cannot hash the reading study's state; it audits the export of its own reads
        entity, detail = "reads", {"format": "json", "reading_study": args.name, "reader": login,
                                   "reads": [r["read_id"] for r in document["reads"]]}
    audited_file_export(store, args.out, args.force, "export", entity,
                        lambda path: (write_document(document, path), detail), actor=args.reader)
    print(f"wrote {counted(len(document['reads']), 'read')} of {args.reader} to {args.out}")
    return 0


def cmd_new_version(args) -> int:
    """Run ``cno-annotate reading-study new-version`` (see its ``--help``)."""
    from cno_annotate import reading_study as rs
    from cno_annotate.annotation.reads import ReadSession, list_reads

    store = _store(args)
    _own_reads_only(store, args.reader, "open a new version of")
    uid = rs.study_uid_of(store, args.name, args.code)
    rows = list_reads(store, uid, args.reader, args.name, latest_only=True)
    if not rows:
        raise CnoError(f"{args.reader} has no read of {args.code} in {args.name}")
    session = ReadSession.new_version(store, rows[-1]["read_id"], args.reader, args.reason)
    print(f"{args.code}: version {session.read.version} of {args.reader}'s read is open for change")
    return 0


def cmd_export_unblinded(args) -> int:
    """Run ``cno-annotate reading-study export-unblinded`` (see its ``--help``)."""
    from cno_annotate.clinical import CoordinatorDB, unblinded_document, write_unblinded
    from cno_annotate.exports import audited_export

    store = _coordinator_store(args, "reading-study export-unblinded")
    db = CoordinatorDB.open(args.link_key)
    document = unblinded_document(store, db, args.name)
    _, paths = audited_export(store, args.out, args.force, "export-unblinded", f"reading-study:{args.name}",
                              lambda folder: (write_unblinded(document, folder), {"cases": len(document["cases"])}))
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0


def cmd_package(args) -> int:
    """Run ``cno-annotate reading-study package`` (see its ``--help``)."""
    from cno_annotate import packages

    report = packages.build(_coordinator_store(args, "reading-study package"), args.name, args.reader, args.out)
    print(f"wrote the package of {args.reader} to {report.folder}: {_plural(report.cases, 'case')}, "
          f"{_plural(report.images, 'image')} (package {report.package_id})")
    for line in report.left_out:
        print(f"  {line}")
    for line in report.notes:
        print(f"  note: {line}")
    return 0


def cmd_publish(args) -> int:
    """Run ``cno-annotate reading-study publish`` (see its ``--help``); exit 1 if the PACS refused a file."""
    from cno_annotate import study_pacs
    from cno_annotate.pacs import config
    from cno_annotate.pacs.client import open_client

    store = _coordinator_store(args, "reading-study publish")
    with open_client(config.get_node(args.pacs), timeout=args.timeout) as client:
        report = study_pacs.publish(store, args.name, client, codes=args.code)
    for line in report.left_out:
        print(f"  left out: {line}")
    for line in report.refused:
        print(f"  refused by {args.pacs}: {line}")
    print(f"published {_plural(report.cases, 'case')} of {args.name} to {args.pacs} "
          f"({_plural(report.instances, 'de-identified instance')})")
    return 1 if report.refused else 0


def cmd_export_results(args) -> int:
    """Run ``cno-annotate reading-study export-results`` (see its ``--help``)."""
    from cno_annotate import packages

    if getattr(args, "store", None) is not None:
        raise CnoError("export-results uses the package's own store: give --package DIR, not --store")
    package = packages.open_package(args.package)
    written = packages.export_results(package, args.out, args.force)
    print(f"wrote {written} of {package.reader} to {args.out}; send this file to the coordinator")
    return 0


def cmd_collect(args) -> int:
    """Run ``cno-annotate reading-study collect`` (see its ``--help``); one line per file says what it did."""
    from cno_annotate import packages

    store = _coordinator_store(args, "reading-study collect")
    refused = 0
    for path in args.results:
        try:
            done = packages.collect(store, args.name, path, args.reader)
        except CnoError as exc:
            refused += 1
            print(f"cno-annotate: error: {exc}" if len(args.results) == 1 else f"refused: {exc}", file=sys.stderr)
            continue
        print(f"{path}: {_collected(done)}")
    if refused and len(args.results) > 1:
        print(f"cno-annotate: error: {refused} of {counted(len(args.results), 'file')} refused (see above); "
              f"{len(args.results) - refused} handled as said above", file=sys.stderr)
    return 1 if refused else 0


def _collected(done) -> str:
    """What collecting one results file did, in words."""
    older = f"{_plural(len(done.older), 'read')} older than what was collected; nothing changed" if done.older else ""
    opened = f"{_plural(done.opened, 'case')} opened without a read" if done.opened else ""
    if done.off_worklist:
        opened += f"{', ' if opened else ''}{_plural(done.off_worklist, 'case')} opened but no longer on the " \
                  f"worklist (not counted)"
    if done.new or done.updated or done.opened:
        return (f"collected {_plural(done.new, 'new read')}, {done.updated} updated, {done.unchanged} unchanged"
                f"{f', {older}' if older else ''}{f', {opened}' if opened else ''} "
                f"({done.reader}, package {done.package_id})")
    if older:
        return f"{older} ({done.reader}, {done.unchanged} unchanged)"
    if done.unchanged:
        return f"already collected, nothing changed ({_plural(done.unchanged, 'read')} of {done.reader} unchanged)"
    if done.off_worklist:
        return f"nothing to collect: {opened} ({done.reader}, package {done.package_id})"
    return f"holds no reads yet ({done.reader}, package {done.package_id}); nothing to collect"


def cmd_link_add(args) -> int:
    """Run ``cno-annotate link add`` (see its ``--help``)."""
    from cno_annotate import reading_study as rs
    from cno_annotate.clinical import CoordinatorDB

    rs.study_uid_of(_coordinator_store(args, "link add"), args.name, args.code)
    CoordinatorDB.open(args.link_key).link(args.name, {args.code: args.record}, replace=args.replace)
    print(f"linked {args.code} in {args.name}")
    return 0


def cmd_link_list(args) -> int:
    """Run ``cno-annotate link list`` (see its ``--help``)."""
    from cno_annotate import reading_study as rs
    from cno_annotate.clinical import CoordinatorDB

    rs.get(_coordinator_store(args, "link list"), args.name)
    links = CoordinatorDB.open(args.link_key).links(args.name)
    rows = [{"reading_code": code, "record_id": links[code]} for code in sorted(links)]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['reading_code']}\t{row['record_id']}")
    return 0


def cmd_link_patient_ids(args) -> int:
    """Run ``cno-annotate link from-patient-ids`` (see its ``--help``)."""
    from cno_annotate.clinical import CoordinatorDB, link_patient_ids

    n = link_patient_ids(_coordinator_store(args, "link from-patient-ids"), CoordinatorDB.open(args.link_key), args.name)
    print(f"linked {_plural(n, 'case')} of {args.name} to their patient IDs in {args.link_key}")
    return 0


def cmd_clinical_import(args) -> int:
    """Run ``cno-annotate clinical import`` (see its ``--help``)."""
    from cno_annotate.clinical import CoordinatorDB, import_clinical

    n = import_clinical(CoordinatorDB.open(args.link_key), args.file, replace=args.replace)
    print(f"imported {_plural(n, 'visit')} from {args.file}")
    return 0


def cmd_audit_verify(args) -> int:
    """Run ``cno-annotate audit verify`` (see its ``--help``)."""
    from cno_annotate.store import audit

    store = _store(args)
    _refuse_limited_login(store, "audit verify")
    result = audit.verify(store.db, _anchor_text(args.anchor) if args.anchor else None)
    if not result.ok:
        for problem in result.problems[1:]:
            print(problem)
        if result.broken_at:
            raise CnoError(f"audit chain broken at entry {result.broken_at}: {result.reason}")
        raise CnoError(f"the data do not match the audit trail: {result.reason}")
    print(result.reason)
    return 0


def _refuse_limited_login(store, command: str) -> None:
    """A reader's or adjudicator's login sees only its own part of the trail: the whole-trail checks are refused."""
    from cno_annotate import reading_study as rs

    login = rs.limited_login(store)
    if login is not None:
        raise CnoError(f"{command} checks the whole audit trail, and the login {login!r} sees only the entries of its "
                       f"own reads: ask the coordinator to run '{command}' with their login (nothing was checked)")


def _anchor_text(value: str) -> str:
    """An anchor given as the line itself or as a file holding it."""
    from cno_annotate.store.audit import ANCHOR_PREFIX

    if value.startswith(ANCHOR_PREFIX):
        return value
    try:
        return Path(value).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CnoError(f"cannot read the anchor {value!r}: {getattr(exc, 'strerror', None) or exc}") from None


def cmd_audit_anchor(args) -> int:
    """Run ``cno-annotate audit anchor`` (see its ``--help``)."""
    from cno_annotate.fileio import atomic_write_text
    from cno_annotate.store import audit

    line = audit.anchor(_store(args).db)
    if args.out is not None:
        atomic_write_text(args.out, line + "\n")
    print(line)
    return 0


def cmd_store_check(args) -> int:
    """Run ``cno-annotate store check`` (see its ``--help``)."""
    from cno_annotate.annotation.reads import damaged_reads
    from cno_annotate.store import Store, audit
    from cno_annotate.store.db import integrity_problems

    root = existing_store_root(args.store)
    # a server checks its own pages (data checksums, amcheck); the file check is SQLite's
    problems = integrity_problems(root) if isinstance(root, Path) else []
    for problem in problems:
        print(f"integrity: {problem}")
    if problems:
        raise CnoError(f"the store at {root} is damaged ({len(problems)} problems listed); restore it from a backup")
    store = Store.open(root, quick_check=False)
    _refuse_limited_login(store, "store check")
    result = audit.verify(store.db)
    for problem in result.problems:
        print(f"audit: {problem}")
    damaged = damaged_reads(store)
    for problem in damaged:
        print(f"read: {problem}")
    if damaged:
        raise CnoError(f"the store at {store.root} holds {len(damaged)} damaged reads (listed); "
                       f"{'its audit check failed too: ' + result.reason if not result.ok else 'the audit is intact'}")
    if not result.ok:
        raise CnoError(f"the store at {store.root} is intact but its audit check failed: {result.reason}")
    print(f"store intact (integrity check ok); {result.reason}")
    return 0


def cmd_store_grant(args) -> int:
    """Run ``cno-annotate store grant`` (see its ``--help``)."""
    import secrets

    from cno_annotate.store import postgres, reading_studies
    from cno_annotate.store.db import PgStore

    store = open_store(args.store)
    if not isinstance(store, PgStore):
        raise CnoError("store grant needs a PostgreSQL store (--store postgresql://...); an SQLite store has no logins")
    kind = "reader" if args.reader else "adjudicator" if args.adjudicator else "coordinator"
    login = args.reader or args.adjudicator or args.coordinator
    if kind != "coordinator" and not reading_studies.in_any_study(store.db, login, kind):
        option = " --adjudicator" if kind == "adjudicator" else ""
        raise CnoError(f"{login!r} is not a{'n' if kind == 'adjudicator' else ''} {kind} of any reading study of this "
                       f"store: add them first ('cno-annotate reading-study add-readers NAME{option} {login}'), then "
                       f"grant (no login was created)")
    password = secrets.token_urlsafe(18)
    try:
        created = postgres.grant(store.pg, login, kind, password)
    except Exception as exc:
        if not postgres.is_database_error(exc):
            raise
        raise CnoError(f"the server refused to grant {login!r}: {' '.join(str(exc).split())} (run this as the "
                       f"store's owner)") from None
    if created:
        print(f"created login {login!r} as {kind}; password (shown once): {password}")
    else:
        print(f"login {login!r} exists; it is now also a {kind} (its password is unchanged)")
    return 0


def cmd_audit_show(args) -> int:
    """Run ``cno-annotate audit show`` (see its ``--help``)."""
    from cno_annotate.store import audit

    _print_rows(audit.entries(_store(args).db, args.last), args.json, "no audit entries",
                lambda r: f"{r['seq']:6}  {r['at']}  {r['actor']:14} {r['action']:18} {r['entity']}")
    return 0


def cmd_report(args) -> int:
    """Run ``cno-annotate report`` (see its ``--help``)."""
    from cno_annotate.analysis import report
    from cno_annotate.exports import audited_export

    every = args.kind == "all"
    sections = list(report.SECTIONS) if every else [args.kind]
    store = _store(args)
    _check_report_options(store, args)

    def write(folder: Path) -> tuple[dict, dict]:
        result = report.run(store, args.name, sections, folder, args.link_key, args.reader or "adjudicated",
                            args.threshold_mm, strict=not every, resamples=args.bootstrap, seed=args.seed,
                            visit_window_days=args.visit_window_days, include_tampered=args.include_tampered)
        report.write_json(_relocated(result, str(folder), str(args.out)), folder)  # paths where the files end up
        return result, {"sections": result["sections"], "source": args.reader or "adjudicated",
                        "reads_changed_outside_the_program": result["reads_changed_outside_the_program"]}

    result, _ = audited_export(store, args.out, args.force, "report", f"reading-study:{args.name}", write,
                               replace_run=True)
    if args.json:
        print((args.out / "report.json").read_text(), end="")
    else:
        print(f"wrote {args.out / 'report.html'} ({', '.join(result['sections']) or 'no section'})")
        for name, why in result["absent"].items():
            print(f"  {name} not computed: {why}")
    changed = result["reads_changed_outside_the_program"]
    if changed:
        print(f"  included (--include-tampered) reads changed outside the program: {', '.join(changed)}",
              file=sys.stderr if args.json else sys.stdout)
    return 0


_plural = counted


def _check_report_options(store, args) -> None:
    """Refuse report options that would give a wrong or empty report, each with a one-line message."""
    import math

    from cno_annotate import reading_study as rs

    if not (math.isfinite(args.threshold_mm) and args.threshold_mm > 0):
        raise CnoError(f"--threshold-mm must be a finite number of mm above 0, not {args.threshold_mm:g}")
    if args.bootstrap < 0:
        raise CnoError(f"--bootstrap must be 0 (no intervals) or more resamples, not {args.bootstrap}")
    if args.visit_window_days < 0:
        raise CnoError(f"--visit-window-days must be 0 or more days, not {args.visit_window_days}")
    if args.reader:
        rs.role_of(store, args.name, args.reader)
    if args.link_key is not None and not args.link_key.is_file():
        raise CnoError(f"--link-key {args.link_key}: no such file (the coordinator database is made by "
                       f"'link' and 'clinical import', never by a report)")


def _relocated(value, old: str, new: str):
    """``value`` with every text that starts with the folder ``old`` moved under ``new``."""
    if isinstance(value, dict):
        return {k: _relocated(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_relocated(v, old, new) for v in value]
    if isinstance(value, str) and value.startswith(old):
        return new + value[len(old):]
    return value
