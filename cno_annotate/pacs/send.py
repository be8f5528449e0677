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


def send_read_sr(store, client: PacsClient, study_uid: str, reader: str, read_id: str) -> str:
    """Export one read as DICOM SR (an audited coordinator export) and store it in the PACS.

    Returns
    -------
    str
        The SR's SOP Instance UID.
    """
    import tempfile

    from cno_annotate.exchange.commands import export_sr

    with tempfile.TemporaryDirectory(prefix="cno-sr-") as folder:
        paths = export_sr(store, study_uid, reader, Path(folder) / "sr", True)
        chosen = [p for p in paths if p.name == f"{read_id}.sr.dcm"]
        if not chosen:
            raise CnoError(f"read {read_id} gave no SR (is it a read of this study and reader?)")
        send_files(client, chosen)
        return str(pydicom.dcmread(chosen[0], stop_before_pixels=True).SOPInstanceUID)
