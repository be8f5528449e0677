"""Worklist order by role, volume lookup by id prefix, and the scheme's unit cap."""

from __future__ import annotations

import json

import pytest

from cno_annotate import reading_study as rs
from cno_annotate.annotation.scheme import Scheme, load_scheme
from cno_annotate.annotation.scoring import score_read
from cno_annotate.annotation.taxonomy import load_taxonomy
from cno_annotate.errors import CnoError
from cno_annotate.importer import import_paths
from tests.lesions import graded_lesion

STORE_BACKENDS = ("sqlite", "postgresql")


def test_adjudicators_get_cases_in_code_order_and_readers_their_own_order(store, tmp_path):
    from cno_annotate.sample import StudyPlan, generate_study

    folders = []
    for seed in range(6):
        folder = tmp_path / f"study{seed}"
        generate_study(folder, StudyPlan(stations=1, slices=2, matrix=16, seed=100 + seed))
        folders.append(folder)
    import_paths(store, folders)
    rs.create(store, "trial", seed=7)
    rs.add_cases(store, "trial", [s.study_uid for s in store.studies()])
    rs.add_readers(store, "trial", ["dr-a", "dr-b"])
    rs.add_readers(store, "trial", ["dr-c"], role="adjudicator")
    lists = rs.assign(store, "trial")
    codes = sorted(c.reading_code for c in rs.cases(store, "trial"))
    assert len(codes) == 6
    assert lists["dr-c"] == codes
    assert sorted(lists["dr-a"]) == codes and sorted(lists["dr-b"]) == codes
    assert lists["dr-a"] != lists["dr-b"]  # 1 in 720 to be equal by chance; the seed fixes it
    assert rs.assign(store, "trial") == lists  # reproducible from the seed


def test_a_volume_is_found_by_a_unique_prefix_of_its_id(store, small_study):
    import_paths(store, [small_study])
    volume_id = store.volumes()[0].volume_id
    assert store.volume(volume_id[:12]).volume_id == volume_id
    with pytest.raises(CnoError, match="no volume"):
        store.volume(volume_id[:7])  # too short to be taken as a prefix
    with pytest.raises(CnoError, match="no volume"):
        store.volume("9" + volume_id[1:12])


def test_a_unit_score_is_capped_at_the_scheme_maximum():
    document = json.loads(json.dumps(load_scheme("rai-cromris", "1.0.0").document))
    document["aggregation"]["unit_max"] = 3
    scheme, taxonomy = Scheme(document), load_taxonomy("cno-sites-1.0.0")
    top = {i.id: max(i.values) for i in scheme.items_for("long_bone_end")}
    scores = score_read([graded_lesion("L1", "femur.distal", "R", top, scheme=scheme, taxonomy=taxonomy)], {},
                        scheme, taxonomy)
    assert sum(top[i.id] for i in scheme.items_for("long_bone_end") if i.scored) == 7
    assert scores.total == 3
