"""The commands other packages add to the command line, found without reading every package's metadata.

A package adds a command through an entry point of the ``cno_annotate.commands``
group (the viewer's ``view``). Looking entry points up imports
``importlib.metadata`` and reads the metadata of every installed package: about
25 ms of every start of such a command, 5 % of the viewer's start to its first
image. What the lookup finds is kept in the per-user cache folder together with
the modification times of the folders on ``sys.path``: installing, upgrading or
removing a package adds or removes entries in the folder it is installed in,
which changes that folder's time, and the next start looks the entry points up
again. A kept entry that no longer imports is looked up again too.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cno_annotate.fileio import atomic_write_text
from cno_annotate.paths import user_cache_dir

GROUP = "cno_annotate.commands"
#: The kept lookup's file in the per-user cache folder, and the version of what it holds.
KEPT_NAME = "command-plugins.json"
KEPT_SCHEMA = "command-plugins-1"


def command_entries(refresh: bool = False) -> list[tuple[str, str]]:
    """``(name, "module:attribute")`` of every entry point of :data:`GROUP`, kept from an earlier lookup if
    nothing was installed or removed since (``refresh``: look them up in any case)."""
    key = _installation_key()
    kept = None if refresh else _kept(key)
    if kept is not None:
        return kept
    from importlib.metadata import entry_points

    found = sorted({(entry.name, entry.value) for entry in entry_points(group=GROUP)})
    _keep(key, found)
    return found


def load(value: str) -> Callable:
    """The object an entry point's ``module:attribute`` names (ImportError, AttributeError if it is gone)."""
    import importlib

    module_name, _, attributes = value.partition(":")
    target: Any = importlib.import_module(module_name.strip())
    for attribute in filter(None, attributes.strip().split(".")):
        target = getattr(target, attribute)
    return target


def _installation_key() -> list[list]:
    """What changes when a package is installed or removed: each folder on ``sys.path`` and its time."""
    key = []
    for entry in sys.path:
        try:
            key.append([entry, os.stat(entry or ".").st_mtime_ns])
        except OSError:
            key.append([entry, None])
    return key


def _kept_file() -> Path:
    return Path(user_cache_dir()) / KEPT_NAME


def _kept(key: list[list]) -> list[tuple[str, str]] | None:
    try:
        document = json.loads(_kept_file().read_text(encoding="utf-8"))
        if document["schema_version"] != KEPT_SCHEMA or document["key"] != key:
            return None
        return [(str(name), str(value)) for name, value in document["entries"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # none kept yet, another installation's, or damaged: looked up again


def _keep(key: list[list], entries: list[tuple[str, str]]) -> None:
    document = {"schema_version": KEPT_SCHEMA, "key": key, "entries": [list(e) for e in entries]}
    try:
        _kept_file().parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(_kept_file(), json.dumps(document))
    except OSError:
        pass  # a read-only cache only costs the lookup at the next start
