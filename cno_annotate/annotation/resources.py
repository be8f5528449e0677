"""Find and validate the project's data files (``schemas/``).

Every JSON document the tool reads (the site taxonomy, scoring schemes,
exported reads) is validated against its JSON Schema before use; a failure
names the file, the JSON path of the offending field and why.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from cno_annotate.datafiles import data_dir
from cno_annotate.errors import CnoError

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
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CnoError(f"{path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise CnoError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CnoError(f"{path}: cannot read ({exc})") from None


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
    document = read_json(path)
    version = document.get("schema_version") if isinstance(document, dict) else None
    name = versioned_schema(base, str(version))
    if not isinstance(version, str) or not (schemas_dir() / name).exists():
        raise CnoError(f"{path}: $.schema_version: unknown {base} schema version {version!r}")
    validate(document, name, str(path))
    return document


def load_json(path: Path, schema_name: str) -> dict:
    """Read a JSON file and validate it against a schema of ``schemas/``.

    Raises
    ------
    CnoError
        If the file is missing, not JSON, or fails the schema.
    """
    document = read_json(path)
    validate(document, schema_name, str(path))
    return document
