"""A small seeded fuzz run of the import (the large one is stress/fuzz_import.py).

Mutated copies of real files (the sample study and pydicom's test files) are
imported beside unmutated files of their series, re-imported, loaded and
shown in a headless viewer session, each in a forked child with a memory cap
and a timeout. Every mutant must be imported or refused with a reason: no
traceback, hang, memory explosion, garbage volume, merged patients or lost
sibling.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stress"))
from fuzz_import import fuzz  # noqa: E402

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the harness forks (Linux)")


def test_seeded_mutants_are_imported_or_refused_never_crash():
    results = fuzz(count=24, seed=9, timeout=120, memory_mb=3000)
    failures = [f"{r['seed_file']}: {r['mutation']}: {r['outcome']}: {r.get('detail')}"
                for r in results if r["outcome"] != "ok"]
    assert failures == []
    refused = [r for r in results if r["detail"] != "imported"]
    assert refused and all(r["detail"] for r in refused)  # the run does exercise refusals
