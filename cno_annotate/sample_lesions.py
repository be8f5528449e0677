"""Random CNO lesions and normal variants for the synthetic patient (per seed).

Lesions are drawn from a catalogue of the sites CNO favours (metaphyses of the
long bones, most of all around the knee and ankle; vertebral bodies; medial
clavicle; pelvis; calcaneus), often symmetric, each with its own size,
intensity (marked or moderate STIR signal), margin (sharp, or ill-defined with
a faint oedema halo) and surroundings (periosteal or soft-tissue oedema).

Normal variants a reader must not call lesions are listed beside them: the
bright growth plates of every long bone, and patches of residual red marrow
in femoral and humeral shafts. All positions are in the body's own frame
(see :mod:`cno_annotate.sample_visits` for each visit's pose).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cno_annotate import phantom
from cno_annotate.phantom import LONG_BONES, side_x, vertebra_centres

#: Lesion intensity on STIR and the tissue label painted for it.
INTENSITIES = {"marked": phantom.LESION, "moderate": phantom.LESION_MODERATE}
MARGINS = ("sharp", "ill-defined")
SURROUNDINGS = ("none", "periosteal", "soft tissue")


@dataclass(frozen=True)
class Site:
    """A place a CNO lesion may sit (body frame)."""

    bone: str
    segment: str
    subsite: str
    side: str
    centre: tuple[float, float, float]
    radii: tuple[float, float, float]
    weight: float
    long_bone: bool = False

    @property
    def key(self) -> tuple[str, str, str]:
        """Bone, segment and side: one lesion per key."""
        return (self.bone, self.segment, self.side)

    def mirrored(self) -> Site | None:
        """The same site on the other side (None for a midline site)."""
        if not self.side:
            return None
        side = "L" if self.side == "R" else "R"
        x, y, z = self.centre
        return Site(self.bone, self.segment, self.subsite, side, (-x, y, z), self.radii, self.weight, self.long_bone)


#: Relative frequency of metaphyseal sites (knee and ankle first).
_METAPHYSES = [
    ("femur", "distal", 5.0), ("tibia", "proximal", 4.0), ("tibia", "distal", 4.0), ("femur", "proximal", 1.5),
    ("fibula", "distal", 1.5), ("humerus", "proximal", 1.5), ("radius", "distal", 1.0), ("ulna", "distal", 0.5),
    ("humerus", "distal", 0.5),
]


def _point(centre: np.ndarray) -> tuple[float, float, float]:
    return (float(centre[0]), float(centre[1]), float(centre[2]))


def catalogue() -> list[Site]:
    """Every candidate lesion site."""
    sites = []
    radius_of = {name: r for name, _p, _d, r in LONG_BONES}
    for bone, end, weight in _METAPHYSES:
        for side in "LR":
            centre = phantom.metaphysis_centre(bone, end, side)
            r = radius_of[bone] - phantom.CORTEX_MM
            sites.append(Site(bone, end, "metaphysis", side, _point(centre),
                              (r * 0.9, r * 0.9, max(7.0, 1.3 * r)), weight, long_bone=True))
    for name, (centre, height, radius) in vertebra_centres().items():
        if name[0] in "TL":
            sites.append(Site(name, "", "vertebral body", "", _point(centre),
                              (radius * 0.7, radius * 0.55, height * 0.35), 0.25))
    for side in "LR":
        sites.append(Site("clavicle", "medial", "medial end", side, (side_x(side, 35), -36.0, 388.0), (12, 5, 5), 1.5))
        sites.append(Site("ilium", "", "", side, (side_x(side, 70), 30.0, 15.0), (12, 8, 14), 1.0))
        sites.append(Site("calcaneus", "", "", side, (side_x(side, 70), 8.0, -851.0), (12, 9, 9), 1.0))
        sites.append(Site("pubis", "", "", side, (side_x(side, 55), -28.0, -103.0), (10, 6, 6), 0.5))
    sites.append(Site("sacrum", "", "", "", (0.0, 55.0, -45.0), (14, 10, 14), 0.8))
    return sites


def random_lesions(rng: np.random.Generator, count: int | None = None, exclude=()) -> list[dict]:
    """CNO lesions for one patient: 4 to 9 sites, metaphyseal ones often mirrored.

    Parameters
    ----------
    rng : numpy.random.Generator
        The patient's generator.
    count : int, optional
        How many sites to draw (default: 4 to 9 at random).
    exclude : iterable of tuple
        Site keys (bone, segment, side) already taken.
    """
    sites = [s for s in catalogue() if s.key not in set(exclude)]
    count = int(rng.integers(4, 10)) if count is None else count
    weights = np.array([s.weight for s in sites])
    chosen_index = rng.choice(len(sites), size=min(count, len(sites)), replace=False, p=weights / weights.sum())
    chosen = [sites[int(i)] for i in chosen_index]
    taken = {s.key for s in chosen} | set(exclude)
    for site in list(chosen):
        mirror = site.mirrored()
        if site.long_bone and mirror is not None and mirror.key not in taken and rng.random() < 0.4:
            chosen.append(mirror)
            taken.add(mirror.key)
    return [_lesion(site, rng) for site in chosen]


def _lesion(site: Site, rng: np.random.Generator) -> dict:
    size = float(rng.uniform(0.75, 1.35))
    jitter = rng.uniform(-1.5, 1.5, 3) * [1, 0.5, 1]
    surroundings = str(rng.choice(SURROUNDINGS, p=[0.6, 0.25, 0.15])) if site.long_bone else "none"
    return {
        "bone": site.bone,
        "segment": site.segment,
        "subsite": site.subsite,
        "side": site.side,
        "lps_mm": [round(float(c + j), 2) for c, j in zip(site.centre, jitter)],
        "radii_mm": _radii(site, size),
        "intensity": str(rng.choice(list(INTENSITIES), p=[0.6, 0.4])),
        "margin": str(rng.choice(MARGINS)),
        "surroundings": surroundings,
    }


def _radii(site: Site, size: float) -> list[float]:
    """A lesion's radii: scaled, but across a long bone never narrower than its marrow.

    A lesion is painted only into marrow, so in a long bone it fills the
    marrow's width (as metaphyseal oedema does) and its size shows along the bone.
    """
    radii = [r * size for r in site.radii]
    if site.long_bone:
        radii[0], radii[1] = max(radii[0], site.radii[0] / 0.9 * 1.1), max(radii[1], site.radii[1] / 0.9 * 1.1)
    return [round(float(r), 1) for r in radii]


def numbered(lesions: list[dict], start: int = 1) -> list[dict]:
    """The lesions with ids ``L1``, ``L2``, ... from ``start``."""
    return [{"id": f"L{n}", **lesion} for n, lesion in enumerate(lesions, start=start)]


def normal_variants(rng: np.random.Generator) -> list[dict]:
    """Bright growth plates (every long bone end) and 1 to 3 patches of residual red marrow."""
    out: list[dict] = []
    for name, _prox, _dist, _radius in LONG_BONES:
        for end in ("proximal", "distal"):
            for side in "LR":
                centre = phantom.physis_centre(name, end, side)
                out.append({"kind": "bright physis", "bone": name, "segment": end, "side": side,
                            "lps_mm": [round(float(c), 2) for c in centre]})
    shafts = [(bone, side) for bone in ("femur", "humerus") for side in "LR"]
    for index in rng.choice(len(shafts), size=int(rng.integers(1, 4)), replace=False):
        bone, side = shafts[int(index)]
        centre = phantom.shaft_point(bone, side, float(rng.uniform(0.4, 0.6)))
        out.append({"kind": "residual red marrow", "bone": bone, "segment": "shaft", "side": side,
                    "lps_mm": [round(float(c), 2) for c in centre],
                    "length_mm": round(float(rng.uniform(30, 60)), 1)})
    return out
