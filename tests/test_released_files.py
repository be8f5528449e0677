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
    # released since (exports, SR code tables, reading packages, the skeleton chart)
    "annotation-1.1.0.schema.json": "a73b37d4816ad48cf9d6d12ae156307530e2b7da6448bc408b2c011f33ebd8a1",
    "annotation-1.2.0.schema.json": "d0cd33c05baf770a7e3d47f6d4ed02d01fbf4c3cd12644e7599c5d4e5414c09e",
    "scoring-scheme-1.1.0.schema.json": "caa13985a82c50320ad69a572c707423a5bf58c68a53059f31579c2ee1bacadc",
    "site-taxonomy-1.1.0.schema.json": "f7839500a99b641353d85316cca35709e25c812a78a0f31a815db288a3d5eaeb",
    "code-table.schema.json": "cae3e94dde8b819f126751e374f49f02aea68044c5740b65cf19e8a36e302c0f",
    "skeleton.schema.json": "64a8605193433d9d3f2a85acc8ed55b45db8207c37834a0bcef8e8893aa5c548",
    "sites/cno-sites-2.0.0.json": "505efabfe0a0782ebc49d4baeb8d2879688a0d56a7cdea15851d9fdb95877040",
    "schemes/rai-cromris-2.0.0.json": "6fa622b2091bd141ec1207691546914cf8f45d6b7506f2277bd0e301b8f9c758",
    "codes/cno-codes-1.0.0.json": "bcc4733f71999ad7eb00ed5048535dd0558552abf1fd4c2e3c836d8283f20c81",
    "codes/cno-codes-1.1.0.json": "4fc37bb5942263800820d883afbd979e457645aa94e7946e22402697332e348a",
    "codes/cno-codes-1.2.0.json": "729fbed94492190ac64106228e796a99cb5cfae0d6558c9e61ab276f51cc1935",
    "deid/cno-reading-package-1.0.0.json": "e178d40d95a56d5bfcfc69ef8a5d5b49cb86a033a0711563ad707a1040b4cba7",
    "skeleton/cno-skeleton-1.0.0.json": "814b98e34bd5ed841ae6cc0348da92ccc13acfece80f705f074fb6d1d8a8230b",
}


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_file_is_unchanged(name):
    digest = hashlib.sha256((Path(schemas_dir()) / name).read_bytes()).hexdigest()
    assert digest == RELEASED[name], f"{name} was released and must not be edited: add a new version instead"

