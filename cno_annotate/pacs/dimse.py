"""A DIMSE PACS through pynetdicom: C-ECHO, C-FIND, C-GET, C-MOVE (with a built-in storage SCP), C-STORE."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
from pydicom import uid as sop
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association

from cno_annotate.pacs.client import Cancelled, InstanceSink, PacsClient
from cno_annotate.pacs.config import PacsError, RetrieveMethod, SeriesFailed
from cno_annotate.pacs.query import SeriesMatch, StudyMatch, StudyQuery, whole_number

#: What an MR study for this tool holds: the images (classic and enhanced MR), what readers and
#: scanners add to such a study (secondary captures, presentation states, key images, reports,
#: raw data placeholders are left out) and the results this tool exchanges (SR, SEG).
STORAGE_CLASSES = [
    sop.MRImageStorage, sop.EnhancedMRImageStorage, sop.EnhancedMRColorImageStorage, sop.LegacyConvertedEnhancedMRImageStorage,
    sop.MRSpectroscopyStorage, sop.SecondaryCaptureImageStorage, sop.MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    sop.GrayscaleSoftcopyPresentationStateStorage, sop.KeyObjectSelectionDocumentStorage,
    sop.Comprehensive3DSRStorage, sop.ComprehensiveSRStorage, sop.EnhancedSRStorage, sop.BasicTextSRStorage,
    sop.SegmentationStorage,
]
#: Storage classes that carry pixel data, offered in compressed transfer syntaxes too.
IMAGE_CLASSES = [
    sop.MRImageStorage, sop.EnhancedMRImageStorage, sop.EnhancedMRColorImageStorage, sop.LegacyConvertedEnhancedMRImageStorage,
    sop.SecondaryCaptureImageStorage, sop.MultiFrameGrayscaleWordSecondaryCaptureImageStorage, sop.SegmentationStorage,
]
UNCOMPRESSED_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian]
#: Compressed (and deflated) transfer syntaxes pydicom decodes (through pylibjpeg, pyjpegls and its own RLE decoder);
#: the store keeps files as they arrive. A PACS such as Orthanc cannot transcode JPEG 2000, so a
#: retrieve must accept instances in the syntax they are stored in.
COMPRESSED_SYNTAXES = [DeflatedExplicitVRLittleEndian, JPEG2000Lossless, JPEG2000, JPEGLosslessSV1, JPEGLossless, JPEGLSLossless, JPEGLSNearLossless,
                       JPEGBaseline8Bit, JPEGExtended12Bit, RLELossless]
#: Transfer syntaxes accepted for incoming instances.
TRANSFER_SYNTAXES = UNCOMPRESSED_SYNTAXES + COMPRESSED_SYNTAXES[1:]
_PENDING = (0xFF00, 0xFF01)
# Query/retrieve and verification SOP classes (pydicom.uid does not name them).
_FIND = UID("1.2.840.10008.5.1.4.1.2.2.1")  # Study Root Q/R Information Model - FIND
_GET = UID("1.2.840.10008.5.1.4.1.2.2.3")  # Study Root Q/R Information Model - GET
_MOVE = UID("1.2.840.10008.5.1.4.1.2.2.2")  # Study Root Q/R Information Model - MOVE
_VERIFICATION = UID("1.2.840.10008.1.1")


def _is_loopback(host: str) -> bool:
    try:
        return all(str(info[4][0]).startswith("127.") or str(info[4][0]) == "::1"
                   for info in socket.getaddrinfo(host, None))
    except OSError:
        return False


class DimsePacs(PacsClient):
    """A DIMSE node (traditional DICOM networking)."""

    def _ae(self) -> AE:
        ae = AE(ae_title=self.node.calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        ae.connection_timeout = self.timeout
        return ae

    @contextmanager
    def _association(self, ae: AE, what: str, **options) -> Iterator[Association]:
        """An established association, released at the end; failures as one-line messages."""
        node = self.node
        assoc = ae.associate(node.host, node.port, ae_title=node.called_ae, **options)
        if not assoc.is_established:
            raise PacsError(self._why_not(assoc, what))
        try:
            yield assoc
        except BaseException:
            if assoc.is_established:
                assoc.abort()
            raise
        if assoc.is_established:
            assoc.release()

    def _why_not(self, assoc: Association, what: str) -> str:
        node = self.node
        where = f"{node.host}:{node.port}"
        if assoc.is_rejected:
            return (f"{node.name}: {what}: {node.called_ae}@{where} rejected the association from calling AE "
                    f"{node.calling_ae!r}: register {node.calling_ae} (this computer's address) in the PACS, or "
                    f"check the PACS's AE title")
        try:
            with socket.create_connection((node.host, node.port), timeout=self.timeout):
                pass
        except ConnectionRefusedError:
            return f"{node.name}: {what}: nothing listens on {where} (is the PACS running, and the port right?)"
        except OSError as exc:
            return f"{node.name}: {what}: cannot reach {where} ({exc.strerror or type(exc).__name__})"
        return (f"{node.name}: {what}: {where} accepted the connection but did not answer as a DICOM node within "
                f"{self.timeout:g} s (is it the DICOM port?)")

    def _query_ae(self, model: str) -> AE:
        ae = self._ae()
        ae.add_requested_context(model)
        return ae

    def echo(self) -> None:
        """C-ECHO."""
        ae = self._ae()
        ae.add_requested_context(_VERIFICATION)
        with self._association(ae, "echo") as assoc:
            status = assoc.send_c_echo()
            code = status.get("Status") if status else None
            if code != 0x0000:
                raise PacsError(f"{self.node.name}: echo: {_status_text(code)}")

    def _find(self, identifier: pydicom.Dataset, what: str) -> list[pydicom.Dataset]:
        with self._association(self._query_ae(_FIND), what) as assoc:
            found = []
            for status, answer in assoc.send_c_find(identifier, _FIND):
                code = status.get("Status") if status else None
                if code in _PENDING and answer is not None:
                    found.append(answer)
                elif code is None:
                    raise PacsError(self._no_answer(what))
                elif code != 0x0000:
                    raise PacsError(f"{self.node.name}: {what}: {_status_text(code)}")
            return found

    def find_studies(self, query: StudyQuery) -> list[StudyMatch]:
        """C-FIND at STUDY level."""
        ds = pydicom.Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = ""
        ds.PatientID = query.patient_id
        ds.PatientName = query.patient_name
        ds.StudyDate = query.date_range
        ds.AccessionNumber = query.accession
        ds.ModalitiesInStudy = query.modality
        ds.StudyDescription = ""
        ds.NumberOfStudyRelatedSeries = None
        ds.NumberOfStudyRelatedInstances = None
        from cno_annotate.pacs.dicomweb import study_from_dataset

        matches = [study_from_dataset(answer) for answer in self._find(ds, "study search")]
        return sorted(matches, key=lambda m: (m.study_date, m.study_uid))

    def find_series(self, study_uid: str) -> list[SeriesMatch]:
        """C-FIND at SERIES level."""
        ds = pydicom.Dataset()
        ds.QueryRetrieveLevel = "SERIES"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = ""
        ds.Modality = ""
        ds.SeriesNumber = None
        ds.SeriesDescription = ""
        ds.NumberOfSeriesRelatedInstances = None
        from cno_annotate.pacs.dicomweb import series_from_dataset

        return [series_from_dataset(answer) for answer in self._find(ds, "series search")]

    def instance_uids(self, study_uid: str, series_uid: str) -> list[str]:
        """C-FIND at IMAGE level."""
        ds = pydicom.Dataset()
        ds.QueryRetrieveLevel = "IMAGE"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ""
        return [str(answer.get("SOPInstanceUID", "")) for answer in self._find(ds, "instance search")]

    def fetch(self, study_uid: str, series_uid: str, sop_uids: list[str] | None,
              sink: InstanceSink, cancelled: Cancelled) -> None:
        """C-GET or C-MOVE, as the node is configured."""
        requests = [_identifier(study_uid, series_uid, None)] if sop_uids is None else \
            [_identifier(study_uid, series_uid, uid) for uid in sop_uids]
        if self.node.retrieve is RetrieveMethod.MOVE:
            self._move(requests, sink, cancelled)
        else:
            self._get(requests, sink, cancelled)

    def _store_handler(self, sink: InstanceSink):
        def on_store(event) -> int:
            try:
                data = event.encoded_dataset(include_meta=True)
                series_uid = str(event.dataset.get("SeriesInstanceUID", ""))
                sink(series_uid, str(event.request.AffectedSOPInstanceUID), data)
            except Exception:  # the PACS gets a failure status; the retrieve's end says how many arrived
                return 0xA700
            return 0x0000
        return on_store

    def _get(self, requests: list[pydicom.Dataset], sink: InstanceSink, cancelled: Cancelled) -> None:
        ae = self._ae()
        ae.add_requested_context(_GET)
        for uid in STORAGE_CLASSES:
            ae.add_requested_context(uid, UNCOMPRESSED_SYNTAXES)
        # The PACS accepts one transfer syntax per presentation context (in the SCP role of a
        # C-GET, the first it likes): each compressed syntax gets a context of its own, so that
        # an instance stored compressed is sent as it is, without transcoding (85 contexts of 128).
        for uid in IMAGE_CLASSES:
            for syntax in COMPRESSED_SYNTAXES:
                ae.add_requested_context(uid, [syntax])
        roles = [build_role(uid, scp_role=True) for uid in STORAGE_CLASSES]
        handlers = [(evt.EVT_C_STORE, self._store_handler(sink))]
        with self._association(ae, "retrieve (C-GET)", ext_neg=roles, evt_handlers=handlers) as assoc:
            for identifier in requests:
                if self._responses(assoc, assoc.send_c_get(identifier, _GET), "retrieve (C-GET)", cancelled):
                    return

    def _move(self, requests: list[pydicom.Dataset], sink: InstanceSink, cancelled: Cancelled) -> None:
        node = self.node
        receiver = AE(ae_title=node.move_destination)
        receiver.acse_timeout = receiver.dimse_timeout = receiver.network_timeout = self.timeout
        for uid in STORAGE_CLASSES:
            receiver.add_supported_context(uid, TRANSFER_SYNTAXES)
        # Listen where the PACS can reach us: loopback for a PACS on this computer, else every interface.
        address = "127.0.0.1" if _is_loopback(node.host) else ""
        message = ""
        try:
            server = receiver.start_server((address, node.move_port), block=False,
                                           evt_handlers=[(evt.EVT_C_STORE, self._store_handler(sink))])
        except OSError as exc:
            server = None
            message = (f"{node.name}: retrieve (C-MOVE): cannot listen on port {node.move_port} "
                       f"({exc.strerror or exc}); choose another with 'pacs add ... --move-port N --replace'")
        if server is None:
            raise PacsError(message or f"{node.name}: retrieve (C-MOVE): the storage SCP did not start")
        try:
            with self._association(self._query_ae(_MOVE), "retrieve (C-MOVE)") as assoc:
                for identifier in requests:
                    answers = assoc.send_c_move(identifier, node.move_destination, _MOVE)
                    if self._responses(assoc, answers, "retrieve (C-MOVE)", cancelled):
                        return
        finally:
            server.shutdown()

    def _responses(self, assoc: Association, answers, what: str, cancelled: Cancelled) -> bool:
        """Follow a C-GET / C-MOVE's responses; True when cancelled (the association is aborted)."""
        for status, _ in answers:
            code = status.get("Status") if status else None
            if code in _PENDING:
                if cancelled():
                    assoc.abort()
                    return True
                continue
            if code == 0xA801 or (code == 0xC000 and self.node.retrieve is RetrieveMethod.MOVE):
                raise PacsError(self._unknown_destination(what, code))
            if code is None:
                if cancelled():
                    return True
                raise PacsError(self._no_answer(what) + "; run the retrieve again to resume")
            failed = whole_number(status.get("NumberOfFailedSuboperations"))
            if code not in (0x0000, 0xB000) or failed:
                comment = str(status.get("ErrorComment", "") or "").strip()
                counts = f"{failed} instance{'s' if failed != 1 else ''} not sent, " if failed else ""
                raise SeriesFailed(f"{_status_text(code)}{': ' if counts or comment else ''}{counts}{comment}"
                                   .rstrip(", "))
        return cancelled()

    def _no_answer(self, what: str) -> str:
        """The PACS accepted the association, then ended it or went silent: most often it refuses the calling AE."""
        node = self.node
        return (f"{node.name}: {what}: the PACS ended the association without answering (or gave no answer within "
                f"{self.timeout:g} s): it may not know calling AE {node.calling_ae!r} (many PACSs answer echo from "
                f"anyone but queries only from registered AEs): register {node.calling_ae} (this computer's "
                f"address) in the PACS, or raise --timeout")

    def _unknown_destination(self, what: str, code: int) -> str:
        """What to do when the PACS does not know (0xA801) or may not know (0xC000) the C-MOVE destination."""
        node, destination = self.node, self.node.move_destination
        why = ("does not know the destination AE" if code == 0xA801
               else "could not process the C-MOVE, as PACSs such as Orthanc answer for an unknown destination AE")
        return (f"{node.name}: {what}: the PACS {why} {destination!r} (0x{code:04X}): register {destination} at "
                f"this computer's address, port {node.move_port}, in the PACS, or use C-GET "
                f"('pacs add {node.name} ... --retrieve get --replace')")

    def send(self, files: list[Path]) -> dict[Path, str]:
        """C-STORE each file, in the transfer syntax it is written in; returns the files refused and why."""
        datasets = [pydicom.dcmread(path) for path in files]
        ae = self._ae()
        for uid in sorted({(str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID)) for d in datasets}):
            ae.add_requested_context(uid[0], [uid[1], ExplicitVRLittleEndian, ImplicitVRLittleEndian]
                                     if uid[1] not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
                                     else [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        refused: dict[Path, str] = {}
        with self._association(ae, "store (C-STORE)") as assoc:
            accepted = {(str(c.abstract_syntax), str(c.transfer_syntax[0])) for c in assoc.accepted_contexts}
            for path, dataset in zip(files, datasets):
                sop_class, syntax = str(dataset.SOPClassUID), str(dataset.file_meta.TransferSyntaxUID)
                if not any(a == sop_class for a, _ in accepted):
                    refused[path] = f"the PACS does not accept its SOP class {_uid_name(sop_class)}"
                    continue
                if (sop_class, syntax) not in accepted and not _uncompressed(syntax, accepted, sop_class):
                    refused[path] = (f"the PACS accepts {_uid_name(sop_class)} but not in its transfer syntax "
                                     f"{_uid_name(syntax)}")
                    continue
                status = assoc.send_c_store(dataset)
                code = status.get("Status") if status else None
                if code not in (0x0000, 0xB000, 0xB007, 0xB006):
                    comment = str(status.get("ErrorComment", "") or "").strip() if status else ""
                    refused[path] = _status_text(code) + (f": {comment}" if comment else "")
                    if code is None or not assoc.is_established:  # the rest cannot go either
                        for rest in files[files.index(path) + 1:]:
                            refused[rest] = "not tried: the association was lost"
                        break
        return refused


def _uncompressed(syntax: str, accepted: set[tuple[str, str]], sop_class: str) -> bool:
    """Whether pynetdicom can send a dataset of ``syntax`` through an accepted uncompressed context."""
    plain = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}
    return syntax in plain and any(a == sop_class and t in plain for a, t in accepted)


def _uid_name(uid: str) -> str:
    """A UID's name when pydicom knows it, else the UID."""
    name = UID(uid).name
    return name if name and name != uid else uid


def _identifier(study_uid: str, series_uid: str, sop_uid: str | None) -> pydicom.Dataset:
    ds = pydicom.Dataset()
    ds.QueryRetrieveLevel = "SERIES" if sop_uid is None else "IMAGE"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    if sop_uid is not None:
        ds.SOPInstanceUID = sop_uid
    return ds


def _status_text(code: int | None) -> str:
    """A DIMSE status as words."""
    if code is None:
        return "no answer (association lost or timed out)"
    known = {0xA700: "out of resources", 0xA701: "out of resources (matches)", 0xA702: "out of resources (sub-operations)",
             0xA900: "identifier does not match the SOP class", 0xC000: "unable to process",
             0x0122: "SOP class not supported", 0xFE00: "cancelled", 0x0124: "not authorised",
             0xA801: "move destination unknown", 0xB000: "some instances failed"}
    return f"the PACS answered 0x{code:04X} ({known.get(code, 'failure')})"
