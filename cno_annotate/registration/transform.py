"""Piecewise rigid/affine transforms between two studies of one patient (LPS mm).

A :class:`PiecewiseTransform` maps points of a *source* volume (usually the
prior study) to the corresponding points of a *target* volume (the current
study). It holds one 4 x 4 affine per body region; a point is mapped by the
first region, in priority order, whose box contains it (limbs before trunk),
or by the nearest region's when no box contains it. A reader's manual
correction (:meth:`PiecewiseTransform.nudged`) is a translation kept beside the
computed matrix, never folded into it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import numpy as np

from cno_annotate.errors import CnoError

#: Version of the document :meth:`PiecewiseTransform.to_dict` writes.
SCHEMA_VERSION = "registration-1.0.0"


class BoxSpace(StrEnum):
    """Which volume a region's box is given in."""

    SOURCE = "source"
    TARGET = "target"


@dataclass(frozen=True)
class MappedPoint:
    """A point mapped into the other study.

    Attributes
    ----------
    point : tuple of float
        LPS mm in the other study.
    region : str
        Name of the region whose transform was used.
    """

    point: tuple[float, float, float]
    region: str


@dataclass(frozen=True, eq=False)
class RegionTransform:
    """One body region's transform.

    Parameters
    ----------
    name : str
        Region name (``head_neck``, ``trunk``, ``pelvis``, ``left_arm`` ...).
    matrix : numpy.ndarray
        4 x 4 affine from source LPS mm to target LPS mm, as computed.
    box_lo, box_hi : numpy.ndarray
        Corners of the LPS box where the region applies.
    box_space : BoxSpace
        Whether the box is in the source or in the target volume.
    nudge_mm : numpy.ndarray
        A reader's correction, a translation added after ``matrix`` (target mm).
    """

    name: str
    matrix: np.ndarray
    box_lo: np.ndarray
    box_hi: np.ndarray
    box_space: BoxSpace = BoxSpace.SOURCE
    nudge_mm: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def __post_init__(self) -> None:
        matrix = _array(self.matrix, (4, 4), f"region {self.name!r} matrix")
        if not np.allclose(matrix[3], [0, 0, 0, 1]) or abs(np.linalg.det(matrix[:3, :3])) < 1e-6:
            raise CnoError(f"region {self.name!r}: the matrix is not an invertible affine")
        lo = _array(self.box_lo, (3,), f"region {self.name!r} box_lo")
        hi = _array(self.box_hi, (3,), f"region {self.name!r} box_hi")
        if np.any(hi < lo):
            raise CnoError(f"region {self.name!r}: box_hi is below box_lo")
        if not self.name or not isinstance(self.name, str):
            raise CnoError("a region needs a name")
        object.__setattr__(self, "matrix", matrix)
        object.__setattr__(self, "box_lo", lo)
        object.__setattr__(self, "box_hi", hi)
        object.__setattr__(self, "box_space", BoxSpace(self.box_space))
        object.__setattr__(self, "nudge_mm", _array(self.nudge_mm, (3,), f"region {self.name!r} nudge_mm"))

    @property
    def effective(self) -> np.ndarray:
        """The matrix with the reader's correction applied."""
        out = self.matrix.copy()
        out[:3, 3] += self.nudge_mm
        return out

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Map points ``(..., 3)`` from source to target LPS mm."""
        m = self.effective
        return np.asarray(points, float) @ m[:3, :3].T + m[:3, 3]

    def box_distance(self, points: np.ndarray) -> np.ndarray:
        """Distance (mm) of points to the box; 0 inside."""
        below = np.maximum(self.box_lo - points, 0)
        above = np.maximum(points - self.box_hi, 0)
        return np.linalg.norm(below + above, axis=-1)

    def inverse(self) -> RegionTransform:
        """The target-to-source transform, same box, correction inverted."""
        inverse = np.linalg.inv(self.matrix)
        nudge = -inverse[:3, :3] @ self.nudge_mm
        space = BoxSpace.TARGET if self.box_space is BoxSpace.SOURCE else BoxSpace.SOURCE
        return RegionTransform(self.name, inverse, self.box_lo, self.box_hi, space, nudge)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "matrix": [[float(v) for v in row] for row in self.matrix],
            "box_lo": [float(v) for v in self.box_lo],
            "box_hi": [float(v) for v in self.box_hi],
            "box_space": self.box_space.value,
            "nudge_mm": [float(v) for v in self.nudge_mm],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RegionTransform:
        """Read :meth:`to_dict`'s form (validated)."""
        try:
            return cls(data["name"], data["matrix"], data["box_lo"], data["box_hi"],
                       BoxSpace(data.get("box_space", "source")), data.get("nudge_mm", [0, 0, 0]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CnoError(f"a registration region is malformed ({exc})") from None


@dataclass(frozen=True, eq=False)
class PiecewiseTransform:
    """Per-region transforms from one volume (source) to another (target), LPS mm.

    Parameters
    ----------
    source_volume_id, target_volume_id : str
        The volumes (usually prior and current composed STIR).
    region_transforms : tuple of RegionTransform
        In priority order: the first region whose box holds a point maps it.
    method : str
        How it was computed (e.g. ``"piecewise-rigid"``).
    """

    source_volume_id: str
    target_volume_id: str
    region_transforms: tuple[RegionTransform, ...]
    method: str = "piecewise-rigid"

    def __post_init__(self) -> None:
        regions = tuple(self.region_transforms)
        if not regions:
            raise CnoError("a registration needs at least one region")
        names = [r.name for r in regions]
        if len(set(names)) != len(names):
            raise CnoError(f"registration regions repeat a name: {names}")
        object.__setattr__(self, "region_transforms", regions)

    @property
    def regions(self) -> tuple[str, ...]:
        """Region names in priority order."""
        return tuple(r.name for r in self.region_transforms)

    def region(self, name: str) -> RegionTransform:
        """One region's transform by name."""
        for region in self.region_transforms:
            if region.name == name:
                return region
        raise CnoError(f"no region {name!r} in this registration (regions: {', '.join(self.regions)})")

    def region_for(self, point_lps) -> str:
        """The region whose transform maps this source point."""
        point = _array(point_lps, (3,), "point")
        distances = []
        for region in self.region_transforms:
            probe = point if region.box_space is BoxSpace.SOURCE else region.apply(point)
            distance = float(region.box_distance(probe))
            if distance == 0.0:
                return region.name
            distances.append(distance)
        return self.region_transforms[int(np.argmin(distances))].name

    def map_point(self, point_lps) -> MappedPoint:
        """Map a source point (LPS mm) into the target volume.

        Returns
        -------
        MappedPoint
            The target point and the region whose transform was used.
        """
        point = _array(point_lps, (3,), "point")
        region = self.region(self.region_for(point))
        mapped = region.apply(point)
        return MappedPoint(point=(float(mapped[0]), float(mapped[1]), float(mapped[2])), region=region.name)

    def inverse(self) -> PiecewiseTransform:
        """The transform from target back to source (corrections included)."""
        return PiecewiseTransform(self.target_volume_id, self.source_volume_id,
                                  tuple(r.inverse() for r in self.region_transforms), self.method)

    def nudged(self, region: str, delta_mm) -> PiecewiseTransform:
        """A copy with one region's correction moved by ``delta_mm`` (target LPS mm).

        The computed matrix is kept; the correction is stored beside it.
        """
        delta = _array(delta_mm, (3,), "delta_mm")
        self.region(region)  # refuses an unknown name
        changed = tuple(replace(r, nudge_mm=r.nudge_mm + delta) if r.name == region else r
                        for r in self.region_transforms)
        return replace(self, region_transforms=changed)

    @property
    def is_corrected(self) -> bool:
        """Whether a reader nudged any region."""
        return any(np.any(r.nudge_mm != 0) for r in self.region_transforms)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form with ``schema_version``."""
        return {
            "schema_version": SCHEMA_VERSION,
            "source_volume_id": self.source_volume_id,
            "target_volume_id": self.target_volume_id,
            "method": self.method,
            "regions": [r.to_dict() for r in self.region_transforms],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PiecewiseTransform:
        """Read :meth:`to_dict`'s form.

        Raises
        ------
        CnoError
            If the document is of another version or malformed.
        """
        if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
            version = data.get("schema_version") if isinstance(data, dict) else None
            raise CnoError(f"not a {SCHEMA_VERSION} document (schema_version {version!r})")
        try:
            regions = tuple(RegionTransform.from_dict(r) for r in data["regions"])
            return cls(str(data["source_volume_id"]), str(data["target_volume_id"]), regions,
                       str(data.get("method", "piecewise-rigid")))
        except (KeyError, TypeError) as exc:
            raise CnoError(f"the registration document is malformed ({exc})") from None


def _array(value, shape: tuple[int, ...], what: str) -> np.ndarray:
    try:
        out = np.array(value, dtype=float)
    except (TypeError, ValueError):
        raise CnoError(f"{what} must be numbers") from None
    if out.shape != shape or not np.all(np.isfinite(out)):
        raise CnoError(f"{what} must be {shape} finite numbers, not shape {out.shape}")
    out.setflags(write=False)
    return out
