"""Seeded mutations of real DICOM files, for fuzzing the importer.

Mutations work on the file's bytes, not through pydicom, so that they can
produce what no writer library would: a flipped VR, a length field that lies,
a value that is not a number, a tag that claims a huge size. A tiny element
walker finds the top-level elements (file meta, then the data set in its
transfer syntax) so that a mutation can aim at one attribute.

Used by ``tests/test_fuzz_import.py`` (a small run with a fixed seed) and by
``stress/fuzz_import.py`` (large runs, each file in a child process).
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from pathlib import Path

_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UC", b"UR", b"UT", b"UN"}
_ALL_VRS = [b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"OB",
            b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM",
            b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV"]
_IMPLICIT = b"1.2.840.10008.1.2"
_BIG_ENDIAN = b"1.2.840.10008.1.2.2"
_DEFLATED = b"1.2.840.10008.1.2.1.99"
_UNDEFINED = 0xFFFFFFFF

#: Attributes the importer relies on: (tag, VR).
TARGETS = {
    "Rows": (0x00280010, b"US"), "Columns": (0x00280011, b"US"),
    "BitsAllocated": (0x00280100, b"US"), "BitsStored": (0x00280101, b"US"),
    "HighBit": (0x00280102, b"US"), "PixelRepresentation": (0x00280103, b"US"),
    "SamplesPerPixel": (0x00280002, b"US"), "NumberOfFrames": (0x00280008, b"IS"),
    "PhotometricInterpretation": (0x00280004, b"CS"), "PixelSpacing": (0x00280030, b"DS"),
    "SliceThickness": (0x00180050, b"DS"), "SpacingBetweenSlices": (0x00180088, b"DS"),
    "ImagePositionPatient": (0x00200032, b"DS"), "ImageOrientationPatient": (0x00200037, b"DS"),
    "RescaleSlope": (0x00281053, b"DS"), "RescaleIntercept": (0x00281052, b"DS"),
    "InstanceNumber": (0x00200013, b"IS"), "EchoTime": (0x00180081, b"DS"),
    "SeriesNumber": (0x00200011, b"IS"), "SOPInstanceUID": (0x00080018, b"UI"),
    "StudyInstanceUID": (0x0020000D, b"UI"), "SeriesInstanceUID": (0x0020000E, b"UI"),
    "PatientID": (0x00100020, b"LO"), "PatientName": (0x00100010, b"PN"),
    "SOPClassUID": (0x00080016, b"UI"), "ImageType": (0x00080008, b"CS"),
    "TransferSyntaxUID": (0x00020010, b"UI"),
}

_NUMBERS = [b"NaN", b"nan", b"inf", b"-inf", b"Infinity", b"1e308", b"-1e308", b"1e-300", b"0", b"-1",
            b"abc", b"", b"1e39", b"65535", b"3000000", b"-0", b"1\\2\\3\\4\\5\\6\\7", b"0.000001"]
_SYNTAXES = [b"1.2.840.10008.1.2", b"1.2.840.10008.1.2.1", b"1.2.840.10008.1.2.2", b"1.2.840.10008.1.2.5",
             b"1.2.840.10008.1.2.4.50", b"1.2.840.10008.1.2.4.90", b"1.2.840.10008.1.2.4.80",
             b"1.2.840.10008.1.2.1.99", b"1.2.3.4", b"", b"garbage"]


@dataclass
class Element:
    """One top-level element as it sits in the file."""

    tag: int
    vr: bytes | None  # None when the VR is implicit
    start: int  # first byte of the tag
    value: int  # first byte of the value
    length: int  # the length field as written (may be undefined)
    end: int  # one past the last byte
    length_at: int
    length_size: int
    little: bool


def walk(data: bytes) -> list[Element]:
    """The top-level elements of a DICOM file (meta and data set), as far as they parse."""
    pos = 132 if data[128:132] == b"DICM" else 0
    elements: list[Element] = []
    syntax = b""
    try:
        while pos + 8 <= len(data) and struct.unpack_from("<H", data, pos)[0] == 2:
            element = _element(data, pos, explicit=True, little=True)
            if element.tag == 0x00020010:
                syntax = data[element.value:element.value + element.length].rstrip(b"\0 ")
            elements.append(element)
            pos = element.end
        if syntax == _DEFLATED:
            return elements
        if not syntax:
            vr = data[pos + 4:pos + 6]
            explicit = len(vr) == 2 and vr.isalpha() and vr.isupper()
        else:
            explicit = syntax != _IMPLICIT
        little = syntax != _BIG_ENDIAN
        while pos + 8 <= len(data):
            element = _element(data, pos, explicit, little)
            elements.append(element)
            pos = element.end
    except (struct.error, ValueError):
        pass
    return elements


def _element(data: bytes, pos: int, explicit: bool, little: bool) -> Element:
    e = "<" if little else ">"
    group, number = struct.unpack_from(e + "HH", data, pos)
    tag = group << 16 | number
    if group == 0xFFFE:
        raise ValueError("item outside a sequence")
    if explicit:
        vr = bytes(data[pos + 4:pos + 6])
        if vr in _LONG_VRS:
            length_at, size = pos + 8, 4
        else:
            length_at, size = pos + 6, 2
    else:
        vr, length_at, size = None, pos + 4, 4
    length = struct.unpack_from(e + ("I" if size == 4 else "H"), data, length_at)[0]
    value = length_at + size
    if length == _UNDEFINED:
        end = _skip_undefined(data, value, explicit, little)
    else:
        end = value + length
    if end > len(data):
        raise ValueError("element runs past the end")
    return Element(tag, vr, pos, value, length, end, length_at, size, little)


def _skip_undefined(data: bytes, pos: int, explicit: bool, little: bool, depth: int = 0) -> int:
    """End of an undefined-length sequence or encapsulated pixel data."""
    if depth > 20:
        raise ValueError("too deep")
    e = "<" if little else ">"
    while pos + 8 <= len(data):
        group, number, length = struct.unpack_from(e + "HHI", data, pos)
        if (group, number) == (0xFFFE, 0xE0DD):
            return pos + 8
        if (group, number) != (0xFFFE, 0xE000):
            raise ValueError("not an item")
        pos += 8
        if length != _UNDEFINED:
            pos += length
            continue
        while pos + 8 <= len(data):  # an item of undefined length: elements until the item delimiter
            if struct.unpack_from(e + "HH", data, pos) == (0xFFFE, 0xE00D):
                pos += 8
                break
            inner = _element(data, pos, explicit, little) if not _undefined_at(data, pos, explicit, little) \
                else None
            if inner is None:
                head = 12 if explicit else 8
                pos = _skip_undefined(data, pos + head, explicit, little, depth + 1)
            else:
                pos = inner.end
    raise ValueError("sequence without an end")


def _undefined_at(data: bytes, pos: int, explicit: bool, little: bool) -> bool:
    e = "<" if little else ">"
    if explicit and bytes(data[pos + 4:pos + 6]) in _LONG_VRS:
        return struct.unpack_from(e + "I", data, pos + 8)[0] == _UNDEFINED
    if not explicit:
        return struct.unpack_from(e + "I", data, pos + 4)[0] == _UNDEFINED
    return False


def encode_element(tag: int, vr: bytes, value: bytes, explicit: bool, little: bool) -> bytes:
    """An element's bytes: header plus value padded to even length."""
    if len(value) % 2:
        value += b"\0" if vr in (b"UI", b"OB", b"UN") else b" "
    e = "<" if little else ">"
    head = struct.pack(e + "HH", tag >> 16, tag & 0xFFFF)
    if not explicit:
        return head + struct.pack(e + "I", len(value)) + value
    if vr in _LONG_VRS:
        return head + vr + b"\0\0" + struct.pack(e + "I", len(value)) + value
    return head + vr + struct.pack(e + "H", min(len(value), 0xFFFF)) + value


def _is_explicit(data: bytes, element: Element) -> bool:
    return element.vr is not None


def set_value(data: bytes, elements: list[Element], tag: int, vr: bytes, value: bytes) -> bytes:
    """Replace (or insert, in tag order) one top-level element's value."""
    data_elements = [e for e in elements if (e.tag >> 16) != 2] if (tag >> 16) != 2 else \
        [e for e in elements if (e.tag >> 16) == 2]
    if not data_elements:
        return data
    explicit = data_elements[0].vr is not None or (tag >> 16) == 2
    little = data_elements[0].little
    for element in data_elements:
        if element.tag == tag:
            keep_vr = element.vr or vr
            return data[:element.start] + encode_element(tag, keep_vr, value, explicit, little) + data[element.end:]
        if element.tag > tag:
            return data[:element.start] + encode_element(tag, vr, value, explicit, little) + data[element.start:]
    last = data_elements[-1]
    return data[:last.end] + encode_element(tag, vr, value, explicit, little) + data[last.end:]


def _nasty_value(rng: random.Random, vr: bytes, little: bool) -> bytes:
    e = "<" if little else ">"
    if vr in (b"US", b"SS"):
        choice = rng.choice([0, 1, 7, 0x7FFF, 0x8000, 0xFFFF, rng.randrange(0x10000), -1])
        if choice == -1:
            return rng.choice([b"", b"\x01", b"\x01\x00\x02\x00\x03\x00"])
        return struct.pack(e + "H", choice)
    if vr in (b"UL", b"SL"):
        return struct.pack(e + "I", rng.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 3_000_000]))
    if vr in (b"FL", b"FD"):
        code = "f" if vr == b"FL" else "d"
        return struct.pack(e + code, rng.choice([float("nan"), float("inf"), -float("inf"), 1e38, 0.0]))
    if vr == b"UI":
        return rng.choice([b"", b"1.2.3.4", b"\x00", b"2.25.1", b"not a uid", b"1" * 70] + _SYNTAXES)
    if vr in (b"PN", b"LO", b"SH"):
        return rng.choice([b"OTHER^PATIENT", b"", b"\xff\xfe\xfd", b"=1+2", b"X" * 300, b"\\\\\\"])
    return rng.choice(_NUMBERS)


def _multi_value(rng: random.Random, original: bytes) -> bytes:
    """Damage one component of a backslash-separated value."""
    parts = original.rstrip(b" \0").split(b"\\")
    if not parts:
        return rng.choice(_NUMBERS)
    parts[rng.randrange(len(parts))] = rng.choice(_NUMBERS[:12])
    return b"\\".join(parts)


def mutate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One random mutation of a DICOM file's bytes and a short description of it."""
    elements = walk(data)
    kind = rng.choice(["target", "target", "target", "target", "multi", "vr", "length", "delete",
                       "bytes", "truncate", "pixels", "duplicate", "huge"])
    if kind in ("vr", "length", "delete", "duplicate") and not elements:
        kind = "bytes"
    if kind == "huge":  # a small file that claims a huge image or millions of frames
        little = elements[-1].little if elements else True
        if rng.random() < 0.5:
            side = struct.pack("<H" if little else ">H", rng.choice([0xFFFF, 0x8000, 0x4000]))
            data = set_value(data, elements, TARGETS["Rows"][0], b"US", side)
            data = set_value(data, walk(data), TARGETS["Columns"][0], b"US", side)
            return data, f"Rows = Columns = {struct.unpack('<H' if little else '>H', side)[0]}"
        frames = rng.choice([b"3000000", b"65536", b"100000"])
        return set_value(data, elements, TARGETS["NumberOfFrames"][0], b"IS", frames), f"NumberOfFrames = {frames!r}"
    if kind == "target" or (kind == "multi" and not elements):
        name = rng.choice(sorted(TARGETS))
        tag, vr = TARGETS[name]
        little = elements[-1].little if elements and (tag >> 16) != 2 else True
        value = rng.choice(_SYNTAXES) if name == "TransferSyntaxUID" else _nasty_value(rng, vr, little)
        if rng.random() < 0.15 and name != "TransferSyntaxUID":
            mutated = _delete(data, elements, tag)
            return mutated, f"delete {name}"
        return set_value(data, elements, tag, vr, value), f"{name} = {value[:40]!r}"
    if kind == "multi":
        names = [n for n, (t, _) in TARGETS.items() if any(e.tag == t for e in elements)
                 and TARGETS[n][1] == b"DS"]
        if names:
            name = rng.choice(sorted(names))
            tag, vr = TARGETS[name]
            element = next(e for e in elements if e.tag == tag)
            value = _multi_value(rng, data[element.value:element.end])
            return set_value(data, elements, tag, vr, value), f"{name} = {value[:60]!r}"
        kind = "bytes"
    if kind == "vr":
        explicit = [e for e in elements if e.vr is not None]
        if explicit:
            element = rng.choice(explicit)
            new = rng.choice(_ALL_VRS) if rng.random() < 0.7 else bytes(rng.randrange(256) for _ in range(2))
            at = element.start + 4
            return data[:at] + new + data[at + 2:], f"VR of {element.tag:08X} {element.vr!r} -> {new!r}"
        kind = "bytes"
    if kind == "length":
        element = rng.choice(elements)
        size = element.length_size
        limit = 0xFFFF if size == 2 else 0xFFFFFFFF
        new = rng.choice([0, 1, element.length + 1, element.length + 2, max(0, element.length - 2),
                          limit, limit - 1, rng.randrange(limit)]) & limit
        packed = struct.pack(("<" if element.little else ">") + ("H" if size == 2 else "I"), new)
        at = element.length_at
        return data[:at] + packed + data[at + size:], f"length of {element.tag:08X} {element.length} -> {new}"
    if kind == "delete":
        element = rng.choice(elements)
        return data[:element.start] + data[element.end:], f"delete {element.tag:08X}"
    if kind == "duplicate":
        element = rng.choice(elements)
        chunk = data[element.start:element.end]
        return data[:element.end] + chunk + data[element.end:], f"duplicate {element.tag:08X}"
    if kind == "truncate":
        cut = rng.randrange(1, max(2, len(data)))
        return data[:cut], f"truncate at {cut} of {len(data)}"
    if kind == "pixels":
        pixel = next((e for e in elements if e.tag == 0x7FE00010), None)
        if pixel is not None and pixel.end - pixel.value > 16:
            out = bytearray(data)
            for _ in range(rng.randrange(1, 16)):
                out[rng.randrange(pixel.value, min(pixel.end, pixel.value + 256))] = rng.randrange(256)
            return bytes(out), "pixel data bytes (first 256)"
    out = bytearray(data)
    header_end = next((e.start for e in elements if e.tag == 0x7FE00010), len(data))
    flips = rng.randrange(1, 9)
    for _ in range(flips):
        out[rng.randrange(0, max(1, header_end))] ^= 1 << rng.randrange(8)
    return bytes(out), f"{flips} bit flips in the header"


def _delete(data: bytes, elements: list[Element], tag: int) -> bytes:
    for element in elements:
        if element.tag == tag:
            return data[:element.start] + data[element.end:]
    return data


@dataclass
class Seed:
    """A real file to mutate, with unmutated files of its series imported beside it."""

    name: str
    path: Path
    siblings: list[Path]


def seed_files(repo: Path) -> list[Seed]:
    """Sample-study files (with two siblings each) and pydicom's MR/CT test files."""
    seeds = []
    dicom = repo / "sample_scans" / "wbmri-cno-01" / "DICOM"
    for series in sorted(p for p in dicom.glob("*/*/*") if p.is_dir())[::3]:
        files = sorted(series.iterdir())
        seeds.append(Seed(f"sample/{series.name}", files[len(files) // 2], files[:2]))
    import pydicom.data

    test_files = Path(pydicom.data.__file__).parent / "test_files"
    for name in ["MR_small.dcm", "MR_small_RLE.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm",
                 "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm", "CT_small.dcm",
                 "rtdose_rle.dcm", "JPEG-lossy.dcm", "image_dfl.dcm", "liver_1frame.dcm", "emri_small_RLE.dcm"]:
        if (test_files / name).exists():
            seeds.append(Seed(f"pydicom/{name}", test_files / name, []))
    return seeds
