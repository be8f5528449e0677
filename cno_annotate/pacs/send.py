"""Send results (SR, SEG, any DICOM file) to a PACS."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from cno_annotate.errors import CnoError
from cno_annotate.pacs.client import PacsClient


def send_files(client: PacsClient, files: list[Path]) -> tuple[list[Path], dict[Path, str]]:
    """Check that every file is a DICOM file with its SOP class and instance, then store them all.

    Nothing is sent if one file is not usable (the message names it).

    Returns
    -------
    sent : list of Path
        The files the PACS stored.
    refused : dict
        The files the PACS refused (SOP class, transfer syntax, a failure status), with the reason.
    """
    for path in files:
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, AttributeError, EOFError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a DICOM file"
            raise CnoError(f"nothing sent: {path}: {reason}") from None
        if "SOPClassUID" not in dataset or "SOPInstanceUID" not in dataset or "StudyInstanceUID" not in dataset:
            raise CnoError(f"nothing sent: {path}: no SOP class, SOP instance or study UID")
    refused = client.send(list(files))
    return [path for path in files if path not in refused], refused


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
        _, refused = send_files(client, chosen)
        if refused:
            raise CnoError(f"{client.node.name}: the SR was not sent: {next(iter(refused.values()))}")
        return str(pydicom.dcmread(chosen[0], stop_before_pixels=True).SOPInstanceUID)
