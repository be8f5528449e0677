"""Finding studies looks at no file unless the study list's missing-file counts are asked for.

Counting missing files stats every file of every study: in a cohort store of 100 studies,
40,000 stats at each call. Opening a study in the viewer asked for them twice more than the
study list needs (its priors and the study named on the command line), and adding cases,
registering, linking and cohort reports once each.
"""

from __future__ import annotations

import pytest

import cno_annotate.store.db as db
from cno_annotate import followup


def test_priors_and_a_named_study_are_found_without_looking_at_files(sample_copy, monkeypatch):
    store = sample_copy()
    study = store.studies()[0]
    assert store.studies(count_missing=False) == [study]  # nothing missing here: the same rows

    def no_file_counting(*args):
        raise AssertionError("files were looked at")

    monkeypatch.setattr(db, "missing_files", no_file_counting)
    assert followup.prior_studies(store, study.study_uid) == []
    assert store.study_uid_for(study.patient_id) == study.study_uid
    assert store.first_study_uid() == study.study_uid
    with pytest.raises(AssertionError, match="files were looked at"):
        store.studies()  # the study list's counts still look
