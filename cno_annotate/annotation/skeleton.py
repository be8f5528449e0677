"""The schematic front-view skeleton: one shape per site and side, kept as data.

``schemas/skeleton/cno-skeleton-1.0.0.json`` (validated by ``skeleton.schema.json``) places
every site of the taxonomies on a front view of a schematic child. The cohort report's
skeleton map draws it; nothing here depends on the sample generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from cno_annotate.annotation.resources import load_json, schemas_dir
from cno_annotate.annotation.taxonomy import Taxonomy

DEFAULT_SKELETON = "cno-skeleton-1.0.0"


@dataclass(frozen=True)
class Shape:
    """One site's shape on the front view (LPS x and z, mm).

    ``kind`` is ``capsule`` (``a`` to ``b``, ``width``), ``rectangle`` or
    ``outline_ellipse`` (``centre``, ``size``) or ``circle`` (``centre``, ``radius``).
    """

    site: str
    side: str | None
    kind: str
    a: tuple[float, float] = (0.0, 0.0)
    b: tuple[float, float] = (0.0, 0.0)
    width: float = 0.0
    centre: tuple[float, float] = (0.0, 0.0)
    size: tuple[float, float] = (0.0, 0.0)
    radius: float = 0.0


@dataclass(frozen=True)
class Skeleton:
    """The shapes in drawing order, and the extent of the drawing."""

    version: str
    shapes: tuple[Shape, ...]
    extent_x: tuple[float, float]
    extent_z: tuple[float, float]

    def missing(self, taxonomy: Taxonomy) -> list[tuple[str, str | None]]:
        """(site, side) of the taxonomy that have no shape."""
        have = {(s.site, s.side) for s in self.shapes}
        return [(s.id, side) for s in taxonomy.sites.values()
                for side in (("R", "L") if s.lateral else (None,)) if (s.id, side) not in have]


def _pair(value) -> tuple[float, float]:
    return float(value[0]), float(value[1])


def _shape(item: dict) -> Shape:
    common = {"site": item["site"], "side": item["side"], "kind": item["kind"]}
    if item["kind"] == "capsule":
        return Shape(**common, a=_pair(item["from_mm"]), b=_pair(item["to_mm"]), width=float(item["width_mm"]))
    if item["kind"] == "circle":
        return Shape(**common, centre=_pair(item["centre_mm"]), radius=float(item["radius_mm"]))
    return Shape(**common, centre=_pair(item["centre_mm"]), size=_pair(item["size_mm"]))


@cache
def load_skeleton(name: str = DEFAULT_SKELETON) -> Skeleton:
    """Load and validate a skeleton file by name (``cno-skeleton-1.0.0``)."""
    path = schemas_dir() / "skeleton" / f"{name}.json"
    document = load_json(path, "skeleton.schema.json")
    return Skeleton(version=document["version"], shapes=tuple(_shape(s) for s in document["shapes"]),
                    extent_x=_pair(document["extent_mm"]["x"]), extent_z=_pair(document["extent_mm"]["z"]))
