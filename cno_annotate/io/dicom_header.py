"""A small header reader for the common case: uncompressed little-endian files, no pydicom.

Most files of a clinical MR export are Explicit (or Implicit) VR Little Endian with a
plain header: reading the few attributes the index needs from them directly skips
importing pydicom and building a full dataset per file, which was most of the time of an
import. :func:`read_plain_header` returns ``None`` for anything it does not handle exactly
as pydicom does (another transfer syntax, no preamble, functional groups, a character set
other than ASCII-compatible ones with non-ASCII text, values pydicom would read leniently,
tags out of order...); the caller then reads the file with pydicom. The vendors' private
b-value and diffusion-direction attributes the index reads (Siemens (0019,xx0C/xx0E),
GE (0043,xx39), Philips (2001,xx03)) are read here too, with their private creators, in
the VR the file gives (explicit VR) or pydicom's private dictionary gives (implicit VR);
any other VR for them (UN, OB...) sends the file to pydicom. Values come out as pydicom
converts them (text split on backslashes and stripped the same way, numbers as int and
float), which a test checks on every file of the third-party corpus.
"""

from __future__ import annotations

import os
import re
import struct
from types import SimpleNamespace
from typing import Any

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
PIXEL_DATA_TAG = 0x7FE00010

#: Every top-level attribute the index reads: keyword -> (tag, VR in the DICOM dictionary).
ATTRIBUTES: dict[str, tuple[int, str]] = {
    "SpecificCharacterSet": (0x00080005, "CS"),
    "ImageType": (0x00080008, "CS"),
    "SOPClassUID": (0x00080016, "UI"),
    "SOPInstanceUID": (0x00080018, "UI"),
    "StudyDate": (0x00080020, "DA"),
    "SeriesDate": (0x00080021, "DA"),
    "StudyTime": (0x00080030, "TM"),
    "SeriesTime": (0x00080031, "TM"),
    "AccessionNumber": (0x00080050, "SH"),
    "Modality": (0x00080060, "CS"),
    "Manufacturer": (0x00080070, "LO"),
    "InstitutionName": (0x00080080, "LO"),
    "StudyDescription": (0x00081030, "LO"),
    "SeriesDescription": (0x0008103E, "LO"),
    "FrameType": (0x00089007, "CS"),
    "PatientName": (0x00100010, "PN"),
    "PatientID": (0x00100020, "LO"),
    "PatientBirthDate": (0x00100030, "DA"),
    "PatientSex": (0x00100040, "CS"),
    "ScanningSequence": (0x00180020, "CS"),
    "SequenceVariant": (0x00180021, "CS"),
    "ScanOptions": (0x00180022, "CS"),
    "MRAcquisitionType": (0x00180023, "CS"),
    "SequenceName": (0x00180024, "SH"),
    "SliceThickness": (0x00180050, "DS"),
    "RepetitionTime": (0x00180080, "DS"),
    "EchoTime": (0x00180081, "DS"),
    "InversionTime": (0x00180082, "DS"),
    "EchoNumbers": (0x00180086, "IS"),
    "MagneticFieldStrength": (0x00180087, "DS"),
    "SpacingBetweenSlices": (0x00180088, "DS"),
    "ProtocolName": (0x00181030, "LO"),
    "ImagerPixelSpacing": (0x00181164, "DS"),
    "PulseSequenceName": (0x00189005, "SH"),
    "EchoPulseSequence": (0x00189008, "CS"),
    "InversionRecovery": (0x00189009, "CS"),
    "EchoPlanarPulseSequence": (0x00189018, "CS"),
    "InversionTimes": (0x00189079, "FD"),
    "EffectiveEchoTime": (0x00189082, "FD"),
    "DiffusionBValue": (0x00189087, "FD"),
    "DiffusionGradientOrientation": (0x00189089, "FD"),
    "StudyInstanceUID": (0x0020000D, "UI"),
    "SeriesInstanceUID": (0x0020000E, "UI"),
    "StudyID": (0x00200010, "SH"),
    "SeriesNumber": (0x00200011, "IS"),
    "AcquisitionNumber": (0x00200012, "IS"),
    "InstanceNumber": (0x00200013, "IS"),
    "ImagePositionPatient": (0x00200032, "DS"),
    "ImageOrientationPatient": (0x00200037, "DS"),
    "TemporalPositionIdentifier": (0x00200100, "IS"),
    "TemporalPositionIndex": (0x00209128, "UL"),
    "FrameAcquisitionNumber": (0x00209156, "US"),
    "SamplesPerPixel": (0x00280002, "US"),
    "PhotometricInterpretation": (0x00280004, "CS"),
    "NumberOfFrames": (0x00280008, "IS"),
    "Rows": (0x00280010, "US"),
    "Columns": (0x00280011, "US"),
    "PixelSpacing": (0x00280030, "DS"),
    "BitsAllocated": (0x00280100, "US"),
    "BitsStored": (0x00280101, "US"),
    "PixelRepresentation": (0x00280103, "US"),
    "RescaleIntercept": (0x00281052, "DS"),
    "RescaleSlope": (0x00281053, "DS"),
    "SharedFunctionalGroupsSequence": (0x52009229, "SQ"),
    "PerFrameFunctionalGroupsSequence": (0x52009230, "SQ"),
}
_BY_TAG = {tag: (keyword, vr) for keyword, (tag, vr) in ATTRIBUTES.items()}
#: Private attributes the index reads (vendor b-values and diffusion directions, Philips' scanning technique
#: and SPIR flag): (group, private creator, element offset in the creator's block) -> VR in pydicom's private
#: dictionary.
PRIVATE_ATTRIBUTES: dict[tuple[int, str, int], str] = {
    (0x0019, "SIEMENS MR HEADER", 0x0C): "IS",
    (0x0019, "SIEMENS MR HEADER", 0x0E): "FD",
    (0x0043, "GEMS_PARM_01", 0x39): "IS",
    (0x2001, "Philips Imaging DD 001", 0x03): "FL",
    (0x2001, "Philips Imaging DD 001", 0x20): "LO",
    (0x2001, "Philips Imaging DD 001", 0x21): "CS",
}
#: Element offsets looked at in each private group (the block's creator then decides).
_PRIVATE_OFFSETS = {(group, offset) for group, _, offset in PRIVATE_ATTRIBUTES}
_PRIVATE_GROUPS_READ = {group for group, _, _ in PRIVATE_ATTRIBUTES}
#: VRs in which a private value is converted here (any other goes to pydicom).
_PRIVATE_VRS = {"IS", "DS", "FD", "FL", "LO", "CS"}
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"SV", b"UC", b"UR", b"UT", b"UN", b"UV"}
#: Character sets in which ASCII bytes mean ASCII (non-ASCII text is left to pydicom in any case).
_ASCII_CHARSETS = {"", "ISO_IR 6", "ISO_IR 100", "ISO_IR 192", "ISO 2022 IR 6"}
_INTEGER = re.compile(r"\s*[+-]?\d+\s*\Z")
#: Every two-capital-letter VR, bytes -> text (anything else is no VR).
_VR_TEXT = {bytes((a, b)): chr(a) + chr(b) for a in range(65, 91) for b in range(65, 91)}
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_FIRST_READ = 1 << 14


class Unusual(Exception):
    """The file is not one this reader handles exactly like pydicom; read it with pydicom."""


class PlainHeader:
    """The attributes the index reads from one file, converted as pydicom converts them."""

    def __init__(self, values: dict[str, Any], meta: SimpleNamespace, private: _Private | None = None):
        self._values = values
        self.file_meta = meta
        self._private = private or _Private()
        #: Offset and length of the PixelData value (None: no such element), and the file's size.
        self.pixel_value: tuple[int, int] | None = None
        self.file_size = 0

    def get(self, keyword: str, default: Any = None) -> Any:
        """The value of ``keyword`` (``default`` when absent or empty as pydicom gives None)."""
        if keyword not in ATTRIBUTES:
            raise Unusual(keyword)
        value = self._values.get(keyword)
        return default if value is None else value

    def private_value(self, group: int, creator: str, offset: int) -> Any:
        """A private attribute of :data:`PRIVATE_ATTRIBUTES`, converted as pydicom converts it (None: absent).

        Found as the index finds it in a pydicom dataset: in the first block
        (0x10-0x1F) whose private creator is ``creator``.
        """
        block = self._private.blocks.get((group, creator))
        if block is None:
            return None
        raw = self._private.values.get(group << 16 | block << 8 | offset)
        return None if raw is None else _convert(*raw)

    def __contains__(self, keyword: str) -> bool:
        if keyword not in ATTRIBUTES:
            raise Unusual(keyword)
        return keyword in self._values

    @property
    def SOPInstanceUID(self) -> str:  # noqa: N802 (the DICOM keyword, as on a pydicom Dataset)
        return self._values["SOPInstanceUID"]

    @SOPInstanceUID.setter
    def SOPInstanceUID(self, value: str) -> None:  # noqa: N802
        """Set as the index does for a file that names its instance only in the file meta."""
        self._values["SOPInstanceUID"] = value


class NoElements:
    """An empty header (the frame of a classic image, which has no functional groups)."""

    file_meta = None

    def get(self, keyword: str, default: Any = None) -> Any:
        return default

    def __contains__(self, keyword: str) -> bool:
        return False


def read_plain_header(path) -> tuple[PlainHeader, int] | None:
    """The header of a plain little-endian file and the offset of its PixelData element.

    Returns ``None`` when the file must be read with pydicom instead (see the module notes).
    """
    try:
        with open(path, "rb") as fp:
            data = fp.read(_FIRST_READ)
            while True:
                try:
                    header, start = _parse(data)
                    header.file_size = os.fstat(fp.fileno()).st_size
                    return header, start
                except _NeedMore:
                    more = fp.read(len(data))
                    if not more:
                        return None
                    data += more
    except (Unusual, struct.error, UnicodeDecodeError, ValueError, OverflowError):
        return None


class _NeedMore(Exception):
    """The header goes on beyond the bytes read so far."""


def _parse(data: bytes) -> tuple[PlainHeader, int]:
    if len(data) < 132:
        raise _NeedMore
    if data[128:132] != b"DICM":
        raise Unusual("no preamble")
    meta, pos = _file_meta(data, 132)
    syntax = meta.get("TransferSyntaxUID")
    if syntax not in (EXPLICIT_LE, IMPLICIT_LE):
        raise Unusual("transfer syntax")
    explicit = syntax == EXPLICIT_LE
    raw: dict[int, tuple[str, bytes]] = {}
    private = _Private()
    last_tag = -1
    size = len(data)
    unpack_from = struct.unpack_from
    while True:
        if pos + 12 > size:
            raise _NeedMore
        if explicit:
            group, element, vr_bytes, length = unpack_from("<HH2sH", data, pos)
            if vr_bytes in _LONG_VRS:
                length, start = unpack_from("<I", data, pos + 8)[0], pos + 12
            else:
                start = pos + 8
            vr = _VR_TEXT.get(vr_bytes, "?")
        else:
            group, element, length = unpack_from("<HHI", data, pos)
            vr, start = "", pos + 8
        tag = group << 16 | element
        if tag == PIXEL_DATA_TAG:
            pixel_value = (start, length)
            break
        if vr == "?" or tag <= last_tag or group == 0xFFFE or group == 0x0002 or group == 0x7FE0:
            raise Unusual("element VR, order or group")
        last_tag = tag
        private_read = group in _PRIVATE_GROUPS_READ and (
            0x10 <= element <= 0xFF or (element >= 0x1000 and (group, element & 0xFF) in _PRIVATE_OFFSETS))
        if length == _UNDEFINED:
            if vr not in ("SQ", "") or tag in _BY_TAG or private_read:
                raise Unusual("undefined length")
            pos = _skip_sequence(data, start, explicit)
            continue
        end = start + length
        if end > size:
            raise _NeedMore
        known = _BY_TAG.get(tag)
        if known is not None:
            if explicit and vr != known[1]:
                raise Unusual("VR differs from the dictionary")
            raw[tag] = (known[1], data[start:end])
        elif private_read:
            private.keep(tag, vr, data[start:end])
        pos = end
    header = PlainHeader(_convert_all(raw), _meta_namespace(meta), private)
    header.pixel_value = pixel_value
    return header, pos


class _Private:
    """Private creators met in the groups the index reads, and the private attributes it reads."""

    def __init__(self) -> None:
        #: Creator text of each block met: (group << 16 | block) -> creator.
        self.creators: dict[int, str] = {}
        #: The first block (0x10-0x1F) of each (group, creator), as the index looks them up.
        self.blocks: dict[tuple[int, str], int] = {}
        #: Attributes of PRIVATE_ATTRIBUTES found: tag -> (VR to convert in, bytes).
        self.values: dict[int, tuple[str, bytes]] = {}

    def keep(self, tag: int, vr: str, value: bytes) -> None:
        """Keep a private creator, or a private attribute the index reads with the VR to convert it in.

        Creators (gggg,0010-00FF) come before the elements of their block (tags
        are in order), so an element's creator is known when the element is met.
        """
        group, element = tag >> 16, tag & 0xFFFF
        if element <= 0xFF:
            if vr not in ("LO", ""):
                raise Unusual("private creator VR")
            name = _ascii(value).strip("\0 ")
            self.creators[tag] = name
            if element <= 0x1F:
                self.blocks.setdefault((group, name), element)
            return
        creator = self.creators.get(group << 16 | element >> 8)
        known = PRIVATE_ATTRIBUTES.get((group, creator, element & 0xFF)) if creator is not None else None
        if known is None:
            return
        vr = vr or known  # implicit VR: pydicom takes it from its private dictionary
        if vr not in _PRIVATE_VRS:
            raise Unusual(f"private attribute {tag:08X} in VR {vr}")
        self.values[tag] = (vr, value)


def _element_head(data: bytes, pos: int, explicit: bool) -> tuple[str, int, int]:
    """(VR, value length, value start) of the element at ``pos`` (VR "" in implicit VR)."""
    if not explicit:
        return "", struct.unpack_from("<I", data, pos + 4)[0], pos + 8
    vr = data[pos + 4:pos + 6]
    if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
        raise Unusual("not a VR")
    if vr in _LONG_VRS:
        if pos + 12 > len(data):
            raise _NeedMore
        return vr.decode(), struct.unpack_from("<I", data, pos + 8)[0], pos + 12
    return vr.decode(), struct.unpack_from("<H", data, pos + 6)[0], pos + 8


def _skip_sequence(data: bytes, pos: int, explicit: bool) -> int:
    """The position after a sequence of undefined length that starts at ``pos``."""
    while True:
        if pos + 8 > len(data):
            raise _NeedMore
        group, element, length = struct.unpack_from("<HHI", data, pos)
        tag = group << 16 | element
        pos += 8
        if tag == _SEQUENCE_END:
            return pos
        if tag != _ITEM:
            raise Unusual("not an item")
        if length != _UNDEFINED:
            pos += length
            continue
        pos = _skip_item(data, pos, explicit)


def _skip_item(data: bytes, pos: int, explicit: bool) -> int:
    """The position after an item of undefined length whose elements start at ``pos``."""
    while True:
        if pos + 8 > len(data):
            raise _NeedMore
        group, element = struct.unpack_from("<HH", data, pos)
        if group << 16 | element == _ITEM_END:
            return pos + 8
        vr, length, start = _element_head(data, pos, explicit)
        if length == _UNDEFINED:
            if vr not in ("SQ", ""):
                raise Unusual("undefined length")
            pos = _skip_sequence(data, start, explicit)
        else:
            pos = start + length
        if pos > len(data):
            raise _NeedMore


def _file_meta(data: bytes, pos: int) -> tuple[dict[str, str], int]:
    """The file meta elements the index reads (always Explicit VR Little Endian), and where the dataset starts."""
    wanted = {0x00020002: "MediaStorageSOPClassUID", 0x00020003: "MediaStorageSOPInstanceUID",
              0x00020010: "TransferSyntaxUID"}
    meta: dict[str, str] = {}
    while True:
        if pos + 8 > len(data):
            raise _NeedMore
        group, element = struct.unpack_from("<HH", data, pos)
        if group != 0x0002:
            return meta, pos
        vr, length, start = _element_head(data, pos, True)
        if length == _UNDEFINED or start + length > len(data):
            raise Unusual("file meta")
        name = wanted.get(group << 16 | element)
        if name is not None:
            if vr != "UI":
                raise Unusual("file meta VR")
            meta[name] = _ascii(data[start:start + length]).rstrip("\0 ")
        pos = start + length


def _meta_namespace(meta: dict[str, str]) -> SimpleNamespace:
    names = ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID")
    return SimpleNamespace(**{n: meta.get(n) for n in names})


def _convert_all(raw: dict[int, tuple[str, bytes]]) -> dict[str, Any]:
    charset = raw.get(ATTRIBUTES["SpecificCharacterSet"][0])
    if charset is not None and _ascii(charset[1]).strip("\0 ") not in _ASCII_CHARSETS:
        raise Unusual("character set")
    values: dict[str, Any] = {}
    for tag, (vr, value) in raw.items():
        keyword = _BY_TAG[tag][0]
        if vr == "SQ":
            raise Unusual("functional groups")
        key = (vr, value)
        converted = _CONVERTED.get(key, _MISSING)
        if converted is _MISSING:
            if len(_CONVERTED) >= _CONVERTED_LIMIT:
                _CONVERTED.clear()
            converted = _CONVERTED[key] = _convert(vr, value)
        values[keyword] = converted
    return values


#: Converted values by (VR, bytes): files of one series repeat nearly every value. Values
#: are shared between headers, never changed (the index only reads them).
_CONVERTED: dict[tuple[str, bytes], Any] = {}
_CONVERTED_LIMIT = 20_000
_MISSING = object()


def _ascii(value: bytes) -> str:
    if b"\x1b" in value:
        raise Unusual("escape sequence")
    return value.decode("ascii")  # UnicodeDecodeError: non-ASCII text goes to pydicom


def _convert(vr: str, value: bytes) -> Any:
    """A value as pydicom converts it (``None`` where pydicom gives an empty number)."""
    if not value:
        return None if vr in ("DS", "IS", "US", "UL", "FD", "FL") else ""
    if vr in ("US", "UL", "FD", "FL"):
        code = {"US": "H", "UL": "I", "FD": "d", "FL": "f"}[vr]
        size = struct.calcsize(code)
        if len(value) % size:
            raise Unusual("length")
        numbers = list(struct.unpack(f"<{len(value) // size}{code}", value))
        return numbers[0] if len(numbers) == 1 else numbers
    text = _ascii(value)
    if vr in ("DS", "IS"):
        items = text.strip().rstrip(" \x00").split("\\")
        if vr == "IS":
            if not all(_INTEGER.match(item) for item in items):
                raise Unusual("IS")
            numbers = [int(item) for item in items]
        else:
            if "\x00" in text or any(not item.strip() for item in items):
                raise Unusual("DS")
            numbers = [float(item) for item in items]
        return numbers[0] if len(numbers) == 1 else numbers
    if vr in ("SH", "LO"):
        parts = [part.rstrip("\0 ") for part in text.split("\\")]
    elif vr == "PN":
        parts = text.rstrip("\x00 ").split("\\")
    else:  # CS, DA, TM, UI
        parts = text.rstrip(" \x00").split("\\")
    return parts[0] if len(parts) == 1 else parts
