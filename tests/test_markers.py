"""What the views draw for a lesion, and the reading workflow's choices, decided without Qt.

A lesion is drawn by one rule whoever marked it (the open read, another reader's read shown to the
adjudicator, the prior study's read, a prior lesion carried forward as a ghost): the same label, the
same ellipsoid and the same polygon outline; only the colour and the key say where it comes from.
"""

from __future__ import annotations

import numpy as np
import pytest

from cno_annotate.annotation.model import Read
from cno_annotate.annotation.scheme import load_scheme
from cno_annotate.annotation.taxonomy import load_taxonomy
from cno_annotate.annotation.validation import make_lesion
from cno_annotate.display import overlay
from cno_annotate.display.overlay import extent_radii
from cno_annotate.followup import Ghost
from cno_annotate.reading_study import next_unsubmitted

TAXONOMY = load_taxonomy()
SCHEME = load_scheme()
POLYGON = {"kind": "polygon", "plane": "coronal", "points_mm": [[10, 0, 5], [30, 0, 5], [20, 0, 25]],
           "slice_range_mm": [-4, 4]}


def _lesion(lesion_id="L1", site_id="femur.distal", side="L", extent=None):
    return make_lesion(TAXONOMY, SCHEME, lesion_id=lesion_id, position=(20.0, 0.0, 12.0), series_uid="1.2.3",
                       voxel=(1.0, 2.0, 3.0), site_id=site_id, side=side, extent=extent, grades={})


def _read(reader: str, lesions) -> Read:
    return Read(read_id=f"r-{reader}", study_uid="1.2.3.4", reader=reader, scheme_id=SCHEME.id,
                scheme_version=SCHEME.version, taxonomy=f"{TAXONOMY.id}-{TAXONOMY.version}", lesions=list(lesions))


def test_a_lesion_is_drawn_by_the_same_rule_whoever_marked_it():
    lesion = _lesion(extent=POLYGON)
    [own] = overlay.read_markers([lesion], TAXONOMY)
    [theirs] = overlay.reader_markers([_read("dr-a", [lesion])])
    [prior] = overlay.prior_markers([lesion], TAXONOMY)
    ghost = Ghost(lesion.tracking_uid, lesion, (21.0, 1.0, 13.0), "left_leg", None)
    [carried] = overlay.ghost_markers([ghost], TAXONOMY)
    site = TAXONOMY.site("femur.distal").label
    assert own.label == f"L1 {site} L"
    assert theirs.label == f"dr-a L1 {site} L"
    assert prior.label == f"L1 {site} L"
    assert carried.label == f"prior L1 {site} L ?"
    for marker in (own, theirs, prior, carried):
        assert marker.radii_mm == extent_radii(POLYGON)
        assert marker.outline == POLYGON  # the polygon is drawn as drawn, for every source
    assert (own.lps, theirs.lps, prior.lps) == ((20.0, 0.0, 12.0),) * 3 and carried.lps == (21.0, 1.0, 13.0)
    assert (own.key, theirs.key, prior.key, carried.key) == (
        "L1", "dr-a/L1", f"prior:{lesion.tracking_uid}", f"ghost:{lesion.tracking_uid}")


def test_colours_say_where_a_marker_comes_from():
    placed, unplaced, chosen = _lesion("L1"), _lesion("L2", None, None), _lesion("L3")
    own = overlay.read_markers([placed, unplaced, chosen], TAXONOMY, selected="L3")
    assert [m.colour for m in own] == [overlay.LESION_COLOUR, overlay.UNPLACED_COLOUR, overlay.SELECTED_COLOUR]
    assert [m.selected for m in own] == [False, False, True]
    assert own[1].label == "L2 no site"
    reads = [_read(r, [placed]) for r in ("dr-a", "dr-b", "dr-c", "dr-d", "dr-e")]
    colours = [m.colour for m in overlay.reader_markers(reads)]
    assert colours == [*overlay.READER_COLOURS, overlay.READER_COLOURS[0]]  # each reader's read its own, in turn
    assert overlay.prior_markers([placed], TAXONOMY)[0].colour == overlay.PRIOR_COLOUR
    ghost = Ghost(placed.tracking_uid, placed, placed.position, "trunk", None)
    assert overlay.ghost_markers([ghost], TAXONOMY)[0].colour == overlay.GHOST_COLOUR
    assert len(set(overlay.READER_COLOURS) | {overlay.LESION_COLOUR, overlay.UNPLACED_COLOUR, overlay.SELECTED_COLOUR,
                                               overlay.PRIOR_COLOUR, overlay.GHOST_COLOUR}) == 9


def test_only_unconfirmed_ghosts_are_drawn():
    lesion = _lesion()
    confirmed = Ghost(lesion.tracking_uid, lesion, lesion.position, "trunk", "persisting")
    assert overlay.ghost_markers([confirmed], TAXONOMY) == []


WORKLIST = [{"reading_code": "CNO-0003", "status": "submitted"}, {"reading_code": "CNO-0001", "status": "draft"},
            {"reading_code": "CNO-0004", "status": "not started"}, {"reading_code": "CNO-0002", "status": "submitted"}]


@pytest.mark.parametrize(("current", "expected"), [
    (None, "CNO-0001"),  # nothing open: the first not submitted, in worklist order
    ("CNO-0003", "CNO-0001"),
    ("CNO-0001", "CNO-0004"),
    ("CNO-0004", "CNO-0001"),  # past the end: from the top again
    ("CNO-0002", "CNO-0001"),
    ("CNO-9999", "CNO-0001"),  # a code not in the worklist: from the top
])
def test_next_unsubmitted_case_follows_the_worklist_order_and_wraps(current, expected):
    assert next_unsubmitted(WORKLIST, current) == expected


def test_no_next_case_when_everything_else_is_submitted():
    done = [{**e, "status": "submitted"} for e in WORKLIST]
    assert next_unsubmitted(done, None) is None
    only_open = [*done[:1], {"reading_code": "CNO-0001", "status": "draft"}]
    assert next_unsubmitted(only_open, "CNO-0001") is None  # the open case is not "next"


def test_a_click_gives_the_voxel_of_the_volume_clicked_and_the_side_of_the_body(sample_store):
    from cno_annotate.display.marking import click_placement
    from cno_annotate.volumes import load_volume

    row = next(v for v in sample_store.volumes() if v.kind == "composed" and v.role == "STIR")
    volume = load_volume(sample_store, row.volume_id)
    centre_ijk = (np.array(volume.shape[::-1]) - 1) / 2
    middle = volume.index_to_lps(centre_ijk)
    for dx, side in ((+40.0, "L"), (-40.0, "R")):  # LPS x grows towards the patient's left
        point = middle + np.array([dx, 0.0, 0.0])
        placement = click_placement(volume, TAXONOMY, point)
        assert placement.side == side
        assert np.allclose(placement.voxel, volume.lps_to_index(point))
        assert placement.volume_id == volume.volume_id
        assert placement.site_id is None or placement.site_id in TAXONOMY.sites
