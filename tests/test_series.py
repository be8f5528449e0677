"""Slice stacks: splitting, ordering, gaps; pixel decoding of every encoding."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from cno_annotate.importer import import_paths
from cno_annotate.io.series import build_stacks
from cno_annotate.store.instances import ImageRow
from cno_annotate.volumes import load_volume

CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def image(y: float, orientation=CORONAL, rows=4, columns=4, instance=1, echo=10.0) -> ImageRow:
    return ImageRow(
        sop_uid=f"2.25.{instance}", frame=0, series_uid="1.2.3", path=f"f{y}", transfer_syntax="1.2.840.10008.1.2.1",
        pixel_offset=0, frames=1, dtype="<u2", photometric="MONOCHROME2", bits_stored=12, rows=rows, columns=columns,
        position=(0.0, y, 0.0) if orientation == CORONAL else (0.0, 0.0, y), orientation=orientation,
        pixel_spacing=(1.0, 1.0), slice_thickness=5.0, rescale=(1.0, 0.0), echo_time=echo, instance_number=instance,
        geometry_known=True, split_values={},
    )


def test_order_follows_position_not_instance_number():
    images = [image(y, instance=n) for n, y in enumerate([10.0, 0.0, 5.0, 20.0, 15.0])]
    (stack,) = build_stacks("1.2.3", images)
    assert [i.position[1] for i in stack.images] == [0.0, 5.0, 10.0, 15.0, 20.0]
    assert stack.shape == (5, 4, 4) and stack.gaps == []
    np.testing.assert_allclose(stack.affine[:3, 2], [0, 5, 0])


def test_mixed_orientations_and_matrices_are_split():
    images = [image(y) for y in (0.0, 5.0, 10.0)]
    images += [image(z, orientation=AXIAL) for z in (0.0, 4.0)]
    images += [image(y, rows=8, columns=8) for y in (0.0, 5.0)]
    stacks = build_stacks("1.2.3", images)
    assert sorted(s.shape for s in stacks) == [(2, 4, 4), (2, 8, 8), (3, 4, 4)]
    assert {s.orientation for s in stacks} == {"coronal", "axial"}
    assert sorted(s.volume_id for s in stacks) == ["1.2.3.1", "1.2.3.2", "1.2.3.3"]


def test_missing_slices_are_reported_as_gaps_and_keep_geometry():
    ys = [0.0, 5.0, 10.0, 25.0, 30.0]  # 15 and 20 are missing
    (stack,) = build_stacks("1.2.3", [image(y) for y in ys])
    assert stack.gaps == [{"after_slice": 2, "missing": 2}]
    assert stack.shape[0] == 7
    assert stack.slice_index == [0, 1, 2, 5, 6]
    np.testing.assert_allclose(stack.affine[:3, 2], [0, 5, 0])


def test_echoes_sharing_positions_become_separate_stacks():
    images = [image(y, echo=te) for te in (10.0, 80.0) for y in (0.0, 5.0, 10.0)]
    stacks = build_stacks("1.2.3", images)
    assert len(stacks) == 2 and all(s.shape == (3, 4, 4) and s.duplicates == 0 for s in stacks)


def test_gap_in_real_files_is_reported(small_study, copy_tree, store, cli):
    study = copy_tree(small_study)
    folder = sorted((study / "DICOM" / "PA000001" / "ST000001").iterdir())[0]
    files = sorted(folder.iterdir())
    files[2].unlink()
    import_paths(store, [study])
    gapped = [v for v in store.volumes() if v.kind == "stack" and v.gaps]
    assert len(gapped) == 1 and gapped[0].gaps == [{"after_slice": 1, "missing": 1}]
    volume = load_volume(store, gapped[0].volume_id)
    assert volume.shape[0] == 6 and not volume.array[2].any() and volume.array[3].any()


def _station_files(study: Path) -> list[Path]:
    folder = sorted((study / "DICOM" / "PA000001" / "ST000001").iterdir())[0]
    return sorted(folder.iterdir())


def _reference(store, study):
    """The plain volume of the series that _station_files modifies."""
    import_paths(store, [study])
    series_uid = pydicom.dcmread(_station_files(study)[0], stop_before_pixels=True).SeriesInstanceUID
    row = store.volume(series_uid)
    return row, load_volume(store, row.volume_id)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless, JPEGLSLossless, ImplicitVRLittleEndian,
                                    DeflatedExplicitVRLittleEndian])
def test_encodings_decode_to_the_same_values(small_study, copy_tree, tmp_path, syntax):
    from cno_annotate.store import Store

    plain = Store.open(tmp_path / "plain")
    row, expected = _reference(plain, small_study)
    study = copy_tree(small_study)
    for path in _station_files(study):
        ds = pydicom.dcmread(path)
        if syntax.is_compressed:
            ds.compress(syntax)
        else:
            ds.file_meta.TransferSyntaxUID = syntax
        ds.save_as(path, implicit_vr=syntax == ImplicitVRLittleEndian, enforce_file_format=True)
    other = Store.open(tmp_path / "other")
    import_paths(other, [study])
    got = load_volume(other, row.volume_id)
    assert got.load.errors == []
    np.testing.assert_array_equal(got.array, expected.array)


def test_rescale_and_monochrome1(small_study, copy_tree, tmp_path):
    from cno_annotate.store import Store

    row, expected = _reference(Store.open(tmp_path / "plain"), small_study)
    study = copy_tree(small_study)
    for path in _station_files(study):
        ds = pydicom.dcmread(path)
        ds.PhotometricInterpretation = "MONOCHROME1"
        ds.PixelData = (4095 - ds.pixel_array).astype(np.uint16).tobytes()
        ds.RescaleSlope, ds.RescaleIntercept = 0.5, -10
        ds.save_as(path, enforce_file_format=True)
    store = Store.open(tmp_path / "other")
    import_paths(store, [study])
    got = load_volume(store, row.volume_id)
    np.testing.assert_allclose(got.array, expected.array * 0.5 - 10)


def test_multiframe_enhanced_mr(small_study, tmp_path):
    """An enhanced MR file: geometry from per-frame functional groups."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import EnhancedMRImageStorage

    from cno_annotate.store import Store

    files = _station_files(small_study)
    slices = [pydicom.dcmread(p) for p in files]
    slices.sort(key=lambda d: float(d.ImagePositionPatient[1]))
    ds = copy.deepcopy(slices[0])
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness"):
        delattr(ds, keyword)
    ds.SOPClassUID = EnhancedMRImageStorage
    ds.file_meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.NumberOfFrames = len(slices)
    shared = Dataset()
    orientation, measures = Dataset(), Dataset()
    orientation.ImageOrientationPatient = slices[0].ImageOrientationPatient
    measures.PixelSpacing, measures.SliceThickness = slices[0].PixelSpacing, slices[0].SliceThickness
    shared.PlaneOrientationSequence, shared.PixelMeasuresSequence = Sequence([orientation]), Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for s in reversed(slices):  # frames stored feet-first order on purpose
        item, position = Dataset(), Dataset()
        position.ImagePositionPatient = s.ImagePositionPatient
        item.PlanePositionSequence = Sequence([position])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.PixelData = np.stack([s.pixel_array for s in reversed(slices)]).tobytes()
    path = tmp_path / "enhanced" / "mf"
    path.parent.mkdir()
    ds.save_as(path, enforce_file_format=True)
    store = Store.open(tmp_path / "store")
    report = import_paths(store, [path.parent])
    assert report.skipped == [] and report.instances == 1
    (row,) = store.volumes()
    assert row.shape == [len(slices), 48, 48] and row.patient_geometry
    volume = load_volume(store, row.volume_id)
    np.testing.assert_array_equal(volume.array, np.stack([s.pixel_array for s in slices]).astype(np.float32))


# -- issue 11: images at one position are never mixed ---------------------------------------

def kind(y: float, instance: int = 1, **values) -> ImageRow:
    return dataclasses.replace(image(y, instance=instance), split_values=values)


def test_one_series_dixon_becomes_water_and_fat_stacks():
    types = {"WATER": "DERIVED\\PRIMARY\\DIXON\\WATER", "FAT": "DERIVED\\PRIMARY\\DIXON\\FAT"}
    images = [kind(y, n, image_type=types[t]) for n, (y, t) in
              enumerate((y, t) for y in (0.0, 5.0, 10.0) for t in ("WATER", "FAT"))]
    stacks = build_stacks("1.2.3", images)
    assert sorted(s.variant for s in stacks) == ["FAT", "WATER"]
    for stack in stacks:
        assert stack.shape == (3, 4, 4) and stack.duplicates == 0
        assert {i.split_values["image_type"].split("\\")[-1] for i in stack.images} == {stack.variant}


def test_b_values_echoes_and_repeats_at_one_position_are_separate_stacks():
    rng = np.random.default_rng(1)
    images = [kind(y, b_value=b) for y in (0.0, 5.0, 10.0) for b in rng.permutation([0.0, 50.0, 800.0])]
    stacks = build_stacks("1.2.3", images)
    assert [s.variant for s in stacks] == ["b=0", "b=50", "b=800"]
    assert all(len({i.split_values["b_value"] for i in s.images}) == 1 and s.duplicates == 0 for s in stacks)
    for key, label in (("echo_number", "echo"), ("temporal_position", "time"), ("acquisition", "acquisition")):
        stacks = build_stacks("1.2.3", [kind(y, **{key: n}) for y in (0.0, 5.0) for n in (1, 2)])
        assert [s.variant for s in stacks] == [f"{label} 1", f"{label} 2"], key


def test_a_volume_acquired_in_parts_at_distinct_positions_stays_one_stack():
    (stack,) = build_stacks("1.2.3", [kind(y, acquisition=int(y // 10)) for y in (0.0, 5.0, 10.0, 15.0)])
    assert stack.shape == (4, 4, 4) and stack.variant == ""


def test_stacks_split_by_orientation_are_named_by_orientation():
    images = [image(0.0), image(0.0, orientation=AXIAL), image(0.0, orientation=(0.0, 1.0, 0.0, 0.0, 0.0, -1.0))]
    assert sorted(s.variant for s in build_stacks("1.2.3", images)) == ["axial", "coronal", "sagittal"]


def test_diffusion_directions_at_one_b_value_are_separate_stacks():
    """b=0 once, b=1000 in three directions, all at the same positions (like an XA30 diffusion series)."""
    images = [kind(y, b_value=0.0) for y in (0.0, 5.0)]
    images += [kind(y, b_value=1000.0, diffusion_direction=d) for y in (0.0, 5.0)
               for d in ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0])]
    stacks = build_stacks("1.2.3", images)
    assert len(stacks) == 4 and all(s.shape == (2, 4, 4) and s.duplicates == 0 for s in stacks)
    assert sorted(s.variant for s in stacks)[0] == "b=0"
    assert "b=1000, direction (0.0, 0.0, 1.0)" in {s.variant for s in stacks}
