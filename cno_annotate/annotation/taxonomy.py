"""The anatomical site taxonomy: sites, codes, bone units, reporting groups.

Loaded from ``schemas/sites/<id>-<version>.json`` and validated against
``schemas/site-taxonomy.schema.json``. A bone unit (what a scoring scheme
scores) is a site's ``unit`` plus its side: ``femur.distal:L``, ``spine.T8``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from cno_annotate.annotation.model import Side
from cno_annotate.annotation.resources import load_versioned_json, schemas_dir
from cno_annotate.errors import CnoError

DEFAULT_TAXONOMY = "cno-sites-2.0.0"
SIDES = tuple(Side)
#: How far from the midline (mm) a click must be to propose a side.
MIDLINE_MM = 10.0


@dataclass(frozen=True)
class Site:
    """One reportable site (a bone or a segment of one)."""

    id: str
    label: str
    aliases: tuple[str, ...]
    region: str
    bone: str
    segment: str
    lateral: bool
    unit_type: str
    unit: str
    code: dict
    bone_code: dict
    subsites: tuple[str, ...]
    group: str
    subsite_groups: dict = field(default_factory=dict)

    def group_of(self, subsite: str | None) -> str:
        """The reporting group of a lesion at this site and sub-site."""
        return self.subsite_groups.get(subsite or "", self.group)


@dataclass(frozen=True)
class ClinicalRegion:
    """A joint or body region a clinician reports pain in, and the bone units it covers."""

    id: str
    label: str
    aliases: tuple[str, ...]
    lateral: bool
    covers: tuple[str, ...]
    group: str
    reasoning: str


class Taxonomy:
    """Sites with their codes, units and reporting groups."""

    def __init__(self, document: dict):
        self.document = document
        self.id: str = document["id"]
        self.version: str = document["version"]
        self.sites: dict[str, Site] = {
            s["id"]: Site(**{**s, "aliases": tuple(s["aliases"]), "subsites": tuple(s["subsites"])})
            for s in document["sites"]
        }
        self.subsites: dict[str, dict] = document["subsites"]
        self.laterality: dict[str, dict] = document["laterality"]
        self.regions: dict[str, str] = document["regions"]
        self.groups: list[dict] = document["reporting_groups"]
        self.clinical_regions: dict[str, ClinicalRegion] = {
            r["id"]: ClinicalRegion(**{**r, "aliases": tuple(r["aliases"]), "covers": tuple(r["covers"])})
            for r in document.get("clinical_regions", [])
        }
        self.decisions: list[dict] = document.get("decisions", [])
        self._check_references()
        self._words = {sid: _words(site) for sid, site in self.sites.items()}

    def _check_references(self) -> None:
        group_ids = {g["id"] for g in self.groups}
        for site in self.sites.values():
            unknown = [s for s in site.subsites if s not in self.subsites]
            groups = {site.group, *site.subsite_groups.values()}
            if not groups <= group_ids or site.region not in self.regions or unknown:
                raise CnoError(f"taxonomy {self.id}: site {site.id} names an unknown group, region or sub-site")
        units = {site.unit for site in self.sites.values()}
        for region in self.clinical_regions.values():
            if region.id in self.sites or not set(region.covers) <= units or region.group not in group_ids:
                raise CnoError(f"taxonomy {self.id}: clinical region {region.id} clashes with a site id or names "
                               f"an unknown unit or group")

    # -- lookup ---------------------------------------------------------------------
    def site(self, site_id: str) -> Site:
        """The site with this id.

        Raises
        ------
        CnoError
            For an unknown id.
        """
        try:
            return self.sites[site_id]
        except KeyError:
            raise CnoError(f"unknown site {site_id!r} in taxonomy {self.id} {self.version}") from None

    def unit_id(self, site_id: str, side: str | None) -> str:
        """The bone unit of a site on a side, e.g. ``femur.distal:L``."""
        site = self.site(site_id)
        if site.lateral:
            if side not in SIDES:
                raise CnoError(f"{site.label} needs a side (R or L)")
            return f"{site.unit}:{side}"
        return site.unit

    def unit_ids(self) -> list[str]:
        """Every bone unit id (each side of a lateral unit), in the order of the sites."""
        units: dict[str, None] = {}
        for site in self.sites.values():
            for side in SIDES if site.lateral else (None,):
                units[self.unit_id(site.id, side)] = None
        return list(units)

    def unit_site(self, unit_id: str) -> tuple[Site, str | None]:
        """The (first) site and the side of a bone unit id."""
        unit, _, side = unit_id.partition(":")
        for site in self.sites.values():
            if site.unit == unit and (bool(side) == site.lateral):
                return site, side or None
        raise CnoError(f"unknown bone unit {unit_id!r} in taxonomy {self.id}")

    def unit_label(self, unit_id: str) -> str:
        """A bone unit as a reader names it: ``Distal femur R``, ``T8 vertebra``, ``Sternum``.

        The label of the site that is the whole unit, else the unit's bone; then the side.
        An unknown id comes back as it is (messages never fail on it).
        """
        unit, _, side = unit_id.partition(":")
        sites = [s for s in self.sites.values() if s.unit == unit]
        if not sites:
            return unit_id
        whole = next((s for s in sites if s.id == unit), None)
        name = whole.label if whole is not None else sites[0].bone.replace("_", " ").capitalize()
        return f"{name} {side}" if side else name

    def painful_site(self, site_id: str) -> Site | ClinicalRegion:
        """A site or clinical region by id (what a painful site of a clinical record names).

        Raises
        ------
        CnoError
            For an id that is neither.
        """
        if site_id in self.clinical_regions:
            return self.clinical_regions[site_id]
        return self.site(site_id)

    def covered_units(self, site_id: str, side: str | None) -> frozenset[str]:
        """The bone units a painful site or region on a side covers.

        A lateral region covers its units on its own side and any midline unit;
        a region without a side covers its units on both sides.
        """
        place = self.painful_site(site_id)
        if isinstance(place, Site):
            return frozenset({self.unit_id(place.id, side)})
        out = set()
        for unit in place.covers:
            lateral = any(s.lateral for s in self.sites.values() if s.unit == unit)
            if not lateral:
                out.add(unit)
            elif place.lateral:
                if side not in SIDES:
                    raise CnoError(f"{place.label} needs a side (R or L)")
                out.add(f"{unit}:{side}")
            else:
                out |= {f"{unit}:{s}" for s in SIDES}
        return frozenset(out)

    def group_path(self, group_id: str) -> list[str]:
        """A reporting group and its parents, innermost first."""
        parents = {g["id"]: g["parent"] for g in self.groups}
        path = [group_id]
        while parents.get(path[-1]):
            path.append(parents[path[-1]])
        return path

    def search(self, text: str, limit: int = 20) -> list[Site]:
        """Sites whose words start with every typed word ("dist fem" finds distal femur).

        Sites whose label matches rank before those matched through aliases.
        """
        tokens = [t for t in re.split(r"[\s.,/]+", text.lower()) if t]
        if not tokens:
            return list(self.sites.values())[:limit]
        ranked = []
        for order, (sid, (label_words, all_words)) in enumerate(self._words.items()):
            if all(any(w.startswith(t) for w in all_words) for t in tokens):
                in_label = all(any(w.startswith(t) for w in label_words) for t in tokens)
                ranked.append((not in_label, order, self.sites[sid]))
        return [site for *_, site in sorted(ranked, key=lambda r: (r[0], r[1]))][:limit]

    @staticmethod
    def propose_side(x_mm: float) -> str | None:
        """The side of the body of an LPS x (patient's left is +x); None near the midline."""
        if x_mm > MIDLINE_MM:
            return "L"
        if x_mm < -MIDLINE_MM:
            return "R"
        return None


def _words(site: Site) -> tuple[set[str], set[str]]:
    label = set(re.split(r"[\s()/,.-]+", site.label.lower())) - {""}
    extra = set()
    for text in (*site.aliases, site.id, site.bone, site.segment):
        extra |= set(re.split(r"[\s()/,._-]+", text.lower())) - {""}
    return label, label | extra


@lru_cache(maxsize=8)
def load_taxonomy(name: str = DEFAULT_TAXONOMY) -> Taxonomy:
    """Load and validate a taxonomy by name (``cno-sites-1.0.0``) or path."""
    path = Path(name) if name.endswith(".json") else schemas_dir() / "sites" / f"{name}.json"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in (schemas_dir() / "sites").glob("*.json")))
        raise CnoError(f"unknown site taxonomy {name!r}; known: {known}")
    return Taxonomy(load_versioned_json(path, "site-taxonomy"))
