"""How the CLI opens the store and prints lists: one JSON document, or one line per row."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cno_annotate.errors import CnoError
from cno_annotate.paths import display

if TYPE_CHECKING:
    from cno_annotate.store import Store


def existing_store_root(root: str | os.PathLike[str] | None) -> Path | str:
    """The store folder named by ``--store`` (or the default), refused if it holds no store.

    A ``postgresql://`` URL is returned as it is (the server says whether it holds a store).

    Raises
    ------
    CnoError
        If the folder has no ``store.sqlite``: a mistyped ``--store`` must not
        silently make a new, empty store.
    """
    from cno_annotate.store.db import DB_NAME, default_store_location
    from cno_annotate.store.postgres import is_url

    location = root if root is not None else default_store_location()
    if is_url(location):
        return str(location)
    folder = Path(location)
    if not (folder / DB_NAME).exists():
        raise CnoError(f"no store at {display(folder)} (import something first or check --store)")
    return folder


def open_store(root: str | os.PathLike[str] | None, create: bool = False) -> Store:
    """Open the store for a command; only commands that write new data (``create``) may make one."""
    from cno_annotate.store import Store

    if not create:
        return Store.open(existing_store_root(root))
    return Store.open(root)


def print_rows(rows: list, as_json: bool, empty: str, line: Callable[[Any], str]) -> None:
    """Print rows as one JSON document, or one line each (``empty`` when there are none)."""
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print(empty)
    for row in rows:
        print(line(row))
