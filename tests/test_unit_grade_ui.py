"""The lesion panel shows the proposed unit extent and lets the reader confirm or change it."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")


def test_the_panel_proposes_the_unit_extent_and_the_reader_changes_it(qtbot, store):
    from cno_annotate_ui.lesion_panel import LesionPanel
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QLabel, QToolButton

    from cno_annotate.annotation.reads import ReadSession

    session = ReadSession.open_or_create(store, "1.2.3", "dr-a")
    for z in (-400, -420):
        lesion = session.add_lesion((-70, 0, z), "1.2", (0, 0, 0), site_id="femur.distal", side="R")
        session.set_grade(lesion, "signal_extension", 2)
    panel = LesionPanel()
    qtbot.addWidget(panel)
    panel.set_session(session)
    panel.select(lesion)
    panel.show()

    def unit_row():
        label = next(w for w in panel.findChildren(QLabel) if w.text().startswith("Unit: Extent"))
        from PySide6.QtWidgets import QFormLayout

        row = panel.grades_layout.getWidgetPosition(label)[0]
        selector = panel.grades_layout.itemAt(row + 1, QFormLayout.ItemRole.FieldRole).widget()  # the row below
        checked = [b.text() for b in selector.findChildren(QToolButton) if b.isChecked()]
        return label.text(), checked, selector

    # two lesions of 25-50 % each propose "over 50 %" (3)
    text, checked, selector = unit_row()
    assert text == "Unit: Extent of signal abnormality (proposed)" and checked == ["3"]
    button = next(b for b in selector.findChildren(QToolButton) if b.text() == "2")
    qtbot.mouseClick(button, Qt.LeftButton)
    assert session.read.unit_grades == {"femur.distal:R": {"signal_extension": 2}}
    text, checked, _ = unit_row()
    assert text == "Unit: Extent of signal abnormality (yours)" and checked == ["2"]
