"""Short series and preset names for narrow selectors (issue 12: selectors cut at 1024 px)."""

from __future__ import annotations

from cno_annotate.display.catalog import short_label


def test_short_labels_keep_role_plane_and_place():
    assert short_label("STIR coronal whole body (4 stations)") == "STIR cor WB ×4"
    assert short_label("T1 sagittal station 2/4") == "T1 sag st. 2/4"
    assert short_label("OTHER axial series 3") == "OTHER ax ser. 3"
    assert short_label("Auto (robust)") == "Auto"
    assert short_label("Bone") == "Bone"
