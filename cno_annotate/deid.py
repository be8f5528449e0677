"""De-identification of DICOM images for reading packages (DICOM PS3.15 Annex E).

The Basic Application Level Confidentiality Profile with the Clean Descriptors,
Retain Longitudinal Temporal Information with Modified Dates and (when a
reading study shows age and sex) Retain Patient Characteristics options. The
attribute table is data, ``schemas/deid/cno-reading-package-1.0.0.json``: an
allow-list, so anything it does not name (private attributes, overlays,
curves, identifying attributes of Table E.1-1, vendor fields) is removed.

What a package must keep stable across readers is supplied by the caller: the
stand-in of a UID (:class:`Replacements.uid`) and the date offset of a patient
(:class:`Replacements.days`); both come from the coordinator's store, never
from the images.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cache

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import UID

from cno_annotate.annotation.resources import schemas_dir
from cno_annotate.errors import CnoError

PROFILE = "deid/cno-reading-package-1.0.0.json"
#: Option codes (DCM scheme, CID 7050) written into DeidentificationMethodCodeSequence.
BASIC, CLEAN_DESCRIPTORS, MODIFIED_DATES, PATIENT_CHARACTERISTICS = "113100", "113105", "113107", "113108"
#: Attributes whose names feed the cleaning of descriptors (identifying text of the source header).
NAME_ATTRIBUTES = ("PatientName", "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName",
                   "ReferringPhysicianName", "PerformingPhysicianName", "NameOfPhysiciansReadingStudy",
                   "OperatorsName", "RequestingPhysician", "PhysiciansOfRecord", "ResponsiblePerson")
TEXT_ATTRIBUTES = ("PatientID", "OtherPatientIDs", "IssuerOfPatientID", "AccessionNumber", "InstitutionName",
                   "InstitutionAddress", "InstitutionalDepartmentName", "StationName", "StudyID",
                   "PatientAddress", "PatientTelephoneNumbers", "MedicalRecordLocator", "DeviceSerialNumber")
_DATE_SHAPES = re.compile(r"\d{4}[-./]?\d{1,2}[-./]?\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}|\d{5,}")


@dataclass(frozen=True)
class Replacements:
    """What replaces the identifying values of one case.

    Attributes
    ----------
    reading_code : str
        Written as PatientName and PatientID.
    days : int
        Days added to every date of the case (the patient's secret offset; negative shifts back).
    uid : callable
        Source UID -> its stand-in (the same for the same UID in every package of the study).
    patient_characteristics : bool
        Keep sex and age (and the shifted birth date that gives the age), option 113108.
    """

    reading_code: str
    days: int
    uid: Callable[[str], str]
    patient_characteristics: bool = False
    identifiers: tuple[str, ...] = field(default=())


@cache
def profile() -> dict:
    """The attribute table (keyword -> action) and its description."""
    path = schemas_dir() / PROFILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CnoError(f"cannot read the de-identification table {path}: {exc}") from None


def options(patient_characteristics: bool) -> list[str]:
    """The PS3.15 option codes a package applies."""
    codes = [BASIC, CLEAN_DESCRIPTORS, MODIFIED_DATES]
    return codes + [PATIENT_CHARACTERISTICS] if patient_characteristics else codes


def identifying_texts(ds: Dataset) -> list[str]:
    """The identifying strings of a source header, each name also split into its parts.

    These are removed from descriptors (Clean Descriptors). Parts shorter than
    two characters are left out (they would remove letters from any text).
    """
    found: set[str] = set()
    for keyword in NAME_ATTRIBUTES + TEXT_ATTRIBUTES:
        for value in _values(ds.get(keyword)):
            text = str(value).strip()
            if len(text) < 2:
                continue
            found.add(text)
            found.update(p for p in re.split(r"[\^=,\s]+", text) if len(p) >= 2)
    birth = str(ds.get("PatientBirthDate", "") or "")
    found.update(date_spellings(birth))
    return sorted(found, key=len, reverse=True)


def date_spellings(text: str) -> list[str]:
    """A DICOM date (YYYYMMDD) in the spellings people type: 20140307, 2014-03-07, 07.03.2014, 07/03/2014, 03/07/2014."""
    parsed = parse_date(text)
    if parsed is None:
        return []
    y, m, d = f"{parsed.year:04d}", f"{parsed.month:02d}", f"{parsed.day:02d}"
    return [y + m + d, f"{y}-{m}-{d}", f"{d}.{m}.{y}", f"{d}/{m}/{y}", f"{m}/{d}/{y}", f"{y}/{m}/{d}",
            f"{d}-{m}-{y}"]


def parse_date(text: str) -> date | None:
    """A DICOM DA value as a date (None if it is not one)."""
    text = text.strip()
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None


def shift_date(text: str, days: int) -> str:
    """A DA value moved by ``days``; anything that is not a full date becomes empty."""
    parsed = parse_date(text)
    return "" if parsed is None else (parsed + timedelta(days=days)).strftime("%Y%m%d")


def shift_datetime(text: str, days: int) -> str:
    """A DT value whose date part is moved by ``days`` (time and offset kept); empty if it has no full date."""
    text = text.strip()
    moved = shift_date(text[:8], days)
    return moved + text[8:] if moved else ""


#: Words that only lead into an identifier ("geb. 07.03.2014", "vom 10.01.2024", "born on ..."): dropped with it.
_LEAD_INS = frozenset({"geb", "geb.", "geboren", "vom", "von", "am", "born", "dob", "d.o.b.", "on", "of", "pat",
                       "pat.", "patient", "patientin", "name", "nee", "née", "b.", "*"})
_GAP = "\x00"


def clean(text: str, identifiers: Iterable[str]) -> str:
    """A descriptor without the given identifying strings (any case) and without anything shaped like a date or id.

    Punctuation and lead-in words ("geb.", "vom", "born") left beside a removed
    identifier go with it: 'WB-MRT Name, Given geb. 07.03.2014 vom 10.01.2024'
    becomes 'WB-MRT'.
    """
    for value in identifiers:
        text = re.sub(re.escape(value), _GAP, text, flags=re.IGNORECASE)
    text = _DATE_SHAPES.sub(_GAP, text.replace("^", " "))
    tokens = re.findall(f"{_GAP}|[^\\s{_GAP}]+", text)
    changed = True
    while changed:
        changed = False
        for n, token in enumerate(tokens):
            beside_gap = _GAP in (tokens[n - 1] if n else "", tokens[n + 1] if n + 1 < len(tokens) else "")
            if token != _GAP and beside_gap and (not token.strip(",;:.-/()[]") or
                                                 token.lower().strip(",;:()[]") in _LEAD_INS):
                tokens[n], changed = _GAP, True
    return " ".join(t for t in tokens if t != _GAP).strip(" ,;:-/")


def burned_in(ds: Dataset) -> str | None:
    """Why an image may carry identifying text in its pixels (None if nothing says so)."""
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
        return "BurnedInAnnotation is YES"
    if str(ds.get("SOPClassUID", "")).startswith("1.2.840.10008.5.1.4.1.1.7"):
        return "a secondary capture (screen shots carry burned-in text)"
    image_type = [str(v).upper() for v in _values(ds.get("ImageType"))]
    if "SCREEN SAVE" in image_type or "SCREENSHOT" in image_type:
        return "ImageType says it is a screen save"
    return None


def deidentify(source: Dataset, replacements: Replacements) -> Dataset:
    """A de-identified copy of ``source`` (the source is not changed).

    Raises
    ------
    CnoError
        If the image may hold burned-in identifying text (see :func:`burned_in`).
    """
    why = burned_in(source)
    if why:
        raise CnoError(f"left out: {why}")
    identifiers = tuple(replacements.identifiers) or tuple(identifying_texts(source))
    out = _filtered(source, dataclass_replace(replacements, identifiers=identifiers))
    out.BurnedInAnnotation = "NO"
    out.PatientIdentityRemoved = "YES"
    out.LongitudinalTemporalInformationModified = "MODIFIED"
    codes = options(replacements.patient_characteristics)
    out.DeidentificationMethod = "cno-annotate PS3.15 E.1-1 " + " ".join(codes)  # LO: at most 64 characters
    out.DeidentificationMethodCodeSequence = Sequence([_code(c) for c in codes])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = out.SOPClassUID
    meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    meta.TransferSyntaxUID = source.file_meta.TransferSyntaxUID
    out.file_meta = meta
    return out


def dataclass_replace(replacements: Replacements, **changes) -> Replacements:
    """``replacements`` with some fields changed."""
    import dataclasses

    return dataclasses.replace(replacements, **changes)


def _code(value: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = profile()["options"][value].split(" (")[0]
    return item


def _filtered(source: Dataset, r: Replacements) -> Dataset:
    actions: dict[str, str] = profile()["actions"]
    out = Dataset()
    for element in source:
        if element.tag.is_private:
            continue
        keyword = element.keyword
        action = actions.get(keyword)
        if action is None:
            continue  # X: not on the allow-list
        value = element.value
        if action == "K":
            out.add_new(element.tag, element.VR, value)
        elif action == "Q":
            if element.VR == "SQ":
                out.add_new(element.tag, "SQ", Sequence([_filtered(item, r) for item in value or []]))
        elif action == "U":
            out.add_new(element.tag, element.VR, _uids(value, r.uid))
        elif action == "S":
            shift = shift_datetime if element.VR == "DT" else shift_date
            out.add_new(element.tag, element.VR, shift(str(value or ""), r.days))
        elif action == "C":
            out.add_new(element.tag, element.VR, clean(str(value or ""), r.identifiers))
        elif action == "R":
            out.add_new(element.tag, element.VR, r.reading_code)
        elif action == "Z":
            out.add_new(element.tag, element.VR, "")
        elif action == "P":
            out.add_new(element.tag, element.VR, _characteristic(keyword, value, source, r))
    return out


def _characteristic(keyword: str, value, source: Dataset, r: Replacements):
    if not r.patient_characteristics:
        return ""
    if keyword == "PatientBirthDate":
        return shift_date(str(value or ""), r.days)  # moved with the visits: the age survives, the date does not
    return value


def _uids(value, uid: Callable[[str], str]):
    values = [str(v) for v in _values(value)]
    replaced = [v if _registered(v) else uid(v) for v in values if v]
    return replaced if isinstance(value, (list, tuple)) or len(replaced) > 1 else (replaced[0] if replaced else "")


def _registered(value: str) -> bool:
    """Whether a UID is one of the standard's own (a SOP class, transfer syntax...): those are kept."""
    return UID(value).is_valid and UID(value).name != value


def _values(value) -> list:
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple, MultiValue)):
        return list(value)
    return [value]  # a text, number or PersonName (which iterates over its characters)
