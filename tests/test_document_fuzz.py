"""A small seeded run of the read-document fuzzer (``stress/document_fuzz.py`` runs more).

Every mutation of a valid read document is either refused (one line, the file,
the JSON path, the store unchanged) or accepted, and then every export works.
"""

from __future__ import annotations

from stress.document_fuzz import build_base, fuzz
from tests.conftest import SAMPLE


def test_mutated_documents_are_refused_cleanly_or_imported_and_exported(tmp_path):
    base, document = build_base(tmp_path, SAMPLE / "DICOM")
    outcome = fuzz(base, document, mutations=40, seed=2026, work=tmp_path, reports=2)
    assert outcome.findings == []
    assert outcome.refused > 10 and outcome.accepted > 3, outcome.summary()  # both branches are exercised
