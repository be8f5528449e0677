"""Find and validate the project's data files (``schemas/``).

Every JSON document the tool reads (the site taxonomy, scoring schemes,
exported reads) is validated against its JSON Schema before use; a failure
names the file, the JSON path of the offending field and why.

A data file that passed its schema is remembered by content: the SHA-256 of
its bytes, of the schema's bytes and of the validator's version is a marker
file in the per-user cache (``validated/``), and the same bytes against the
same schema are not validated again (jsonschema is then not even imported,
which is a sixth of the viewer's start). Only passes are remembered; a file
that changes by one byte is validated afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cno_annotate.datafiles import data_dir
from cno_annotate.errors import CnoError
from cno_annotate.paths import user_cache_dir

if TYPE_CHECKING:
    import jsonschema

#: The per-user cache folder's subfolder of validation markers.
VALIDATED_FOLDER = "validated"

SCHEMAS_ENV = "CNO_ANNOTATE_SCHEMAS"


def schemas_dir() -> Path:
    """The ``schemas/`` folder: ``$CNO_ANNOTATE_SCHEMAS``, else the installed copy.

    Raises
    ------
    CnoError
        If it cannot be found.
    """
    if os.environ.get(SCHEMAS_ENV):
        folder = Path(os.environ[SCHEMAS_ENV])
    else:
        folder = data_dir("schemas")
    if not folder.is_dir():
        raise CnoError(f"the schemas folder is not at {folder}; reinstall the package or set {SCHEMAS_ENV}")
    return folder


@cache
def _validator(schema_name: str) -> jsonschema.protocols.Validator:
    import jsonschema  # only when a document is validated: the start of the viewer validates none it knows

    path = schemas_dir() / schema_name
    schema = json.loads(path.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def validation_errors(document: Any, schema_name: str) -> list[str]:
    """Every way ``document`` breaks the schema, as 'JSON path: reason' lines."""
    errors = sorted(_validator(schema_name).iter_errors(document), key=lambda e: list(e.absolute_path))
    return [f"{e.json_path}: {e.message}" for e in errors]


def validate(document: Any, schema_name: str, source: str) -> None:
    """Raise :class:`CnoError` naming ``source``, the first offending JSON path and why."""
    errors = validation_errors(document, schema_name)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise CnoError(f"{source}: {errors[0]}{more}")


def read_json(path: Path) -> Any:
    """Read a JSON file.

    Raises
    ------
    CnoError
        If the file is missing, unreadable or not JSON (with line and column).
    """
    return _parse(path, _read_bytes(path))


def _read_bytes(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise CnoError(f"{path}: no such file") from None
    except OSError as exc:
        raise CnoError(f"{path}: cannot read ({exc})") from None


def _parse(path: Path, data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except json.JSONDecodeError as exc:
        raise CnoError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except UnicodeDecodeError as exc:
        raise CnoError(f"{path}: cannot read ({exc})") from None


def _validator_version() -> str:
    """Where the installed jsonschema lies and when it was written (found without importing it)."""
    spec = find_spec("jsonschema")
    origin = spec.origin if spec is not None and spec.origin else ""
    try:
        stat = os.stat(origin)
    except OSError:
        return origin
    return f"{origin}:{stat.st_size}:{stat.st_mtime_ns}"


def _validated_marker(data: bytes, schema_name: str) -> Path | None:
    """The cache marker of ``data`` having passed ``schema_name`` as it is now (None: no schema to key on)."""
    try:
        schema = (schemas_dir() / schema_name).read_bytes()
    except (OSError, CnoError):
        return None
    key = hashlib.sha256()
    for part in (data, schema_name.encode("utf-8"), schema, _validator_version().encode("utf-8")):
        key.update(hashlib.sha256(part).digest())
    return Path(user_cache_dir()) / VALIDATED_FOLDER / key.hexdigest()


def _validate_file(document: Any, data: bytes, schema_name: str, source: str) -> None:
    """:func:`validate` a file's document, skipped when these very bytes passed this very schema before."""
    marker = _validated_marker(data, schema_name)
    if marker is not None and marker.is_file():
        return
    validate(document, schema_name, source)
    if marker is not None:
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        except OSError:
            pass  # a cache that cannot be written costs a validation next time, nothing else


def versioned_schema(base: str, version: str) -> str:
    """The schema file for a document version: ``base.schema.json`` for 1.0.0, else ``base-<version>.schema.json``.

    Released schema files are never edited; a new version is a new file.
    """
    return f"{base}.schema.json" if version == "1.0.0" else f"{base}-{version}.schema.json"


def load_versioned_json(path: Path, base: str) -> dict:
    """Read a data file and validate it against the schema version it declares.

    Raises
    ------
    CnoError
        If the file is missing, not JSON, names an unknown schema version, or fails its schema.
    """
    data = _read_bytes(path)
    document = _parse(path, data)
    version = document.get("schema_version") if isinstance(document, dict) else None
    name = versioned_schema(base, str(version))
    if not isinstance(version, str) or not (schemas_dir() / name).exists():
        raise CnoError(f"{path}: $.schema_version: unknown {base} schema version {version!r}")
    _validate_file(document, data, name, str(path))
    return document


def load_json(path: Path, schema_name: str) -> dict:
    """Read a JSON file and validate it against a schema of ``schemas/``.

    Raises
    ------
    CnoError
        If the file is missing, not JSON, or fails the schema.
    """
    data = _read_bytes(path)
    document = _parse(path, data)
    _validate_file(document, data, schema_name, str(path))
    return document
