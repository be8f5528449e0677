"""Read the pixels of a slice stack into a :class:`Volume`.

Natively encoded files are read at the pixel offset recorded while indexing
(one read per slice, no second header parse). Compressed files (JPEG,
JPEG-LS, JPEG 2000, RLE) and deflated ones are decoded by pydicom with the
pylibjpeg plugins. Values are rescaled (RescaleSlope/Intercept) to float32
and MONOCHROME1 is inverted so that bright always means high signal.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pydicom

from cno_annotate.io.dicom_index import tolerant_reading
from cno_annotate.io.series import Stack
from cno_annotate.io.volume import Volume


def load_stack(stack: Stack, progress: Callable[[int, int], None] | None = None) -> Volume:
    """Read and rescale every slice of a stack.

    Parameters
    ----------
    stack : Stack
        From :func:`cno_annotate.io.series.build_stacks`.
    progress : callable, optional
        Called as ``progress(done, total)`` after each slice.

    Returns
    -------
    Volume
        float32 voxels; slices missing from the series (gaps) are 0.
        ``meta["load_errors"]`` lists files that could not be decoded.
    """
    out = np.zeros(stack.shape, dtype=np.float32)
    errors: list[dict] = []
    decoded: dict[str, np.ndarray] = {}
    total = len(stack.images)
    for n, (image, k) in enumerate(zip(stack.images, stack.slice_index)):
        try:
            raw = _read_image(image, decoded)
            _store_slice(out[k], raw, image)
        except Exception as exc:  # a corrupt slice must not lose the rest
            errors.append({"path": image["path"], "reason": f"{type(exc).__name__}: {exc}"})
        if progress is not None:
            progress(n + 1, total)
    return Volume(
        array=out,
        affine=stack.affine,
        volume_id=stack.volume_id,
        meta={"load_errors": errors, "gaps": stack.gaps},
    )


def _read_image(image: dict, decoded: dict[str, np.ndarray]) -> np.ndarray:
    rows, columns = image["rows"], image["columns"]
    if image["pixel_offset"] >= 0:
        dtype = np.dtype(image["dtype"])
        count = rows * columns
        offset = image["pixel_offset"] + image["frame"] * count * dtype.itemsize
        raw = np.fromfile(image["path"], dtype=dtype, count=count, offset=offset)
        if raw.size != count:
            raise ValueError(f"file ends after {raw.size} of {count} pixels")
        return raw.reshape(rows, columns)
    path = image["path"]
    if path not in decoded:
        decoded.clear()  # keep one multi-frame file in memory at a time
        with tolerant_reading():
            decoded[path] = pydicom.dcmread(path).pixel_array
    frames = decoded[path]
    return frames[image["frame"]] if frames.ndim == 3 else frames


def _store_slice(target: np.ndarray, raw: np.ndarray, image: dict) -> None:
    if image["photometric"] == "MONOCHROME1":
        raw = _invert(raw, image["bits_stored"])
    slope, intercept = image["rescale"]
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
