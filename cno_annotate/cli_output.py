"""How the CLI prints lists: one JSON document, or one line per row."""

from __future__ import annotations

import json
from collections.abc import Callable


def print_rows(rows: list, as_json: bool, empty: str, line: Callable[[dict], str]) -> None:
    """Print rows as one JSON document, or one line each (``empty`` when there are none)."""
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print(empty)
    for row in rows:
        print(line(row))
