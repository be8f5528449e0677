"""Reads and lesions as values.

A :class:`Read` is one reader's reading of one study; a :class:`Lesion` is
one marked lesion: position in patient LPS mm with the series UID and voxel
index, coded site with sub-site and side, extent, grades of the scheme,
comment, confidence, who and when created and modified it, and its tracking
UID (a DICOM UID given at creation that stays with the lesion through edits,
new versions, exports and follow-up visits). Both convert
to and from plain dicts (the stored and exported form).

Lesions are built through :func:`cno_annotate.annotation.validation.make_lesion`
(the one constructor that checks a lesion against the taxonomy and the scheme);
the editor, ``read import``, scoring and the analysis all go through it.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, fields
from enum import StrEnum

import numpy as np

from cno_annotate.io.axes import PLANE_AXES

DEFAULT_RADIUS_MM = 5.0
CONFIDENCE = (1, 2, 3, 4, 5)


class Side(StrEnum):
    """The side of the body of a lateral site."""

    RIGHT = "R"
    LEFT = "L"


class ReadStatus(StrEnum):
    """Where a read is in its life: editable draft, or submitted and locked."""

    DRAFT = "draft"
    SUBMITTED = "submitted"


class UnitMark(StrEnum):
    """What a reader says of a bone unit that holds no lesion."""

    NO_LESION = "no_lesion"
    NOT_ASSESSABLE = "not_assessable"


class ReadingRole(StrEnum):
    """Who made a read in a reading study."""

    READER = "reader"
    ADJUDICATOR = "adjudicator"


class FollowupStatus(StrEnum):
    """What a reader says, at a follow-up visit, of a lesion of the prior read."""

    PERSISTING = "persisting"  # still there: a lesion of this read carries its tracking UID
    RESOLVED = "resolved"
    NOT_ASSESSABLE = "not_assessable"


@dataclass(frozen=True)
class Followup:
    """A follow-up read's link to the prior read, and the reader's outcome for each prior lesion.

    ``outcomes`` maps a prior lesion's tracking UID to its :class:`FollowupStatus`;
    a prior lesion without an outcome is still unconfirmed.
    """

    prior_read_id: str
    outcomes: dict[str, FollowupStatus] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "outcomes", {k: FollowupStatus(v) for k, v in self.outcomes.items()})


def _copied(value: object) -> object:
    """A field's value for a plain dict: a dict or list copied deep (as dataclasses.asdict does), else itself."""
    return copy.deepcopy(value) if isinstance(value, (dict, list)) else value


@dataclass(frozen=True)
class Lesion:
    """One lesion of a read."""

    lesion_id: str
    position: tuple[float, float, float]
    series_uid: str
    voxel: tuple[float, float, float]
    site_id: str | None = None
    side: Side | None = None
    subsite: str | None = None
    extent: dict | None = None
    grades: dict = field(default_factory=dict)
    comment: str = ""
    confidence: int | None = None
    created_by: str = ""
    created_at: str = ""
    modified_by: str = ""
    modified_at: str = ""
    stir_muscle_ratio: float | None = None  # STIR signal-intensity ratio lesion:muscle (ROI means)
    tracking_uid: str = ""  # a DICOM UID: the same lesion across edits, versions, exports and visits

    def to_dict(self) -> dict:
        """Plain-dict form (JSON-ready); back through ``validation.lesion_from_fields``.

        As ``dataclasses.asdict`` gives it (dicts and lists copied deep, the rest immutable values), field by
        field: asdict's generic walk was a sixth of the client's time per edit of a shared store (4x slower).
        """
        out = {f.name: _copied(getattr(self, f.name)) for f in fields(self)}
        out["position"] = [float(v) for v in self.position]
        out["voxel"] = [float(v) for v in self.voxel]
        return out

    @property
    def sizes_mm(self) -> tuple[float, float, float] | None:
        """Extent along LPS x, y, z in mm (None without an extent)."""
        return extent_sizes(self.extent)[0] if self.extent else None

    @property
    def volume_ml(self) -> float | None:
        """Volume estimated from the extent, in ml."""
        return extent_sizes(self.extent)[1] if self.extent else None

    @property
    def radii_mm(self) -> tuple[float, float, float]:
        """Half sizes along x, y, z, for drawing (5 mm without an extent)."""
        sizes = self.sizes_mm
        if sizes is None:
            return (DEFAULT_RADIUS_MM,) * 3
        return (max(sizes[0] / 2, 1.0), max(sizes[1] / 2, 1.0), max(sizes[2] / 2, 1.0))


def extent_sizes(extent: dict) -> tuple[tuple[float, float, float], float]:
    """Sizes along LPS x, y, z (mm) and volume (ml) of an extent.

    Kinds
    -----
    ellipse
        ``plane``, ``radii_mm`` [along screen columns, rows], ``slice_range_mm``
        [low, high] along the normal; volume of the ellipsoid with these diameters.
    box
        ``min_mm`` and ``max_mm`` corners in LPS; volume of the box.
    polygon
        ``plane``, ``points_mm`` (LPS, on one slice), ``slice_range_mm``; area
        (shoelace) times thickness.
    """
    kind = extent["kind"]
    if kind == "box":
        sizes = np.abs(np.array(extent["max_mm"], float) - np.array(extent["min_mm"], float))
        return (float(sizes[0]), float(sizes[1]), float(sizes[2])), float(np.prod(sizes)) / 1000.0
    col_axis, row_axis, normal = PLANE_AXES[extent["plane"]]
    low, high = extent["slice_range_mm"]
    sizes = [0.0, 0.0, 0.0]
    sizes[normal] = abs(high - low)
    if kind == "ellipse":
        a, b = extent["radii_mm"]
        sizes[col_axis], sizes[row_axis] = 2 * a, 2 * b
        volume = math.pi / 6 * sizes[0] * sizes[1] * sizes[2]
        return (sizes[0], sizes[1], sizes[2]), volume / 1000.0
    points = np.array(extent["points_mm"], float)
    u, v = points[:, col_axis], points[:, row_axis]
    sizes[col_axis], sizes[row_axis] = float(np.ptp(u)), float(np.ptp(v))
    area = 0.5 * abs(float(np.dot(u, np.roll(v, 1)) - np.dot(v, np.roll(u, 1))))
    return (sizes[0], sizes[1], sizes[2]), area * sizes[normal] / 1000.0


class RoiKind(StrEnum):
    """The outline of a region of interest."""

    ELLIPSE = "ellipse"  # points: centre, then a corner of the bounding box
    RECTANGLE = "rectangle"  # points: two opposite corners
    POLYGON = "polygon"  # points: the vertices (three or more)


class RoiRole(StrEnum):
    """What a region of interest measures."""

    MEASUREMENT = "measurement"  # a plain measurement
    MUSCLE = "muscle"  # the read's reference ROI (one per read): the denominator of signal ratios
    LESION = "lesion"  # a lesion's ROI (``lesion_id``): the numerator of its STIR lesion:muscle ratio


@dataclass(frozen=True)
class Roi:
    """A region of interest drawn on one slice, its points in LPS mm.

    Built through :func:`cno_annotate.annotation.validation.make_roi`.
    """

    roi_id: str
    kind: RoiKind
    plane: str
    points_mm: tuple[tuple[float, float, float], ...]
    series_uid: str
    role: RoiRole = RoiRole.MEASUREMENT
    lesion_id: str | None = None

    def to_dict(self) -> dict:
        """Plain-dict form (JSON-ready); back through ``validation.roi_from_fields``."""
        return {"roi_id": self.roi_id, "kind": str(self.kind), "plane": self.plane,
                "points_mm": [[float(v) for v in p] for p in self.points_mm], "series_uid": self.series_uid,
                "role": str(self.role), "lesion_id": self.lesion_id}


@dataclass
class Read:
    """One reader's reading of one study."""

    read_id: str
    study_uid: str
    reader: str
    scheme_id: str
    scheme_version: str
    taxonomy: str
    status: ReadStatus = ReadStatus.DRAFT
    started: str = ""
    submitted: str | None = None
    modified: str = ""
    revision: int = 0
    lesions: list[Lesion] = field(default_factory=list)
    unit_marks: dict[str, str] = field(default_factory=dict)
    reading_study: str | None = None
    role: ReadingRole = ReadingRole.READER
    version: int = 1
    supersedes: str | None = None  # the read this version replaces
    reason: str | None = None  # why a submitted read got a new version
    unit_grades: dict[str, dict] = field(default_factory=dict)  # unit id -> {item id: reader's unit grade}
    rois: list[Roi] = field(default_factory=list)  # regions of interest, in drawing order
    active_seconds: float = 0.0  # active reading time (viewer input with the focus, idle spells left out)
    followup: Followup | None = None  # a follow-up read: the prior read and the outcome of each of its lesions

    def __post_init__(self) -> None:
        self.status = ReadStatus(self.status)
        self.role = ReadingRole(self.role)

    def lesion(self, lesion_id: str) -> Lesion:
        """The lesion with this id (KeyError if none)."""
        for lesion in self.lesions:
            if lesion.lesion_id == lesion_id:
                return lesion
        raise KeyError(lesion_id)

    def roi(self, roi_id: str) -> Roi:
        """The ROI with this id (KeyError if none)."""
        for roi in self.rois:
            if roi.roi_id == roi_id:
                return roi
        raise KeyError(roi_id)

    @property
    def muscle_roi(self) -> Roi | None:
        """The read's reference (muscle) ROI, if drawn."""
        return next((r for r in self.rois if r.role == RoiRole.MUSCLE), None)
