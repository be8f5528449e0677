"""The sample command refuses a negative seed and writes stations that compose at any matrix."""

from __future__ import annotations

from cno_annotate.importer import import_paths
from cno_annotate.sample import StudyPlan, generate_study
from cno_annotate.store import Store


def test_a_negative_seed_is_a_usage_error(cli, tmp_path):
    code, out, err = cli("sample", "--out", tmp_path / "s", "--seed", "-1")
    assert code == 2 and "Traceback" not in err and "--seed" in err, err
    assert not (tmp_path / "s").exists()


def test_two_stations_at_matrix_16_compose(tmp_path):
    generate_study(tmp_path / "s", StudyPlan(stations=2, slices=4, matrix=16, seed=1))
    store = Store.open(tmp_path / "store")
    import_paths(store, [tmp_path / "s"])
    composed = [v for v in store.volumes() if v["kind"] == "composed"]
    assert len(composed) == 2, [c for s in store.studies() for c in store.compositions(s["study_uid"])]
