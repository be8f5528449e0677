"""Series recognition from real vendors' DICOM headers: the class a radiologist gives, its plane, its label.

Header combinations follow what Siemens, GE, Philips and Canon write (ScanningSequence, ScanOptions with
GE's ``*_GEMS`` options, ImageType with the vendors' Dixon tokens, Philips' private Scanning Technique
Description (2001,xx20) and SPIR (2001,xx21), enhanced MR attributes in functional groups), including
headers that lie: a description saying STIR without a TI, Philips' TI of 0 on any series, a T1 FLAIR
whose TI is that of neither STIR nor FLAIR.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from cno_annotate.display.catalog import default_pair, series_choices
from cno_annotate.importer import import_paths
from cno_annotate.io.roles import recognise_series

SIEMENS = {"Manufacturer": "SIEMENS"}
GE = {"Manufacturer": "GE MEDICAL SYSTEMS"}
PHILIPS = {"Manufacturer": "Philips Medical Systems"}
CANON = {"Manufacturer": "CANON_MEC"}

# (case, attributes, role, class name)
CASES = [
    # -- Siemens
    ("siemens t2_tirm_cor", {**SIEMENS, "ScanningSequence": ["SE", "IR"], "SequenceVariant": ["SK", "SP", "MP"],
                             "ScanOptions": ["IR"], "InversionTime": 160.0, "RepetitionTime": 5000.0, "EchoTime": 70.0,
                             "SequenceName": "*tir2d1_15", "SeriesDescription": "t2_tirm_cor"}, "STIR", "STIR"),
    ("siemens t1_tse_cor", {**SIEMENS, "ScanningSequence": ["SE"], "SequenceVariant": ["SK", "SP", "OSP"],
                            "RepetitionTime": 600.0, "EchoTime": 11.0, "SequenceName": "*tse2d1_3",
                            "SeriesDescription": "t1_tse_cor"}, "T1", "T1"),
    ("siemens *tir2d1 without TI or name", {**SIEMENS, "ScanningSequence": ["SE", "IR"], "ScanOptions": ["IR"],
                                            "SequenceName": "*tir2d1_13"}, "other", "IR"),
    ("siemens dixon water", {**SIEMENS, "ScanningSequence": ["GR"], "RepetitionTime": 6.8, "EchoTime": 2.4,
                             "ImageType": ["DERIVED", "PRIMARY", "DIXON", "WATER"],
                             "SeriesDescription": "t1_vibe_dixon_cor_W"}, "other", "Dixon water"),
    ("siemens dixon fat", {**SIEMENS, "ScanningSequence": ["GR"], "RepetitionTime": 6.8, "EchoTime": 2.4,
                           "ImageType": ["DERIVED", "PRIMARY", "DIXON", "FAT"],
                           "SeriesDescription": "t1_vibe_dixon_cor_F"}, "other", "Dixon fat"),
    ("siemens dixon in-phase", {**SIEMENS, "ScanningSequence": ["GR"], "RepetitionTime": 6.8, "EchoTime": 2.4,
                                "ImageType": ["ORIGINAL", "PRIMARY", "DIXON", "IN_PHASE"],
                                "SeriesDescription": "t1_vibe_dixon_cor_in"}, "T1", "Dixon in-phase"),
    ("siemens dixon opposed-phase", {**SIEMENS, "ScanningSequence": ["GR"], "RepetitionTime": 6.8, "EchoTime": 2.4,
                                     "ImageType": ["ORIGINAL", "PRIMARY", "DIXON", "OPP_PHASE"],
                                     "SeriesDescription": "t1_vibe_dixon_cor_opp"}, "other", "Dixon opposed-phase"),
    ("siemens t2 dixon water (spin echo)", {**SIEMENS, "ScanningSequence": ["SE"], "RepetitionTime": 4000.0,
                                            "EchoTime": 80.0, "ImageType": ["DERIVED", "PRIMARY", "DIXON", "WATER"],
                                            "SeriesDescription": "t2_tse_dixon_cor_W"}, "other", "Dixon water"),
    ("siemens t2 fat-sat", {**SIEMENS, "ScanningSequence": ["SE"], "ScanOptions": ["FS"], "RepetitionTime": 4000.0,
                            "EchoTime": 80.0, "SeriesDescription": "t2_tse_fs_cor"}, "other", "T2 fat-sat"),
    ("siemens haste", {**SIEMENS, "ScanningSequence": ["SE"], "RepetitionTime": 1400.0, "EchoTime": 90.0,
                       "SeriesDescription": "t2_haste_cor"}, "other", "T2"),
    ("siemens pd", {**SIEMENS, "ScanningSequence": ["SE"], "RepetitionTime": 3000.0, "EchoTime": 30.0,
                    "SeriesDescription": "pd_tse_cor"}, "other", "PD"),
    ("siemens flair", {**SIEMENS, "ScanningSequence": ["SE", "IR"], "InversionTime": 2500.0, "RepetitionTime": 9000.0,
                       "EchoTime": 85.0, "SeriesDescription": "t2_tirm_tra_dark-fluid"}, "other", "FLAIR"),
    ("siemens diffusion", {**SIEMENS, "ScanningSequence": ["EP"], "SequenceName": "*ep_b800t", "DiffusionBValue": 800.0,
                           "ImageType": ["ORIGINAL", "PRIMARY", "DIFFUSION", "NONE"],
                           "SeriesDescription": "ep2d_diff_tra"}, "other", "DWI"),
    ("siemens adc", {**SIEMENS, "ScanningSequence": ["EP"], "ImageType": ["DERIVED", "PRIMARY", "DIFFUSION", "ADC"],
                     "SeriesDescription": "ep2d_diff_tra_ADC"}, "other", "ADC"),
    ("siemens vibe fat-sat post", {**SIEMENS, "ScanningSequence": ["GR"], "ScanOptions": ["FS"], "RepetitionTime": 4.0,
                                   "EchoTime": 1.8, "SeriesDescription": "t1_vibe_fs_tra_post"}, "other", "T1 fat-sat"),
    ("siemens localizer", {**SIEMENS, "ScanningSequence": ["GR"], "RepetitionTime": 8.6, "EchoTime": 4.0,
                           "SeriesDescription": "localizer"}, "other", "localizer"),
    # -- GE
    ("ge stir: IR only in ScanOptions IR_GEMS", {**GE, "ScanningSequence": ["SE"], "SequenceVariant": ["SK", "OSP"],
                                                 "ScanOptions": ["FAST_GEMS", "IR_GEMS", "EDR_GEMS"],
                                                 "InversionTime": 150.0, "RepetitionTime": 4000.0, "EchoTime": 42.0,
                                                 "SeriesDescription": "COR STIR"}, "STIR", "STIR"),
    ("ge t1 fse", {**GE, "ScanningSequence": ["SE"], "ScanOptions": ["FAST_GEMS", "EDR_GEMS"], "RepetitionTime": 550.0,
                   "EchoTime": 9.0, "SeriesDescription": "COR T1 FSE"}, "T1", "T1"),
    ("ge research mode, STIR named, short TI", {**GE, "ScanningSequence": ["RM"], "InversionTime": 170.0,
                                                "SeriesDescription": "cor stir wb"}, "STIR", "STIR"),
    ("ge ideal water", {**GE, "ScanningSequence": ["SE"], "RepetitionTime": 3500.0, "EchoTime": 60.0,
                        "ScanOptions": ["FAST_GEMS", "IDEAL_GEMS"], "SeriesDescription": "WATER: COR T2 FSE IDEAL"},
     "other", "Dixon water"),
    ("ge lava-flex fat", {**GE, "ScanningSequence": ["GR"], "RepetitionTime": 4.0, "EchoTime": 1.7,
                          "SeriesDescription": "FAT: Ax LAVA-Flex"}, "other", "Dixon fat"),
    ("ge flex in-phase", {**GE, "ScanningSequence": ["GR"], "RepetitionTime": 4.0, "EchoTime": 2.2,
                          "SeriesDescription": "InPhase: Ax LAVA-Flex"}, "T1", "Dixon in-phase"),
    ("ge flex out-phase", {**GE, "ScanningSequence": ["GR"], "RepetitionTime": 4.0, "EchoTime": 1.1,
                           "SeriesDescription": "OutPhase: Ax LAVA-Flex"}, "other", "Dixon opposed-phase"),
    # -- Philips
    ("philips sT1W_TSE by name only", {**PHILIPS, "SeriesDescription": "sT1W_TSE", "ProtocolName": "sT1W_TSE"},
     "T1", "T1"),
    ("philips sT1W_TSE", {**PHILIPS, "ScanningSequence": ["SE"], "SequenceVariant": ["SK"], "RepetitionTime": 600.0,
                          "EchoTime": 10.0, "SeriesDescription": "sT1W_TSE cor"}, "T1", "T1"),
    ("philips T1 TFE", {**PHILIPS, "ScanningSequence": ["GR"], "SequenceVariant": ["SS"], "RepetitionTime": 8.1,
                        "EchoTime": 3.7, "SeriesDescription": "T1 TFE cor", "PhilipsTechnique": "T1TFE"}, "T1", "T1"),
    ("philips T1TFE glued", {**PHILIPS, "ScanningSequence": ["GR"], "RepetitionTime": 8.1, "EchoTime": 3.7,
                             "SeriesDescription": "T1TFE_cor"}, "T1", "T1"),
    ("philips T1TFE named only by its private technique", {**PHILIPS, "ScanningSequence": ["GR"], "RepetitionTime": 9.8,
                                                           "EchoTime": 4.6, "SeriesDescription": "WB 3",
                                                           "PhilipsTechnique": "T1TFE"}, "T1", "T1"),
    ("philips sSTIR", {**PHILIPS, "ScanningSequence": ["IR"], "SequenceVariant": ["SK"], "InversionTime": 180.0,
                       "RepetitionTime": 3500.0, "EchoTime": 60.0, "SeriesDescription": "sSTIR_cor"}, "STIR", "STIR"),
    ("philips sSTIR by name only", {**PHILIPS, "SeriesDescription": "sSTIR_cor"}, "STIR", "STIR"),
    ("philips STIR with its implausible TI 0", {**PHILIPS, "ScanningSequence": ["SE", "IR"], "InversionTime": 0.0,
                                                "RepetitionTime": 3500.0, "EchoTime": 60.0,
                                                "SeriesDescription": "STIR_cor"}, "STIR", "STIR"),
    ("philips T2 with TI 0 (not an inversion)", {**PHILIPS, "ScanningSequence": ["SE"], "InversionTime": 0.0,
                                                 "RepetitionTime": 3000.0, "EchoTime": 80.0,
                                                 "SeriesDescription": "T2W_TSE"}, "other", "T2"),
    ("philips SPAIR is not STIR", {**PHILIPS, "ScanningSequence": ["SE"], "ScanOptions": ["FS"],
                                   "RepetitionTime": 3000.0, "EchoTime": 70.0, "SeriesDescription": "T2W_SPAIR cor"},
     "other", "T2 fat-sat"),
    ("philips SPAIR named only", {**PHILIPS, "SeriesDescription": "T2W_SPAIR"}, "other", "T2 fat-sat"),
    ("philips SPIR private flag", {**PHILIPS, "ScanningSequence": ["SE"], "RepetitionTime": 3000.0, "EchoTime": 70.0,
                                   "SeriesDescription": "T2W_TSE cor", "PhilipsSPIR": "Y"}, "other", "T2 fat-sat"),
    ("philips mDIXON water", {**PHILIPS, "ScanningSequence": ["GR"], "RepetitionTime": 5.5, "EchoTime": 1.8,
                              "ImageType": ["ORIGINAL", "PRIMARY", "W_FFE", "W", "FFE"],
                              "SeriesDescription": "T1_mDIXON_cor"}, "other", "Dixon water"),
    ("philips mDIXON fat", {**PHILIPS, "ScanningSequence": ["GR"], "RepetitionTime": 5.5, "EchoTime": 1.8,
                            "ImageType": ["ORIGINAL", "PRIMARY", "F_FFE", "F", "FFE"],
                            "SeriesDescription": "T1_mDIXON_cor"}, "other", "Dixon fat"),
    ("philips mDIXON in-phase", {**PHILIPS, "ScanningSequence": ["GR"], "RepetitionTime": 5.5, "EchoTime": 2.3,
                                 "ImageType": ["ORIGINAL", "PRIMARY", "IP_FFE", "IP", "FFE"],
                                 "SeriesDescription": "T1_mDIXON_cor"}, "T1", "Dixon in-phase"),
    ("philips mDIXON opposed-phase", {**PHILIPS, "ScanningSequence": ["GR"], "RepetitionTime": 5.5, "EchoTime": 1.2,
                                      "ImageType": ["ORIGINAL", "PRIMARY", "OP_FFE", "OP", "FFE"],
                                      "SeriesDescription": "T1_mDIXON_cor"}, "other", "Dixon opposed-phase"),
    ("philips dwibs", {**PHILIPS, "ScanningSequence": ["SE", "EP"], "ScanOptions": ["IR"], "InversionTime": 180.0,
                       "SeriesDescription": "DWIBS b1000"}, "other", "DWIBS"),
    # -- Canon / Toshiba
    ("canon stir", {**CANON, "ScanningSequence": ["IR"], "InversionTime": 170.0, "RepetitionTime": 5000.0,
                    "EchoTime": 60.0, "SeriesDescription": "STIR COR WB"}, "STIR", "STIR"),
    ("canon t1 fse", {**CANON, "ScanningSequence": ["SE"], "RepetitionTime": 500.0, "EchoTime": 12.0,
                      "SeriesDescription": "T1W_FSE_COR"}, "T1", "T1"),
    ("toshiba t1 field echo", {"Manufacturer": "TOSHIBA_MEC", "ScanningSequence": ["GR"], "RepetitionTime": 200.0,
                               "EchoTime": 4.6, "SeriesDescription": "T1W FE cor"}, "T1", "T1"),
    # -- enhanced MR (attributes from the functional groups)
    ("enhanced stir", {"InversionRecovery": "YES", "EchoPulseSequence": "SPIN", "InversionTime": 160.0,
                       "FrameType": ["ORIGINAL", "PRIMARY", "STIR", "NONE"],
                       "FromFunctionalGroups": ["InversionRecovery", "InversionTime", "FrameType"]}, "STIR", "STIR"),
    ("enhanced t1 gradient echo, flavour T1", {"InversionRecovery": "NO", "EchoPulseSequence": "GRADIENT",
                                               "RepetitionTime": 8.0, "EchoTime": 3.7,
                                               "FrameType": ["ORIGINAL", "PRIMARY", "T1", "NONE"],
                                               "SeriesDescription": "3D_VOL cor"}, "T1", "T1"),
    ("enhanced dixon water frame type", {"EchoPulseSequence": "GRADIENT", "RepetitionTime": 5.5, "EchoTime": 1.8,
                                         "FrameType": ["ORIGINAL", "PRIMARY", "DIXON", "WATER"],
                                         "SeriesDescription": "mDIXON cor"}, "other", "Dixon water"),
    ("enhanced implausible inversion time", {"InversionRecovery": "NO", "EchoPulseSequence": "SPIN",
                                             "InversionTime": 1.7976931348623157e308, "RepetitionTime": 550.0,
                                             "EchoTime": 10.0}, "T1", "T1"),
    # -- lies, lowercase, underscores, non-ASCII
    ("description says STIR, IR without TI", {"ScanningSequence": ["SE", "IR"], "SeriesDescription": "stir_cor"},
     "STIR", "STIR"),
    ("description says STIR, headers a fat-sat T2", {"ScanningSequence": ["SE"], "ScanOptions": ["FS"],
                                                     "RepetitionTime": 4000.0, "EchoTime": 80.0,
                                                     "SeriesDescription": "STIR cor"}, "other", "T2 fat-sat"),
    ("T1 FLAIR: TI of neither STIR nor FLAIR", {"ScanningSequence": ["SE", "IR"], "InversionTime": 860.0,
                                                "RepetitionTime": 2000.0, "EchoTime": 9.0,
                                                "SeriesDescription": "T1 FLAIR tra"}, "other", "T1 FLAIR"),
    ("lowercase underscored stir", {"SeriesDescription": "wb_cor_stir_1"}, "STIR", "STIR"),
    ("non-ascii stir", {"SeriesDescription": "STIR coronal Ganzkörper"}, "STIR", "STIR"),
    ("non-ascii t1", {"SeriesDescription": "Ganzkörper T1 tse"}, "T1", "T1"),
    ("non-ascii unknown", {"SeriesDescription": "脂肪抑制 全身"}, "other", ""),
    ("nothing", {}, "other", ""),
]


@pytest.mark.parametrize("attributes, role, name", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_vendor_headers_get_the_radiologists_class(attributes, role, name):
    found = recognise_series(attributes)
    assert (found.role, found.name) == (role, name), found.reason
    assert found.reason


# -- through import: files written with pydicom, as a third party writes them ------------------------------------

AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
CORONAL = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]


def write_series(folder: Path, number: int, orientation: list[float], slices: int = 4, **attributes) -> None:
    """A small MR series as a scanner writes it: one file per slice, the given header values."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    private = attributes.pop("philips_technique", None)
    normal = np.cross(orientation[:3], orientation[3:])
    for k in range(slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"{number}_{k}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.PatientName = "MR", "RECOG-1", "Recognition^Test"
        ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.777001"
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = series_uid, number, k + 1
        ds.ImageOrientationPatient = orientation
        ds.ImagePositionPatient = [float(v) for v in normal * 5.0 * k]
        ds.PixelSpacing, ds.SliceThickness = [2.0, 2.0], 5.0
        ds.Rows = ds.Columns = 16
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = (np.arange(256, dtype=np.uint16) + k).tobytes()
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)
        if private:
            block = ds.private_block(0x2001, "Philips Imaging DD 001", create=True)
            block.add_new(0x20, "LO", private)
        ds.save_as(ds.filename, enforce_file_format=True)


def test_imported_series_are_listed_by_class_and_plane(tmp_path, store):
    """A Philips T1TFE, a GE STIR (IR in ScanOptions only) named coronal but acquired axial, a spin-echo T2
    without a description and a series of unknown class: each listed as a radiologist reads it."""
    folder = tmp_path / "scans"
    write_series(folder, 1, CORONAL, Manufacturer="Philips Medical Systems", ScanningSequence="GR",
                 RepetitionTime=8.1, EchoTime=3.7, SeriesDescription="WB 3", philips_technique="T1TFE")
    write_series(folder, 2, AXIAL, Manufacturer="GE MEDICAL SYSTEMS", ScanningSequence="SE",
                 ScanOptions=["FAST_GEMS", "IR_GEMS"], InversionTime=150, RepetitionTime=4000, EchoTime=42,
                 SeriesDescription="COR STIR")
    write_series(folder, 3, AXIAL, ScanningSequence="SE", RepetitionTime=4000, EchoTime=90)
    write_series(folder, 4, CORONAL, ScanningSequence="GR", RepetitionTime=4.2, EchoTime=2.1,
                 SeriesDescription="trufi_cor_Körper")
    import_paths(store, [folder])
    volumes = store.volumes()
    by_series = {pydicom.dcmread(folder / f"{n}_0.dcm").SeriesInstanceUID: n for n in (1, 2, 3, 4)}
    found = {by_series[v.series_uid]: (v.role, v.sequence, v.orientation) for v in volumes}
    assert found == {1: ("T1", "T1", "coronal"), 2: ("STIR", "STIR", "axial"), 3: ("other", "T2", "axial"),
                     4: ("other", "", "coronal")}
    labels = {by_series[v.series_uid]: label for v in volumes for vid, label in series_choices(volumes)
              if vid == v.volume_id}
    assert labels == {1: "T1 coronal WB 3", 2: "STIR axial COR STIR", 3: "T2 axial", 4: "trufi_cor_Körper coronal"}
    blinded = {by_series[v.series_uid]: label for v in volumes for vid, label in series_choices(volumes, blinded=True)
               if vid == v.volume_id}
    assert blinded[3].startswith("T2 axial series") and blinded[4].startswith("other coronal series")
    assert not any("WB 3" in label or "Körper" in label for label in blinded.values())


def test_the_plain_t1_is_shown_before_a_dixon_in_phase(tmp_path, store):
    """Both are T1 by role; the view opens on the T1 the protocol meant as such (the T1 TFE), not the Dixon's."""
    folder = tmp_path / "scans"
    philips = {"Manufacturer": "Philips Medical Systems", "ScanningSequence": "GR", "RepetitionTime": 5.5,
               "EchoTime": 2.3}
    write_series(folder, 1, CORONAL, **philips, SeriesDescription="A_T1_mDIXON_cor",
                 ImageType=["ORIGINAL", "PRIMARY", "IP_FFE", "IP", "FFE"])
    write_series(folder, 2, CORONAL, **philips, SeriesDescription="B WB", philips_technique="T1TFE")
    import_paths(store, [folder])
    volumes = store.volumes()
    assert sorted((v.role, v.sequence) for v in volumes) == [("T1", "Dixon in-phase"), ("T1", "T1")]
    _, right = default_pair(volumes)
    assert next(v for v in volumes if v.volume_id == right).description == "B WB"


def test_enhanced_dixon_frames_are_split_and_each_recognised(tmp_path, store):
    """A Philips enhanced mDIXON file holds water and fat frames (FrameType ...\\DIXON\\WATER, ...\\FAT in
    MRImageFrameTypeSequence); each becomes its own volume with its own class, while the file's top-level
    ImageType says T1."""
    from tests.test_third_party import enhanced_from_emri

    folder = tmp_path / "enhanced"
    folder.mkdir()
    frames = [{"slice": n % 5, "frame_type": ["ORIGINAL", "PRIMARY", "DIXON", "WATER" if n < 5 else "FAT"]}
              for n in range(10)]
    enhanced_from_emri(folder / "mdixon", echo_pulse="GRADIENT", inversion=None, tr=5.5, te=1.8,
                       description="mDIXON cor", frame_values=frames)
    import_paths(store, [folder])
    found = sorted((v.role, v.sequence, v.orientation, v.shape[0]) for v in store.volumes())
    assert found == [("other", "Dixon fat", "coronal", 5), ("other", "Dixon water", "coronal", 5)]
