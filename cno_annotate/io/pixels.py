"""Read the pixels of a slice stack into a :class:`Volume`.

Natively encoded files are read at the pixel offset recorded while indexing
(one read per slice, no second header parse). Compressed files (JPEG,
JPEG-LS, JPEG 2000, RLE) and deflated ones are decoded by pydicom with the
pylibjpeg plugins. Values are rescaled (RescaleSlope/Intercept) to float32
and MONOCHROME1 is inverted so that bright always means high signal.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from cno_annotate.io.dicom_index import tolerant_reading
from cno_annotate.io.series import Stack
from cno_annotate.io.volume import LoadReport, Volume, VolumeHeader

if TYPE_CHECKING:
    from cno_annotate.store.instances import ImageRow

#: Largest float32 volume a stack may make, in bytes (``CNO_ANNOTATE_MAX_VOLUME_MB``).
MAX_VOLUME_BYTES = int(os.environ.get("CNO_ANNOTATE_MAX_VOLUME_MB", "4096")) * 2**20


class DecodeError(Exception):
    """The pixel decoder failed on a file; the message says how."""


def is_decoder_panic(exc: BaseException) -> bool:
    """Whether ``exc`` is a panic of a Rust decoder (pyo3's PanicException).

    pyo3 derives PanicException from BaseException, so ``except Exception``
    does not catch it; it is recognised by its type's name and module so that
    nothing else deriving from BaseException (KeyboardInterrupt, SystemExit)
    is ever swallowed.
    """
    kind = type(exc)
    return kind.__name__ == "PanicException" and kind.__module__ == "pyo3_runtime"


def load_stack(stack: Stack, progress: Callable[[int, int], None] | None = None,
               unusable: Mapping[str, str] | None = None) -> Volume:
    """Read and rescale every slice of a stack.

    Parameters
    ----------
    stack : Stack
        From :func:`cno_annotate.io.series.build_stacks`.
    progress : callable, optional
        Called as ``progress(done, total)`` after each slice.
    unusable : mapping of str to str, optional
        Files not to read (path -> reason): they are listed in ``load.errors``
        and their slices stay 0 (files that no longer hold the indexed image).

    Returns
    -------
    Volume
        float32 voxels; slices missing from the series (gaps) are 0.
        ``load.errors`` lists files that could not be decoded; ``header.gaps`` the gaps.
    """
    size = int(np.prod(stack.shape, dtype=np.int64)) * 4
    if size > MAX_VOLUME_BYTES:
        raise ValueError(
            f"{stack.shape[0]} x {stack.shape[1]} x {stack.shape[2]} voxels ({size / 2**20:,.0f} MB) is above "
            f"the limit of {MAX_VOLUME_BYTES / 2**20:,.0f} MB (set CNO_ANNOTATE_MAX_VOLUME_MB to raise it)"
        )
    out = np.zeros(stack.shape, dtype=np.float32)
    errors: list[dict] = []
    decoded: dict[str, np.ndarray] = {}
    total = len(stack.images)
    unusable = unusable or {}
    for n, (image, k) in enumerate(zip(stack.images, stack.slice_index)):
        problem = _read_slice(out[k], image, decoded) if image.path not in unusable else unusable[image.path]
        if problem:
            errors.append({"path": image.path, "reason": problem})
        if progress is not None:
            progress(n + 1, total)
    volume = Volume(out, stack.affine, header=VolumeHeader(volume_id=stack.volume_id, gaps=tuple(stack.gaps)))
    volume.load = LoadReport(errors=errors)
    return volume


def _read_slice(target: np.ndarray, image: ImageRow, decoded: dict[str, np.ndarray]) -> str:
    """Read one slice into ``target``; the reason it could not be read ("" if it was)."""
    try:
        _store_slice(target, _read_image(image, decoded), image)
    except DecodeError as exc:
        return str(exc)
    except Exception as exc:  # a corrupt slice must not lose the rest
        return f"{type(exc).__name__}: {exc}"
    return ""


def _read_image(image: ImageRow, decoded: dict[str, np.ndarray]) -> np.ndarray:
    rows, columns = image.rows, image.columns
    if image.pixel_offset >= 0:
        dtype = np.dtype(image.dtype)
        count = rows * columns
        offset = image.pixel_offset + image.frame * count * dtype.itemsize
        raw = np.fromfile(image.path, dtype=dtype, count=count, offset=offset)
        if raw.size != count:
            raise ValueError(f"file ends after {raw.size} of {count} pixels")
        return raw.reshape(rows, columns)
    path = image.path
    if path not in decoded:
        decoded.clear()  # keep one multi-frame file in memory at a time
        try:
            decoded[path] = _decode_file(path)
        except Exception as exc:
            raise DecodeError(f"the image decoder failed ({type(exc).__name__}: {exc})") from None
        except BaseException as exc:
            if not is_decoder_panic(exc):
                raise
            raise DecodeError(f"the image decoder crashed (panic: {exc})") from None
    frames = decoded[path]
    frame = frames[image.frame] if frames.ndim == 3 else frames
    if frame.shape != (rows, columns):
        raise DecodeError(f"the decoder gave {frame.shape} pixels, the header declares {(rows, columns)}")
    return frame


def _decode_file(path: str) -> np.ndarray:
    """Every frame of a compressed or deflated file, decoded by pydicom's plugins."""
    import pydicom  # only here: plain files are read without it, and a viewer's start needs none

    with tolerant_reading():
        return pydicom.dcmread(path).pixel_array


def _store_slice(target: np.ndarray, raw: np.ndarray, image: ImageRow) -> None:
    if image.photometric == "MONOCHROME1":
        raw = _invert(raw, image.bits_stored)
    slope, intercept = image.rescale
    if slope == 1.0 and intercept == 0.0:
        target[...] = raw
    else:
        np.multiply(raw, slope, out=target, casting="unsafe")
        target += intercept


def _invert(raw: np.ndarray, bits_stored: int) -> np.ndarray:
    """MONOCHROME1 stores black as the highest value: flip it."""
    if np.issubdtype(raw.dtype, np.signedinteger):
        return -raw.astype(np.int32) - 1
    return (2**bits_stored - 1) - raw.astype(np.int32)
