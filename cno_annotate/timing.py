"""Start-up timeline for benchmarks: ``CNO_ANNOTATE_TIMING=1`` prints when each step of a start ends.

Each line (on stderr) is ``start-phase <name> <wall clock s> thread <CPU s of the calling thread> cpu <of the process>``;
``bench/view_bench.py`` reads them. They go to stderr, so what a command prints (``--json``) stays whole.
Without the variable nothing is printed and nothing is imported.
"""

from __future__ import annotations

import os
import sys
import threading
import time

ENABLED = bool(os.environ.get("CNO_ANNOTATE_TIMING"))


def mark(name: str) -> None:
    """Print that the step ``name`` of a start has ended (only with ``CNO_ANNOTATE_TIMING``)."""
    if ENABLED:
        line(f"start-phase {name} {time.time():.6f} thread {time.thread_time():.3f} cpu {time.process_time():.3f} "
             f"in {threading.current_thread().name}")


def line(text: str) -> None:
    """Write one timing line to stderr in one write (print writes the text and its newline apart: two threads'
    lines ran into each other)."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
