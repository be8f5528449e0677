"""PACS nodes the user registered, and their credentials.

Nodes live in ``pacs.json`` in the per-user configuration folder
(:func:`cno_annotate.paths.config_dir`); that file never holds a secret.
DICOMweb credentials come from the environment (``CNO_PACS_TOKEN_<NAME>``, or
``CNO_PACS_USER_<NAME>`` and ``CNO_PACS_PASSWORD_<NAME>``; ``NAME`` upper-cased,
other characters than letters and digits as ``_``), else from
``pacs-credentials.json`` beside it, which must be readable by its owner only::

    {"schema_version": "pacs-credentials-1.0.0",
     "nodes": {"hospital": {"user": "me", "password": "..."}, "cloud": {"token": "..."}}}

Credentials are never printed: :class:`Credentials` shows as ``<credentials>``.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path

from cno_annotate.errors import CnoError
from cno_annotate.paths import config_dir

SCHEMA_VERSION = "pacs-config-1.0.0"
CREDENTIALS_SCHEMA = "pacs-credentials-1.0.0"
CONFIG_FILE = "pacs.json"
CREDENTIALS_FILE = "pacs-credentials.json"
DEFAULT_CALLING_AE = "CNOANNOTATE"
DEFAULT_MOVE_PORT = 11113
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_AE = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")  # default character repertoire, no backslash


class PacsError(CnoError):
    """A PACS could not be reached or refused a request; the message says what to do."""


class SeriesFailed(PacsError):
    """The PACS refused one series of a retrieve (the others may still come); the message says why."""


class Protocol(Enum):
    """How cno-annotate talks to a PACS."""

    DICOMWEB = "dicomweb"
    DIMSE = "dimse"


class RetrieveMethod(Enum):
    """How a DIMSE node's images are retrieved: C-GET (one association) or C-MOVE (the PACS connects back)."""

    GET = "get"
    MOVE = "move"


def _check_ae(value: str, what: str) -> str:
    if not _AE.fullmatch(value) or not value.strip():
        raise CnoError(f"{what} {value!r} is not an AE title (1 to 16 printable characters, no backslash)")
    return value.strip()


def _check_port(value: int, what: str) -> int:
    if not isinstance(value, int) or not 1 <= value <= 65535:
        raise CnoError(f"{what} {value!r} is not a TCP port (1 to 65535)")
    return value


@dataclass(frozen=True)
class PacsNode:
    """One registered PACS, valid once constructed.

    Parameters
    ----------
    name : str
        The user's name for it (letters, digits, ``.``, ``_``, ``-``).
    protocol : Protocol
        DICOMweb or DIMSE.
    url : str
        DICOMweb root URL (``http://`` or ``https://``); empty for DIMSE.
    called_ae, host, port
        The PACS's AE title, host and port (DIMSE).
    retrieve : RetrieveMethod
        C-GET or C-MOVE (DIMSE).
    calling_ae : str
        This program's AE title (DIMSE), also the C-MOVE destination.
    move_port : int
        Where the built-in storage SCP listens during a C-MOVE.
    move_ae : str
        The C-MOVE destination AE title (empty: ``calling_ae``), as dcmtk's ``movescu --move``.
    """

    name: str
    protocol: Protocol
    url: str = ""
    called_ae: str = ""
    host: str = ""
    port: int = 0
    retrieve: RetrieveMethod = RetrieveMethod.GET
    calling_ae: str = DEFAULT_CALLING_AE
    move_port: int = DEFAULT_MOVE_PORT
    move_ae: str = ""

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise CnoError(f"PACS name {self.name!r}: use 1 to 64 letters, digits, '.', '_' or '-'")
        object.__setattr__(self, "protocol", Protocol(self.protocol))
        object.__setattr__(self, "retrieve", RetrieveMethod(self.retrieve))
        if self.protocol is Protocol.DICOMWEB:
            if re.match(r"https?://[^/]*@", self.url):  # never echo it: it holds a password
                raise CnoError(f"a DICOMweb URL must not hold a user name or password: put them in {CREDENTIALS_FILE} "
                               f"(chmod 600) or CNO_PACS_USER_{env_key(self.name)} and "
                               f"CNO_PACS_PASSWORD_{env_key(self.name)} (see the README's PACS section)")
            if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", self.url):
                raise CnoError(f"DICOMweb URL {self.url!r} must start with http:// or https:// and name a host")
            object.__setattr__(self, "url", self.url.rstrip("/"))
        else:
            object.__setattr__(self, "called_ae", _check_ae(self.called_ae, "PACS AE title"))
            if not self.host or any(c.isspace() for c in self.host):
                raise CnoError(f"PACS host {self.host!r} is not a host name or address")
            _check_port(self.port, "PACS port")
        object.__setattr__(self, "calling_ae", _check_ae(self.calling_ae, "calling AE title"))
        _check_port(self.move_port, "C-MOVE port")
        if self.move_ae:
            object.__setattr__(self, "move_ae", _check_ae(self.move_ae, "C-MOVE destination AE title"))

    @property
    def move_destination(self) -> str:
        """The AE title the PACS sends C-MOVE results to."""
        return self.move_ae or self.calling_ae

    @classmethod
    def dimse(cls, name: str, address: str, **options) -> PacsNode:
        """A DIMSE node from ``AE@HOST:PORT``."""
        match = re.fullmatch(r"(?P<ae>[^@]+)@(?P<host>[^:@]+):(?P<port>\d+)", address)
        if not match:
            raise CnoError(f"DIMSE address {address!r}: write it as AE@HOST:PORT (e.g. ORTHANC@pacs.local:4242)")
        return cls(name, Protocol.DIMSE, called_ae=match["ae"], host=match["host"], port=int(match["port"]),
                   **options)

    @property
    def address(self) -> str:
        """Where the node is: its URL, or ``AE@HOST:PORT``."""
        return self.url if self.protocol is Protocol.DICOMWEB else f"{self.called_ae}@{self.host}:{self.port}"

    def as_dict(self) -> dict:
        """JSON-ready fields (no credentials: nodes never hold any)."""
        data = asdict(self)
        data["protocol"] = self.protocol.value
        data["retrieve"] = self.retrieve.value
        return data

    @classmethod
    def from_dict(cls, data: dict) -> PacsNode:
        """The node a :meth:`as_dict` wrote."""
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**fields)


class Credentials:
    """DICOMweb credentials: HTTP basic (user, password) or a bearer token. Never shown."""

    def __init__(self, user: str = "", password: str = "", token: str = ""):
        self._user, self._password, self._token = user, password, token

    def headers(self) -> dict[str, str]:
        """HTTP headers that carry the token (basic authentication goes through :meth:`basic`)."""
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def basic(self) -> tuple[str, str] | None:
        """``(user, password)`` for HTTP basic authentication, or None."""
        return (self._user, self._password) if self._user else None

    def __bool__(self) -> bool:
        return bool(self._token or self._user)

    def __repr__(self) -> str:
        return "<credentials>"

    __str__ = __repr__


def config_folder() -> Path:
    """The folder that holds ``pacs.json`` and ``pacs-credentials.json``."""
    return Path(config_dir())


def load_nodes() -> dict[str, PacsNode]:
    """Every registered node by name (none if there is no configuration yet)."""
    path = config_folder() / CONFIG_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise CnoError(f"cannot read the PACS configuration {path}: {exc}") from None
    if not isinstance(document, dict) or document.get("schema_version") != SCHEMA_VERSION:
        raise CnoError(f"{path} is not a PACS configuration of version {SCHEMA_VERSION}")
    nodes = [PacsNode.from_dict(item) for item in document.get("nodes", [])]
    return {node.name: node for node in nodes}


def save_nodes(nodes: dict[str, PacsNode]) -> Path:
    """Write the node list (atomically: a crash leaves the old file or the new one)."""
    folder = config_folder()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CONFIG_FILE
    document = {"schema_version": SCHEMA_VERSION, "nodes": [nodes[n].as_dict() for n in sorted(nodes)]}
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".pacs-", suffix=".json")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(document, out, indent=2)
            out.write("\n")
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    return path


def get_node(name: str) -> PacsNode:
    """The registered node ``name``; refused with the names there are."""
    nodes = load_nodes()
    if name not in nodes:
        known = ", ".join(sorted(nodes)) or "none yet: add one with 'cno-annotate pacs add'"
        raise CnoError(f"no PACS named {name!r} (registered: {known})")
    return nodes[name]


def add_node(node: PacsNode, replace: bool = False) -> None:
    """Register a node; an existing name is refused unless ``replace``."""
    nodes = load_nodes()
    if node.name in nodes and not replace:
        raise CnoError(f"a PACS named {node.name!r} is already registered (remove it first, or use --replace)")
    nodes[node.name] = node
    save_nodes(nodes)


def remove_node(name: str) -> None:
    """Forget a node."""
    nodes = load_nodes()
    get_node(name)
    del nodes[name]
    save_nodes(nodes)


def env_key(name: str) -> str:
    """The part of the environment variables' names for node ``name``: upper-cased, other characters than
    letters and digits as ``_`` (``st-mary.pacs`` -> ``ST_MARY_PACS``)."""
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


def credentials_for(name: str) -> Credentials:
    """The DICOMweb credentials of node ``name``: environment first, then the credentials file.

    Raises
    ------
    CnoError
        If the credentials file can be read by group or others, or is not valid.
    """
    key = env_key(name)
    token = os.environ.get(f"CNO_PACS_TOKEN_{key}", "")
    user = os.environ.get(f"CNO_PACS_USER_{key}", "")
    if token or user:
        return Credentials(user=user, password=os.environ.get(f"CNO_PACS_PASSWORD_{key}", ""), token=token)
    path = config_folder() / CREDENTIALS_FILE
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return Credentials()
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CnoError(f"{path} can be read by others: refused; run 'chmod 600 {path}'")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        entry = document["nodes"].get(name) or {}
        if document.get("schema_version") != CREDENTIALS_SCHEMA or not isinstance(entry, dict):
            raise ValueError
        return Credentials(user=str(entry.get("user", "")), password=str(entry.get("password", "")),
                           token=str(entry.get("token", "")))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CnoError(f"{path} is not a credentials file of version {CREDENTIALS_SCHEMA} "
                       "(see the README's PACS section)") from None
