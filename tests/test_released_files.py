"""Released schemas and data files are never edited: each is pinned by its SHA-256.

A change to a released document is a new file with a new version (``annotation-1.1.0.schema.json``,
``cno-sites-2.0.0.json``); reads and reports that name the old version keep loading the old file.
When a version is released, add its hash here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cno_annotate.annotation.resources import schemas_dir

RELEASED = {
    # released with 0.1.0
    "annotation.schema.json": "75075ef28f8d4a3da462f6f64520782e1b701aeb680c89c1e8d3849f5bd5950f",
    "scoring-scheme.schema.json": "59bb9d558014ccc2413d91039e72c8a3b42d10e3383e335114b741f19d474e8c",
    "site-taxonomy.schema.json": "c9b71fa3a5fa24a267a258543f6482935884a7df5b660c9c84d0ea3473ee83c8",
    "sites/cno-sites-1.0.0.json": "b745ab84509a1884e6bc54290abc8e75b6707d27c99fe282439828c357e4951e",
    "schemes/rai-cromris-1.0.0.json": "130ea5e62206caae290e3c619541a40628fcb68ea9d55675b53a45236373ad4d",
    "schemes/cno-descriptive-1.0.0.json": "673ae6f0150e1baf3405c3214362ffc1d3179516af149f3e490d9017e338ebe5",
}


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_file_is_unchanged(name):
    digest = hashlib.sha256((Path(schemas_dir()) / name).read_bytes()).hexdigest()
    assert digest == RELEASED[name], f"{name} was released and must not be edited: add a new version instead"
