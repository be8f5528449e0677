"""NIfTI volumes in and out, converted between NIfTI's RAS and DICOM's LPS.

nibabel's affine maps ``(i, j, k)`` to RAS millimetres; ours maps the same
indices to LPS, so the two differ by a sign flip of x and y. Data arrays are
``[i, j, k]`` in nibabel and ``[k, j, i]`` here.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cno_annotate.fileio import atomic_write
from cno_annotate.io.dicom_index import SkipFile
from cno_annotate.io.volume import Volume

if TYPE_CHECKING:
    import nibabel as nib

NIFTI_SUFFIXES = (".nii", ".nii.gz")
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def is_nifti_path(path: Path) -> bool:
    """Whether a file name says NIfTI."""
    name = path.name.lower()
    return name.endswith(NIFTI_SUFFIXES)


def read_nifti_geometry(path: Path) -> tuple[np.ndarray, tuple[int, int, int]]:
    """LPS affine and ``(k, j, i)`` shape of a 3-D NIfTI file.

    Raises
    ------
    SkipFile
        If the file is unreadable, not 3-D, holds several volumes, declares
        more voxel bytes than an uncompressed file holds, or would make a
        volume above the size limit (``CNO_ANNOTATE_MAX_VOLUME_MB``).
    """
    try:
        image = _load(path)
    except SkipFile:
        raise
    except Exception as exc:
        raise SkipFile(f"unreadable NIfTI file ({type(exc).__name__}: {exc})") from None
    shape = image.shape
    _check_size(path, image)
    if len(shape) > 3 and int(np.prod(shape[3:])) > 1:
        raise SkipFile(f"4D NIfTI with {int(np.prod(shape[3:]))} volumes (not supported: one 3-D volume per file)")
    if len(shape) < 3:
        shape = tuple(shape) + (1,) * (3 - len(shape))
    affine = RAS_TO_LPS @ image.affine
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise SkipFile("NIfTI affine is not invertible")
    return affine, (int(shape[2]), int(shape[1]), int(shape[0]))


def _check_size(path: Path, image: nib.Nifti1Image | nib.Nifti2Image) -> None:
    """Refuse a header whose voxels the file cannot hold or the memory limit refuses.

    An uncompressed file must hold ``vox_offset`` plus the declared voxel
    bytes; a gzipped one cannot be checked without decompressing it, so only
    the size limit applies to it (a cut-off one is caught when it is read).
    """
    header = image.header
    count = int(np.prod([int(n) for n in image.shape], dtype=object))
    declared = count * np.dtype(header.get_data_dtype()).itemsize
    as_float32 = count * 4
    dims = " x ".join(str(int(n)) for n in image.shape)
    from cno_annotate.io import pixels  # (it loads pydicom, which an import of DICOM files may not need)

    if as_float32 > pixels.MAX_VOLUME_BYTES:
        raise SkipFile(
            f"header declares {dims} voxels ({as_float32 / 2**20:,.0f} MB as float32), above the limit of "
            f"{pixels.MAX_VOLUME_BYTES / 2**20:,.0f} MB (set CNO_ANNOTATE_MAX_VOLUME_MB to raise it)"
        )
    if not path.name.lower().endswith(".nii"):
        return
    offset = int(getattr(image.dataobj, "offset", 0))  # the loaded header's vox_offset is reset to 0
    size = path.stat().st_size
    if offset + declared > size:
        raise SkipFile(
            f"truncated NIfTI: header declares {dims} voxels ({declared:,} bytes from offset {offset}) "
            f"but the file has {size:,} bytes"
        )


#: What nibabel's other image classes hold, for the reason a file is skipped.
_OTHER_FORMATS = {
    "Cifti2Image": "a CIFTI-2 file (brain surface and grayordinate data, not a 3-D image): not imported",
    "GiftiImage": "a GIFTI surface file, not a 3-D image: not imported",
}


def _load(path: Path) -> nib.Nifti1Image | nib.Nifti2Image:
    """Open a NIfTI-1 or NIfTI-2 file (header and a lazy data proxy)."""
    import nibabel as nib  # imported on use: it costs about 0.2 s of start-up

    image = nib.load(str(path))
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        raise SkipFile(_OTHER_FORMATS.get(type(image).__name__, "not a 3-D NIfTI image (another neuroimaging format)"))
    return image


def load_nifti(path: Path, volume_id: str = "") -> Volume:
    """Read a 3-D NIfTI file as a float32 :class:`Volume` in LPS.

    Raises
    ------
    SkipFile
        As :func:`read_nifti_geometry`, or if the (gzipped) data end early.
    """
    affine, shape = read_nifti_geometry(path)
    image = _load(path)
    try:
        data = np.asarray(image.dataobj, dtype=np.float32).reshape(shape[::-1])
    except EOFError:
        raise SkipFile("truncated NIfTI: the compressed data end before the voxels the header declares") from None
    except (zlib.error, gzip.BadGzipFile) as exc:
        raise SkipFile(f"corrupt compressed NIfTI data ({exc})") from None
    except ValueError as exc:  # too few bytes for the declared shape
        raise SkipFile(f"incomplete NIfTI data ({exc})") from None
    except MemoryError:
        raise SkipFile(f"not enough memory for {' x '.join(map(str, shape))} voxels") from None
    return Volume(array=np.ascontiguousarray(data.transpose(2, 1, 0)), affine=affine, volume_id=volume_id)


def write_nifti(volume: Volume, path: Path) -> Path:
    """Write a volume as NIfTI-1 (RAS affine, scanner frame), atomically.

    The file is written to a temporary name in the same folder, flushed to
    disk and renamed, so a crash never leaves a half-written file.
    """
    import nibabel as nib

    path = Path(path)
    image = nib.Nifti1Image(volume.array.transpose(2, 1, 0), RAS_TO_LPS @ volume.affine)
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    suffix = ".nii.gz" if path.name.lower().endswith(".gz") else ".nii"
    atomic_write(path, lambda fp: fp.write(image.to_bytes() if suffix == ".nii" else _gzipped(image)), suffix)
    return path


def _gzipped(image) -> bytes:
    return gzip.compress(image.to_bytes(), compresslevel=6, mtime=0)
