"""Label placement over an image (no Qt): clear of other labels, other owners and fixed texts, inside the view."""

from __future__ import annotations

import random

import pytest

from cno_annotate.display.labels import MARKER_SIDES, Box, LabelRequest, Side, crossing, leader_line, place_labels

VIEW = Box(0, 0, 360, 680)


def _clear(boxes, requests, obstacles=()) -> list[str]:
    """Every way a placement breaks the rules (empty: none)."""
    problems = []
    for n, box in enumerate(boxes):
        if box.left < VIEW.left or box.top < VIEW.top or box.right > VIEW.right or box.bottom > VIEW.bottom:
            problems.append(f"label {n} leaves the view")
        problems += [f"label {n} covers label {m}" for m, other in enumerate(boxes[n + 1:], n + 1)
                     if box.overlap(other)]
        problems += [f"label {n} covers owner {m}" for m, r in enumerate(requests) if box.overlap(r.owner)]
        problems += [f"label {n} covers a fixed text" for o in obstacles if box.overlap(o)]
    return problems


def test_a_lone_label_goes_on_its_first_side_at_the_gap():
    block = LabelRequest(Box(100, 100, 20, 20), 80, 40)
    marker = LabelRequest(Box(200, 300, 10, 10), 60, 14, MARKER_SIDES)
    below, beside = place_labels([block, marker], VIEW, gap=4)
    assert below == Box(100, 124, 80, 40)
    assert beside == Box(214, 289, 60, 14)  # right of the marker, its text 2 px above the marker's centre line


def test_a_block_that_would_cover_the_next_lesion_goes_elsewhere():
    """The ratio block of the upper lesion's ROI must not sit on the ROI of the lesion just below it."""
    upper = LabelRequest(Box(150, 400, 16, 16), 230, 60)
    lower = LabelRequest(Box(150, 430, 16, 16), 230, 60)
    first, second = place_labels([upper, lower], VIEW)
    assert not first.overlap(lower.owner) and not first.overlap(second) and not second.overlap(upper.owner)
    assert first.bottom <= upper.owner.top  # above its ROI: below was taken by the other lesion
    assert second.top >= lower.owner.bottom


def test_labels_clamped_into_the_view_near_an_edge():
    (box,) = place_labels([LabelRequest(Box(330, 660, 20, 15), 120, 45)], VIEW)
    assert VIEW.left <= box.left and box.right <= VIEW.right and box.bottom <= VIEW.bottom
    assert not box.overlap(Box(330, 660, 20, 15))


def test_fixed_texts_are_avoided():
    corner = Box(8, 4, 250, 16)
    (box,) = place_labels([LabelRequest(Box(20, 30, 20, 20), 100, 30, (Side.ABOVE, Side.BELOW))], VIEW, [corner])
    assert not box.overlap(corner) and box.top >= 54


@pytest.mark.parametrize("seed", range(5))
def test_crowded_scenes_leave_every_label_clear(seed):
    """Markers and ROIs scattered over the legs: every label clear of every other label and owner."""
    rng = random.Random(seed)
    requests = []
    for n in range(10):
        x, y = rng.uniform(60, 280), rng.uniform(250, 600)
        if n % 2:
            requests.append(LabelRequest(Box(x, y, 12, 12), rng.uniform(60, 110), 14, MARKER_SIDES))
        else:
            requests.append(LabelRequest(Box(x, y, rng.uniform(10, 40), rng.uniform(10, 40)), 150, 56))
    fixed = [Box(8, 4, 200, 16), Box(280, 660, 72, 16), Box(4, 330, 12, 18)]
    boxes = place_labels(requests, VIEW, fixed)
    assert _clear(boxes, requests, fixed) == []


def test_the_least_covering_place_when_nothing_is_clear():
    """A view too small for the label: it still gets a place, inside the view, covering as little as it can."""
    small = Box(0, 0, 100, 60)
    owner = Box(30, 20, 40, 20)
    (box,) = place_labels([LabelRequest(owner, 90, 30)], small)
    assert small.left <= box.left and box.bottom <= small.bottom
    assert box.overlap(owner) <= 90 * 30


def test_a_label_needs_a_side_and_a_size():
    with pytest.raises(ValueError):
        LabelRequest(Box(0, 0, 1, 1), 10, 10, ())
    with pytest.raises(ValueError):
        LabelRequest(Box(0, 0, 1, 1), -1, 10)


def _leaders_cross(boxes, requests, obstacles=()) -> list[str]:
    """Every leader line that passes under a label or a fixed text other than its own (empty: none)."""
    problems = []
    for n, (box, request) in enumerate(zip(boxes, requests)):
        line = leader_line(request.owner, box)
        if line is None:
            continue
        problems += [f"the leader of label {n} passes under label {m}" for m, other in enumerate(boxes)
                     if m != n and crossing(line, other) > 0]
        problems += [f"the leader of label {n} passes under a fixed text" for o in obstacles if crossing(line, o) > 0]
    return problems


def test_the_leader_line_is_drawn_only_to_a_label_moved_away():
    owner = Box(200, 300, 10, 10)
    assert leader_line(owner, Box(214, 294, 60, 14)) is None  # beside it, at the gap
    start, end = leader_line(owner, Box(214, 340, 60, 14))
    assert start == (210, 310) and end == (214, 340)


def test_crossing_measures_the_stretch_of_a_line_inside_a_box():
    box = Box(10, 10, 20, 20)
    assert crossing(((0, 20), (40, 20)), box) == pytest.approx(20)
    assert crossing(((0, 0), (40, 40)), box) == pytest.approx(20 * 2**0.5)
    assert crossing(((0, 5), (40, 5)), box) == 0 and crossing(((0, 5), (40, 5)), box, margin=6) == pytest.approx(32)
    assert crossing(((15, 15), (16, 16)), box) == pytest.approx(2**0.5)  # wholly inside
    assert crossing(((0, 10), (40, 10)), box) == 0  # along an edge: not under it


def test_a_displaced_label_s_leader_does_not_pass_under_another_label():
    """Issue 12: three lesions in a column, named to the right: the lower label's leader ran under the middle label.

    The upper lesions take the places beside them; the lowest marker's places to its right are taken by the
    others' labels, so its label goes out further, and its leader must find a way that no label covers.
    """
    requests = [LabelRequest(Box(100, 200 + 16 * n, 10, 10), 90, 14, MARKER_SIDES) for n in range(3)]
    requests.append(LabelRequest(Box(120, 214, 10, 10), 70, 14, MARKER_SIDES))
    boxes = place_labels(requests, VIEW)
    assert _clear(boxes, requests) == []
    assert _leaders_cross(boxes, requests) == []


@pytest.mark.parametrize("seed", range(20))
def test_crowded_scenes_leave_every_leader_clear_of_other_labels(seed):
    """Markers and ROIs scattered over the legs, as in the test above: no leader under another label."""
    rng = random.Random(seed)
    requests = []
    for n in range(10):
        x, y = rng.uniform(60, 280), rng.uniform(250, 600)
        if n % 2:
            requests.append(LabelRequest(Box(x, y, 12, 12), rng.uniform(60, 110), 14, MARKER_SIDES))
        else:
            requests.append(LabelRequest(Box(x, y, rng.uniform(10, 40), rng.uniform(10, 40)), 150, 56))
    fixed = [Box(8, 4, 200, 16), Box(280, 660, 72, 16), Box(4, 330, 12, 18)]
    boxes = place_labels(requests, VIEW, fixed)
    assert _clear(boxes, requests, fixed) == []
    assert _leaders_cross(boxes, requests, fixed) == []


def test_an_owner_outside_the_view_is_named_at_the_edge_on_the_way_to_it():
    """Off-view lesions' labels sit at the edge nearest to where the lesion lies, each facing into the view, and
    the labels of several below the view do not pile up (they were all pinned along the bottom edge)."""
    from cno_annotate.display.labels import edge_anchor

    far = {"top": Box(170, -500, 10, 10), "bottom": Box(150, 1400, 10, 10), "left": Box(-600, 330, 10, 10),
           "right": Box(900, 300, 10, 10), "bottom right": Box(420, 1500, 10, 10)}
    anchors = {name: edge_anchor(owner, VIEW) for name, owner in far.items()}
    assert anchors["top"].edge == "top" and anchors["top"].box.top == VIEW.top
    assert anchors["bottom"].edge == "bottom" and anchors["bottom"].box.bottom == VIEW.bottom
    assert anchors["left"].edge == "left" and anchors["left"].box.left == VIEW.left
    assert anchors["right"].edge == "right" and anchors["right"].box.right == VIEW.right
    assert anchors["bottom right"].edge == "bottom" and anchors["bottom right"].box.left > anchors["bottom"].box.left
    assert [anchors[n].arrow for n in ("top", "bottom", "left", "right")] == ["↑", "↓", "←", "→"]
    assert edge_anchor(Box(100, 100, 10, 10), VIEW) is None  # in view: named beside it
    assert edge_anchor(Box(-5, 100, 10, 10), VIEW) is None  # partly in view: too
    requests = [LabelRequest(a.box, 70, 14, a.sides) for a in anchors.values()]
    boxes = place_labels(requests, VIEW)
    assert _clear(boxes, requests) == []
    for box, anchor in zip(boxes, anchors.values()):  # each beside its own anchor, inside the view
        near_x = box.left - 8 <= anchor.box.left <= box.right + 8
        near_y = box.top - 8 <= anchor.box.top <= box.bottom + 8
        assert {"top": near_x and box.top - VIEW.top <= 6, "bottom": near_x and VIEW.bottom - box.bottom <= 6,
                "left": near_y and box.left - VIEW.left <= 6, "right": near_y and VIEW.right - box.right <= 6,
                }[anchor.edge], (anchor, box)
