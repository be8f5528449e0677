"""CLI group ``pacs``: register PACS nodes, query, retrieve into the store, send SR and SEG back."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cno_annotate.cli_args import add_json, add_pacs_node, add_replace, add_timeout, command
from cno_annotate.cli_output import open_store
from cno_annotate.cli_output import print_rows as _print_rows
from cno_annotate.errors import CnoError
from cno_annotate.wording import counted


def _port(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, not {value}")
    return value


def _study_uid(text: str) -> str:
    import argparse
    import re

    if not re.fullmatch(r"[0-9]+(\.[0-9]+)*", text) or len(text) > 64:
        raise argparse.ArgumentTypeError(f"{text!r} is not a study instance UID (digits and dots, at most 64)")
    return text


def _date_range(text: str) -> tuple[str, str]:
    import argparse

    from cno_annotate.pacs.query import parse_date_range

    try:
        return parse_date_range(text)
    except CnoError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _table(rows: list[dict], columns: list[tuple[str, str]]) -> list[str]:
    """Lines of a table with a header row, each column as wide as its widest cell (the last one free)."""
    cells = [[str(row[key]) if row[key] not in (None, "") else "-" for key, _ in columns] for row in rows]
    widths = [max([len(title)] + [len(line[i]) for line in cells]) for i, (_, title) in enumerate(columns)]
    def joined(values: list[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()
    return [joined([title for _, title in columns])] + [joined(line) for line in cells]


def register(sub, common) -> None:
    """Add ``pacs`` and its actions to the CLI."""
    pacs = sub.add_parser("pacs", help="query and retrieve from a PACS, send SR and SEG back",
                          description="PACS nodes are kept in the per-user configuration folder; DICOMweb "
                                      "credentials come from pacs-credentials.json there (chmod 600) or from "
                                      "CNO_PACS_TOKEN_<NAME> / CNO_PACS_USER_<NAME> + CNO_PACS_PASSWORD_<NAME>.")
    actions = pacs.add_subparsers(dest="pacs_command", required=True, metavar="ACTION")
    p = command(actions, "add", common, cmd_add, "register a PACS (DICOMweb URL or DIMSE AE@HOST:PORT)")
    p.add_argument("name", help="your name for it")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--dicomweb", metavar="URL", help="DICOMweb root URL (QIDO-RS, WADO-RS, STOW-RS)")
    where.add_argument("--dimse", metavar="AE@HOST:PORT", help="DIMSE node (C-FIND, C-GET/C-MOVE, C-STORE)")
    p.add_argument("--retrieve", choices=["get", "move"], default="get", help="DIMSE retrieve by C-GET (default) "
                   "or C-MOVE (the PACS must know --calling-ae at this computer, port --move-port)")
    p.add_argument("--calling-ae", default=None, help="this program's AE title (default CNOANNOTATE)")
    p.add_argument("--move-port", type=_port, default=None, help="port of the C-MOVE storage SCP (default 11113)")
    p.add_argument("--move-ae", default=None, help="C-MOVE destination AE title (default: --calling-ae)")
    add_replace(p, "replace a node of that name")
    p = command(actions, "list", common, cmd_list, "the registered PACS nodes (never their credentials)")
    add_json(p)
    p = command(actions, "remove", common, cmd_remove, "forget a PACS node")
    add_pacs_node(p)
    p = command(actions, "echo", common, cmd_echo, "check that a PACS answers (C-ECHO, or a DICOMweb search)")
    add_pacs_node(p)
    add_timeout(p)
    p = command(actions, "find", common, cmd_find, "search a PACS for studies (or a study's series with --study)")
    add_pacs_node(p)
    p.add_argument("--patient-id", default="", help="patient ID (exact)")
    p.add_argument("--name", dest="patient_name", default="", help="patient name, * as wildcard")
    p.add_argument("--date", default=None, type=_date_range,
                   help="study date or range FROM-TO (YYYYMMDD, either end may be left out)")
    p.add_argument("--accession", default="", help="accession number")
    p.add_argument("--modality", default="", help="modality in study, e.g. MR")
    p.add_argument("--study", default=None, metavar="UID", type=_study_uid, help="list this study's series instead")
    add_timeout(p)
    add_json(p)
    p = command(actions, "retrieve", common, cmd_retrieve, "retrieve a study into the store (resumable)",
                "Series by series (STIR first), each imported as soon as it arrives. "
                "Run it again after an interruption: only what the store lacks is fetched.")
    add_pacs_node(p)
    p.add_argument("study_uid", metavar="STUDY_UID", type=_study_uid, help="the study to retrieve (from pacs find)")
    add_timeout(p)
    add_json(p, "summary")
    p = command(actions, "send", common, cmd_send, "store DICOM files (SR, SEG) in a PACS (STOW-RS or C-STORE)")
    add_pacs_node(p)
    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help="DICOM files (SR, SEG)")
    add_timeout(p)


def _client(args):
    from cno_annotate.pacs import config
    from cno_annotate.pacs.client import open_client

    return open_client(config.get_node(args.name), timeout=args.timeout)


def cmd_add(args) -> int:
    """Run ``cno-annotate pacs add``."""
    from cno_annotate.pacs import config

    options: dict = {"retrieve": config.RetrieveMethod(args.retrieve)}
    if args.calling_ae is not None:
        options["calling_ae"] = args.calling_ae
    if args.move_port is not None:
        options["move_port"] = args.move_port
    if args.move_ae is not None:
        options["move_ae"] = args.move_ae
    if args.dicomweb:
        if args.retrieve != "get" or any(v is not None for v in (args.move_port, args.calling_ae, args.move_ae)):
            raise CnoError("--retrieve, --calling-ae, --move-port and --move-ae are for DIMSE nodes (--dimse), "
                           "not DICOMweb")
        node = config.PacsNode(args.name, config.Protocol.DICOMWEB, url=args.dicomweb)
    else:
        node = config.PacsNode.dimse(args.name, args.dimse, **options)
    config.add_node(node, replace=args.replace)
    print(f"added PACS {node.name}: {node.protocol.value} {node.address}"
          + (f", retrieve by C-{node.retrieve.value.upper()} as {node.calling_ae}" if node.protocol.value == "dimse"
             else ""))
    return 0


def cmd_list(args) -> int:
    """Run ``cno-annotate pacs list``."""
    from cno_annotate.pacs import config

    nodes = config.load_nodes().values()
    _print_rows([n.as_dict() for n in nodes], args.json, "no PACS registered (add one with 'cno-annotate pacs add')",
                _node_line)
    return 0


def _node_line(n: dict) -> str:
    where = n["url"] or f"{n['called_ae']}@{n['host']}:{n['port']}"
    how = ""
    if n["protocol"] == "dimse":
        how = f"  C-{n['retrieve'].upper()} as {n['calling_ae']}"
        if n["retrieve"] == "move":
            how += f" (to {n['move_ae'] or n['calling_ae']} on port {n['move_port']})"
    return f"{n['name']:16} {n['protocol']:8} {where}{how}"


def cmd_remove(args) -> int:
    """Run ``cno-annotate pacs remove``."""
    from cno_annotate.pacs import config

    config.remove_node(args.name)
    print(f"removed PACS {args.name}")
    return 0


def cmd_echo(args) -> int:
    """Run ``cno-annotate pacs echo``."""
    client = _client(args)
    client.echo()
    print(f"{client.node.name} answers ({client.node.address})")
    return 0


def cmd_find(args) -> int:
    """Run ``cno-annotate pacs find``."""
    from cno_annotate.pacs.query import StudyQuery

    client = _client(args)
    if args.study:
        series = [s.as_dict() for s in sorted(client.find_series(args.study),
                                                key=lambda s: (s.number is None, s.number or 0, s.series_uid))]
        _print_table(series, args.json, f"{client.node.name} holds no series of study {args.study}",
                     [("series_uid", "SERIES UID"), ("modality", "MODALITY"), ("number", "NUMBER"),
                      ("instances", "INSTANCES"), ("description", "DESCRIPTION")])
        return 0
    start, end = args.date or ("", "")
    query = StudyQuery(patient_id=args.patient_id, patient_name=args.patient_name, date_from=start, date_to=end,
                       accession=args.accession, modality=args.modality)
    studies = [s.as_dict() for s in client.find_studies(query)]
    _print_table(studies, args.json, f"no study on {client.node.name} matches",
                 [("study_uid", "STUDY UID"), ("study_date", "DATE"), ("patient_id", "PATIENT ID"),
                  ("patient_name", "PATIENT NAME"), ("accession", "ACCESSION"), ("modalities", "MODALITIES"),
                  ("series", "SERIES"), ("instances", "INSTANCES"), ("description", "DESCRIPTION")])
    return 0


def _print_table(rows: list[dict], as_json: bool, empty: str, columns: list[tuple[str, str]]) -> None:
    if as_json or not rows:
        _print_rows(rows, as_json, empty, str)
        return
    for line in _table(rows, columns):
        print(line)


class _Progress:
    """Retrieve progress on stderr when it is a terminal."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = -1

    def __call__(self, received: int, expected: int) -> None:
        if not self.tty:
            return
        percent = 100 * received // max(expected, 1)
        if percent != self.last:
            self.last = percent
            sys.stderr.write(f"\rretrieving [{'#' * (min(percent, 100) // 4):25}] {received}/{expected} instances")
            sys.stderr.flush()

    def series(self, outcome, seconds: float) -> None:
        if self.tty:
            sys.stderr.write("\n")
        from cno_annotate.pacs.retrieve import series_line

        print(f"  {series_line(outcome.as_dict())} ({seconds:.1f} s)", file=sys.stderr)


def cmd_retrieve(args) -> int:
    """Run ``cno-annotate pacs retrieve``."""
    from cno_annotate.pacs.retrieve import retrieve_study

    client = _client(args)
    client.find_series(args.study_uid)  # a PACS that is down or refuses us: no store is made for nothing
    store = open_store(args.store, create=True)
    progress = _Progress()
    try:
        report = retrieve_study(store, client, args.study_uid, progress=progress,
                                series_imported=None if args.json else progress.series)
    except KeyboardInterrupt:
        from cno_annotate.pacs.retrieve import study_folder

        arrived = len(list(study_folder(store, args.study_uid).glob("*/*.dcm")))
        if progress.tty:
            sys.stderr.write("\n")
        print(f"cno-annotate: interrupted: {arrived} instance{'s' if arrived != 1 else ''} of the study are kept in "
              f"{store.root}; run the same command again to fetch the rest", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
        return 1 if report.failed or any(o["result"] == "refused" for o in report.outcomes) else 0
    before = [f"{n} {what}" for n, what in ((report.already_in_store, "already in the store"),
                                            (report.already_kept, "kept as non-image files"),
                                            (report.already_refused, "refused by the importer")) if n]
    held = f" ({', '.join(before)})" if before else ""
    kept = [o for o in report.outcomes if o["result"] == "kept"]
    refused = [o for o in report.outcomes if o["result"] == "refused"]
    kinds = ", ".join(sorted({k for o in kept for k in o["reason"].split(", ")}))
    print(f"retrieved {report.received} of {counted(report.expected, 'instance')}{held} of study {report.study_uid} "
          f"from {client.node.name} in {report.seconds:.1f} s; imported {len(report.imported_series)} series into "
          f"{store.root}" + (f"; {len(kept)} series kept as non-image files ({kinds})" if kept else "")
          + (f"; {len(refused)} series refused by the importer (listed above)" if refused else ""))
    for failed in report.failed:
        print(f"cno-annotate: error: series {failed['number'] if failed['number'] is not None else '-'} "
              f"{failed['description'] or failed['series_uid']} not retrieved: {failed['reason']}", file=sys.stderr)
    if report.failed:
        print(f"cno-annotate: error: {len(report.failed)} of {counted(report.series, 'series', 'series')} not retrieved; run the same "
              "command again to retry them", file=sys.stderr)
    return 1 if report.failed or refused else 0


def cmd_send(args) -> int:
    """Run ``cno-annotate pacs send``."""
    from cno_annotate.pacs.send import send_files

    client = _client(args)
    sent, refused = send_files(client, args.files)
    for path, reason in refused.items():
        print(f"cno-annotate: error: {path} not sent: {reason}", file=sys.stderr)
    total = len(args.files)
    print(f"sent {len(sent)} file{'s' if len(sent) != 1 else ''} to {client.node.name}" if not refused
          else f"sent {len(sent)} of {total} files to {client.node.name}")
    return 1 if refused else 0
