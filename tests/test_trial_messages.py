"""Messages a new user met in a trial: each says what is wrong in plain words, on one line."""

from __future__ import annotations

import json

from cno_annotate.annotation.resources import schemas_dir


def test_an_output_file_in_a_missing_folder_says_the_folder_does_not_exist(cli, sample_store, tmp_path):
    volume = sample_store.volumes()[0].volume_id
    code, _, err = cli("export-nifti", volume, "--out", tmp_path / "out" / "x.nii.gz", "--store", sample_store.root)
    assert code == 1 and err.count("\n") == 1
    assert f"{tmp_path / 'out'} does not exist" in err and "not a folder" not in err
    assert not (tmp_path / "out").exists()


def test_set_role_lists_its_choices_as_plain_names(cli):
    code, _, err = cli("set-role", "x", "FOO")
    assert code == 2 and "SequenceRole" not in err
    assert "(choose from STIR, " in err or "(choose from 'STIR', " in err


def test_a_study_that_matches_nothing_says_no_study_matches(cli, sample_store):
    code, _, err = cli("series", "no-such-study", "--store", sample_store.root)
    assert code == 1 and "no study matches 'no-such-study'" in err


def test_read_export_to_dash_refuses_in_one_line_and_writes_no_file(cli, sample_store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("read", "export", "--out", "-", "--store", sample_store.root)
    assert code == 1 and err.count("\n") == 1 and "standard output" in err
    assert not (tmp_path / "-").exists()


def test_the_annotation_schema_no_longer_says_it_is_unreleased():
    document = json.loads((schemas_dir() / "annotation-1.2.0.schema.json").read_text())
    assert "unreleased" not in document["description"]
