"""Synthetic whole-body MRI studies written as real DICOM.

:func:`generate_study` writes a coronal STIR and a coronal T1 spin-echo
series, each acquired as N overlapping stations from head to feet, in the
nested, extension-less layout of a CD export, plus ``ground_truth.json`` with
each lesion's site, side, LPS position, size, intensity, margin and
surroundings, and the normal variants a reader must not call lesions
(:mod:`cno_annotate.sample_lesions`; both change with the seed). The slices
cover the body's whole depth. With ``timepoints`` > 1 it writes follow-up
visits of the same patient, repositioned, with lesions that change
(:mod:`cno_annotate.sample_visits`). Patient identifiers are fake but look
real, so that de-identification can be tested.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, MRImageStorage

from cno_annotate import __version__, phantom, sample_lesions, sample_visits
from cno_annotate.errors import CnoError
from cno_annotate.uids import stable_uid

BODY_TOP_Z = 680.0
BODY_BOTTOM_Z = -900.0
STATION_OVERLAP_MM = 30.0
#: Anterior-posterior depth of the body the slices cover by default (mm).
BODY_DEPTH_MM = 220.0
#: Fewest whole rows neighbouring stations share (matters only for coarse matrices).
MIN_OVERLAP_ROWS = 2

#: Most visits of one patient the generator writes.
MAX_TIMEPOINTS = 3
#: Study dates of the visits: baseline, 6 and 12 months.
VISIT_DATES = ("20261104", "20270505", "20271103")

FIRST_NAMES = ["Lotte", "Noah", "Emma", "Lucas", "Mila", "Arthur", "Olivia", "Louis"]
LAST_NAMES = ["Janssens", "Peeters", "Maes", "Jacobs", "Mertens", "Willems", "Claes", "Goossens"]

#: Header values that make a series STIR or T1 (Siemens-like, 1.5 T).
SEQUENCES = {
    "STIR": {
        "SeriesDescription": "t2_tirm_cor_wb",
        "ProtocolName": "t2_tirm_cor_wb",
        "SequenceName": "*tir2d1_13",
        "ScanningSequence": ["SE", "IR"],
        "SequenceVariant": ["SK", "SP", "MP"],
        "ScanOptions": ["IR"],
        "RepetitionTime": 4500.0,
        "EchoTime": 62.0,
        "InversionTime": 160.0,
        "EchoTrainLength": 13,
    },
    "T1": {
        "SeriesDescription": "t1_tse_cor_wb",
        "ProtocolName": "t1_tse_cor_wb",
        "SequenceName": "*tse2d1_3",
        "ScanningSequence": ["SE"],
        "SequenceVariant": ["SK", "SP"],
        "ScanOptions": "",
        "RepetitionTime": 520.0,
        "EchoTime": 11.0,
        "EchoTrainLength": 3,
    },
}


@dataclass(frozen=True)
class StudyPlan:
    """Acquisition parameters of a synthetic study."""

    stations: int = 4
    slices: int = 16
    matrix: int = 128
    seed: int = 0
    slice_thickness: float | None = None
    centre_y: float = 5.0
    timepoints: int = 1

    def validate(self) -> None:
        """Raise :class:`CnoError` for parameters no scanner would use."""
        if not 1 <= self.timepoints <= MAX_TIMEPOINTS:
            raise CnoError(f"--timepoints must be 1 to {MAX_TIMEPOINTS}, not {self.timepoints}")
        if not 1 <= self.stations <= 12:
            raise CnoError(f"--stations must be 1 to 12, not {self.stations}")
        if not 1 <= self.slices <= 400:
            raise CnoError(f"--slices must be 1 to 400, not {self.slices}")
        if not 16 <= self.matrix <= 1024:
            raise CnoError(f"--matrix must be 16 to 1024, not {self.matrix}")
        if self.slice_thickness is not None and not 0.5 <= self.slice_thickness <= 50:
            raise CnoError(f"slice thickness must be 0.5 to 50 mm, not {self.slice_thickness}")

    @property
    def slice_mm(self) -> float:
        """Slice thickness (= spacing): given, or the body's depth shared by the slices (3 to 15 mm)."""
        if self.slice_thickness is not None:
            return float(self.slice_thickness)
        return min(15.0, max(3.0, BODY_DEPTH_MM / self.slices))

    @property
    def sub_slices(self) -> int:
        """Positions painted across each slice's thickness (one per 4 mm) for partial volume."""
        return max(1, math.ceil(self.slice_mm / 4.0))

    @property
    def station_fov(self) -> float:
        """Square field of view of one station (mm) so the stations cover the body.

        Stations overlap by :data:`STATION_OVERLAP_MM`, or by
        :data:`MIN_OVERLAP_ROWS` whole rows when the pixels are coarser than
        that (a small matrix), so that neighbours share rows at any matrix.
        """
        body = BODY_TOP_Z - BODY_BOTTOM_Z
        joins = self.stations - 1
        fov = (body + joins * STATION_OVERLAP_MM) / self.stations
        if MIN_OVERLAP_ROWS * fov / self.matrix > STATION_OVERLAP_MM:
            fov = body / (self.stations - joins * MIN_OVERLAP_ROWS / self.matrix)
        return fov

    @property
    def station_overlap_mm(self) -> float:
        """How far neighbouring stations overlap head-feet (mm)."""
        return max(STATION_OVERLAP_MM, MIN_OVERLAP_ROWS * self.pixel_mm)

    @property
    def pixel_mm(self) -> float:
        """In-plane pixel size (mm)."""
        return self.station_fov / self.matrix


def fake_patient(rng: np.random.Generator) -> dict[str, str]:
    """Fake but realistic patient identifiers (no real person)."""
    year = int(rng.integers(2010, 2020))
    return {
        "PatientName": f"{rng.choice(LAST_NAMES)}^{rng.choice(FIRST_NAMES)}",
        "PatientID": f"UZ{int(rng.integers(1_000_000, 9_999_999))}",
        "PatientBirthDate": f"{year}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}",
        "PatientSex": str(rng.choice(["F", "M"])),
        "InstitutionName": "Sint-Anna Kinderziekenhuis Leuven",
        "ReferringPhysicianName": f"{rng.choice(LAST_NAMES)}^{rng.choice(FIRST_NAMES)}",
        "AccessionNumber": f"A{int(rng.integers(10**9, 10**10))}",
        "StudyDate": VISIT_DATES[0],
        "StudyTime": "091500",
    }


def visit_accessions(first: str, timepoints: int, rng: np.random.Generator) -> list[str]:
    """One accession number per visit (each visit is its own order): the first given, the others drawn anew."""
    out = [first]
    while len(out) < timepoints:
        accession = f"A{int(rng.integers(10**9, 10**10))}"
        if accession not in out:
            out.append(accession)
    return out


def station_grid(plan: StudyPlan, station: int, sub_slices: int = 1) -> phantom.Grid:
    """The voxel centres of one station (coronal, head to feet).

    With ``sub_slices`` > 1, that many points across each slice's thickness
    (slice-major), where the phantom is painted for partial volume.
    """
    px = plan.pixel_mm
    fov = plan.station_fov
    top = BODY_TOP_Z - station * (fov - plan.station_overlap_mm)
    xs = -fov / 2 + px / 2 + px * np.arange(plan.matrix)
    zs = top - px / 2 - px * np.arange(plan.matrix)
    ys = plan.centre_y + plan.slice_mm * (np.arange(plan.slices) - (plan.slices - 1) / 2)
    if sub_slices > 1:
        offsets = plan.slice_mm * ((np.arange(sub_slices) + 0.5) / sub_slices - 0.5)
        ys = (ys[:, None] + offsets[None, :]).ravel()
    return phantom.Grid(xs=xs, ys=ys, zs=zs)


def _mark_field_of_view(found: list[dict], plan: StudyPlan) -> list[dict]:
    """Each lesion or variant with ``in_field_of_view``: whether its centre lies within the images' width.

    A station's field of view is square, so many stations make it narrow and the arms may fall beside it.
    """
    half = plan.station_fov / 2
    return [{**x, "in_field_of_view": bool(abs(x["lps_mm"][0]) <= half)} for x in found]


def lesions_outside(truth: dict) -> list[tuple[int, dict]]:
    """(visit number, lesion) of every lesion of the ground truth whose centre lies beside the images."""
    return [(visit["visit"], lesion) for visit in truth["visits"] for lesion in visit["lesions"]
            if not lesion["in_field_of_view"]]


def generate_study(out_dir: Path, plan: StudyPlan = StudyPlan()) -> dict:
    """Write a synthetic whole-body MRI study (or several visits) and its ground truth.

    Parameters
    ----------
    out_dir : Path
        Folder to create; DICOM files go under ``DICOM/`` without extensions,
        visit ``n`` in ``DICOM/PA000001/ST00000n``.
    plan : StudyPlan
        Stations, slices, matrix, seed and number of timepoints.

    Returns
    -------
    dict
        The ground truth, also written to ``out_dir/ground_truth.json``. The
        top-level ``study_uid``, ``series`` and ``lesions`` describe the first
        visit; ``visits`` lists every visit (its lesions in that visit's LPS
        mm, each with the ``track_id`` it keeps across visits, and the body
        parts' poses) and ``transforms`` the true per-region transforms
        between visits (LPS mm of the earlier visit -> the later one).
    """
    plan.validate()
    out_dir = Path(out_dir)
    rng = np.random.default_rng(plan.seed)
    patient = fake_patient(rng)
    uid = _uid_maker(plan)
    frame_uid = uid("frame")
    body_lesions = sample_lesions.random_lesions(np.random.default_rng([plan.seed, 3]))
    later = sample_lesions.random_lesions(np.random.default_rng([plan.seed, 4]), count=plan.timepoints - 1,
                                          exclude=[(x["bone"], x["segment"], x["side"]) for x in body_lesions])
    variants = sample_lesions.normal_variants(np.random.default_rng([plan.seed, 5]))
    pose_rng = np.random.default_rng([plan.seed, 1])
    poses = [sample_visits.identity_poses()] + [sample_visits.random_poses(pose_rng) for _ in range(plan.timepoints - 1)]
    courses = sample_visits.lesion_courses(sample_lesions.numbered(body_lesions + later[: plan.timepoints - 1]),
                                           len(body_lesions), plan.timepoints, np.random.default_rng([plan.seed, 2]))
    accessions = visit_accessions(patient["AccessionNumber"], plan.timepoints, np.random.default_rng([plan.seed, 6]))
    visits = []
    files = 0
    for visit in range(plan.timepoints):
        prefix = "" if visit == 0 else f"visit{visit + 1}-"
        study_uid = uid(f"{prefix}study")
        lesions = sample_visits.lesions_at(courses, visit)
        scanner_lesions = _mark_field_of_view(sample_visits.placed(lesions, poses[visit]), plan)
        scanner_variants = _mark_field_of_view(sample_visits.placed(variants, poses[visit]), plan)
        common = {**patient, "AccessionNumber": accessions[visit], "StudyDate": VISIT_DATES[visit],
                  "StudyInstanceUID": study_uid,
                  "FrameOfReferenceUID": uid(f"{prefix}frame") if visit else frame_uid}
        series_info = []
        for station in range(plan.stations):
            grid = station_grid(plan, station)
            body = phantom.Phantom(station_grid(plan, station, plan.sub_slices))
            phantom.paint_body(body, poses[visit])
            phantom.paint_variants(body, variants, poses[visit])
            phantom.paint_lesions(body, lesions, poses[visit])
            for number, role in enumerate(("STIR", "T1")):
                series_number = 100 * (number + 1) + station + 1
                series_uid = uid(f"{prefix}series-{role}-{station}")
                image = phantom.render(body.labels, role, rng, sub_slices=plan.sub_slices) * _coil_profile(grid)
                files += _write_series(
                    out_dir, plan, grid, image, role, station, common=common,
                    series_uid=series_uid, series_number=series_number, uid=uid, study_folder=visit + 1,
                )
                series_info.append({"series_uid": series_uid, "role": role, "station": station + 1})
        visits.append({
            "visit": visit + 1,
            "study_uid": study_uid,
            "study_date": VISIT_DATES[visit],
            "accession": accessions[visit],
            "series": series_info,
            "lesions": scanner_lesions,
            "normal_variants": scanner_variants,
            "poses": {part: sample_visits.as_list(m) for part, m in poses[visit].items()},
            "table_offset_mm": round(float(poses[visit]["trunk"][2, 3]), 3),
        })
    truth = {
        "generator": f"cno-annotate {__version__} sample",
        "plan": {**plan.__dict__, "slice_mm": plan.slice_mm},
        "study_uid": visits[0]["study_uid"],
        "fake_identifiers": patient,
        "series": visits[0]["series"],
        "lesions": visits[0]["lesions"],
        "normal_variants": visits[0]["normal_variants"],
        "files": files,
        "visits": visits,
        "tracks": [course.as_dict() for course in courses],
        "transforms": sample_visits.true_transforms(poses),
    }
    (out_dir / "ground_truth.json").write_text(json.dumps(truth, indent=2) + "\n")
    return truth


def _uid_maker(plan: StudyPlan):
    """Deterministic UIDs: the same plan gives the same UIDs."""
    base = f"cno-sample-{plan.seed}-{plan.stations}-{plan.slices}-{plan.matrix}"

    def make(name: str) -> str:
        return stable_uid(base, name)

    return make


def _coil_profile(grid: phantom.Grid) -> np.ndarray:
    """A smooth receive-coil shading along head-feet, different per station."""
    j = np.linspace(-1, 1, len(grid.zs), dtype=np.float32)
    return (1.0 - 0.12 * j**2)[None, :, None]


def _write_series(out_dir, plan, grid, image, role, station, common, series_uid, series_number, uid,
                  study_folder: int = 1) -> int:
    """Write one station of one sequence; return the number of files."""
    px = plan.pixel_mm
    pixels = np.clip(np.rint(image), 0, 4095).astype(np.uint16)
    folder = out_dir / "DICOM" / "PA000001" / f"ST{study_folder:06d}" / f"SE{series_number:06d}"
    folder.mkdir(parents=True, exist_ok=True)
    n = len(grid.ys)
    for k in range(n):
        ds = _base_dataset(common, role)
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = series_number
        ds.SOPInstanceUID = uid(f"{series_uid}-{k}")
        # T1 numbers its slices posterior to anterior: order must come from
        # ImagePositionPatient, not from InstanceNumber.
        ds.InstanceNumber = (n - k) if role == "T1" else k + 1
        ds.ImagePositionPatient = [float(grid.xs[0]), float(grid.ys[k]), float(grid.zs[0])]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]
        ds.PixelSpacing = [round(px, 6), round(px, 6)]
        ds.SliceThickness = round(plan.slice_mm, 4)
        ds.SpacingBetweenSlices = round(plan.slice_mm, 4)
        ds.SliceLocation = float(grid.ys[k])
        ds.Rows, ds.Columns = pixels.shape[1], pixels.shape[2]
        ds.PixelData = pixels[k].tobytes()
        ds.file_meta = _file_meta(ds.SOPInstanceUID)
        ds.save_as(folder / f"IM{k + 1:06d}", enforce_file_format=True)
    return n


def _base_dataset(common: dict, role: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = MRImageStorage
    ds.Modality = "MR"
    ds.Manufacturer = "SIEMENS"
    ds.ManufacturerModelName = "Avanto"
    ds.MagneticFieldStrength = 1.5
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NORM", "DIS2D"]
    ds.StudyDescription = "WB MRI CNO follow-up"
    ds.StudyID = "1"
    ds.BodyPartExamined = "WHOLEBODY"
    ds.MRAcquisitionType = "2D"
    for key, value in {**common, **SEQUENCES[role]}.items():
        setattr(ds, key, value)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.WindowCenter = 500 if role == "STIR" else 600
    ds.WindowWidth = 1200
    return ds


def _file_meta(sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta
