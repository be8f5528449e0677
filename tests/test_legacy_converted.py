"""Legacy Converted Enhanced MR (highdicom's legacy converter): roles from the converted attributes (issue 11 trial, defect 5)."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from pydicom.uid import generate_uid

from cno_annotate.importer import import_paths
from cno_annotate.store import Store


@pytest.fixture(scope="module")
def converted(small_study, tmp_path_factory) -> Path:
    """Each series of the small study converted to one Legacy Converted Enhanced MR file."""
    out = tmp_path_factory.mktemp("legacy")
    by_series: dict[str, list] = {}
    for path in sorted(small_study.rglob("IM*")):
        ds = pydicom.dcmread(path)
        by_series.setdefault(ds.SeriesInstanceUID, []).append(ds)
    for n, datasets in enumerate(by_series.values(), start=1):
        image = hd.legacy.LegacyConvertedEnhancedMRImage(
            datasets, series_instance_uid=generate_uid(), series_number=100 + n, sop_instance_uid=generate_uid(),
            instance_number=1)
        image.SeriesDescription = "WB cor (enhanced conversion)"  # the name says nothing of the sequence
        image.save_as(out / f"SE{n:02d}.dcm")
    return out


def test_converted_files_hold_the_values_only_in_the_converted_attributes(converted):
    ds = pydicom.dcmread(next(converted.glob("*.dcm")), stop_before_pixels=True)
    assert "ScanningSequence" not in ds and "RepetitionTime" not in ds
    shared = ds.SharedFunctionalGroupsSequence[0].UnassignedSharedConvertedAttributesSequence[0]
    assert "ScanningSequence" in shared and "RepetitionTime" in shared


def test_legacy_converted_stir_and_t1_are_recognised_from_their_values(converted, tmp_path):
    store = Store.open(tmp_path / "s")
    import_paths(store, [converted])
    stacks = [v for v in store.volumes() if v.kind == "stack"]
    assert sorted(v.role for v in stacks) == ["STIR"] * 3 + ["T1"] * 3
    for volume in stacks:
        reason = volume.role_reason
        assert "name only" not in reason
        if volume.role == "STIR":
            assert "TI 160 ms" in reason and "UnassignedSharedConvertedAttributesSequence" in reason, reason
        else:
            assert "TR 520 ms" in reason, reason
    assert any(v.kind == "composed" and v.role == "STIR" for v in store.volumes())
