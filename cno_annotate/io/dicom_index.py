"""Index DICOM files by their headers, without decoding pixels.

:func:`index_dicom_file` reads one file's header and returns one
:class:`ImageRecord` per 2-D image (one per frame for enhanced multi-frame
MR), or raises :class:`SkipFile` with the reason the file cannot be used.
For uncompressed pixel data it also records where the pixel bytes start, so
that volumes load later with one read per file and no second header parse.
"""

from __future__ import annotations

import math
import os
import re
import struct
import zlib
from collections.abc import Iterator, MutableSequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from cno_annotate.io.dicom_header import NoElements, PlainHeader, read_plain_header
from cno_annotate.io.volume import is_valid_orientation
from cno_annotate.uids import stable_uid

#: A header as the index reads it: a pydicom Dataset, or a PlainHeader / NoElements of
#: io/dicom_header.py, which answer the same lookups (pydicom stays unimported for those).
Dataset = Any

# pydicom is imported when a file needs it (see dicom_header.py): most files of an import do not.
ImplicitVRLittleEndian = "1.2.840.10008.1.2"
ExplicitVRLittleEndian = "1.2.840.10008.1.2.1"
DeflatedExplicitVRLittleEndian = "1.2.840.10008.1.2.1.99"
ExplicitVRBigEndian = "1.2.840.10008.1.2.2"
MediaStorageDirectoryStorage = "1.2.840.10008.1.3.10"
NATIVE_SYNTAXES = {ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian}
#: Sequences of values, as pydicom gives them (its MultiValue is a MutableSequence) or as lists.
_SEQUENCE_TYPES = (list, tuple, MutableSequence)
_PIXEL_DATA_TAG = 0x7FE00010
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UC", b"UR", b"UT", b"UN"}
_RLE_LOSSLESS = "1.2.840.10008.1.2.5"
#: RLE packs at most 128 equal bytes into 2: no segment decodes to more than 64 times its size.
_RLE_MAX_RATIO = 64

#: Largest decoded pixel data one file may declare (all frames), in bytes. Files above it are
#: refused before anything is allocated; set ``CNO_ANNOTATE_MAX_DECODED_MB`` to change it.
MAX_DECODED_BYTES = int(os.environ.get("CNO_ANNOTATE_MAX_DECODED_MB", "1024")) * 2**20

#: Plausible ranges (mm) for geometry; values outside them make volumes no viewer can show.
SPACING_RANGE_MM = (1e-3, 1e3)
MAX_POSITION_MM = 1e5
#: Rescaled values must stay far inside float32 (voxels are float32).
_MAX_RESCALED = 1e30

#: Header attributes kept per series to classify its sequence (see roles.py).
SEQUENCE_ATTRIBUTES = (
    "ScanningSequence", "SequenceVariant", "ScanOptions", "InversionTime",
    "RepetitionTime", "EchoTime", "ImageType", "SequenceName", "SeriesDescription",
    "ProtocolName", "MagneticFieldStrength", "MRAcquisitionType",
    "EchoPulseSequence", "InversionRecovery", "PulseSequenceName", "EchoPlanarPulseSequence",
    "DiffusionBValue", "SeriesTime", "Manufacturer", "FrameType",
)
_NUMERIC_ATTRIBUTES = {"InversionTime", "RepetitionTime", "EchoTime", "MagneticFieldStrength", "DiffusionBValue"}

#: Where enhanced MR keeps sequence attributes: (functional group sequence, attribute).
_FUNCTIONAL_GROUP_PLACES = {
    "InversionRecovery": ("MRModifierSequence", "InversionRecovery"),
    "InversionTime": ("MRModifierSequence", "InversionTimes"),
    "RepetitionTime": ("MRTimingAndRelatedParametersSequence", "RepetitionTime"),
    "EchoTime": ("MREchoSequence", "EffectiveEchoTime"),
    "DiffusionBValue": ("MRDiffusionSequence", "DiffusionBValue"),
    "FrameType": ("MRImageFrameTypeSequence", "FrameType"),
}
#: Philips' private attributes that say what a series is (pydicom's private dictionary names them):
#: key in the series attributes -> (group, private creator, element offset).
_PHILIPS_SEQUENCE_ATTRIBUTES = {
    "PhilipsTechnique": (0x2001, "Philips Imaging DD 001", 0x20),  # Scanning Technique Description MR: "T1TFE"
    "PhilipsSPIR": (0x2001, "Philips Imaging DD 001", 0x21),  # SPIR (spectral fat suppression): "Y" / "N"
}


_CHARSET_TAG = 0x00080005


class SkipFile(Exception):
    """A file that cannot be imported; the message is the reason."""


class _ConvertedValues:
    """Memoised pydicom value conversion, keyed by the element's raw bytes.

    Converting raw bytes to Python values is most of the cost of indexing,
    and files of one series repeat almost every value byte for byte
    (patient, study, orientation, spacing, sequence parameters). The key is
    (tag, VR, raw bytes, encoding, character set), so a hit returns exactly
    what pydicom would have produced.
    """

    def __init__(self, limit: int = 50_000):
        self.limit = limit
        self.values: dict[tuple, Any] = {}
        self._charset_of: tuple[Dataset | None, Any] = (None, None)

    def get(self, ds: Dataset, keyword: str, default: Any = None) -> Any:
        """The value of ``keyword`` in ``ds`` (``default`` if absent), converted once per distinct raw value."""
        tag = _tag(keyword)
        if tag is None:
            return default
        # The element as read (what ``ds.get_item`` returns, without its per-call tag
        # conversion: this lookup runs about 70 times per file).
        raw = ds._dict.get(tag)
        if raw is None:
            return default
        if not isinstance(raw, _raw_data_element()) or raw.VR == "SQ" or raw.value is None or len(raw.value) > 256:
            value = _convert(ds, tag, keyword)
            return default if value is None else value
        key = (tag, raw.VR, raw.value, raw.is_little_endian, raw.is_implicit_VR, self._charset(ds))
        if key not in self.values:
            if len(self.values) >= self.limit:
                self.values.clear()
            self.values[key] = _convert(ds, tag, keyword)
        value = self.values[key]
        return default if value is None else value

    def _charset(self, ds: Dataset) -> Any:
        """The raw SpecificCharacterSet of ``ds``, looked up once per dataset."""
        last, value = self._charset_of
        if last is not ds:
            value = getattr(ds._dict.get(_CHARSET_TAG), "value", None)
            if value is not None and not isinstance(value, str | bytes):  # a converted MultiValue cannot be a key
                value = tuple(value)
            self._charset_of = (ds, value)
        return value


_converted: _ConvertedValues | None = None


@contextmanager
def header_value_cache(limit: int = 50_000) -> Iterator[None]:
    """Memoise header value conversion for the duration of one import.

    Outside this context values are converted without a memo, so no memory
    outlives the import that filled it.
    """
    global _converted
    previous, _converted = _converted, _ConvertedValues(limit)
    try:
        yield
    finally:
        _converted = previous


@contextmanager
def tolerant_reading() -> Iterator[None]:
    """Read invalid header values as they are, for this call only.

    Clinical files often break value rules (a bad date, an over-long string);
    pydicom's ``reading_validation_mode`` is process-wide, so it is set here
    and restored afterwards instead of changed for every program that imports
    this package.
    """
    import pydicom.config

    settings = pydicom.config.settings
    previous = settings.reading_validation_mode
    settings.reading_validation_mode = pydicom.config.IGNORE
    try:
        yield
    finally:
        settings.reading_validation_mode = previous


def _convert(ds: Dataset, tag, keyword: str) -> Any:
    """An element's value; a damaged element (wrong VR, bad length) is a SkipFile naming it."""
    try:
        return ds[tag].value
    except Exception as exc:  # pydicom raises many types on damaged values
        raise SkipFile(f"unreadable {keyword} ({_short(exc)})") from None


def _short(exc: BaseException, limit: int = 160) -> str:
    """``Type: message`` on one line, cut to ``limit`` characters."""
    message = " ".join(str(exc).split())
    if len(message) > limit:
        message = message[:limit] + "..."
    return f"{type(exc).__name__}: {message}"



@cache
def _raw_data_element() -> Any:
    from pydicom.dataelem import RawDataElement

    return RawDataElement


@cache
def _tag(keyword: str):
    from pydicom.datadict import tag_for_keyword
    from pydicom.tag import BaseTag

    tag = tag_for_keyword(keyword)
    return None if tag is None else BaseTag(tag)


def _get(ds: Dataset, keyword: str, default: Any = None) -> Any:
    """``getattr(ds, keyword, default)``, with conversions memoised during an import."""
    if type(ds) is PlainHeader or type(ds) is NoElements:
        return ds.get(keyword, default)
    if _converted is None:
        tag = _tag(keyword)
        if tag is None or tag not in ds:
            return default
        value = _convert(ds, tag, keyword)
        return default if value is None else value
    return _converted.get(ds, keyword, default)


def _text(ds: Dataset, keyword: str) -> str:
    """An attribute as text, ``""`` when absent or empty."""
    return str(_get(ds, keyword) or "")


@dataclass
class ImageRecord:
    """One 2-D image found in a file: identity, geometry, pixel layout."""

    path: str
    sop_uid: str
    frame: int
    patient: dict[str, str]
    study: dict[str, str]
    series: dict[str, Any]
    position: tuple[float, float, float]
    orientation: tuple[float, ...]
    pixel_spacing: tuple[float, float]
    rows: int
    columns: int
    transfer_syntax: str
    pixel_offset: int  # -1 when pixels must be decoded by pydicom
    frames: int
    dtype: str  # numpy dtype of stored values, e.g. "<u2"
    photometric: str
    bits_stored: int
    rescale: tuple[float, float]  # slope, intercept
    slice_thickness: float
    geometry_known: bool  # False: no patient geometry, stacked by frame/instance order
    echo_time: float | None
    instance_number: int
    extras: dict[str, Any] = field(default_factory=dict)
    #: Values that tell apart images of one series at one position (see :func:`split_values`).
    split_values: dict[str, Any] = field(default_factory=dict)


def read_header(path: Path) -> tuple[Dataset, int]:
    """Read a DICOM header up to the pixel data.

    Returns
    -------
    (Dataset, int)
        The dataset and the byte offset of the PixelData element (-1 if the
        file has none).

    Raises
    ------
    SkipFile
        With the reason: empty, not DICOM, unreadable.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    size = path.stat().st_size
    if size == 0:
        raise SkipFile("empty file (0 bytes)")
    with open(path, "rb") as fp:
        try:
            ds = pydicom.dcmread(fp, stop_before_pixels=True)
        except InvalidDicomError:
            ds = _read_without_preamble(fp)
        except zlib.error as exc:  # a deflated dataset is inflated while its header is read
            raise SkipFile(f"damaged deflated data ({exc})") from None
        except Exception as exc:  # pydicom raises many types on corrupt input
            raise SkipFile(f"unreadable DICOM header ({type(exc).__name__}: {exc})") from None
        if _transfer_syntax(ds) == DeflatedExplicitVRLittleEndian:
            return _read_deflated(path)
        element_start = fp.tell()
        head = fp.read(12)
    if len(head) < 8:
        return ds, -1
    return ds, element_start if _is_pixel_data(head, ds) else -1


def _read_deflated(path: Path) -> tuple[Dataset, int]:
    """A deflated file, read whole: its dataset, pixels included, is one deflate stream.

    The file position where pydicom stopped says nothing about the inflated dataset, so
    the PixelData element is looked up in it; 0 stands for "present" (the pixels of a
    deflated file are always decoded by pydicom, never read at an offset).
    """
    import pydicom

    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # zlib and pydicom raise many types on a damaged stream
        raise SkipFile(f"damaged deflated data ({type(exc).__name__}: {exc})") from None
    return ds, 0 if "PixelData" in ds else -1


def _read_without_preamble(fp) -> Dataset:
    """Accept a dataset with no 128-byte preamble if it looks like an image file."""
    import pydicom

    fp.seek(0)
    try:
        ds = pydicom.dcmread(fp, stop_before_pixels=True, force=True)
    except Exception:
        raise SkipFile("not a DICOM file") from None
    if "SOPInstanceUID" not in ds or "SOPClassUID" not in ds:
        raise SkipFile("not a DICOM file")
    return ds


def _is_pixel_data(head: bytes, ds: Dataset) -> bool:
    group, element = struct.unpack("<HH" if _little_endian(ds) else ">HH", head[:4])
    return (group << 16 | element) == _PIXEL_DATA_TAG


def _little_endian(ds: Dataset) -> bool:
    return _transfer_syntax(ds) != ExplicitVRBigEndian


def _transfer_syntax(ds: Dataset | PlainHeader) -> str:
    meta = getattr(ds, "file_meta", None)
    syntax = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    return str(syntax) if syntax else ImplicitVRLittleEndian


def pixel_value_offset(path: Path, element_start: int, ds: Dataset) -> tuple[int, int]:
    """Offset and length of the PixelData value of a natively encoded file."""
    syntax = _transfer_syntax(ds)
    with open(path, "rb") as fp:
        fp.seek(element_start)
        head = fp.read(12)
    endian = "<" if syntax != ExplicitVRBigEndian else ">"
    if syntax == ImplicitVRLittleEndian:
        return element_start + 8, struct.unpack("<I", head[4:8])[0]
    vr = head[4:6]
    if vr in _LONG_VRS:
        return element_start + 12, struct.unpack(endian + "I", head[8:12])[0]
    return element_start + 8, struct.unpack(endian + "H", head[6:8])[0]


def _pixel_value(path: Path, element_start: int, ds: Dataset | PlainHeader) -> tuple[int, int, int]:
    """Offset and length of the native PixelData value, and the file's size.

    The plain reader saw them while reading the header; a pydicom header is
    followed by one more read of the element's head.
    """
    if type(ds) is PlainHeader and ds.pixel_value is not None:
        return (*ds.pixel_value, ds.file_size)
    return (*pixel_value_offset(path, element_start, ds), path.stat().st_size)


def index_dicom_file(path: Path) -> list[ImageRecord]:
    """Index one file: one record per 2-D image.

    Raises
    ------
    SkipFile
        If the file is not an image this tool can use; the message says why.
        Any failure to parse a damaged header (a wrong VR, a value that is
        not a number, a length that lies) is reported this way too.
    OSError
        If the file cannot be read at all.
    """
    try:
        return _index(path)
    except (SkipFile, OSError, MemoryError):
        raise
    except Exception as exc:  # pydicom converts values lazily: damage surfaces here
        raise SkipFile(f"unreadable DICOM header ({_short(exc)})") from None


def _index(path: Path) -> list[ImageRecord]:
    """The records of one file: from its plain header when it has one, else through pydicom.

    A file the plain reader takes but whose records cannot be made (a SkipFile or any
    error) is read again with pydicom, so every reason given is pydicom's.
    """
    plain = read_plain_header(path)
    if plain is not None:
        try:
            return _records(path, *plain)
        except Exception:  # noqa: BLE001 - read again with pydicom, which gives the reason
            pass
    with tolerant_reading():
        return _records(path, *read_header(path))


def _records(path: Path, ds: Dataset | PlainHeader, element_start: int) -> list[ImageRecord]:
    _reject_non_images(ds)
    syntax = _transfer_syntax(ds)
    _require_decoder(syntax)
    if element_start < 0:
        raise SkipFile("no pixel data (image header without PixelData)")
    rows, columns = _count(ds, "Rows"), _count(ds, "Columns")
    frames = _count(ds, "NumberOfFrames", default=1)
    samples = _count(ds, "SamplesPerPixel", default=1)
    if samples != 1:
        raise SkipFile(f"colour image ({samples} samples per pixel); MR grey-level images only")
    bits = _count(ds, "BitsAllocated")
    dtype = _stored_dtype(ds, bits, syntax)
    declared = rows * columns * frames * (bits // 8)
    _require_size_within_limit(rows, columns, frames, bits, declared)
    offset = -1
    if syntax in NATIVE_SYNTAXES:
        offset, length, size = _pixel_value(path, element_start, ds)
        if length < declared or offset + declared > size:
            raise SkipFile(f"truncated pixel data ({min(length, size - offset)} of {declared} bytes)")
    elif syntax == DeflatedExplicitVRLittleEndian:
        _require_deflated_pixels(ds, declared)
    else:
        _require_encapsulation_end(path)
        _require_plausible_compression(path, element_start, ds, syntax, frames, declared)
    common = _common_fields(path, ds, syntax, offset, frames, dtype)
    geometry = _frame_geometry(ds, frames, common["instance_number"])
    return [
        ImageRecord(**common, frame=n, rows=rows, columns=columns, **geom)
        for n, geom in enumerate(geometry)
    ]


def _require_deflated_pixels(ds: Dataset, declared: int) -> None:
    """The inflated PixelData of a deflated file holds every pixel the header declares."""
    length = len(ds.PixelData)
    if length < declared:
        raise SkipFile(f"truncated pixel data ({length} of {declared} bytes, deflated)")


def _count(ds: Dataset, keyword: str, default: int | None = None) -> int:
    """A positive whole-number attribute (Rows, NumberOfFrames...), or SkipFile naming it."""
    value = _get(ds, keyword)
    if value is None or value == "":
        if default is None:
            raise SkipFile(f"incomplete image header: no {keyword}")
        return default
    try:
        number = float(value) if isinstance(value, str) else value
        if isinstance(number, float) and not number.is_integer():
            raise ValueError
        count = int(number)
    except (TypeError, ValueError, OverflowError):
        raise SkipFile(f"invalid {keyword} {str(value)[:40]!r} (a whole number is required)") from None
    if count < 1:
        raise SkipFile(f"invalid {keyword} {count} (must be at least 1)")
    return count


def _require_size_within_limit(rows: int, columns: int, frames: int, bits: int, declared: int) -> None:
    if declared > MAX_DECODED_BYTES:
        raise SkipFile(
            f"declares {rows} x {columns} pixels x {frames} frame(s) of {bits} bits "
            f"({_megabytes(declared)}), above the import limit of {_megabytes(MAX_DECODED_BYTES)} "
            "(set CNO_ANNOTATE_MAX_DECODED_MB to raise it)"
        )


def _megabytes(size: int) -> str:
    return f"{size / 2**20:,.1f} MB"


def _require_plausible_compression(path: Path, element_start: int, ds: Dataset, syntax: str,
                                   frames: int, declared: int) -> None:
    """Compressed data must hold a fragment per frame (and, for RLE, enough bytes) for what it declares."""
    fragments, data_bytes = _encapsulated_fragments(path, element_start, _little_endian(ds))
    if frames > fragments:
        raise SkipFile(f"declares {frames} frames but holds {fragments} compressed fragment(s)")
    if syntax == _RLE_LOSSLESS and declared > _RLE_MAX_RATIO * data_bytes:
        raise SkipFile(
            f"declares {_megabytes(declared)} of pixels but its {data_bytes} bytes of RLE data "
            f"can hold at most {_megabytes(_RLE_MAX_RATIO * data_bytes)}"
        )


def _encapsulated_fragments(path: Path, element_start: int, little: bool) -> tuple[int, int]:
    """Number of fragments and their total size in encapsulated pixel data (offset table excluded)."""
    endian = "<" if little else ">"
    size = path.stat().st_size
    fragments, total = -1, 0  # the first item is the basic offset table
    with open(path, "rb") as fp:
        fp.seek(element_start + 12)
        while True:
            head = fp.read(8)
            if len(head) < 8:
                raise SkipFile("truncated compressed pixel data (the file ends inside the encapsulated frames)")
            group, element, length = struct.unpack(endian + "HHI", head)
            if (group, element) == (0xFFFE, 0xE0DD):
                return max(fragments, 0), total
            if (group, element) != (0xFFFE, 0xE000) or fp.tell() + length > size:
                raise SkipFile("damaged compressed pixel data (an item header is wrong)")
            fragments += 1
            if fragments > 0:
                total += length
            fp.seek(length, 1)


_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_TAIL_BYTES = 65536


def _require_encapsulation_end(path: Path) -> None:
    """Compressed frames end with a sequence delimiter; a cut file lacks it."""
    size = path.stat().st_size
    with open(path, "rb") as fp:
        fp.seek(max(0, size - _TAIL_BYTES))
        tail = fp.read()
    if _SEQUENCE_DELIMITER not in tail:
        raise SkipFile("truncated compressed pixel data (the file ends inside the encapsulated frames)")


def _reject_non_images(ds: Dataset) -> None:
    meta = getattr(ds, "file_meta", None)
    meta_class = getattr(meta, "MediaStorageSOPClassUID", None)
    # Tolerant reading: some writers name the SOP class and instance only in the file meta.
    sop_class = str(_get(ds, "SOPClassUID", "") or meta_class or "")
    if meta_class == MediaStorageDirectoryStorage or sop_class == MediaStorageDirectoryStorage:
        raise SkipFile("DICOMDIR (media directory, not an image; its files are found by walking the folder)")
    if "SOPInstanceUID" not in ds:
        meta_uid = getattr(meta, "MediaStorageSOPInstanceUID", None)
        if not meta_uid:
            raise SkipFile("no SOPInstanceUID")
        ds.SOPInstanceUID = meta_uid
    if not sop_class:
        raise SkipFile("incomplete DICOM header: no SOPClassUID (truncated file?)")
    if "Rows" not in ds or "Columns" not in ds or "BitsAllocated" not in ds:
        from pydicom.uid import UID

        name = UID(sop_class).name
        overrun = _overrunning_element(ds)
        if overrun:
            raise SkipFile(overrun)
        if "Image Storage" in name:
            raise SkipFile(f"incomplete image header: {name} without Rows / Columns / BitsAllocated")
        raise SkipFile(f"not an image ({name})")
    image_type = [str(v).upper() for v in _as_list(_get(ds, "ImageType", []))]
    if "MOSAIC" in image_type:
        raise SkipFile("Siemens mosaic image (not supported: slices are tiled in one frame)")


#: Text value representations that never hold control characters (PS3.5 6.2), with their longest value.
_SHORT_TEXT_VRS = {"AE": 16, "AS": 4, "CS": 16, "DA": 8, "DS": 16, "DT": 26, "IS": 12, "LO": 64, "PN": 324,
                   "SH": 16, "TM": 14, "UI": 64}
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f]")


def _overrunning_element(ds: Dataset) -> str:
    """The reason a header lost its image attributes to an element whose length field is wrong ("" if none).

    A text element whose declared length runs over the elements after it holds their binary
    tags and lengths: far longer than its VR allows, with control bytes in it.
    """
    for tag in list(ds.keys()):
        element = ds.get_item(tag)
        limit = _SHORT_TEXT_VRS.get(str(getattr(element, "VR", "") or ""))
        value = getattr(element, "value", None)
        if limit is None or value is None:
            continue
        data = value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogateescape")
        body = data.rstrip(b"\x00 ")
        count = max(1, body.count(b"\\") + 1)
        if len(body) > limit * count and _CONTROL_BYTES.search(body):
            from pydicom.datadict import keyword_for_tag

            name = keyword_for_tag(tag) or str(tag)
            return (f"damaged header: the length field of {name} says {len(data)} bytes, which runs over the "
                    f"elements after it (Rows, Columns and the pixel data are lost with them)")
    return ""


def _require_decoder(syntax: str) -> None:
    if syntax in NATIVE_SYNTAXES:
        return
    if syntax == DeflatedExplicitVRLittleEndian:
        return
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    syntax = UID(syntax)
    try:
        available = get_decoder(syntax).is_available
    except (NotImplementedError, ValueError):
        available = False
    if not available:
        name = syntax.name if syntax.is_valid else str(syntax)
        raise SkipFile(f"unsupported transfer syntax {name} ({syntax}): no decoder installed")


def _stored_dtype(ds: Dataset, bits: int, syntax: str) -> str:
    if bits not in (8, 16, 32):
        raise SkipFile(f"unsupported BitsAllocated {bits}")
    signed = int(_get(ds, "PixelRepresentation", 0) or 0) == 1
    endian = ">" if syntax == ExplicitVRBigEndian else "<"
    return f"{endian}{'i' if signed else 'u'}{bits // 8}"


def _common_fields(path, ds, syntax, offset, frames, dtype) -> dict:
    patient = {
        "patient_id": _text(ds, "PatientID"),
        "patient_name": _text(ds, "PatientName"),
        "birth_date": _text(ds, "PatientBirthDate"),
        "sex": _text(ds, "PatientSex"),
    }
    study_uid = _text(ds, "StudyInstanceUID").strip("\0 ") or _missing_study_uid(ds, patient)
    return {
        "path": str(path),
        "sop_uid": str(ds.SOPInstanceUID),
        "patient": patient,
        "study": {
            "study_uid": study_uid,
            "study_date": _text(ds, "StudyDate"),
            "description": _text(ds, "StudyDescription"),
            "accession": _text(ds, "AccessionNumber"),
            "institution": _text(ds, "InstitutionName"),
        },
        "series": {
            "series_uid": _text(ds, "SeriesInstanceUID").strip("\0 ") or _missing_series_uid(ds, patient, study_uid),
            "modality": _text(ds, "Modality"),
            "series_number": _int_or_none(_get(ds, "SeriesNumber", None)),
            "attributes": _sequence_attributes(ds),
        },
        "transfer_syntax": str(syntax),
        "pixel_offset": offset,
        "frames": frames,
        "dtype": dtype,
        "photometric": str(_get(ds, "PhotometricInterpretation", "MONOCHROME2")),
        "bits_stored": int(_get(ds, "BitsStored") or _get(ds, "BitsAllocated")),
        "echo_time": _float_or_none(_get(ds, "EchoTime", None)),
        "instance_number": _int_or_none(_get(ds, "InstanceNumber", None)) or 0,
    }


def _patient_key(patient: dict[str, str]) -> tuple[str, str, str]:
    return (patient["patient_id"], patient["patient_name"], patient["birth_date"])


def _missing_study_uid(ds: Dataset, patient: dict[str, str]) -> str:
    """A stable study key for a file without StudyInstanceUID: one per patient and visit."""
    visit = [_text(ds, k) for k in ("StudyDate", "StudyTime", "AccessionNumber", "StudyID")]
    return stable_uid("study-without-uid", *_patient_key(patient), *visit)


def _missing_series_uid(ds: Dataset, patient: dict[str, str], study_uid: str) -> str:
    """A stable series key for a file without SeriesInstanceUID: one per patient and acquisition."""
    acquisition = [_text(ds, k) for k in ("SeriesNumber", "SeriesDescription", "Modality", "SeriesDate",
                                          "SeriesTime", "ProtocolName")]
    return stable_uid("series-without-uid", *_patient_key(patient), study_uid, *acquisition)


def _frame_geometry(ds: Dataset, frames: int, instance_number: int) -> list[dict]:
    """Geometry and rescale of each frame (classic or enhanced multi-frame)."""
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    per_frame = _get(ds, "PerFrameFunctionalGroupsSequence", None)
    out = []
    for n in range(frames):
        groups = [shared] if shared is not None else []
        if per_frame is not None and n < len(per_frame):
            groups.insert(0, per_frame[n])
        out.append({**_geometry(ds, groups, instance_number + n), "split_values": split_values(ds, groups)})
    return out


#: Private b-value attributes: (group, private creator, element offset, how the value is stored).
_VENDOR_B_VALUES = (
    (0x0019, "SIEMENS MR HEADER", 0x0C, "IS"),
    (0x0043, "GEMS_PARM_01", 0x39, "GE"),
    (0x2001, "Philips Imaging DD 001", 0x03, "FL"),
)


def split_values(ds: Dataset, groups: list[Dataset]) -> dict[str, Any]:
    """Values that tell apart images of one series acquired at one position.

    ``image_type`` (ImageType, or FrameType of enhanced MR), ``b_value``
    (DiffusionBValue, else Siemens (0019,100C), GE (0043,1039) first value,
    Philips (2001,1003)), ``diffusion_direction`` (DiffusionGradientOrientation,
    else Siemens (0019,100E)), ``echo_number``, ``echo_time`` (EchoTime or the
    frame's EffectiveEchoTime), ``temporal_position`` and ``acquisition``
    (the frame's FrameContentSequence for enhanced MR). Absent values are
    left out.
    """
    frame = NoElements()
    frame_type = _lookup(frame, groups, "MRImageFrameTypeSequence", "FrameType") or _get(ds, "ImageType")
    b_value = _lookup(ds, groups, "MRDiffusionSequence", "DiffusionBValue")
    candidates = {
        "image_type": "\\".join(str(v).strip().upper() for v in _as_list(frame_type)) or None,
        "b_value": _float_or_none(b_value) if b_value is not None else _vendor_b_value(ds),
        "diffusion_direction": _diffusion_direction(ds, groups),
        "echo_number": _int_or_none(_first(_get(ds, "EchoNumbers"))),
        "echo_time": _float_or_none(_lookup(frame, groups, "MREchoSequence", "EffectiveEchoTime")
                                    or _get(ds, "EchoTime")),
        "temporal_position": _int_or_none(
            _lookup(frame, groups, "FrameContentSequence", "TemporalPositionIndex")
            or _get(ds, "TemporalPositionIdentifier")),
        "acquisition": _int_or_none(
            _lookup(frame, groups, "FrameContentSequence", "FrameAcquisitionNumber")
            or _get(ds, "AcquisitionNumber")),
    }
    return {k: v for k, v in candidates.items() if v is not None}


def _diffusion_direction(ds: Dataset, groups: list[Dataset]) -> list[float] | None:
    """The diffusion gradient direction (rounded), from the frame, the top level or Siemens' header."""
    value = None
    for group in groups:
        item = _first_item(group, "MRDiffusionSequence")
        inner = _first_item(item, "DiffusionGradientDirectionSequence") if item is not None else None
        if inner is not None and "DiffusionGradientOrientation" in inner:
            value = inner.DiffusionGradientOrientation
            break
    if value is None:
        value = _get(ds, "DiffusionGradientOrientation")
    if value is None:
        value = _private_value(ds, 0x0019, "SIEMENS MR HEADER", 0x0E)
        if isinstance(value, bytes):
            value = struct.unpack("<3d", value) if len(value) == 24 else None
    try:
        direction = [round(float(v), 3) + 0.0 for v in _as_list(value)]
    except (TypeError, ValueError):
        return None
    return direction if len(direction) == 3 and all(np.isfinite(direction)) else None


def _vendor_b_value(ds: Dataset) -> float | None:
    for group, creator, offset, kind in _VENDOR_B_VALUES:
        if kind == "GE" and not _echo_planar(ds):
            continue  # GE fills (0043,1039) on every image; it is a b-value only in diffusion (echo-planar)
        value = _private_value(ds, group, creator, offset)
        if value is None:
            continue
        try:
            if isinstance(value, bytes):
                if kind == "FL" and len(value) == 4:
                    value = struct.unpack("<f", value)[0]
                else:
                    value = value.decode("ascii", "replace").strip("\x00 ").split("\\")[0]
            number = float(_first(value))
        except (TypeError, ValueError, struct.error):
            continue
        if kind == "GE" and number >= 1e9:
            number %= 1e9  # GE adds 10^9 to flag a b-value entered by the operator
        if np.isfinite(number) and number >= 0:
            return number
    return None


def _echo_planar(ds: Dataset) -> bool:
    scanning = [str(v).upper() for v in _as_list(_get(ds, "ScanningSequence"))]
    image_type = [str(v).upper() for v in _as_list(_get(ds, "ImageType"))]
    return "EP" in scanning or "DIFFUSION" in image_type


def _private_value(ds: Dataset, group: int, creator: str, offset: int):
    """A private attribute's value, found through its private creator (blocks 0x10-0x1F)."""
    if type(ds) is PlainHeader:
        return ds.private_value(group, creator, offset)
    for block in range(0x10, 0x20):
        owner = ds.get_item((group << 16) | block)
        if owner is None:
            continue
        name = owner.value
        if isinstance(name, bytes):
            name = name.decode("ascii", "replace")
        if str(name).strip("\x00 ") != creator:
            continue
        tag = (group << 16) | (block << 8) | offset
        return ds[tag].value if tag in ds else None
    return None


def _first(value):
    if isinstance(value, (list, tuple, MutableSequence)):
        return value[0] if len(value) else None
    return value


def _geometry(ds: Dataset, groups: list[Dataset], order: int) -> dict:
    position = _lookup(ds, groups, "PlanePositionSequence", "ImagePositionPatient")
    orientation = _lookup(ds, groups, "PlaneOrientationSequence", "ImageOrientationPatient")
    spacing = _lookup(ds, groups, "PixelMeasuresSequence", "PixelSpacing")
    thickness = _lookup(ds, groups, "PixelMeasuresSequence", "SliceThickness")
    slope = _lookup(ds, groups, "PixelValueTransformationSequence", "RescaleSlope")
    intercept = _lookup(ds, groups, "PixelValueTransformationSequence", "RescaleIntercept")
    if position is None and orientation is None:
        return _unknown_geometry(ds, spacing, thickness, slope, intercept, order)
    if position is None or orientation is None or spacing is None:
        raise SkipFile("incomplete geometry (ImagePositionPatient, ImageOrientationPatient and PixelSpacing must all be present)")
    try:
        position_v = tuple(float(v) for v in position)
        orientation_v = tuple(float(v) for v in orientation)
        spacing_v = tuple(float(v) for v in spacing)
    except (TypeError, ValueError):
        raise SkipFile("unreadable geometry values") from None
    if len(position_v) != 3 or not all(math.isfinite(v) for v in position_v):
        raise SkipFile(f"inconsistent geometry: ImagePositionPatient {list(position)}")
    if not _orthonormal(orientation_v):
        raise SkipFile(f"inconsistent geometry: ImageOrientationPatient {list(orientation)} is not orthonormal")
    if len(spacing_v) != 2 or min(spacing_v) <= 0 or not all(np.isfinite(spacing_v)):
        raise SkipFile(f"inconsistent geometry: PixelSpacing {list(spacing)}")
    _require_in_range("PixelSpacing", spacing_v, *SPACING_RANGE_MM)
    if max(abs(v) for v in position_v) > MAX_POSITION_MM:
        raise SkipFile(f"implausible ImagePositionPatient {list(position)} (beyond {MAX_POSITION_MM:g} mm)")
    return {
        "position": position_v,
        "orientation": orientation_v,
        "pixel_spacing": spacing_v,
        "slice_thickness": _thickness(thickness),
        "rescale": _rescale(ds, slope, intercept),
        "geometry_known": True,
    }


@lru_cache(maxsize=256)
def _orthonormal(orientation: tuple[float, ...]) -> bool:
    """:func:`is_valid_orientation`, once per distinct orientation (a series repeats one)."""
    return is_valid_orientation(np.array(orientation))


def _require_in_range(keyword: str, values: tuple[float, ...], low: float, high: float) -> None:
    if not all(math.isfinite(v) and low <= v <= high for v in values):
        shown = "\\".join(f"{v:g}" for v in values)
        raise SkipFile(f"implausible {keyword} {shown} (must be between {low:g} and {high:g} mm)")


def _number(keyword: str, value) -> float | None:
    """An optional decimal attribute: None when absent, SkipFile when present but not a finite number."""
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple, MutableSequence)):
        if len(value) == 0:
            return None
        value = value[0]
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise SkipFile(f"invalid {keyword} {str(value)[:40]!r} (not a number)") from None
    if not math.isfinite(number):
        raise SkipFile(f"invalid {keyword} {number} (not a finite number)")
    return number


def _thickness(value) -> float:
    thickness = _number("SliceThickness", value)
    if thickness is None or thickness == 0:
        return 0.0
    _require_in_range("SliceThickness", (thickness,), *SPACING_RANGE_MM)
    return thickness


def _rescale(ds: Dataset, slope_value, intercept_value) -> tuple[float, float]:
    """RescaleSlope and RescaleIntercept, refused when rescaled voxels would be NaN, inf or constant."""
    slope = _number("RescaleSlope", slope_value)
    intercept = _number("RescaleIntercept", intercept_value)
    slope = 1.0 if slope is None else slope
    intercept = 0.0 if intercept is None else intercept
    if slope == 0:
        raise SkipFile("invalid RescaleSlope 0 (every voxel would have the same value)")
    bits = _int_or_none(_get(ds, "BitsAllocated")) or 16
    largest = abs(slope) * 2.0 ** min(bits, 32) + abs(intercept)
    if largest > _MAX_RESCALED:
        name = "RescaleSlope" if abs(slope) * 2.0 ** min(bits, 32) > abs(intercept) else "RescaleIntercept"
        raise SkipFile(f"implausible {name} (slope {slope:g}, intercept {intercept:g}: "
                       "rescaled values would overflow)")
    return slope, intercept


def _unknown_geometry(ds: Dataset, spacing, thickness, slope, intercept, order: int) -> dict:
    """An image without patient geometry: stack it by frame or instance order.

    Such images (secondary captures, some projection or stripped test
    images) are kept so they can be viewed, but they carry no patient
    coordinates and are never composed or linked to other series.
    """
    spacing = spacing or _get(ds, "ImagerPixelSpacing", None) or (1.0, 1.0)
    try:
        spacing_v = tuple(float(v) for v in spacing)
    except (TypeError, ValueError):
        raise SkipFile(f"invalid PixelSpacing {str(spacing)[:40]!r} (not numbers)") from None
    if len(spacing_v) != 2:
        raise SkipFile(f"invalid PixelSpacing {list(spacing_v)} (two values are required)")
    _require_in_range("PixelSpacing", spacing_v, *SPACING_RANGE_MM)
    slice_thickness = _thickness(thickness)
    between = _number("SpacingBetweenSlices", _get(ds, "SpacingBetweenSlices", None))
    if between is not None and between != 0:
        _require_in_range("SpacingBetweenSlices", (abs(between),), *SPACING_RANGE_MM)
    step = abs(between or 0.0) or slice_thickness or 1.0
    return {
        "position": (0.0, 0.0, float(order) * step),
        "orientation": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
        "pixel_spacing": spacing_v,
        "slice_thickness": slice_thickness,
        "rescale": _rescale(ds, slope, intercept),
        "geometry_known": False,
    }


def _lookup(ds: Dataset, groups: list[Dataset], sequence: str, keyword: str):
    """Find an attribute in functional groups first, then at the top level."""
    for group in groups:
        item = _first_item(group, sequence)
        if item is not None and keyword in item:
            return item[keyword].value
    return _get(ds, keyword)


def _first_item(ds: Dataset, keyword: str):
    value = _get(ds, keyword)
    if value is None or len(value) == 0:
        return None
    return value[0]


def _sequence_attributes(ds: Dataset) -> dict[str, Any]:
    """The attributes that tell STIR from T1, as plain JSON values.

    Attributes that enhanced MR keeps in functional groups are read there
    when the top level lacks them; ``FromFunctionalGroups`` lists those, so
    that a reason can say where a value came from.
    """
    out: dict[str, Any] = {}
    from_groups, converted = [], []
    for keyword in SEQUENCE_ATTRIBUTES:
        value = _get(ds, keyword)
        if value is None and keyword in _FUNCTIONAL_GROUP_PLACES:
            value = _enhanced_attribute(ds, keyword)
            if value is not None and value != "":
                from_groups.append(keyword)
        if value is None or value == "":
            value = _converted_attribute(ds, keyword)
            if value is not None and value != "":
                converted.append(keyword)
        if value is None or value == "":
            continue
        if keyword in _NUMERIC_ATTRIBUTES:
            number = _float_or_none(value)
            if number is not None:
                out[keyword] = number
        elif isinstance(value, (list, tuple, MutableSequence)):
            out[keyword] = [str(v) for v in value]
        elif isinstance(value, (int, float)):
            out[keyword] = _float_or_none(value)
        else:
            out[keyword] = str(value)
    for keyword, (group, creator, offset) in _PHILIPS_SEQUENCE_ATTRIBUTES.items():
        value = _private_value(ds, group, creator, offset)
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
        if value is not None and str(value).strip("\x00 "):
            out[keyword] = str(value).strip("\x00 ")
    if from_groups:
        out["FromFunctionalGroups"] = from_groups
    if converted:
        out["FromConvertedAttributes"] = converted
    return out


def _converted_attribute(ds: Dataset, keyword: str):
    """An attribute a legacy converted enhanced image keeps in its unassigned converted attributes.

    Legacy Converted Enhanced MR (PS3.3 C.8.13.5 ff., as highdicom's converter writes it) moves the
    classic attributes that fit no functional group into UnassignedSharedConvertedAttributesSequence
    (same in every frame) or UnassignedPerFrameConvertedAttributesSequence (the first frame's is used).
    """
    for group_sequence, item_sequence in (
            ("SharedFunctionalGroupsSequence", "UnassignedSharedConvertedAttributesSequence"),
            ("PerFrameFunctionalGroupsSequence", "UnassignedPerFrameConvertedAttributesSequence")):
        group = _first_item(ds, group_sequence)
        item = _first_item(group, item_sequence) if group is not None else None
        if item is not None and keyword in item:
            return item[keyword].value
    return None


def _enhanced_attribute(ds: Dataset, keyword: str):
    """A sequence attribute that enhanced MR keeps inside functional groups."""
    if type(ds) is PlainHeader:
        return None  # the plain reader leaves files with functional groups to pydicom
    groups = [g for g in (_first_item(ds, "SharedFunctionalGroupsSequence"),
                          _first_item(ds, "PerFrameFunctionalGroupsSequence")) if g is not None]
    value = _lookup(NoElements(), groups, *_FUNCTIONAL_GROUP_PLACES[keyword])
    if isinstance(value, (list, MutableSequence)) and keyword != "FrameType":
        value = value[0] if len(value) else None
    return value


def _as_list(value) -> list:
    if isinstance(value, (list, tuple, MutableSequence)):
        return list(value)
    return [value] if value else []


def _float_or_none(value) -> float | None:
    try:
        if value is None or value == "":
            return None
        if isinstance(value, (list, tuple, MutableSequence)):
            value = value[0]
        return float(value)
    except (TypeError, ValueError):
        return None


def _int_or_none(value) -> int | None:
    """An IS value as int; None when absent, unreadable or outside IS's range (-2**31 to 2**31 - 1)."""
    try:
        number = int(value) if value not in (None, "") else None
    except (TypeError, ValueError, OverflowError):
        return None
    if number is None or not -(2**31) <= number < 2**31:
        return None
    return number
