"""Real files not made by us: pydicom's, pydicom-data's and nibabel's test data."""

from __future__ import annotations

import copy
import gzip
import shutil
from pathlib import Path

import nibabel
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut

from cno_annotate.errors import CnoError
from cno_annotate.importer import import_paths
from cno_annotate.store import Store
from cno_annotate.volumes import load_volume

PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"
NIBABEL_DATA = Path(nibabel.__file__).parent / "tests" / "data"
NICOM_DATA = Path(nibabel.__file__).parent / "nicom" / "tests" / "data"


def data_file(name: str) -> Path:
    """A pydicom / pydicom-data file, never downloaded."""
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} is missing: install the test extra (pydicom-data)"
    return Path(path)


def import_one(tmp_path: Path, path: Path) -> tuple[Store, object]:
    store = Store.open(tmp_path / "store")
    return store, import_paths(store, [path])


MR_SMALL = ["MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_expb.dcm",
            "MR_small_padded.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"]


@pytest.mark.parametrize("name", MR_SMALL)
def test_mr_small_in_every_encoding_decodes_like_pydicom(tmp_path, name):
    store, report = import_one(tmp_path, data_file(name))
    assert report.skipped == [] and report.instances == 1
    (row,) = store.volumes()
    assert row.shape == [1, 64, 64] and row.orientation in ("axial", "coronal", "sagittal", "oblique")
    volume = load_volume(store, row.volume_id)
    np.testing.assert_array_equal(volume.array[0], reference_values("MR_small.dcm"))


def reference_values(name: str) -> np.ndarray:
    """pydicom's own decode with the modality LUT (rescale) applied."""
    ds = pydicom.dcmread(data_file(name))
    return apply_modality_lut(ds.pixel_array, ds).astype(np.float32)


def test_colour_images_are_reported_not_crashed_on(tmp_path):
    store, report = import_one(tmp_path, data_file("SC_rgb_jpeg_dcmd.dcm"))
    assert report.instances == 0 and "colour" in report.skipped[0]["reason"]


def test_lossy_jpeg2000_decodes_like_pydicom(tmp_path):
    store, report = import_one(tmp_path, data_file("JPEG2000.dcm"))
    assert report.instances == 1 and report.skipped == []
    volume = load_volume(store, store.volumes()[0].volume_id)
    np.testing.assert_array_equal(volume.array[0], reference_values("JPEG2000.dcm"))


def test_undecodable_12_bit_jpeg_gives_a_clear_message_at_load(tmp_path):
    """No installed decoder reads 12-bit JPEG Extended: say so, naming the file."""
    store, report = import_one(tmp_path, data_file("JPEG-lossy.dcm"))
    assert report.instances == 1
    with pytest.raises(CnoError, match="no slice of .* could be read: .*JPEG-lossy.dcm"):
        load_volume(store, store.volumes()[0].volume_id)
    assert store.volumes()  # nothing lost


@pytest.mark.parametrize("name", ["MR2_UNCR.dcm", "MR2_UNCI.dcm", "MR2_J2KR.dcm", "MR2_J2KI.dcm"])
def test_larger_real_mr_files(tmp_path, name):
    store, report = import_one(tmp_path, data_file(name))
    assert report.skipped == []
    (row,) = store.volumes()
    assert row.shape == [1, 1024, 1024]
    volume = load_volume(store, row.volume_id)
    np.testing.assert_allclose(volume.array[0], reference_values(name), rtol=1e-6)
    if name != "MR2_UNCR.dcm":  # lossless and lossy encodings of the same image
        assert np.corrcoef(volume.array[0].ravel(), reference_values("MR2_UNCR.dcm").ravel())[0, 1] > 0.99


@pytest.mark.parametrize("name", ["emri_small.dcm", "emri_small_big_endian.dcm", "emri_small_RLE.dcm",
                                  "emri_small_jpeg_2k_lossless.dcm", "emri_small_jpeg_ls_lossless.dcm"])
def test_enhanced_multiframe_emri(tmp_path, name):
    """Enhanced MR, 10 frames, geometry stripped: kept, stacked by frame order."""
    store, report = import_one(tmp_path, data_file(name))
    assert report.skipped == [] and report.instances == 1
    (row,) = store.volumes()
    assert row.shape == [10, 64, 64] and row.patient_geometry is False
    volume = load_volume(store, row.volume_id)
    np.testing.assert_array_equal(volume.array, reference_values("emri_small.dcm"))


@pytest.mark.filterwarnings("ignore:End of file reached before delimiter")
def test_truncated_jpeg2000_is_reported_at_import(tmp_path):
    store, report = import_one(tmp_path, data_file("emri_small_jpeg_2k_lossless_too_short.dcm"))
    assert report.instances == 0
    assert "truncated compressed pixel data" in report.skipped[0]["reason"]


def test_philips_cd_export_with_dicomdir(tmp_path):
    folder = PYDICOM_FILES / "dicomdirtests"
    store, report = import_one(tmp_path, folder)
    reasons = {Path(s["path"]).name: s["reason"] for s in report.skipped}
    assert "DICOMDIR" not in reasons and {Path(p).name for p in report.ignored} == {"DICOMDIR"}
    assert reasons["README.txt"] == "not a DICOM file"
    assert report.instances == 31 and len(report.studies) >= 3
    for volume in store.volumes():  # every volume decodes
        got = load_volume(store, volume.volume_id)
        assert got.array.shape == tuple(volume.shape) and np.isfinite(got.array).all()
    mr = [v for v in store.volumes() if store.db.execute(
        "SELECT modality FROM dicom_series WHERE series_uid = ?", (v.series_uid,)).fetchone()[0] == "MR"]
    assert mr and all(v.patient_geometry for v in mr)


def test_siemens_mosaic_is_reported_as_unsupported(tmp_path):
    target = tmp_path / "mosaic"
    target.mkdir()
    for name in ("siemens_dwi_0.dcm.gz", "siemens_dwi_1000.dcm.gz"):
        with gzip.open(NICOM_DATA / name) as src, open(target / name[:-3], "wb") as dst:
            shutil.copyfileobj(src, dst)
    store, report = import_one(tmp_path, target)
    assert report.instances == 0
    assert all("mosaic" in s["reason"] for s in report.skipped) and len(report.skipped) == 2


def test_nibabel_dicom_examples(tmp_path):
    target = tmp_path / "nicom"
    shutil.copytree(NICOM_DATA, target, ignore=shutil.ignore_patterns("*.gz", "*.bin", "*.txt"))
    store, report = import_one(tmp_path, target)
    mosaics = sorted(Path(s["path"]).name for s in report.skipped if "mosaic" in s["reason"])
    assert mosaics == ["0.dcm", "1.dcm", "csa_slice_norm.dcm"]
    # decimal_rescale.dcm names its SOP instance only in the file meta.
    assert report.instances == 2 and len(report.skipped) == 3
    for volume in store.volumes():
        name = Path(store.images(volume.series_uid)[0].path).name
        np.testing.assert_allclose(load_volume(store, volume.volume_id).array[0], reference(NICOM_DATA / name),
                                   rtol=1e-6)


def reference(path: Path) -> np.ndarray:
    ds = pydicom.dcmread(path)
    return apply_modality_lut(ds.pixel_array, ds).astype(np.float32)


def test_4d_nifti_is_reported_and_3d_nifti_imports(tmp_path):
    folder = tmp_path / "nifti"
    folder.mkdir()
    shutil.copy(NIBABEL_DATA / "example4d.nii.gz", folder)
    shutil.copy(NIBABEL_DATA / "anatomical.nii", folder)
    store, report = import_one(tmp_path, folder)
    (skipped,) = report.skipped
    assert skipped["path"].endswith("example4d.nii.gz") and "4D NIfTI" in skipped["reason"]
    (row,) = store.volumes()
    assert row.kind == "nifti" and row.description == "anatomical.nii"
    volume = load_volume(store, row.volume_id)
    data = np.asarray(nibabel.load(folder / "anatomical.nii").dataobj)
    assert volume.shape == data.shape[::-1]
    np.testing.assert_array_equal(volume.array.transpose(2, 1, 0), data)
    # LPS = RAS with x and y negated.
    ras = nibabel.load(folder / "anatomical.nii").affine
    np.testing.assert_allclose(volume.affine, np.diag([-1, -1, 1, 1]) @ ras)


def enhanced_from_emri(path: Path, *, echo_pulse: str, inversion: float | None, tr: float, te: float,
                       description: str, frame_values: list[dict] | None = None) -> Path:
    """pydicom's enhanced MR file given MR functional groups (timing, echo, modifier) and geometry.

    ``frame_values`` adds per-frame groups: ``{"slice": n, "b": b-value, "direction": [x, y, z],
    "frame_type": [...]}``.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = pydicom.dcmread(data_file("emri_small.dcm"))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.SeriesDescription, ds.EchoPulseSequence = description, echo_pulse
    ds.PulseSequenceName = "TIR" if inversion else "TSE"
    shared, timing, echo, modifier, orientation, measures = (Dataset() for _ in range(6))
    timing.RepetitionTime, timing.FlipAngle = tr, 90
    echo.EffectiveEchoTime = te
    modifier.InversionRecovery = "YES" if inversion else "NO"
    if inversion:
        modifier.InversionTimes = [inversion]
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    measures.PixelSpacing, measures.SliceThickness = [2.0, 2.0], 4.0
    shared.MRTimingAndRelatedParametersSequence = Sequence([timing])
    shared.MREchoSequence = Sequence([echo])
    shared.MRModifierSequence = Sequence([modifier])
    shared.PlaneOrientationSequence, shared.PixelMeasuresSequence = Sequence([orientation]), Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for n in range(int(ds.NumberOfFrames)):
        item, position = Dataset(), Dataset()
        values = frame_values[n] if frame_values else {}
        position.ImagePositionPatient = [0.0, 4.0 * values.get("slice", n), 0.0]
        item.PlanePositionSequence = Sequence([position])
        if "b" in values:
            diffusion = Dataset()
            diffusion.DiffusionBValue = values["b"]
            if "direction" in values:
                direction = Dataset()
                direction.DiffusionGradientOrientation = values["direction"]
                diffusion.DiffusionGradientDirectionSequence = Sequence([direction])
            item.MRDiffusionSequence = Sequence([diffusion])
        if "frame_type" in values:
            frame_type = Dataset()
            frame_type.FrameType = values["frame_type"]
            item.MRImageFrameTypeSequence = Sequence([frame_type])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_enhanced_mr_with_inversion_recovery_modifier_is_stir(tmp_path):
    """Inversion recovery, TI, TR and TE of enhanced MR live in functional groups."""
    folder = tmp_path / "enhanced"
    folder.mkdir()
    enhanced_from_emri(folder / "stir", echo_pulse="SPIN", inversion=160.0, tr=5000.0, te=60.0,
                       description="WB cor")
    store, report = import_one(tmp_path, folder)
    assert report.skipped == []
    (row,) = store.volumes()
    assert row.role == "STIR", row.role_reason
    assert "160" in row.role_reason and "MRModifierSequence" in row.role_reason
    assert row.patient_geometry and row.orientation == "coronal" and row.shape == [10, 64, 64]


def test_enhanced_mprage_is_gradient_echo_ir_not_t1_by_name(tmp_path):
    """Like the XA30 MPRAGE (IR, TI 900 ms, TR 1800, TE 2.41) that was called T1 'by name'."""
    folder = tmp_path / "enhanced"
    folder.mkdir()
    enhanced_from_emri(folder / "mprage", echo_pulse="GRADIENT", inversion=900.0, tr=1800.0, te=2.41,
                       description="T1w_MPR")
    store, _ = import_one(tmp_path, folder)
    (row,) = store.volumes()
    assert row.role == "other" and "gradient-echo inversion recovery" in row.role_reason
    assert "TI 900 ms" in row.role_reason


def series_from_mr_small(folder: Path, images: list[dict]) -> list[np.ndarray]:
    """One series of pydicom's MR_small, one file per entry of ``images``.

    Each entry gives ``z`` (the slice position, mm) and header edits: ``ImageType``,
    ``private`` ((group, creator, element offset, VR, value)), any keyword. The pixels of
    file n are MR_small's plus 100 n, so that every file can be told apart.
    """
    folder.mkdir(parents=True, exist_ok=True)
    template = pydicom.dcmread(data_file("MR_small.dcm"))
    series_uid = pydicom.uid.generate_uid()
    pixels = []
    for n, edits in enumerate(images):
        ds = copy.deepcopy(template)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        ds.SeriesInstanceUID, ds.InstanceNumber = series_uid, n + 1
        ds.ImagePositionPatient = [-83.9063, -91.2, edits["z"]]
        values = ds.pixel_array.astype(np.int16) + 100 * n
        ds.PixelData = values.tobytes()
        for keyword, value in edits.items():
            if keyword == "private":
                group, creator, offset, vr, item = value
                ds.private_block(group, creator, create=True).add_new(offset, vr, item)
            elif keyword != "z":
                setattr(ds, keyword, value)
        ds.save_as(folder / f"im{n:03d}.dcm", enforce_file_format=True)
        pixels.append(values.astype(np.float32))
    return pixels


def test_one_series_dixon_is_split_into_water_and_fat(tmp_path):
    """Water and fat images of one series at the same positions, interleaved."""
    kinds = ["DERIVED\\PRIMARY\\DIXON\\WATER", "DERIVED\\PRIMARY\\DIXON\\FAT"]
    images = [{"z": z, "ImageType": kinds[n % 2], "SeriesDescription": "t1_vibe_dixon_cor"}
              for n, z in enumerate(np.repeat([0.0, 5.0, 10.0], 2))]
    pixels = series_from_mr_small(tmp_path / "dixon", images)
    store, report = import_one(tmp_path, tmp_path / "dixon")
    rows = {row.variant: row for row in store.volumes()}
    assert set(rows) == {"WATER", "FAT"}
    assert rows["WATER"].description == "t1_vibe_dixon_cor (WATER)" and rows["WATER"].duplicates == 0
    for variant, first in (("WATER", 0), ("FAT", 1)):
        volume = load_volume(store, rows[variant].volume_id)
        np.testing.assert_array_equal(volume.array, np.stack(pixels[first::2]))


@pytest.mark.parametrize("vendor", ["standard", "siemens", "ge", "philips"])
def test_diffusion_with_several_b_values_gives_one_stack_per_b_value(tmp_path, vendor):
    """b-values in DiffusionBValue or in the vendors' private attributes, shuffled over positions."""
    def b_value(b: float) -> dict:
        return {
            "standard": {"DiffusionBValue": b},
            "siemens": {"private": (0x0019, "SIEMENS MR HEADER", 0x0C, "IS", str(int(b)))},
            "ge": {"ScanningSequence": ["EP", "SE"],
                   "private": (0x0043, "GEMS_PARM_01", 0x39, "IS", [str(1_000_000_000 + int(b)), "8", "0", "0"])},
            "philips": {"private": (0x2001, "Philips Imaging DD 001", 0x03, "FL", b)},
        }[vendor]

    rng = np.random.default_rng(7)
    plan = [(z, b) for z in (0.0, 5.0, 10.0, 15.0) for b in rng.permutation([0.0, 50.0, 800.0])]
    pixels = series_from_mr_small(tmp_path / "dwi", [{"z": z, "SeriesDescription": "ep2d_diff_b0_50_800",
                                                      **b_value(b)} for z, b in plan])
    store, report = import_one(tmp_path, tmp_path / "dwi")
    rows = sorted(store.volumes(), key=lambda r: r.description)
    assert [r.variant for r in rows] == ["b=0", "b=50", "b=800"]
    assert all(r.duplicates == 0 and r.shape[0] == 4 for r in rows)
    for row in rows:
        b = float(row.variant[2:])
        expected = [pixels[n] for n, (_z, value) in enumerate(plan) if value == b]
        np.testing.assert_array_equal(load_volume(store, row.volume_id).array, np.stack(expected))


def test_ge_parameter_block_outside_diffusion_does_not_split(tmp_path):
    """GE writes (0043,1039) on every image; in a spin-echo series its first value is no b-value."""
    images = [{"z": z, "SeriesDescription": "t1_se", "private": (0x0043, "GEMS_PARM_01", 0x39, "IS", [str(n), "0"])}
              for n, z in enumerate((0.0, 5.0, 10.0))]
    series_from_mr_small(tmp_path / "ge", images)
    store, _ = import_one(tmp_path, tmp_path / "ge")
    (row,) = store.volumes()
    assert row.shape[0] == 3 and row.variant == ""


def test_enhanced_diffusion_b_values_per_frame(tmp_path):
    """pydicom's enhanced MR with MRDiffusionSequence per frame: 5 positions x 2 b-values."""
    folder = tmp_path / "enhanced"
    folder.mkdir()
    frames = [{"slice": n // 2, "b": [0.0, 1000.0][n % 2]} for n in range(10)]
    enhanced_from_emri(folder / "dwi", echo_pulse="SPIN", inversion=None, tr=5000.0, te=80.0,
                       description="DWI", frame_values=frames)
    store, report = import_one(tmp_path, folder)
    rows = sorted(store.volumes(), key=lambda r: r.description)
    assert [r.variant for r in rows] == ["b=0", "b=1000"] and all(r.shape[0] == 5 for r in rows)
    assert all(r.role == "other" and "b-value" in r.role_reason for r in rows)
    reference = reference_values("emri_small.dcm")
    np.testing.assert_array_equal(load_volume(store, rows[1].volume_id).array, reference[1::2])


def test_multiplanar_frames_are_stacks_named_by_orientation(tmp_path):
    """A 3-frame localizer with three orientations: three stacks, each named by its plane."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    path = tmp_path / "loc" / "scout"
    path.parent.mkdir()
    enhanced_from_emri(path, echo_pulse="GRADIENT", inversion=None, tr=8.0, te=4.0, description="localizer")
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 3
    ds.PixelData = ds.PixelData[: 3 * 64 * 64 * 2]
    planes = ([1, 0, 0, 0, 1, 0], [1, 0, 0, 0, 0, -1], [0, 1, 0, 0, 0, -1])
    items = []
    for orientation in planes:
        item, plane, position = Dataset(), Dataset(), Dataset()
        plane.ImageOrientationPatient, position.ImagePositionPatient = orientation, [0.0, 0.0, 0.0]
        item.PlaneOrientationSequence, item.PlanePositionSequence = Sequence([plane]), Sequence([position])
        items.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(items)
    del ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence
    ds.save_as(path, enforce_file_format=True)
    store, report = import_one(tmp_path, path.parent)
    assert report.skipped == []
    names = sorted(r.description for r in store.volumes())
    assert names == ["localizer (axial)", "localizer (coronal)", "localizer (sagittal)"]


def test_enhanced_diffusion_directions_per_frame(tmp_path):
    """b=1000 in two gradient directions at the same 5 positions: one stack per direction."""
    folder = tmp_path / "enhanced"
    folder.mkdir()
    frames = [{"slice": n // 2, "b": 1000.0, "direction": [[1.0, 0.0, 0.0], [0.0, 0.7071, 0.7071]][n % 2]}
              for n in range(10)]
    enhanced_from_emri(folder / "dwi", echo_pulse="SPIN", inversion=None, tr=5000.0, te=80.0,
                       description="DWI", frame_values=frames)
    store, report = import_one(tmp_path, folder)
    rows = sorted(store.volumes(), key=lambda r: r.variant)
    assert [r.variant for r in rows] == ["direction (0.0, 0.707, 0.707)", "direction (1.0, 0.0, 0.0)"]
    assert all(r.shape[0] == 5 and r.duplicates == 0 for r in rows)
    np.testing.assert_array_equal(load_volume(store, rows[0].volume_id).array,
                                  reference_values("emri_small.dcm")[1::2])
