"""Counts read as English: "1 lesion", "2 lesions", "1 series" (issue 12: "1 units with lesions")."""

from __future__ import annotations

from cno_annotate.annotation.reads import ReadSession
from cno_annotate.wording import counted


def test_counted_says_one_thing_and_many_things():
    assert [counted(n, "case") for n in (0, 1, 2)] == ["0 cases", "1 case", "2 cases"]
    assert counted(1, "study", "studies") == "1 study" and counted(3, "study", "studies") == "3 studies"
    assert counted(1, "series", "series") == "1 series" and counted(2, "series", "series") == "2 series"


def test_the_command_line_counts_one_of_a_kind_in_the_singular(sample_copy, tmp_path, cli):
    code, text, _ = cli("sample", "--out", tmp_path / "one", "--stations", "1", "--slices", "1", "--matrix", "16")
    assert code == 0 and "(1 station x 2 series x 1 slice of 16 x 16)" in text, text
    store = sample_copy()
    study = store.studies()[0].study_uid
    session = ReadSession.open_or_create(store, study, "dr-one")
    from cno_annotate.volumes import load_volume

    volume = load_volume(store, next(v for v in store.volumes() if v.kind == "composed").volume_id)
    position = (-77.0, 0.0, -420.0)
    session.add_lesion(position, volume.volume_id, tuple(int(round(i)) for i in volume.lps_to_index(position)))
    out = tmp_path / "reads.json"
    code, text, _ = cli("read", "export", "--out", out, "--store", store.root)
    assert code == 0 and "wrote 1 read to" in text, text
    code, text, err = cli("read", "import", out, "--store", sample_copy("b").root)
    assert code == 0 and "imported 1 read from" in text, err
    code, text, _ = cli("export-csv", "--out", tmp_path / "csv", "--store", store.root)
    assert code == 0 and "(1 read)" in text, text
    code, text, _ = cli("audit", "verify", "--store", store.root)
    assert code == 0 and "; 1 read or reading study matches its audited state" in text, text
