"""Scoring schemes as data: items, grades, which units they apply to, how they combine.

Loaded from ``schemas/schemes/<id>-<version>.json`` and validated against
``schemas/scoring-scheme.schema.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cno_annotate.annotation.resources import load_versioned_json, schemas_dir
from cno_annotate.errors import CnoError

DEFAULT_SCHEME = "rai-cromris"
NOT_ASSESSABLE = "NA"


@dataclass(frozen=True)
class Item:
    """One graded feature of a scheme."""

    id: str
    label: str
    definition: str
    kind: str
    scored: bool
    applies_to: tuple[str, ...]
    grades: tuple[dict, ...]
    source: str
    graded_per: str = "lesion"  # or "unit": the reader grades the bone unit, proposed from its lesions
    unit_grade_from_lesions: str = "max"  # or "share_sum"

    @property
    def per_unit(self) -> bool:
        """Whether the item is graded per bone unit (not per lesion)."""
        return self.graded_per == "unit"

    def propose_unit_grade(self, lesion_grades: list[int]) -> int:
        """The unit grade that the lesions' grades of this item propose.

        ``max`` takes the highest; ``share_sum`` adds the middle of each
        grade's ``share_percent`` range (capped at 100) and returns the grade
        whose range holds the sum.
        """
        if self.unit_grade_from_lesions == "max" or not lesion_grades:
            return max(lesion_grades, default=0)
        ranges = {g["value"]: g["share_percent"] for g in self.grades}
        total = min(100.0, sum((ranges[v][0] + ranges[v][1]) / 2 for v in lesion_grades))
        for value, (low, high) in sorted(ranges.items()):
            if (low < total <= high) or (total == 0 and high == 0):
                return value
        return max(ranges)

    @property
    def values(self) -> tuple[int, ...]:
        """The allowed grade values."""
        return tuple(g["value"] for g in self.grades)

    def applies(self, unit_type: str) -> bool:
        """Whether the item is graded for this unit type."""
        return unit_type in self.applies_to


class Scheme:
    """A versioned scoring scheme."""

    def __init__(self, document: dict):
        self.document = document
        self.id: str = document["id"]
        self.version: str = document["version"]
        self.title: str = document["title"]
        self.items: tuple[Item, ...] = tuple(
            Item(i["id"], i["label"], i["definition"], i["kind"], i["scored"], tuple(i["applies_to"]),
                 tuple(i["grades"]), i["source"], i.get("graded_per", "lesion"),
                 i.get("unit_grade_from_lesions", "max"))
            for i in document["items"]
        )
        self.aggregation: dict = document["aggregation"]

    @property
    def ref(self) -> dict:
        """``{"id", "version"}``: what every score records."""
        return {"id": self.id, "version": self.version}

    def item(self, item_id: str) -> Item:
        """The item with this id.

        Raises
        ------
        CnoError
            For an item the scheme does not have.
        """
        for item in self.items:
            if item.id == item_id:
                return item
        raise CnoError(f"scheme {self.id} {self.version} has no item {item_id!r}")

    def items_for(self, unit_type: str) -> tuple[Item, ...]:
        """The items graded for a unit type, in scheme order."""
        return tuple(i for i in self.items if i.applies(unit_type))

    def check_grade(self, item_id: str, value, unit_type: str | None = None) -> None:
        """Raise :class:`CnoError` unless ``value`` is a grade of the item (or NA) for this unit type."""
        item = self.item(item_id)
        if isinstance(value, bool) or (value != NOT_ASSESSABLE and value not in item.values):
            allowed = ", ".join(str(v) for v in item.values)
            raise CnoError(f"{item.label}: grade {value!r} is not one of {allowed} or {NOT_ASSESSABLE}")
        if unit_type is not None and not item.applies(unit_type):
            raise CnoError(f"{item.label} is not graded for a {unit_type.replace('_', ' ')}")

    def check_unit_grade(self, item_id: str, value, unit_type: str) -> None:
        """Raise :class:`CnoError` unless ``value`` may be a reader's grade of this bone unit for the item."""
        item = self.item(item_id)
        if not item.per_unit:
            raise CnoError(f"{item.label} is graded per lesion in {self.id} {self.version}, not per bone unit")
        self.check_grade(item_id, value, unit_type)


def scheme_path(scheme_id: str, version: str | None = None) -> Path:
    """The file of a scheme; the newest version when none is given."""
    folder = schemas_dir() / "schemes"
    if version:
        return folder / f"{scheme_id}-{version}.json"
    found = sorted(folder.glob(f"{scheme_id}-*.json"), key=lambda p: _version_key(p.stem[len(scheme_id) + 1:]))
    if not found:
        known = sorted({p.stem.rsplit("-", 1)[0] for p in folder.glob("*.json")})
        raise CnoError(f"unknown scoring scheme {scheme_id!r}; known: {', '.join(known)}")
    return found[-1]


def _version_key(text: str) -> tuple:
    try:
        return tuple(int(p) for p in text.split("."))
    except ValueError:
        return (-1,)


@lru_cache(maxsize=16)
def load_scheme(scheme_id: str = DEFAULT_SCHEME, version: str | None = None) -> Scheme:
    """Load and validate a scheme by id (and version)."""
    path = scheme_path(scheme_id, version)
    if not path.exists():
        raise CnoError(f"scoring scheme {scheme_id} version {version} is not in {path.parent}")
    scheme = Scheme(load_versioned_json(path, "scoring-scheme"))
    if scheme.id != scheme_id or (version and scheme.version != version):
        raise CnoError(f"{path}: declares {scheme.id} {scheme.version}, not {scheme_id} {version}")
    return scheme
