"""The viewer's query/retrieve dialog and "Send SR to PACS", driven against a real Orthanc.

The dialog is driven as a user would: focus lands on the patient ID field, the search runs on
Enter, Retrieve and Cancel are clicked; the network work runs off the GUI thread. Screenshots go
to the test's folder (looked at while writing these tests).
"""

from __future__ import annotations

import re

import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import Qt  # noqa: E402

from cno_annotate.store import Store  # noqa: E402

pytestmark = [pytest.mark.gui, pytest.mark.filterwarnings("ignore::UserWarning")]


@pytest.fixture
def window(qtbot, tmp_path, nodes):
    from cno_annotate_ui.main_window import MainWindow

    Store.open(tmp_path / "viewer-store").close()
    main = MainWindow(tmp_path / "viewer-store", reader="dr-ui")
    main.resize(1200, 800)
    qtbot.addWidget(main)
    main.show()
    return main


def _finished(dialog) -> bool:
    return not dialog.busy


def test_search_retrieve_cancel_and_resume_from_the_dialog(window, qtbot, pacs, tmp_path):
    server, _, study_uid = pacs
    dialog = window.open_pacs_dialog()
    qtbot.waitExposed(dialog)
    assert dialog.node.currentText() == "get"  # nodes sorted: get, move, web
    qtbot.keyClicks(dialog.focusWidget(), "NOBODY")  # the patient ID field has the focus
    qtbot.keyClick(dialog.focusWidget(), Qt.Key_Return)
    qtbot.waitUntil(lambda: _finished(dialog) and "found" in dialog.status.text(), timeout=30000)
    assert dialog.table.rowCount() == 0 and "0 studies found" in dialog.status.text()
    dialog.patient_id.clear()
    dialog.node.setCurrentText("web")
    qtbot.mouseClick(dialog.search_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: _finished(dialog) and dialog.table.rowCount() == 1, timeout=30000)
    assert dialog.table.item(0, 6).text() == "24" and dialog.retrieve_button.isEnabled()
    dialog.grab().save(str(tmp_path / "pacs-dialog-found.png"))
    # Retrieve, then Cancel at once: the retrieve stops early and keeps what arrived.
    qtbot.mouseClick(dialog.retrieve_button, Qt.LeftButton)
    assert dialog.cancel_button.isEnabled() and not dialog.search_button.isEnabled()
    qtbot.mouseClick(dialog.cancel_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: _finished(dialog), timeout=60000)
    cancelled = re.match(r"Cancelled after (\d+) of 24 instances", dialog.status.text())
    assert cancelled, dialog.status.text()
    kept = int(cancelled[1])
    qtbot.mouseClick(dialog.retrieve_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: _finished(dialog), timeout=60000)
    rest = 24 - kept  # only what the cancelled retrieve did not bring is fetched
    assert dialog.status.text().startswith(f"Retrieved {rest} of {rest} instances"), dialog.status.text()
    assert dialog.progress.value() == dialog.progress.maximum()
    dialog.grab().save(str(tmp_path / "pacs-dialog-retrieved.png"))
    # The study is in the viewer's list and open.
    qtbot.waitUntil(lambda: window._study_uid == study_uid, timeout=30000)
    images = window.store.db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    assert images == 24
    window.grab().save(str(tmp_path / "viewer-after-retrieve.png"))
    dialog.reject()


def test_send_sr_of_the_open_read_to_the_pacs(window, qtbot, pacs):
    server, _, study_uid = pacs
    dialog = window.open_pacs_dialog()
    dialog.node.setCurrentText("move")
    qtbot.mouseClick(dialog.search_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: _finished(dialog) and dialog.table.rowCount() == 1, timeout=30000)
    qtbot.mouseClick(dialog.retrieve_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: _finished(dialog) and window._study_uid == study_uid, timeout=60000)
    dialog.reject()
    qtbot.waitUntil(lambda: window.read_session is not None, timeout=30000)
    stir = next(v for v in window.store.volumes(study_uid) if v.kind == "composed" and v.role == "STIR")
    window.read_session.add_lesion((-40.0, 0.0, -150.0), stir.volume_id, (1, 1, 1), site_id="femur.distal",
                                   side="R", subsite="metaphysis")
    before = set(server.study_instances(study_uid))
    assert window.send_sr_to_pacs("web")
    qtbot.waitUntil(lambda: "Sent the SR" in window.statusBar().currentMessage()
                    or "not sent" in window.statusBar().currentMessage(), timeout=60000)
    assert "Sent the SR" in window.statusBar().currentMessage(), window.statusBar().currentMessage()
    added = set(server.study_instances(study_uid)) - before
    try:
        assert len(added) == 1
    finally:
        for uid in added:
            server.delete_instance(uid)
