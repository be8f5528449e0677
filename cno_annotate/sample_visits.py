"""Follow-up visits of the synthetic patient: repositioning and the lesions' courses.

At each visit a child lies differently: the trunk is shifted and turned, the
table starts elsewhere, the head nods, and each arm and leg turns about its
shoulder or hip. Each body part (:data:`cno_annotate.phantom.BODY_PARTS`) gets
a pose, a 4 x 4 affine from the body's own frame to the scanner's LPS mm; the
first visit's poses are the identity. The true transform of a part from visit
``a`` to visit ``b`` is ``pose_b @ inverse(pose_a)``.

Lesions follow a course across visits (resolves, shrinks, persists, grows,
appears) and keep one ``track_id``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from scipy.spatial.transform import Rotation

from cno_annotate import phantom

#: Joints the limbs turn about (body frame, LPS mm; left side, mirrored for the right).
SHOULDER = np.array([155.0, 0.0, 390.0])
HIP = np.array([92.0, 0.0, -88.0])
NECK = np.array([0.0, 35.0, 349.0])
TRUNK_CENTRE = np.array([0.0, 10.0, 100.0])


class Course(StrEnum):
    """How a lesion changes across visits."""

    RESOLVES = "resolves"
    SHRINKS = "shrinks"
    PERSISTS = "persists"
    GROWS = "grows"
    APPEARS = "appears"


#: Size factor of a lesion at visits 1, 2 and 3 for each course (0: absent).
SCALES = {
    Course.RESOLVES: (1.0, 0.0, 0.0),
    Course.SHRINKS: (1.0, 0.65, 0.45),
    Course.PERSISTS: (1.0, 1.0, 1.0),
    Course.GROWS: (1.0, 1.3, 1.5),
    Course.APPEARS: (0.0, 1.0, 1.15),
}


@dataclass(frozen=True)
class LesionTrack:
    """One lesion across visits."""

    track_id: str
    lesion: dict
    course: Course
    scales: tuple[float, ...]

    def as_dict(self) -> dict:
        """JSON-ready ground truth of the track."""
        return {"track_id": self.track_id, "lesion_id": self.lesion["id"], "course": self.course.value,
                "size_factor_per_visit": list(self.scales)}


def rigid(degrees_xyz, shift_mm, pivot) -> np.ndarray:
    """A 4 x 4 rotation (x, y, z Euler angles in degrees) about ``pivot``, then a shift."""
    rotation = Rotation.from_euler("xyz", degrees_xyz, degrees=True).as_matrix()
    out = np.eye(4)
    out[:3, :3] = rotation
    out[:3, 3] = np.asarray(shift_mm, float) + np.asarray(pivot, float) - rotation @ np.asarray(pivot, float)
    return out


def identity_poses() -> dict[str, np.ndarray]:
    """Every body part where the phantom draws it."""
    return {part: np.eye(4) for part in phantom.BODY_PARTS}


def random_poses(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A new positioning: trunk shift and turn, table start, head nod, limbs about their joints."""
    def angles(limits) -> np.ndarray:
        return rng.uniform(-1, 1, 3) * np.asarray(limits, float)

    shift = rng.uniform(-1, 1, 3) * np.array([10.0, 6.0, 15.0])  # z: the table starts elsewhere
    trunk = rigid(angles([2.0, 2.0, 3.0]), shift, TRUNK_CENTRE)
    poses = {"trunk": trunk, "pelvis": trunk, "head_neck": trunk @ rigid(angles([3.0, 1.5, 2.0]), [0, 0, 0], NECK)}
    mirror = np.array([-1.0, 1.0, 1.0])
    for side, sign in (("left", 1.0), ("right", -1.0)):
        joint = SHOULDER if sign > 0 else SHOULDER * mirror
        poses[f"{side}_arm"] = trunk @ rigid(angles([3.0, 2.0, 2.0]), [0, 0, 0], joint)
        joint = HIP if sign > 0 else HIP * mirror
        poses[f"{side}_leg"] = trunk @ rigid(angles([3.0, 2.5, 2.0]), [0, 0, 0], joint)
    return poses


def lesion_courses(lesions: list[dict], baseline: int, timepoints: int,
                   rng: np.random.Generator) -> list[LesionTrack]:
    """A course for each lesion: the first ``baseline`` are present at the first visit.

    Those resolve, shrink, persist or grow (each course used before any
    repeats, in random order); the others appear, one at each later visit.
    With one timepoint every lesion is simply present.
    """
    tracks = []
    scales: tuple[float, ...]
    changes = [Course.RESOLVES, Course.SHRINKS, Course.PERSISTS, Course.GROWS]
    order = [changes[int(i)] for i in rng.permutation(4)]
    for n, lesion in enumerate(lesions):
        if timepoints == 1:
            course, scales = Course.PERSISTS, (1.0,)
        elif n < baseline:
            course = order[n % 4]
            scales = SCALES[course][:timepoints]
        else:
            course = Course.APPEARS
            first = n - baseline + 1  # the visit (0-based) it appears at
            scales = tuple(0.0 if v < first else SCALES[Course.APPEARS][1 + min(v - first, 1)]
                           for v in range(timepoints))
        tracks.append(LesionTrack(f"T{n + 1}", lesion, course, scales))
    return tracks


def lesions_at(tracks: list[LesionTrack], visit: int) -> list[dict]:
    """The lesions present at a visit (0-based), sized by their course, in the body frame."""
    out = []
    for track in tracks:
        scale = track.scales[visit]
        if scale > 0:
            radii = [round(float(r) * scale, 2) for r in track.lesion["radii_mm"]]
            out.append({**track.lesion, "radii_mm": radii, "track_id": track.track_id,
                        "course": track.course.value})
    return out


def placed(lesions: list[dict], poses: dict[str, np.ndarray]) -> list[dict]:
    """Lesions (or variants) with ``lps_mm`` in the scanner frame of a visit (and their body part)."""
    out = []
    for lesion in lesions:
        part = phantom.body_part(lesion["bone"], lesion["side"])
        pose = poses[part]
        centre = pose[:3, :3] @ np.asarray(lesion["lps_mm"], float) + pose[:3, 3]
        out.append({**lesion, "lps_mm": [round(float(c), 2) for c in centre], "body_part": part})
    return out


def true_transforms(poses: list[dict[str, np.ndarray]]) -> list[dict]:
    """Per body part, the true transform from each visit to each later one (LPS mm)."""
    out = []
    for a in range(len(poses)):
        for b in range(a + 1, len(poses)):
            regions = {part: as_list(poses[b][part] @ np.linalg.inv(poses[a][part])) for part in poses[a]}
            out.append({"from_visit": a + 1, "to_visit": b + 1, "regions": regions})
    return out


def as_list(matrix: np.ndarray) -> list[list[float]]:
    """A matrix as JSON-ready nested lists (rounded to 1e-6)."""
    return [[round(float(v), 6) for v in row] for row in matrix]
