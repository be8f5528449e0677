"""The hand-written mutation probe (stress/mutation_probe.py) still plants every bug it names.

A mutant whose pattern no longer matches the code is reported "stale" and counts for nothing, so a
refactoring silently drops it from the probe's score. The probe itself is slow (a copy of the tree and
a test run per mutant) and lives in stress/; this check is quick and runs with the suite.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _probe():
    spec = importlib.util.spec_from_file_location("mutation_probe", REPO / "stress" / "mutation_probe.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


MUTANTS = _probe().MUTANTS


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.id for m in MUTANTS])
def test_each_planted_bug_still_applies_to_the_code(mutant):
    source = (REPO / mutant.path).read_text(encoding="utf-8")
    found = len(re.findall(mutant.pattern, source))
    assert found == 1, f"{mutant.id} ({mutant.what}): its pattern matches {found} times in {mutant.path}; update it"
    missing = [t for t in mutant.tests if not (REPO / t).exists()]
    assert not missing, f"{mutant.id} names tests that do not exist: {missing}"


def test_the_mutants_cover_the_defects_the_review_listed():
    """Issue 10's list: each of these bugs, planted by hand, must be one of the probe's mutants."""
    named = {m.what for m in MUTANTS}
    assert {"linear weighted kappa computed as quadratic", "no audit row for a new read version",
            "audit hash ignores the before/after content", "a failed transaction is committed instead of rolled back",
            "the per-unit cap of 7 removed", "migrations start from version 0 on every open",
            "volume-id prefix lookup disabled", "adjudicators given shuffled worklists",
            "edits written with no transaction at all"} <= named
