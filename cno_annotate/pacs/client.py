"""What every PACS connection offers, whatever the protocol (DICOMweb or DIMSE)."""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import pydicom

from cno_annotate.pacs.config import PacsNode
from cno_annotate.pacs.query import SeriesMatch, StudyMatch, StudyQuery

#: Called with (series UID, SOP instance UID, the instance as a DICOM file's bytes) for every
#: instance that arrives; may be called from another thread than the one retrieving.
InstanceSink = Callable[[str, str, bytes], None]
#: Asked between instances: True stops the retrieve.
Cancelled = Callable[[], bool]


class PacsClient(ABC):
    """One PACS node, ready to query, retrieve and store.

    Every failure is a :class:`~cno_annotate.pacs.config.PacsError` with a one-line message.
    """

    def __init__(self, node: PacsNode, timeout: float = 30.0):
        self.node = node
        self.timeout = timeout

    def close(self) -> None:
        """Release network resources (nothing to do for DIMSE: associations end with each call)."""
        return None

    def __enter__(self) -> PacsClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @abstractmethod
    def echo(self) -> None:
        """Check that the PACS answers (C-ECHO, or a QIDO-RS search for one study)."""

    @abstractmethod
    def find_studies(self, query: StudyQuery) -> list[StudyMatch]:
        """The studies matching ``query``."""

    @abstractmethod
    def find_series(self, study_uid: str) -> list[SeriesMatch]:
        """The series of a study (empty: the PACS does not hold it)."""

    @abstractmethod
    def instance_uids(self, study_uid: str, series_uid: str) -> list[str]:
        """The SOP Instance UIDs of a series."""

    @abstractmethod
    def fetch(self, study_uid: str, series_uid: str, sop_uids: list[str] | None,
              sink: InstanceSink, cancelled: Cancelled) -> None:
        """Retrieve a whole series (``sop_uids`` None) or some of its instances, handing each to ``sink``."""

    @abstractmethod
    def send(self, files: list[Path]) -> dict[Path, str]:
        """Store DICOM files (STOW-RS or C-STORE); returns those the PACS refused, with the reason."""


def file_bytes(dataset: pydicom.Dataset) -> bytes:
    """A dataset (with its file meta information) written as a DICOM file's bytes."""
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


def open_client(node: PacsNode, timeout: float = 30.0) -> PacsClient:
    """The client for a node's protocol."""
    from cno_annotate.pacs.config import Protocol

    if node.protocol is Protocol.DICOMWEB:
        from cno_annotate.pacs.dicomweb import DicomWebPacs

        return DicomWebPacs(node, timeout)
    from cno_annotate.pacs.dimse import DimsePacs

    return DimsePacs(node, timeout)
