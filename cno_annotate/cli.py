"""The ``cno-annotate`` command line.

Exit codes: 0 success, 1 failure (a one-line message, no traceback), 2 usage
error. Every command takes ``--store DIR`` (default: ``$CNO_ANNOTATE_STORE``,
else the per-user data folder). Commands that list things take ``--json`` and
then print exactly one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING, cast

from cno_annotate import __version__, cli_pacs, cli_reading, timing
from cno_annotate.cli_args import (
    add_json,
    add_output,
    add_read_filters,
    add_replace,
    add_store,
    command,
    store_parent,
)
from cno_annotate.cli_output import print_rows as _print_rows
from cno_annotate.errors import CnoError, UsageError
from cno_annotate.io.axes import ijk_shape
from cno_annotate.io.kinds import VolumeKind
from cno_annotate.io.roles import ROLES
from cno_annotate.paths import display as display_path
from cno_annotate.wording import counted

if TYPE_CHECKING:
    from cno_annotate.store.catalog import VolumeRow
    from cno_annotate.store.derived import CompositionNote

PROG = "cno-annotate"
PLUGIN_GROUP = "cno_annotate.commands"
VOLUME_HELP = "volume id (or a unique prefix of 8+ characters)"


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code.

    Examples
    --------
    >>> main(["sample", "--out", "wb-sample", "--stations", "2"])  # doctest: +SKIP
    0
    """
    timing.mark("python")
    parser = _parser_for(sys.argv[1:] if argv is None else argv)
    timing.mark("parser")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    try:
        code = int(args.run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except BrokenPipeError:  # output piped into `head` or a pager that closed: end quietly
        _silence_stdout()
        return 0
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except CnoError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a file or folder the user named cannot be used
        where = f": {exc.filename}" if exc.filename else ""
        print(f"{PROG}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except Exception as exc:  # e.g. the store is locked by another program, or the server refused
        if not _database_error(exc):
            raise
        text = " ".join(str(exc).split())
        if type(exc).__name__ == "InsufficientPrivilege":  # the server's access rules, not a fault
            text += (" (the server's access rules do not let this login do that: a reader's or adjudicator's login "
                     "reads its worklist and exports its own reads, the rest is the coordinator's; nothing was changed)")
        print(f"{PROG}: error: store: {text}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 1


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that Python's flush at exit cannot fail again.

    This is what Python's documentation recommends for SIGPIPE (``signal`` module,
    "Note on SIGPIPE").
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (tests capture it)
        pass


def _database_error(exc: Exception) -> bool:
    """Whether SQLite or the PostgreSQL server refused (psycopg is looked at only if it was loaded)."""
    psycopg = sys.modules.get("psycopg")
    return isinstance(exc, sqlite3.Error) or (psycopg is not None and isinstance(exc, psycopg.DatabaseError))


def _parser_for(argv: list[str]) -> argparse.ArgumentParser:
    """The parser of the command ``argv`` names, alone; every command's for anything else.

    Building the parsers of all 50-odd commands costs 15-25 ms of every start, and
    finding the commands other packages add another 25 (:mod:`cno_annotate.plugins`):
    a command named (built in or a plugin's) gets a parser with that command only.
    ``--help``, ``--version``, no command, or a word that is no command get the
    whole parser (with every plugin), whose help and error messages list them all.
    """
    word = _command_word(argv)
    if word is not None:
        parser = build_parser(plugins=False, only=word)
        if word in _command_names(parser):
            return parser
        _add_plugin_commands(_subcommands(parser), store_parent(), only=word)
        if word in _command_names(parser):
            return parser
    parser = build_parser(plugins=False)
    _add_plugin_commands(_subcommands(parser), store_parent())  # to the same parser: not built twice
    return parser


def _command_word(argv: list[str]) -> str | None:
    """The command ``argv`` names, if only ``--store DIR`` comes before it (else None)."""
    words = iter(argv)
    for word in words:
        if word == "--store":
            next(words, None)
        elif word.startswith("--store="):
            continue
        elif word.startswith("-"):
            return None  # --help, --version, or a mistake: the whole parser says what it means
        else:
            return word
    return None


def _command_names(parser: argparse.ArgumentParser) -> set[str]:
    """The names of a parser's subcommands."""
    return set(_subcommands(parser).choices)


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    """The action of a parser that holds its subcommands."""
    return next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))


def build_parser(plugins: bool = True, only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser with every subcommand (``plugins=False``: the built-in ones only; ``only``: that one
    command, if built in, and no other)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Read, annotate and score whole-body MRI of children with CNO.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_store(parser)  # before the command; each command takes it after too (store_parent)
    common = store_parent()
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", action=OneCommand)
    cast(OneCommand, sub).only = only
    _add_study_commands(sub, common)
    _add_read_commands(sub, common)
    cli_reading.register(sub, common)
    cli_reading.register_store(sub, common)
    cli_pacs.register(sub, common)
    if plugins:
        _add_plugin_commands(sub, common)
    return parser


def _add_study_commands(sub, common) -> None:
    p = command(sub, "sample", common, cmd_sample, "write a synthetic whole-body MRI study",
                "Write a synthetic coronal STIR + T1 whole-body study as DICOM (CD-export layout) with "
                "ground_truth.json.")
    p.add_argument("--out", type=Path, required=True, help="folder to write (must be empty or new)")
    p.add_argument("--stations", type=int, default=4, help="stations head to feet (default 4)")
    p.add_argument("--slices", type=int, default=16, help="coronal slices per station (default 16)")
    p.add_argument("--matrix", type=int, default=128, help="rows = columns per slice (default 128)")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="random seed for noise and identifiers (>= 0)")
    p.add_argument("--timepoints", type=int, default=1,
                   help="visits of the same patient, repositioned, lesions changing (1 to 3, default 1)")
    p = command(sub, "import", common, cmd_import, "import DICOM / NIfTI files and folders",
                "Index DICOM (any layout, with or without extensions, DICOMDIR ignored) and NIfTI files into the "
                "store. Bad files are listed with a reason and never stop the import.")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files or folders")
    add_json(p, "summary")
    p = command(sub, "studies", common, cmd_studies, "list the studies in the store")
    add_json(p)
    p = command(sub, "series", common, cmd_series, "list series and volumes (roles, geometry)",
                "List volumes: slice stacks of DICOM series, composed whole-body volumes and NIfTI files. shape "
                "and spacing_mm are in (column, row, slice) order.")
    p.add_argument("study", nargs="?", help="study UID, accession number or patient ID")
    add_json(p)
    p = command(sub, "set-role", common, cmd_set_role, "override the sequence role of a series",
                "Set the role (STIR, T1, other) of a volume, overriding the header-based guess; 'auto' removes the "
                "override.")
    p.add_argument("volume", help=VOLUME_HELP)
    p.add_argument("role", choices=[*(role.value for role in ROLES), "auto"],
                   help="the role to use (auto: back to the guess from the header)")
    p = command(sub, "use-station", common, cmd_use_station, "choose the acquisition used for a repeated station",
                "Where a station was acquired more than once (a repeat after motion), the latest acquisition is "
                "composed; this uses the given one instead (--latest: back to the latest). 'series' lists the "
                "alternatives.")
    p.add_argument("volume", help="volume id of the station stack (or a unique prefix of 8+ characters)")
    p.add_argument("--latest", action="store_true", help="forget the choice: use the latest acquisition")
    p = command(sub, "export-nifti", common, cmd_export_nifti, "write a series or composed volume as NIfTI")
    p.add_argument("volume", help=VOLUME_HELP)
    add_output(p, "file", "output file (.nii or .nii.gz)")
    p = command(sub, "import-log", common, cmd_import_log, "show recent imports and their skipped files")
    p.add_argument("--last", type=int, default=5, help="how many runs (default 5)")
    add_json(p)
    p = command(sub, "relocate", common, cmd_relocate, "re-link files that were moved to another folder",
                "Rewrite the folder prefix OLD to NEW in the recorded location of every imported file (whole "
                "folder names only). Importing the moved folder again re-links its files too.")
    p.add_argument("old", type=Path, metavar="OLD", help="the folder the files were imported from")
    p.add_argument("new", type=Path, metavar="NEW", help="the folder they are in now")
    cache = sub.add_parser("cache", help="the cache of composed whole-body volumes",
                           description="Composed volumes are cached in the store's cache/ folder, least "
                                       "recently used first out beyond the limit "
                                       "(CNO_ANNOTATE_CACHE_LIMIT, e.g. 2G; default 4G).")
    actions = cache.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    add_json(command(actions, "info", common, cmd_cache_info, "size, number of files and limit of the cache"),
             "object")
    command(actions, "clear", common, cmd_cache_clear, "remove every cached volume (open viewers keep theirs)")


def _add_read_commands(sub, common) -> None:
    read = sub.add_parser("read", help="list, export and import reads (JSON)",
                          description="Reads of the store as JSON documents validated by "
                                      "schemas/annotation.schema.json.")
    actions = read.add_subparsers(dest="read_command", required=True, metavar="ACTION")
    p = command(actions, "list", common, cmd_read_list, "list the reads of the store")
    add_read_filters(p)
    add_json(p)
    p = command(actions, "export", common, cmd_read_export, "write reads as one JSON document")
    add_read_filters(p)
    add_output(p, "file", "output .json file (written atomically)")
    p = command(actions, "import", common, cmd_read_import, "bring reads back from a JSON document",
                "Validate the whole document, then import every read in one transaction; a document with any "
                "error is refused whole.")
    p.add_argument("file", type=Path, metavar="FILE.json", help="reads exported by 'read export'")
    add_replace(p, "overwrite reads that exist in the store")
    p = command(actions, "export-sr", common, cmd_read_export_sr, "coordinator: reads as DICOM SR (TID 1500), audited",
                "One Comprehensive 3D SR per read (<read id>.sr.dcm). SR files carry the study's identifiers: in "
                "reading studies this is a coordinator export.")
    add_read_filters(p)
    add_output(p, "folder", "output folder")
    p = command(actions, "export-seg", common, cmd_read_export_seg, "coordinator: lesion extents as DICOM SEG, audited",
                "One BINARY segmentation per read and station series, one segment per lesion with an extent "
                "(<read id>.<n>.seg.dcm).")
    add_read_filters(p)
    add_output(p, "folder", "output folder")
    p = command(actions, "import-sr", common, cmd_read_import_sr, "bring reads back from DICOM SR (TID 1500)",
                "Import SRs written by export-sr losslessly, and TID 1500 SRs of other tools as draft reads; lists "
                "what could not be mapped. All or nothing.")
    p.add_argument("files", type=Path, nargs="+", metavar="FILE", help="SR files")
    add_replace(p, "overwrite reads that exist in the store")
    p = command(sub, "export-csv", common, cmd_export_csv,
                "write lesions.csv, units.csv, reads.csv and columns.csv (codebook) for statistics")
    add_output(p, "folder", "output folder")
    add_read_filters(p)
    p.add_argument("--reading-study", metavar="NAME", help="only reads of this reading study")
    p.add_argument("--latest-submitted", action="store_true",
                   help="only each reader's latest submitted version per case (default: every version and draft)")


def _add_plugin_commands(sub, common, only: str | None = None) -> None:
    """Commands other packages register (the viewer's ``view``), by entry point (``only``: that one, if any).

    The core never imports them: ``ui`` registers itself in the
    ``cno_annotate.commands`` group.
    """
    from cno_annotate import plugins

    for refresh in (False, True):
        entries = [(name, value) for name, value in plugins.command_entries(refresh) if only in (None, name)]
        registers = []
        for name, value in entries:
            try:
                registers.append(plugins.load(value))
            except (ImportError, AttributeError) as exc:  # a plugin whose dependencies are missing
                if not refresh:
                    break  # perhaps removed since it was looked up: look again
                print(f"{PROG}: warning: command {name!r} is unavailable: {exc}", file=sys.stderr)
        else:
            for register in registers:
                register(sub, common)
            return


class OneCommand(argparse._SubParsersAction):
    """Subcommands of which only the one named ``only`` is built (None: every one)."""

    only: str | None = None

    def add_parser(self, name, **kwargs):
        """The command's parser if it is to be built; else a stand-in that ignores what is added to it."""
        return super().add_parser(name, **kwargs) if self.only in (None, name) else _NotBuilt()


class _NotBuilt:
    """Stands for a command's parser that is not built: every call on it does nothing and returns it."""

    def __getattr__(self, name: str):
        return self._ignore

    def _ignore(self, *args, **kwargs) -> _NotBuilt:
        return self


# -- commands -------------------------------------------------------------------
def cmd_sample(args) -> int:
    """Run ``cno-annotate sample`` (see its ``--help``)."""
    from cno_annotate.sample import StudyPlan, generate_study, lesions_outside

    out = args.out
    if out.exists() and any(out.iterdir()):
        raise CnoError(f"{out} is not empty; choose a new folder")
    plan = StudyPlan(stations=args.stations, slices=args.slices, matrix=args.matrix, seed=args.seed,
                     timepoints=args.timepoints)
    truth = generate_study(out, plan)
    visits = f"{plan.timepoints} visits x " if plan.timepoints > 1 else ""
    print(f"wrote {counted(truth['files'], 'DICOM file')} ({visits}{counted(plan.stations, 'station')} x 2 series x "
          f"{counted(plan.slices, 'slice')} of {plan.matrix} x {plan.matrix}) and ground_truth.json to {out}")
    for visit in sorted({v for v, _ in lesions_outside(truth)}):
        names = [f"{x['id']} {x['segment']} {x['bone']} {x['side']}".replace("  ", " ")
                 for v, x in lesions_outside(truth) if v == visit]
        print(f"note: {len(names)} lesion{'' if len(names) == 1 else 's'} of visit {visit} "
              f"{'lies' if len(names) == 1 else 'lie'} outside the images ({', '.join(names)}: beside the "
              f"{plan.station_fov:.0f} mm wide field of view; fewer stations widen it); ground_truth.json marks "
              f"{'it' if len(names) == 1 else 'them'} in_field_of_view false")
    return 0


def cmd_import(args) -> int:
    """Run ``cno-annotate import`` (see its ``--help``)."""
    # Importing does no large linear algebra: one BLAS thread spares numpy's import starting a
    # pool of them (about 0.02 s CPU, bench/README.md). A value the user set is kept.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from cno_annotate.importer import import_paths

    missing = [p for p in args.paths if not os.path.lexists(p)]
    if missing and len(missing) == len(args.paths):
        raise CnoError(f"nothing imported: no such file or folder: {', '.join(display_path(p) for p in missing)}")
    store = _open_store(args, create=True)
    progress = None if args.json else TerminalProgress.if_terminal("indexing")
    report = import_paths(store, args.paths, progress=progress)
    if progress is not None:
        progress.finish()
    summary = report.as_dict(store)
    if args.json:
        print(json.dumps(summary, indent=2))
        _require_something_imported(summary)
        return 0
    relinked = f", {summary['relinked']} re-linked to their new location" if summary["relinked"] else ""
    print(
        f"imported {_count(summary['instances'], 'instance')} ({summary['new_instances']} new, "
        f"{summary['already_imported']} already in the store{relinked}) and {_count(summary['nifti'], 'NIfTI file')} "
        f"from {_count(summary['files'], 'file')}: {_count(summary['studies'], 'study', 'studies')}, "
        f"{_count(summary['series'], 'series', 'series')}, {_count(summary['volumes'], 'volume')} "
        f"({summary['composed']} composed whole-body)"
    )
    if summary["skipped"]:
        print(f"skipped {_count(len(summary['skipped']), 'file')}:")
        for item in summary["skipped"]:
            print(f"  {item['path']}: {item['reason']}")
    if summary["ignored_files"]:
        print(f"ignored {_count(summary['ignored_files'], 'known non-image file')} ({', '.join(summary['ignored'])})")
    if summary["warnings"]:
        warned = len({item["path"] for item in summary["warnings"]})
        print(f"warnings for {_count(warned, 'file')}:")
        for item in summary["warnings"]:
            print(f"  {item['path']}: {item['message']}")
    if summary["replaced"]:
        print(f"note: {_count(summary['replaced'], 'instance')} imported earlier lost their file (it holds another "
              "image now): they count as missing until their files are imported again")
    if missing:
        print(f"note: {len(missing)} of {_count(len(args.paths), 'path')} given "
              f"{'does' if len(missing) == 1 else 'do'} not exist (listed above)")
    print(f"store: {store.root}")
    for study_uid in sorted(report.studies):
        _print_volumes(store.volumes(study_uid))
        _print_compositions(store.compositions(study_uid))
    _require_something_imported(summary)
    return 0


def _require_something_imported(summary: dict) -> None:
    """An import that found no image at all is an error (exit 1), with the reason in one line."""
    if summary["instances"] or summary["nifti"]:
        return
    if not summary["files"]:
        raise CnoError("nothing imported: no file found (the folder is empty or holds only known non-image files)")
    raise CnoError(f"nothing imported: none of the {_count(summary['files'], 'file')} found is a DICOM image or "
                   "NIfTI file that can be used (reasons listed above)")


def cmd_studies(args) -> int:
    """Run ``cno-annotate studies`` (see its ``--help``)."""
    store = _open_store(args)
    studies = store.studies()
    if args.json:
        print(json.dumps([dataclasses.asdict(s) for s in studies], indent=2))
        return 0
    _print_rows(studies, False, f"no studies in the store at {store.root} (use 'cno-annotate import PATH')",
                lambda s: f"{s.study_uid}  {s.study_date or '-':8}  {s.patient_id or '-':12}  "
                          f"{s.series:3} series  {s.volumes:3} volumes  {s.description or ''}"
                          + (f"  MISSING: {_count(s.missing_files, 'file')} not found (see 'cno-annotate "
                             "relocate')" if s.missing_files else ""))
    return 0


def cmd_series(args) -> int:
    """Run ``cno-annotate series`` (see its ``--help``)."""
    store = _open_store(args)
    study = study_arg(store, args)
    rows = [series_summary(v) for v in store.volumes(study)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no series in the store at {store.root}")
    _print_volumes(store.volumes(study))
    _print_compositions(store.compositions(study))
    return 0


def series_summary(volume: VolumeRow) -> dict:
    """The JSON form of one volume for ``series --json``."""
    rows = volume.affine[:3]
    spacing = [math.sqrt(rows[0][c] * rows[0][c] + rows[1][c] * rows[1][c] + rows[2][c] * rows[2][c])
               for c in range(3)]  # column norms, without loading numpy for a listing
    return {
        "study_uid": volume.study_uid,
        "volume_id": volume.volume_id,
        "series_uid": volume.volume_id,  # deprecated alias of volume_id, kept for release 0.1 readers
        "dicom_series_uid": volume.series_uid,
        "kind": volume.kind,
        "role": volume.role,
        "role_reason": "set by the user" if volume.overridden else volume.role_reason,
        "orientation": volume.orientation,
        "composed": volume.kind == VolumeKind.COMPOSED,
        "stations": volume.stations,
        "members": volume.members,
        "shape": list(ijk_shape(volume.shape)),
        "spacing_mm": [round(float(s), 4) for s in spacing],
        "gaps": volume.gaps,
        "duplicate_slices": volume.duplicates,
        "patient_geometry": volume.patient_geometry,
        "description": volume.description,
        "variant": volume.variant,
        "composition": volume.composition,
        "source_path": volume.source_path,
        "sequence": volume.sequence,
    }


def cmd_set_role(args) -> int:
    """Run ``cno-annotate set-role`` (see its ``--help``)."""
    from cno_annotate.importer import rebuild_volumes

    store = _open_store(args)
    volume = store.volume(args.volume)
    store.set_role(volume.volume_id, None if args.role == "auto" else args.role)
    rebuild_volumes(store, [volume.study_uid])
    now_role = store.volume(volume.volume_id).role
    print(f"{volume.volume_id}: role {now_role}" + (" (from headers)" if args.role == "auto" else " (set by the user)"))
    return 0


def cmd_use_station(args) -> int:
    """Run ``cno-annotate use-station`` (see its ``--help``)."""
    from cno_annotate.derive import choose_station, reset_station

    store = _open_store(args)
    note = (reset_station if args.latest else choose_station)(store, args.volume)
    print(note.message)
    return 0


def cmd_export_nifti(args) -> int:
    """Run ``cno-annotate export-nifti`` (see its ``--help``)."""
    from cno_annotate.exports import audited_file_export
    from cno_annotate.fileio import check_output_file
    from cno_annotate.io.nifti import write_nifti
    from cno_annotate.volumes import load_volume, unread_files_message

    if not args.out.name.lower().endswith((".nii", ".nii.gz")):
        raise CnoError(f"{args.out}: the output must end in .nii or .nii.gz")
    check_output_file(args.out, args.force)
    store = _open_store(args)
    volume = load_volume(store, args.volume)
    if volume.load.errors:
        raise CnoError(f"{unread_files_message(volume.load.errors)}; nothing written (import the folder again, "
                       "or relocate it if it moved)")
    audited_file_export(store, args.out, args.force, "export-nifti", f"volume:{volume.volume_id}",
                        lambda path: (write_nifti(volume, path), {"format": "nifti", "shape": list(volume.shape)}))
    i, j, k = ijk_shape(volume.shape)
    print(f"wrote {args.out} ({i} x {j} x {k} voxels, {volume.role}, {volume.header.kind})")
    return 0


def cmd_import_log(args) -> int:
    """Run ``cno-annotate import-log`` (see its ``--help``)."""
    store = _open_store(args)
    runs = store.import_runs(args.last)
    if args.json:
        print(json.dumps(runs, indent=2))
        return 0
    for run in runs:
        summary = run["summary"] or {}
        instances = summary.get("instances")
        print(f"run {run['run_id']}  {run['started']}  "
              f"{counted(instances, 'instance') if isinstance(instances, int) else '? instances'}, "
              f"{len(run['skipped'])} skipped  {' '.join(run['paths'])}")
        for item in run["skipped"]:
            print(f"    {item['path']}: {item['reason']}")
        for item in summary.get("warnings", []):
            print(f"    {item['path']}: warning: {item['message']}")
    return 0


def cmd_relocate(args) -> int:
    """Run ``cno-annotate relocate`` (see its ``--help``)."""
    from cno_annotate.paths import absolute, display

    store = _open_store(args)
    moved = store.relocate(args.old, args.new)
    print(f"re-linked {_count(moved, 'file')} from {display(absolute(args.old))} to {display(absolute(args.new))}")
    still = sum(store.missing_files().values())
    if still:
        print(f"{_count(still, 'file')} of the store still not found (see 'cno-annotate studies')")
    return 0


def cmd_cache_info(args) -> int:
    """Run ``cno-annotate cache info`` (see its ``--help``)."""
    from cno_annotate.cache import VolumeCache

    store = _open_store(args)
    info = VolumeCache.of(store).info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['folder']}: {_count(info['files'], 'file')}, {info['bytes'] / 1e6:.1f} MB of a "
          f"{info['limit_bytes'] / 1e6:.0f} MB limit (least recently used out first)")
    return 0


def cmd_cache_clear(args) -> int:
    """Run ``cno-annotate cache clear`` (see its ``--help``)."""
    from cno_annotate.cache import VolumeCache

    store = _open_store(args)
    removed, size = VolumeCache.of(store).clear()
    print(f"removed {_count(removed, 'cached volume')} ({size / 1e6:.1f} MB)")
    return 0


def cmd_read_list(args) -> int:
    """Run ``cno-annotate read list`` (see its ``--help``)."""
    from cno_annotate.annotation.reads import list_reads

    store = _open_store(args)
    _print_rows(list_reads(store, study_arg(store, args), args.reader), args.json, "no reads",
                lambda r: f"{r['read_id']}  {r['status']:9}  {r['reader']:12}  {r['scheme_id']} {r['scheme_version']}  "
                          f"study {r['study_uid']}  revision {r['revision']}  version {r['version']}")
    return 0


def cmd_read_export(args) -> int:
    """Run ``cno-annotate read export`` (see its ``--help``)."""
    from cno_annotate.annotation.documents import write_document
    from cno_annotate.export_reads import export_document
    from cno_annotate.exports import audited_file_export
    from cno_annotate.fileio import check_output_file

    check_output_file(args.out, args.force)
    store = _open_store(args)
    study = study_arg(store, args)
    reader, actor = _exporter(store, args.reader, "read export")
    document = export_document(store, study, reader)
    audited_file_export(store, args.out, args.force, "export", "reads",
                        lambda path: (write_document(document, path),
                                      {"format": "json", "study_uid": study, "reader": reader,
                                       "reads": [r["read_id"] for r in document["reads"]]}), actor)
    print(f"wrote {counted(len(document['reads']), 'read')} to {args.out}")
    return 0


def cmd_read_import(args) -> int:
    """Run ``cno-annotate read import`` (see its ``--help``)."""
    from cno_annotate.annotation.documents import import_document

    store = _open_store(args)
    ids = import_document(store, args.file, replace=args.replace)
    print(f"imported {counted(len(ids), 'read')} from {args.file}")
    return 0


def cmd_read_export_sr(args) -> int:
    """Run ``cno-annotate read export-sr`` (see its ``--help``)."""
    from cno_annotate.exchange.commands import export_sr

    store = _open_store(args)
    paths = export_sr(store, study_arg(store, args), args.reader, args.out, args.force)
    print(f"wrote {_count(len(paths), 'SR')} to {args.out}")
    return 0


def cmd_read_export_seg(args) -> int:
    """Run ``cno-annotate read export-seg`` (see its ``--help``)."""
    from cno_annotate.exchange.commands import export_seg

    store = _open_store(args)
    paths, skipped = export_seg(store, study_arg(store, args), args.reader, args.out, args.force)
    print(f"wrote {_count(len(paths), 'SEG')} to {args.out}")
    for read_id, lesions in skipped.items():
        print(f"  read {read_id}: no extent, no segment: {', '.join(lesions)}")
    return 0


def cmd_read_import_sr(args) -> int:
    """Run ``cno-annotate read import-sr`` (see its ``--help``)."""
    from cno_annotate.exchange.commands import import_srs

    imported = import_srs(_open_store(args), args.files, replace=args.replace)
    for path, item in zip(args.files, imported):
        read = item.read
        print(f"{path}: read {read.read_id} of {read.reader} ({read.status}, {_count(len(read.lesions), 'lesion')})")
        for what in item.unmapped:
            print(f"  not mapped: {what}")
    return 0


def cmd_export_csv(args) -> int:
    """Run ``cno-annotate export-csv`` (see its ``--help``)."""
    from cno_annotate import reading_study as rs
    from cno_annotate.annotation.csv_export import latest_submitted, write_tables
    from cno_annotate.export_reads import export_document
    from cno_annotate.exports import audited_export
    from cno_annotate.packages import refuse_reader_store

    store = refuse_reader_store(_open_store(args), "export-csv")
    study = study_arg(store, args)
    if args.reading_study:
        rs.get(store, args.reading_study)  # refuses a name that is no reading study
    reader, actor = _exporter(store, args.reader, "export-csv")
    document = export_document(store, study, reader, args.reading_study)
    if args.latest_submitted:
        document["reads"] = latest_submitted(document["reads"])
    codes = {(name, c.study_uid): c.reading_code
             for name in {r["reading_study"] for r in document["reads"] if r["reading_study"]}
             for c in rs.cases(store, name)}
    for read in document["reads"]:
        read["reading_code"] = codes.get((read["reading_study"], read["study_uid"]), "")
    _, paths = audited_export(store, args.out, args.force, "export-csv", "reads",
                              lambda folder: (write_tables(document, folder),
                                              {"format": "csv", "study_uid": study, "reader": reader,
                                               "reading_study": args.reading_study,
                                               "latest_submitted": args.latest_submitted,
                                               "reads": [r["read_id"] for r in document["reads"]]}), actor)
    print(f"wrote {', '.join(str(p) for p in paths)} ({counted(len(document['reads']), 'read')})")
    return 0


# -- helpers ----------------------------------------------------------------------
def _exporter(store, reader: str | None, command: str) -> tuple[str | None, str]:
    """(reader filter, audit actor) of an export: a reader's or adjudicator's login exports its own reads as itself.

    Raises
    ------
    CnoError
        If such a login asks for another reader's reads.
    """
    from cno_annotate import reading_study as rs
    from cno_annotate.exports import COORDINATOR

    login = rs.limited_login(store)
    if login is None:
        return reader, COORDINATOR
    if reader not in (None, login):
        raise CnoError(f"the login {login!r} exports only its own reads, not those of {reader!r}: leave out "
                       f"--reader, or ask the coordinator to run '{command}' (nothing was written)")
    return login, login


def study_arg(store, args) -> str | None:
    """The study named by ``--study`` / STUDY (UID, accession number or patient ID), or None."""
    text = getattr(args, "study", None)
    return store.study_uid_for(text) if text else None


def _non_negative_int(text: str) -> int:
    """An argparse type: a whole number 0 or more (numpy refuses negative seeds)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def _count(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"


def _open_store(args, create: bool = False):
    from cno_annotate.cli_output import open_store

    return open_store(args.store, create)


def _print_volumes(volumes: list[VolumeRow]) -> None:
    for v in volumes:
        s = series_summary(v)
        shape = "x".join(str(n) for n in s["shape"])
        spacing = "x".join(f"{x:.2f}" for x in s["spacing_mm"])
        stations = f"{s['stations']} stations" if s["composed"] else s["kind"]
        gaps = f"  GAPS: {sum(g['missing'] for g in s['gaps'])} missing slices" if s["gaps"] else ""
        if s["duplicate_slices"]:
            gaps += (f"  DUPLICATES: {_count(s['duplicate_slices'], 'image')} at a repeated position not used "
                     "(see --json)")
        what = s["role"] if s["sequence"] in ("", s["role"]) or v.overridden else f"{s['role']} ({s['sequence']})"
        print(f"  {s['series_uid']}  {what:5} {s['orientation']:8} {stations:11} {shape:>12} "
              f"@ {spacing} mm  {s['description']}  [{s['role_reason']}]{gaps}")


def _print_compositions(notes: list[CompositionNote]) -> None:
    """How each STIR / T1 protocol composed, or why not (one line each)."""
    if notes:
        print("  composition:")
    for note in notes:
        print(f"    {note.message}")


class TerminalProgress:
    """A one-line progress bar on stderr (only when stderr is a terminal)."""

    def __init__(self, label: str):
        self.label = label
        self.last = -1

    @classmethod
    def if_terminal(cls, label: str) -> TerminalProgress | None:
        """A progress bar if stderr is a terminal, else ``None``."""
        return cls(label) if sys.stderr.isatty() else None

    def __call__(self, done: int, total: int) -> None:
        percent = 100 * done // max(total, 1)
        if percent == self.last:
            return
        self.last = percent
        bar = "#" * (percent // 4)
        sys.stderr.write(f"\r{self.label} [{bar:25}] {done}/{total} files")
        sys.stderr.flush()

    def finish(self) -> None:
        """End the progress line."""
        sys.stderr.write("\n")
