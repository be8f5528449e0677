"""The ``view`` subcommand, registered with the core CLI through an entry point.

The core CLI looks up the ``cno_annotate.commands`` entry points and calls
each with its subparsers; so the core never imports the front end, and
registering this command imports no Qt (Qt loads when the command runs).
"""

from __future__ import annotations

import os
from pathlib import Path

from cno_annotate.cli_args import add_reader, command


def register(subparsers, common) -> None:
    """Add ``cno-annotate view`` to the CLI."""
    p = command(subparsers, "view", common, run, "open the reading viewer (STIR and T1 side by side)",
                "Open the viewer on a study of the store (default: the first). Needs PySide6 "
                "(pip install 'cno-annotate[ui]'). Press F1 in the window for every mouse and keyboard action.")
    p.add_argument("study", nargs="?", help="study UID, accession number or patient ID")
    p.add_argument("--sample", action="store_true", help="import and open the bundled sample study")
    p.add_argument("--screenshot", type=Path, metavar="FILE.png",
                   help="render the window with the study loaded to a PNG and exit (works offscreen)")
    p.add_argument("--size", default="1400x900", help="window size for --screenshot, WIDTHxHEIGHT")
    add_reader(p, help="reader id for the reads you make (default: your login name)")
    p.add_argument("--reading-study", metavar="NAME",
                   help="reader mode: your worklist of this blinded reading study (needs --reader)")
    p.add_argument("--pacs", metavar="NODE",
                   help="reader mode on a server store: fetch your cases from this de-identified study PACS "
                        "(a node of 'cno-annotate pacs list'), cached on this computer")
    p.add_argument("--package", type=Path, metavar="DIR",
                   help="open a reading package you were sent (reader mode only: its study and reader)")


def run(args) -> int:
    """Run ``cno-annotate view`` (see its ``--help``)."""
    # The viewer's linear algebra is on 4 x 4 matrices: one BLAS thread spares numpy's import starting a pool
    # of them (20-60 ms of CPU at every start, bench/README.md). A value the user set is kept.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from cno_annotate_ui.app import run_viewer

    from cno_annotate.errors import UsageError

    try:
        width, height = (int(n) for n in args.size.lower().split("x"))
    except ValueError:
        raise UsageError(f"--size must be WIDTHxHEIGHT, not {args.size!r}") from None
    if args.package is not None:
        given = [flag for flag, value in (("STUDY", args.study), ("--sample", args.sample), ("--store", args.store),
                                          ("--reader", args.reader), ("--reading-study", args.reading_study),
                                          ("--pacs", args.pacs))
                 if value]
        if given:
            raise UsageError(f"a package opens in reader mode only, with its own study and reader: drop "
                           f"{', '.join(given)}")
    if args.screenshot is not None and args.screenshot.suffix.lower() != ".png":
        raise UsageError(f"--screenshot writes a PNG image: name it FILE.png, not {args.screenshot}")
    if args.pacs and not args.reading_study:
        raise UsageError("--pacs is for reader mode: give --reader ID --reading-study NAME too")
    return run_viewer(args.package or args.store, args.study, args.sample, args.screenshot, (width, height),
                      args.reader, args.reading_study, args.pacs)
