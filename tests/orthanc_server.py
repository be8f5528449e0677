"""A real Orthanc PACS for the tests and the benchmark: loopback only, free ports, temporary storage.

:class:`Orthanc` writes a temporary JSON configuration (DICOMweb plugin loaded,
HTTP basic authentication on, one registered modality for C-MOVE, unknown
calling AEs refused), starts the Debian ``Orthanc`` program and stops it.
Debian's packages ``orthanc`` and ``orthanc-dicomweb`` provide it (``sh dev
test`` installs them as root).
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

PLUGIN_FOLDER = Path("/usr/share/orthanc/plugins")
USER, PASSWORD = "cno", "orthanc-test-secret"
CALLED_AE = "ORTHANC"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dicomweb_plugin() -> Path | None:
    """The DICOMweb plugin's shared library, if installed."""
    found = sorted(PLUGIN_FOLDER.glob("libOrthancDicomWeb.so*"))
    return found[0] if found else None


def missing() -> str | None:
    """Why Orthanc cannot run here (None: it can)."""
    if not shutil.which("Orthanc"):
        return "Orthanc is missing: install the Debian packages orthanc orthanc-dicomweb (sh dev test does as root)"
    if dicomweb_plugin() is None:
        return f"the DICOMweb plugin is missing from {PLUGIN_FOLDER}: install the Debian package orthanc-dicomweb"
    return None


class Orthanc:
    """One Orthanc process on 127.0.0.1 with a temporary configuration and storage.

    Parameters
    ----------
    folder : Path
        Where the configuration, storage and log go (a temporary folder).
    modalities : dict
        Registered AEs as ``{AE: port}`` on 127.0.0.1 (C-MOVE destinations and allowed callers).
    """

    def __init__(self, folder: Path, modalities: dict[str, int]):
        self.folder = folder
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.modalities = modalities
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The REST API's base URL."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb root URL."""
        return f"{self.url}/dicom-web"

    def configuration(self) -> dict:
        """Orthanc's JSON configuration for this instance."""
        return {
            "Name": "cno-annotate-tests",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "storage"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": CALLED_AE,
            "RemoteAccessAllowed": False,  # loopback only
            "AuthenticationEnabled": True,
            "RegisteredUsers": {USER: PASSWORD},
            "DicomCheckCalledAet": True,
            # Only registered AEs may associate (an unknown calling AE is rejected).
            "DicomAlwaysAllowEcho": False,
            "DicomAlwaysAllowStore": False,
            "DicomAlwaysAllowFind": False,
            "DicomAlwaysAllowGet": False,
            "DicomAlwaysAllowMove": False,
            "DicomModalities": {ae.lower(): [ae, "127.0.0.1", port] for ae, port in self.modalities.items()},
            "Plugins": [str(dicomweb_plugin())],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
            "StableAge": 1,
            "ConcurrentJobs": 2,
            "HttpTimeout": 60,
            "DicomScpTimeout": 30,
        }

    def start(self) -> Orthanc:
        """Start Orthanc and wait until its REST API answers."""
        config = self.folder / "orthanc.json"
        self.folder.mkdir(parents=True, exist_ok=True)
        config.write_text(json.dumps(self.configuration(), indent=2))
        log = (self.folder / "orthanc.log").open("wb")
        self.process = subprocess.Popen(["Orthanc", str(config)], stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc stopped at start: see {self.folder / 'orthanc.log'}")
            try:
                self.get("/system")
                return self
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        raise RuntimeError("Orthanc did not answer within 60 s")

    def stop(self) -> None:
        """Stop Orthanc (terminate, then kill if it does not end)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def _request(self, method: str, path: str, body: bytes | None = None,
                 content_type: str = "application/json") -> bytes:
        request = urllib.request.Request(self.url + path, data=body, method=method)
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        if body is not None:
            request.add_header("Content-Type", content_type)
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.read()

    def get(self, path: str):
        """GET a REST path, decoded from JSON."""
        return json.loads(self._request("GET", path))

    def upload(self, files: list[Path]) -> int:
        """Store DICOM files through the REST API; returns how many."""
        for path in files:
            self._request("POST", "/instances", path.read_bytes(), "application/dicom")
        return len(files)

    def delete_all(self) -> None:
        """Remove every study."""
        for study in self.get("/studies"):
            self._request("DELETE", f"/studies/{study}")

    def delete_instance(self, sop_uid: str) -> None:
        """Remove one instance (by SOP Instance UID)."""
        for item in json.loads(self._request("POST", "/tools/lookup", sop_uid.encode(), "text/plain")):
            if item["Type"] == "Instance":
                self._request("DELETE", item["Path"])

    def study_instances(self, study_uid: str) -> list[str]:
        """The SOP Instance UIDs Orthanc holds for a study."""
        found = json.loads(self._request("POST", "/tools/find", json.dumps(
            {"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}, "Expand": True}).encode()))
        return sorted(item["MainDicomTags"]["SOPInstanceUID"] for item in found)
