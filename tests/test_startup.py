"""The viewer's start: what it imports on the way to the first image (issue 12, start-up).

Half of the start was imports the first image does not need: pydicom (the
study's files are plain and their pixel offsets were recorded at import) and
jsonschema (the taxonomy and scheme it ships have been validated before).
These tests start the real viewer in a fresh process and look at sys.modules.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from cno_annotate.annotation import resources
from cno_annotate.annotation.taxonomy import DEFAULT_TAXONOMY, Taxonomy, load_taxonomy
from cno_annotate.errors import CnoError
from cno_annotate.importer import import_paths
from cno_annotate.store import Store

pytest.importorskip("PySide6")

WATCHED = ("pydicom", "jsonschema", "cno_annotate.importer", "requests", "PIL")
#: Never needed for the first image: the readers of other formats, the analysis and imaging toolkits, and the
#: window's parts for reader mode on a server or a study PACS and for F1.
HEAVY = WATCHED + ("scipy", "matplotlib", "SimpleITK", "nibabel", "statsmodels", "highdicom", "pandas", "pynetdicom",
                   "cno_annotate.study_pacs", "cno_annotate_ui.study_pacs", "cno_annotate_ui.live",
                   "cno_annotate_ui.help")


def _start_viewer(store_dir, shot) -> dict:
    """Start ``cno-annotate view --screenshot`` in a new process: the watched modules it loaded, the heavy
    modules loaded when the left view painted its first image, and its output."""
    script = textwrap.dedent(
        f"""
        import json, sys
        import cno_annotate_ui.slice_view as slice_view
        at_first_image = []
        paint = slice_view.SliceView.paintEvent
        def recording(view, event):
            paint(view, event)
            if view.name == "left" and view.state.ready and not at_first_image:
                at_first_image.append(sorted(m for m in {HEAVY!r} if m in sys.modules))
        slice_view.SliceView.paintEvent = recording
        from cno_annotate.cli import main
        code = main(["view", "--store", {str(store_dir)!r}, "--screenshot", {str(shot)!r}, "--size", "800x600"])
        print(json.dumps({{"code": code, "loaded": sorted(m for m in {WATCHED!r} if m in sys.modules),
                          "at_first_image": at_first_image}}))
        """
    )
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                            cwd=store_dir.parent, timeout=120)
    assert result.returncode == 0, result.stderr
    *said, last = result.stdout.strip().splitlines()
    return {**json.loads(last), "said": "\n".join(said)}


def test_the_viewer_starts_without_pydicom_or_jsonschema_when_the_study_needs_neither(small_study, tmp_path):
    store = Store.open(tmp_path / "store")
    import_paths(store, [small_study])
    store.close()
    first = _start_viewer(tmp_path / "store", tmp_path / "first.png")  # cold: composes from the plain files
    assert first["code"] == 0
    assert "left: STIR coronal whole body (3 stations) (ready)" in first["said"], first["said"]
    assert "pydicom" not in first["loaded"], first
    assert "cno_annotate.importer" not in first["loaded"], first
    # the first image painted with none of the heavy modules (jsonschema: the data files' first validation)
    assert first["at_first_image"] in ([[]], [["jsonschema"]]), first
    again = _start_viewer(tmp_path / "store", tmp_path / "again.png")  # warm: the cached volume, data validated
    assert "left: STIR coronal whole body (3 stations) (ready)" in again["said"], again["said"]
    assert again["loaded"] == [], again
    assert again["at_first_image"] == [[]], again


def test_a_data_file_that_passed_is_not_validated_again_and_a_changed_one_is(tmp_path, monkeypatch):
    monkeypatch.setenv("CNO_ANNOTATE_USER_CACHE", str(tmp_path / "cache"))  # nothing validated yet
    source = resources.schemas_dir() / "sites" / f"{DEFAULT_TAXONOMY}.json"
    taxonomy = tmp_path / "taxonomy.json"
    taxonomy.write_bytes(source.read_bytes())
    validated = []
    real_validate = resources.validate
    monkeypatch.setattr(resources, "validate", lambda *a: (validated.append(a[1]), real_validate(*a)))
    first = resources.load_versioned_json(taxonomy, "site-taxonomy")
    again = resources.load_versioned_json(taxonomy, "site-taxonomy")
    assert len(validated) == 1  # the second read trusted the first's pass
    assert again == first and Taxonomy(again).unit_ids() == load_taxonomy().unit_ids()
    first["sites"] = "not a list"  # one change: validated afresh, and refused
    taxonomy.write_text(json.dumps(first), encoding="utf-8")
    with pytest.raises(CnoError, match=r"taxonomy\.json: \$\.sites"):
        resources.load_versioned_json(taxonomy, "site-taxonomy")
    with pytest.raises(CnoError, match=r"taxonomy\.json: \$\.sites"):  # a refusal is never remembered
        resources.load_versioned_json(taxonomy, "site-taxonomy")
    assert len(validated) == 3


def test_the_viewer_knows_a_reading_package_by_the_manifest_name_the_packages_use():
    from cno_annotate_ui.app import PACKAGE_MANIFEST

    from cno_annotate import packages

    assert PACKAGE_MANIFEST == packages.MANIFEST  # the viewer looks for it before loading the packages module
