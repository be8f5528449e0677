"""Several stations in one series are split by table position and composed (issue 11 trial, defect 4)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from cno_annotate.io.series import build_stacks
from cno_annotate.store import Store
from cno_annotate.store.instances import ImageRow

CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)


def _image(y: float, z: float, **values) -> ImageRow:
    return ImageRow(
        sop_uid=f"2.25.{abs(y)}.{abs(z)}", frame=0, series_uid="1.2.3", path=f"f{y}-{z}",
        transfer_syntax="1.2.840.10008.1.2.1", pixel_offset=0, frames=1, dtype="<u2", photometric="MONOCHROME2",
        bits_stored=12, rows=4, columns=4, position=(0.0, y, z), orientation=CORONAL, pixel_spacing=(1.0, 1.0),
        slice_thickness=5.0, rescale=(1.0, 0.0), echo_time=10.0, instance_number=1, geometry_known=True,
        split_values=values)


@pytest.mark.parametrize("acquisition", [False, True])
def test_stations_at_the_same_depths_are_separate_stacks_head_first(acquisition):
    images = [_image(y, z, **({"acquisition": n} if acquisition else {}))
              for n, z in enumerate((-300.0, 0.0, -150.0), start=1) for y in (0.0, 5.0, 10.0)]
    stacks = build_stacks("1.2.3", images)
    assert len(stacks) == 3
    assert [s.images[0].position[2] for s in stacks] == [0.0, -150.0, -300.0]
    assert [s.variant for s in stacks] == ["station 1", "station 2", "station 3"]
    assert all(s.shape == (3, 4, 4) and s.duplicates == 0 for s in stacks)


def test_one_stack_with_a_repeated_position_is_not_split_into_stations():
    images = [_image(y, 0.0) for y in (0.0, 5.0, 10.0)] + [_image(5.0, 0.0)]
    (stack,) = build_stacks("1.2.3", images)
    assert stack.duplicates == 1 and stack.variant == ""


def _one_series(study: Path, out: Path, acquisition: bool) -> None:
    """The STIR stations of a generated study rewritten as ONE series (as some exports do)."""
    series = generate_uid()
    files = sorted(p for p in study.rglob("IM*") if pydicom.dcmread(p, stop_before_pixels=True).SeriesDescription
                   .startswith("t2_tirm"))
    out.mkdir(parents=True)
    stations = sorted({pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID for p in files})
    for n, path in enumerate(files):
        ds = pydicom.dcmread(path)
        station = stations.index(ds.SeriesInstanceUID) + 1
        ds.SeriesInstanceUID = series
        ds.SeriesDescription = ds.ProtocolName = "t2_tirm_cor_wb"
        ds.InstanceNumber = n + 1
        if acquisition:
            ds.AcquisitionNumber = station
        elif "AcquisitionNumber" in ds:
            del ds.AcquisitionNumber
        ds.save_as(out / f"IM{n:04d}")


@pytest.mark.parametrize("acquisition", [False, True])
def test_a_one_series_whole_body_composes_and_lists_no_dropped_slices(small_study, tmp_path, cli, acquisition):
    _one_series(small_study, tmp_path / "one", acquisition)
    code, out, err = cli("import", tmp_path / "one", "--store", tmp_path / "s")
    assert code == 0, err
    store = Store.open(tmp_path / "s")
    stacks = [v for v in store.volumes() if v.kind == "stack"]
    composed = [v for v in store.volumes() if v.kind == "composed"]
    assert len(stacks) == 3 and all(v.duplicates == 0 for v in stacks)
    assert len(composed) == 1 and composed[0].stations == 3, out
    assert "composed from 3 stations" in out and "single station" not in out


def test_the_listing_states_dropped_duplicates(small_study, tmp_path, cli):
    shutil.copytree(small_study, tmp_path / "study")
    first = sorted((tmp_path / "study").rglob("IM*"))[0]
    ds = pydicom.dcmread(first)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(first.with_name("IMcopy"))  # a second image at the same position
    code, out, err = cli("import", tmp_path / "study", "--store", tmp_path / "s")
    assert code == 0, err
    assert "DUPLICATES: 1 image at a repeated position not used" in out, out
