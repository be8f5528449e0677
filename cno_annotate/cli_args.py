"""Arguments that many commands share, each defined once with its help text.

Every subcommand is made by :func:`command` (which adds the shared ``--store``
parent and the function that runs it); an argument that several commands take
(``--json``, ``--out`` with ``--force``, ``--study``, ``--reader``, a reading
study's name, ``--link-key``, a PACS node, ``--timeout``) comes from one helper
here, so the same flag means the same thing and says so in the same words.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

STORE_HELP = ("study store folder, or a PostgreSQL server as postgresql://USER@HOST/DB (default: "
              "$CNO_ANNOTATE_STORE, else the per-user data folder)")

#: What ``--json`` prints, by what the command lists.
JSON_HELP = {
    "list": "print a JSON list",
    "object": "print a JSON object",
    "summary": "print the summary as JSON",
    "report": "also print the report as JSON",
}

#: What ``--force`` replaces: the one output file, or files in the output folder.
FORCE_HELP = {"file": "replace the file if it exists", "folder": "replace existing output files"}


def store_location(text: str) -> Path | str:
    """A ``--store`` value: a folder, or a ``postgresql://`` URL kept as text."""
    from cno_annotate.store.postgres import is_url

    return text if is_url(text) else Path(text)


def add_store(parser: argparse.ArgumentParser, default: Any = None) -> None:
    """``--store``: on the main parser (default None) and on every command (``argparse.SUPPRESS``)."""
    parser.add_argument("--store", type=store_location, default=default, help=STORE_HELP)


def store_parent() -> argparse.ArgumentParser:
    """The parent parser every command gets: ``--store`` after the command as well as before it.

    Its default is ``SUPPRESS`` so that a command's parser does not overwrite a
    ``--store`` given before the command with a default.
    """
    common = argparse.ArgumentParser(add_help=False)
    add_store(common, default=argparse.SUPPRESS)
    return common


def command(actions: Any, name: str, common: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int | None],
            help: str, description: str | None = None) -> argparse.ArgumentParser:
    """Add the subcommand ``name`` (with ``--store``) that ``run`` carries out.

    Parameters
    ----------
    actions
        The ``add_subparsers()`` object of the parent command.
    common
        The parent parser from :func:`store_parent`.
    run
        Called with the parsed arguments; returns the exit code.
    help, description
        One line for the command list, and the longer text of its ``--help``.
    """
    parser = actions.add_parser(name, parents=[common], help=help, description=description)
    parser.set_defaults(run=run)
    return parser


def add_json(parser: argparse.ArgumentParser, shape: Literal["list", "object", "summary", "report"] = "list") -> None:
    """``--json``: print exactly one JSON document (of this shape) on stdout."""
    parser.add_argument("--json", action="store_true", help=JSON_HELP[shape])


def add_output(parser: argparse.ArgumentParser, kind: Literal["file", "folder"], help: str,
               force: bool = True) -> None:
    """``--out`` (required), and ``--force`` to replace what is there."""
    parser.add_argument("--out", type=Path, required=True, help=help)
    if force:
        parser.add_argument("--force", action="store_true", help=FORCE_HELP[kind])


def add_study_filter(parser: argparse.ArgumentParser) -> None:
    """``--study``: only this study (a UID, accession number or patient ID)."""
    parser.add_argument("--study", help="study UID, accession number or patient ID")


def add_reader(parser: argparse.ArgumentParser, required: bool = False, help: str = "reader id") -> None:
    """``--reader``: whose reads."""
    parser.add_argument("--reader", required=required, help=help)


def add_read_filters(parser: argparse.ArgumentParser) -> None:
    """``--study`` and ``--reader``: which reads a read command works on (default: all)."""
    add_study_filter(parser)
    add_reader(parser)


def add_reading_study(parser: argparse.ArgumentParser) -> None:
    """The reading study's name (positional)."""
    parser.add_argument("name", help="reading study")


def add_link_key(parser: argparse.ArgumentParser, required: bool = True,
                 help: str = "the coordinator's link key file") -> None:
    """``--link-key``: the coordinator's database (reading code <-> record id, clinical records)."""
    parser.add_argument("--link-key", type=Path, required=required, help=help)


def add_pacs_node(parser: argparse.ArgumentParser) -> None:
    """The PACS node's name (positional), as registered with ``pacs add``."""
    parser.add_argument("name", help="the PACS (as registered with pacs add)")


def add_timeout(parser: argparse.ArgumentParser) -> None:
    """``--timeout``: seconds to wait for a PACS."""
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for an answer (default 30)")


def add_replace(parser: argparse.ArgumentParser, help: str) -> None:
    """``--replace``: overwrite what exists (``help`` says what)."""
    parser.add_argument("--replace", action="store_true", help=help)
