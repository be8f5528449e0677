"""The bone-unit checklist without Qt: unit states, the jump target of a unit, marking the rest."""

from __future__ import annotations

import numpy as np
import pytest

from cno_annotate.annotation.reads import ReadSession, load_read
from cno_annotate.annotation.taxonomy import load_taxonomy
from cno_annotate.display.checklist import UnitState, remaining_units, unit_shapes, unit_states, unit_target
from cno_annotate.store import audit

STUDY = "1.2.826.0.1.3680043.99.1"


def session_with_lesion(store) -> ReadSession:
    session = ReadSession.open_or_create(store, STUDY, "dr-a")
    lesion = session.add_lesion((-77.0, 0.0, -420.0), "1.2.3", (40, 337, 6))
    session.update_lesion(lesion, site_id="femur.distal", side="R")
    return session


def test_every_unit_of_the_taxonomy_has_a_shape_and_a_state(store):
    taxonomy = load_taxonomy()
    assert {u.unit_id for u in unit_shapes(taxonomy)} == set(taxonomy.unit_ids())
    session = session_with_lesion(store)
    session.mark_unit("skull", "not_assessable")
    session.mark_unit("femur.distal:L", "no_lesion")
    states = unit_states(session.read, taxonomy)
    assert len(states) == len(taxonomy.unit_ids()) == 136
    assert states["femur.distal:R"] is UnitState.LESION
    assert states["femur.distal:L"] is UnitState.NO_LESION
    assert states["skull"] is UnitState.NOT_ASSESSABLE
    assert states["tibia.proximal:L"] is UnitState.NOT_REVIEWED
    assert len(remaining_units(session.read, taxonomy)) == 133


def test_mark_remaining_is_one_change_one_audit_entry_one_undo(store):
    session = session_with_lesion(store)
    session.mark_unit("skull", "not_assessable")
    entries_before = store.db.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
    marked = session.mark_remaining()
    assert len(marked) == 134 and "femur.distal:R" not in marked and "skull" not in marked
    assert store.db.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == entries_before + 1
    stored = load_read(store, session.read.read_id)
    assert stored.unit_marks["skull"] == "not_assessable"
    assert sum(m == "no_lesion" for m in stored.unit_marks.values()) == 134
    assert session.scores().units_no_lesion == 134
    assert not remaining_units(stored, session.taxonomy)
    session.undo()  # one step takes all 134 marks back, the earlier mark stays
    assert load_read(store, session.read.read_id).unit_marks == {"skull": "not_assessable"}
    session.redo()
    assert len(load_read(store, session.read.read_id).unit_marks) == 135
    assert audit.verify(store.db).ok
    assert session.mark_remaining() == []  # nothing left: nothing written


def test_mark_remaining_refuses_a_submitted_read(store):
    session = session_with_lesion(store)
    session.mark_remaining()
    session.submit()
    with pytest.raises(Exception, match="submitted"):
        session.mark_remaining()


@pytest.mark.parametrize("unit, truth", [("femur.distal:R", "L1"), ("tibia.proximal:L", "L2"),
                                         ("tibia.distal:R", "L3"), ("humerus.proximal:L", "L4"),
                                         ("spine.T8", "L5"), ("ilium:L", "L7")])
def test_a_unit_lands_on_its_bone_in_the_sample(sample_store, sample_truth, unit, truth):
    """The schematic fitted to the body found in the volume puts each unit near the phantom's bone."""
    from cno_annotate.volumes import load_volume

    row = next(v for v in sample_store.volumes() if v["kind"] == "composed" and v["role"] == "STIR")
    volume = load_volume(sample_store, row["volume_id"])
    current = np.array([5.0, 12.0, 0.0])
    target = unit_target(volume, load_taxonomy(), unit, current)
    expected = next(l["lps_mm"] for l in sample_truth["lesions"] if l["id"] == truth)
    assert target[1] == pytest.approx(12.0)  # the coronal slice is kept
    assert abs(target[0] - expected[0]) < 45 and abs(target[2] - expected[2]) < 60
    assert np.sign(target[0]) == np.sign(expected[0]) or expected[0] == 0


def test_a_target_outside_the_volume_is_clamped_into_it(sample_store):
    from cno_annotate.volumes import load_volume

    row = next(v for v in sample_store.volumes() if v["kind"] == "stack" and v["role"] == "STIR")
    volume = load_volume(sample_store, row["volume_id"])  # one station: the feet lie outside it
    target = unit_target(volume, load_taxonomy(), "toe_phalanges:R", np.zeros(3))
    ijk = volume.lps_to_index(target)
    assert np.all(ijk >= -1e-6) and np.all(ijk <= np.array(volume.shape[::-1]) - 1 + 1e-6)


def test_a_clicked_point_proposes_the_bone_under_it(sample_store, sample_truth):
    """The inverse of the unit target: the sample's lesions propose their own bones (the spine within a level)."""
    from cno_annotate.display.checklist import propose_site
    from cno_annotate.volumes import load_volume

    row = next(v for v in sample_store.volumes() if v["kind"] == "composed" and v["role"] == "STIR")
    volume = load_volume(sample_store, row["volume_id"])
    proposed = {l["id"]: propose_site(volume, load_taxonomy(), l["lps_mm"]) for l in sample_truth["lesions"]}
    assert proposed["L1"] == ("femur.distal", "R") and proposed["L2"] == ("tibia.proximal", "L")
    assert proposed["L3"] == ("tibia.distal", "R") and proposed["L4"] == ("humerus.proximal", "L")
    assert proposed["L6"] == ("clavicle.medial", "R") and proposed["L7"] == ("ilium", "L")
    assert proposed["L5"][0] in ("spine.T7", "spine.T8", "spine.T9")
