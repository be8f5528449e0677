"""Finding studies looks at no file unless the study list's missing-file counts are asked for.

Counting missing files stats every file of every study: in a cohort store of 100 studies,
40,000 stats at each call. Opening a study in the viewer asked for them twice more than the
study list needs (its priors and the study named on the command line), and adding cases,
registering, linking and cohort reports once each.
"""

from __future__ import annotations

import shutil

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


@pytest.mark.gui
def test_the_window_counts_missing_files_after_the_first_image_and_the_list_then_warns(tmp_path, sample_store, qtbot,
                                                                                    monkeypatch):
    """A start opens the study before showing the window (as ``cno-annotate view`` does): the first image does not
    wait for the study list's missing-file counts (every file of every study stat'ed); they follow it."""
    pytest.importorskip("PySide6")
    from cno_annotate_ui.main_window import MainWindow
    from PySide6.QtCore import Qt

    root = tmp_path / "store"
    shutil.copytree(sample_store.root, root)
    study = sample_store.studies()[0]
    counted: list[str] = []
    real = db.missing_files
    monkeypatch.setattr(db, "missing_files", lambda connection: counted.append("counted") or real(connection))
    at_first_image: list[int] = []
    window = MainWindow(root, reader="dr-count")
    qtbot.addWidget(window)
    window.panels["left"].view.first_image_painted.connect(lambda: at_first_image.append(len(counted)))
    with qtbot.waitSignal(window.all_loaded, timeout=60000):
        window.select_study(study.study_uid)
        window.show()
    assert at_first_image == [0]  # nothing stat'ed before the image
    assert counted  # the list's warnings were computed after it
    assert window.study_list.currentItem().data(Qt.UserRole) == study.study_uid  # the study open stays selected
