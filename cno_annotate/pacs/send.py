"""Send results (SR, SEG, any DICOM file) to a PACS."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from cno_annotate.errors import CnoError
from cno_annotate.pacs.client import PacsClient


def send_files(client: PacsClient, files: list[Path]) -> list[Path]:
    """Check that every file is a DICOM file with its SOP class and instance, then store them all.

    Nothing is sent if one file is not usable (the message names it).
    """
    for path in files:
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, AttributeError, EOFError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a DICOM file"
            raise CnoError(f"nothing sent: {path}: {reason}") from None
        if "SOPClassUID" not in dataset or "SOPInstanceUID" not in dataset or "StudyInstanceUID" not in dataset:
            raise CnoError(f"nothing sent: {path}: no SOP class, SOP instance or study UID")
    client.send(list(files))
    return list(files)
