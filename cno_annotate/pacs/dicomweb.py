"""A DICOMweb PACS through dicomweb-client: QIDO-RS search, WADO-RS retrieve, STOW-RS store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
import requests
from dicomweb_client import DICOMwebClient

from cno_annotate.pacs.client import Cancelled, InstanceSink, PacsClient, file_bytes
from cno_annotate.pacs.config import PacsError, PacsNode, SeriesFailed, credentials_for, env_key
from cno_annotate.pacs.query import SeriesMatch, StudyMatch, StudyQuery, whole_number

_STUDY_FIELDS = ["StudyDescription", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
                 "NumberOfStudyRelatedInstances", "AccessionNumber", "PatientName", "PatientID", "StudyDate"]
# Searches page through the server's own limit with _every_match, not dicomweb-client's get_remaining:
# that pages with offset until an empty answer, and Orthanc's DICOMweb plugin answers a ModalitiesInStudy
# search with the same studies whatever the offset (an endless loop, seen with orthanc-dicomweb 1.7).
#: QIDO-RS JSON tags of the UIDs that tell the matches of a study, series and instance search apart.
_STUDY_UID, _SERIES_UID, _SOP_UID = "0020000D", "0020000E", "00080018"
#: WADO-RS media type: DICOM files in the transfer syntax they are stored in.
_AS_STORED = (("application/dicom", "*"),)
_SERIES_FIELDS = ["SeriesDescription", "SeriesNumber", "Modality", "NumberOfSeriesRelatedInstances"]


class _Session(requests.Session):
    """A session that sends QIDO-RS wildcards (``*``) and name separators (``^``) as themselves.

    requests percent-encodes them; both may stand unencoded in a query (RFC 3986 sub-delimiters),
    and servers such as Orthanc's DICOMweb plugin match ``Wil%2A`` literally (no study found).
    """

    def send(self, request, **kwargs):
        if request.url and "?" in request.url:
            path, query = request.url.split("?", 1)
            request.url = path + "?" + query.replace("%2A", "*").replace("%5E", "^")
        return super().send(request, **kwargs)


class DicomWebPacs(PacsClient):
    """A DICOMweb node; credentials from :func:`~cno_annotate.pacs.config.credentials_for`."""

    def __init__(self, node: PacsNode, timeout: float = 30.0):
        super().__init__(node, timeout)
        credentials = credentials_for(node.name)
        session = _Session()
        session.auth = credentials.basic()
        session.headers.update(credentials.headers())
        self._client = DICOMwebClient(node.url, session=session, timeout=timeout)
        # dicomweb-client retries failed requests with growing waits (a wrong port took minutes
        # to report); a retrieve is resumable, so one attempt and a clear message serve better.
        self._client.set_http_retry_params(retry=False)

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client._session.close()

    @contextmanager
    def _talking(self, what: str, one_series: bool = False) -> Iterator[None]:
        """Turn network and HTTP failures into one-line :class:`PacsError` messages (no credentials).

        With ``one_series``, an HTTP error other than a refusal of the credentials is a
        :class:`SeriesFailed` (the server refused this series; the others may still come).
        """
        try:
            yield
        except requests.exceptions.Timeout:
            raise PacsError(f"{self.node.name}: {what}: no answer from {self.node.url} within "
                            f"{self.timeout:g} s") from None
        except requests.exceptions.SSLError as exc:  # a ConnectionError too: said apart, it is no network fault
            raise PacsError(f"{self.node.name}: {what}: the TLS connection to {self.node.url} failed "
                            f"({_tls_reason(exc)}); if the server's certificate is your own (self-signed or "
                            f"a site CA), set REQUESTS_CA_BUNDLE to the CA certificate file") from None
        except requests.exceptions.ConnectionError:
            raise PacsError(f"{self.node.name}: {what}: cannot connect to {self.node.url} (is the server "
                            "running, and are the host and port right?)") from None
        except requests.exceptions.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            if status in (401, 403):
                key = env_key(self.node.name)
                raise PacsError(f"{self.node.name}: {what}: the server refused the credentials (HTTP {status}); "
                                f"set them in pacs-credentials.json or CNO_PACS_USER_{key} and "
                                f"CNO_PACS_PASSWORD_{key} (or CNO_PACS_TOKEN_{key}; the node name upper-cased, "
                                "other characters than letters and digits as '_')") from None
            reason = exc.response.reason if exc.response is not None else ""
            detail = _error_detail(exc.response)
            if one_series:
                raise SeriesFailed(f"the server answered HTTP {status} {reason}".rstrip() + detail) from None
            raise PacsError(f"{self.node.name}: {what}: the server answered HTTP {status} {reason}".rstrip()
                            + detail) from None
        except requests.exceptions.RequestException as exc:
            raise PacsError(f"{self.node.name}: {what}: {type(exc).__name__}") from None

    def echo(self) -> None:
        """Search for one study (DICOMweb has no echo)."""
        with self._talking("echo"):
            self._client.search_for_studies(limit=1)

    def find_studies(self, query: StudyQuery) -> list[StudyMatch]:
        """QIDO-RS study search."""
        filters = {key: value for key, value in (
            ("PatientID", query.patient_id), ("PatientName", query.patient_name),
            ("StudyDate", query.date_range), ("AccessionNumber", query.accession),
            ("ModalitiesInStudy", query.modality)) if value}
        with self._talking("study search"):
            found = _every_match(lambda **page: self._client.search_for_studies(
                search_filters=filters, fields=_STUDY_FIELDS, **page), _STUDY_UID)
        matches = [_study(pydicom.Dataset.from_json(item)) for item in found]
        return sorted(matches, key=lambda m: (m.study_date, m.study_uid))

    def find_series(self, study_uid: str) -> list[SeriesMatch]:
        """QIDO-RS series search within a study."""
        with self._talking("series search"):
            found = _every_match(lambda **page: self._client.search_for_series(
                study_instance_uid=study_uid, fields=_SERIES_FIELDS, **page), _SERIES_UID)
        return [_series(pydicom.Dataset.from_json(item)) for item in found]

    def instance_uids(self, study_uid: str, series_uid: str) -> list[str]:
        """QIDO-RS instance search within a series."""
        with self._talking("instance search"):
            found = _every_match(lambda **page: self._client.search_for_instances(
                study_instance_uid=study_uid, series_instance_uid=series_uid, **page), _SOP_UID)
        return [str(pydicom.Dataset.from_json(item).get("SOPInstanceUID", "")) for item in found]

    def fetch(self, study_uid: str, series_uid: str, sop_uids: list[str] | None,
              sink: InstanceSink, cancelled: Cancelled) -> None:
        """WADO-RS: a whole series as one multipart stream, or instance by instance, as stored.

        The request asks for the transfer syntax each instance is stored in (``transfer-syntax=*``):
        the default (explicit VR little endian) makes a server such as Orthanc transcode, which
        fails for JPEG 2000 (HTTP 500).
        """
        with self._talking("retrieve", one_series=True):
            if sop_uids is None:
                for dataset in self._client.iter_series(study_uid, series_uid, media_types=_AS_STORED):
                    sink(series_uid, str(dataset.SOPInstanceUID), file_bytes(dataset))
                    if cancelled():
                        return
                return
            for sop_uid in sop_uids:
                if cancelled():
                    return
                dataset = self._client.retrieve_instance(study_uid, series_uid, sop_uid, media_types=_AS_STORED)
                sink(series_uid, sop_uid, file_bytes(dataset))

    def send(self, files: list[Path]) -> dict[Path, str]:
        """STOW-RS, one request per study; returns the files the server refused and why."""
        by_study: dict[str, list[tuple[Path, pydicom.Dataset]]] = {}
        for path in files:
            dataset = pydicom.dcmread(path)
            by_study.setdefault(str(dataset.StudyInstanceUID), []).append((path, dataset))
        refused: dict[Path, str] = {}
        for study_uid, items in by_study.items():
            with self._talking("store"):
                answer = self._client.store_instances([d for _, d in items], study_instance_uid=study_uid)
            by_uid = {str(d.SOPInstanceUID): path for path, d in items}
            for item in answer.get("FailedSOPSequence") or []:
                failed = by_uid.get(str(item.get("ReferencedSOPInstanceUID", "")))
                if failed is not None:
                    code = whole_number(item.get("FailureReason"))
                    refused[failed] = (f"the server refused it (reason 0x{code:04X})" if code is not None
                                     else "the server refused it")
        return refused


def _every_match(search: Callable[..., list[dict]], uid_tag: str) -> list[dict]:
    """Every match of a QIDO-RS search, asked for page by page.

    A server answers at most its own limit of matches per request (dcm4chee's
    QIDO limit, cloud archives' page size), silently. The first request asks
    for everything; while an answer brings new matches, the next asks again
    from ``offset`` = the matches so far, until an answer is empty, shorter than
    the first (the last page) or brings nothing new (a server that ignores the
    offset, as Orthanc's DICOMweb plugin does for ModalitiesInStudy).

    Parameters
    ----------
    search : callable
        Runs the search; called with no argument, then with ``offset=N``.
    uid_tag : str
        The JSON tag of the UID that tells two matches apart (each is kept once).
    """
    found: dict[str, dict] = {}
    page_size = 0
    while True:
        page = search(offset=len(found)) if found else search()
        new = {key: item for item in page if (key := _match_key(item, uid_tag)) not in found}
        found.update(new)
        if not new or (page_size and len(page) < page_size):
            return list(found.values())
        page_size = page_size or len(page)


def _match_key(item: dict, uid_tag: str) -> str:
    """The match's UID (its whole JSON when it has none)."""
    values = (item.get(uid_tag) or {}).get("Value") or []
    return str(values[0]) if values else repr(sorted(item.items()))


def _tls_reason(exc: Exception) -> str:
    """What OpenSSL said went wrong (e.g. 'certificate verify failed: self-signed certificate'), in short."""
    text = str(exc).lower()
    if "wrong version number" in text:
        return "the server does not speak TLS on this port"
    for reason in ("self-signed certificate in certificate chain", "self-signed certificate",
                   "unable to get local issuer certificate", "certificate has expired", "hostname mismatch",
                   "ip address mismatch"):
        if reason in text:
            return f"certificate verify failed: {reason}"
    return "the server's certificate is not trusted"


def _error_detail(response) -> str:
    """The server's one-line reason (Orthanc's JSON "Message"), as ``: reason``, or nothing."""
    try:
        message = str(response.json().get("Message", "")) if response is not None else ""
    except (ValueError, AttributeError):
        message = ""
    message = " ".join(message.split())[:200]
    return f": {message}" if message else ""


def _text(dataset: pydicom.Dataset, keyword: str) -> str:
    value = dataset.get(keyword, "")
    if isinstance(value, pydicom.multival.MultiValue):
        return "\\".join(str(v) for v in value)
    return str(value or "")


def _study(dataset: pydicom.Dataset) -> StudyMatch:
    return StudyMatch(
        study_uid=_text(dataset, "StudyInstanceUID"), patient_id=_text(dataset, "PatientID"),
        patient_name=_text(dataset, "PatientName"), study_date=_text(dataset, "StudyDate"),
        accession=_text(dataset, "AccessionNumber"), description=_text(dataset, "StudyDescription"),
        modalities=_text(dataset, "ModalitiesInStudy"),
        series=whole_number(dataset.get("NumberOfStudyRelatedSeries")),
        instances=whole_number(dataset.get("NumberOfStudyRelatedInstances")))


def _series(dataset: pydicom.Dataset) -> SeriesMatch:
    return SeriesMatch(
        series_uid=_text(dataset, "SeriesInstanceUID"), modality=_text(dataset, "Modality"),
        number=whole_number(dataset.get("SeriesNumber")), description=_text(dataset, "SeriesDescription"),
        instances=whole_number(dataset.get("NumberOfSeriesRelatedInstances")))


study_from_dataset = _study
series_from_dataset = _series
