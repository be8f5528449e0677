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


def _truth_unit(lesion: dict) -> str:
    """The bone unit of a ground-truth lesion of the sample (bone, segment, side)."""
    unit = f"{lesion['bone']}.{lesion['segment']}" if lesion["segment"] else lesion["bone"]
    return unit + (f":{lesion['side']}" if lesion["side"] else "")


def _sample_stir(sample_store):
    from cno_annotate.volumes import load_volume

    row = next(v for v in sample_store.volumes() if v.kind == "composed" and v.role == "STIR")
    return load_volume(sample_store, row.volume_id)


def test_each_unit_lands_on_its_bone_in_the_sample(sample_store, sample_truth):
    """The schematic fitted to the body found in the volume puts each lesion's unit near it."""
    volume, taxonomy = _sample_stir(sample_store), load_taxonomy()
    current = np.array([5.0, 12.0, 0.0])
    for lesion in sample_truth["lesions"]:
        target = unit_target(volume, taxonomy, _truth_unit(lesion), current)
        expected = lesion["lps_mm"]
        assert target[1] == pytest.approx(12.0)  # the coronal slice is kept
        assert abs(target[0] - expected[0]) < 30 and abs(target[2] - expected[2]) < 60, (lesion, target)


def test_a_target_outside_the_volume_is_clamped_into_it(sample_store):
    from cno_annotate.volumes import load_volume

    row = next(v for v in sample_store.volumes() if v.kind == "stack" and v.role == "STIR")
    volume = load_volume(sample_store, row.volume_id)  # one station: the feet lie outside it
    target = unit_target(volume, load_taxonomy(), "toe_phalanges:R", np.zeros(3))
    ijk = volume.lps_to_index(target)
    assert np.all(ijk >= -1e-6) and np.all(ijk <= np.array(volume.shape[::-1]) - 1 + 1e-6)


def test_a_clicked_point_proposes_the_bone_under_it(sample_store, sample_truth):
    """The inverse of the unit target: the sample's lesions propose their own bones (a distal forearm: its wrist)."""
    from cno_annotate.display.checklist import propose_site

    volume, taxonomy = _sample_stir(sample_store), load_taxonomy()
    for lesion in sample_truth["lesions"]:
        site, side = propose_site(volume, taxonomy, lesion["lps_mm"])
        unit = taxonomy.unit_id(site, side)
        forearm = lesion["bone"] in ("radius", "ulna") and lesion["segment"] == "distal"
        nearby = {f"{b}:{lesion['side']}" for b in ("radius.distal", "ulna.distal", "carpals")}
        assert unit == _truth_unit(lesion) or (forearm and unit in nearby), (lesion, unit)


@pytest.fixture(scope="module")
def spine_volumes(tmp_path_factory, sample_store):
    """Composed STIR and T1 of the bundled sample (seed 0) and of three other seeds (two at other matrices and
    slices; seed 21 has a noise peak in the air above the head)."""
    from cno_annotate.importer import import_paths
    from cno_annotate.sample import StudyPlan, generate_study
    from cno_annotate.store import Store
    from cno_annotate.volumes import load_volume

    stores = {"seed 0, 128 x 16": sample_store}
    for seed, slices, matrix in ((7, 16, 96), (13, 40, 64), (21, 16, 128)):
        folder = tmp_path_factory.mktemp(f"spine-{seed}")
        generate_study(folder / "study", StudyPlan(seed=seed, slices=slices, matrix=matrix))
        stores[f"seed {seed}, {matrix} x {slices}"] = Store.open(folder / "store")
        import_paths(stores[f"seed {seed}, {matrix} x {slices}"], [folder / "study"])
    return {(name, v.role): load_volume(store, v.volume_id)
            for name, store in stores.items() for v in store.volumes() if v.kind == "composed"}


def test_a_click_on_a_vertebral_body_proposes_its_own_level(spine_volumes):
    """Every vertebral body of the generator's spine, clicked at its centre, proposes its own level, and so does
    a thoracic or lumbar one clicked a quarter of its height above or below the centre (it proposed the level
    below: the body's top was found in the noise above the head on STIR, and the schematic's vertex and soles
    were taken for the skin's). A cervical body (13 mm) is within the fit's precision (a few mm) of its edges."""
    from cno_annotate.display.checklist import propose_site
    from cno_annotate.phantom import vertebra_centres

    taxonomy = load_taxonomy()
    wrong = []
    for (name, role), volume in spine_volumes.items():
        for level, (centre, height, _radius) in vertebra_centres().items():
            for dz in (0.0,) if level.startswith("C") else (-height / 4, 0.0, height / 4):
                site, side = propose_site(volume, taxonomy, centre + [0.0, 0.0, dz])
                if (site, side) != (f"spine.{level}", None):
                    wrong.append(f"{name} {role}: {level}{dz:+.0f} mm -> {site}")
    assert not wrong, f"{len(wrong)} wrong: {wrong[:12]}"


def test_a_click_anywhere_inside_a_vertebral_body_proposes_its_level(spine_volumes):
    """A click just inside a body's upper or lower endplate (2.5 mm in from its end, disc half included), or half
    its radius to either side, proposes that body's level, cervical bodies (13 mm) too: the schematic's fit
    alone is a few mm off, so a cervical body clicked near an edge proposed its neighbour."""
    from cno_annotate.display.checklist import propose_site
    from cno_annotate.phantom import vertebra_centres

    taxonomy = load_taxonomy()
    wrong, total = [], 0
    for (name, role), volume in spine_volumes.items():
        for level, (centre, height, radius) in vertebra_centres().items():
            inside = height / 2 - 2.5
            for dx, dz in ((0.0, -inside), (0.0, inside), (-radius / 2, 0.0), (radius / 2, 0.0),
                           (radius / 2, inside), (-radius / 2, -inside)):
                total += 1
                site, side = propose_site(volume, taxonomy, centre + [dx, 0.0, dz])
                if (site, side) != (f"spine.{level}", None):
                    wrong.append(f"{name} {role}: {level} {dx:+.1f},{dz:+.1f} mm -> {site}")
    assert not wrong, f"{len(wrong)} of {total} wrong: {wrong[:12]}"
