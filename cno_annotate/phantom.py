"""A synthetic child's body for sample whole-body MRI.

The phantom is a list of simple solids (capsules, cylinders, ellipsoids) in
patient LPS millimetres, each painting a tissue label into a label volume.
Tissue labels become STIR or T1 signal through :data:`SIGNAL`. Lesions are
painted last and only into marrow, so they sit inside bone as CNO lesions do:
bright on STIR, dark on T1, mostly in metaphyses next to growth plates; an
ill-defined one has a faint halo, and oedema may reach the periosteum and the
soft tissue around the bone. Normal growth plates are bright too.

Coordinates: x grows to the patient's left, y to posterior, z to superior.
The vertex of the head is at about z = +660 mm and the soles at z = -880 mm.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

# Tissue labels.
(AIR, FAT, MUSCLE, LUNG, BRAIN, CORTEX, YELLOW_MARROW, RED_MARROW, PHYSIS, LESION, DISC, VISCERA,
 LESION_MODERATE, OEDEMA_FAINT, SOFT_OEDEMA) = range(15)
MARROW_LABELS = (YELLOW_MARROW, RED_MARROW, PHYSIS)
#: What a lesion paints over: marrow, and the halo or core of a neighbouring lesion.
LESION_TARGETS = (*MARROW_LABELS, OEDEMA_FAINT, LESION_MODERATE, LESION)

#: Mean signal per tissue label for each sequence (arbitrary scanner units).
SIGNAL = {
    "STIR": np.array([0, 40, 220, 30, 550, 15, 90, 260, 750, 1150, 600, 330, 820, 470, 640], dtype=np.float32),
    "T1": np.array([0, 950, 420, 40, 520, 25, 780, 520, 380, 230, 350, 450, 300, 430, 390], dtype=np.float32),
}
#: Extra radius (mm) of periosteal and soft-tissue oedema around a lesion.
SURROUNDING_MM = {"periosteal": 5.0, "soft tissue": 14.0}
#: A lesion's ill-defined halo reaches this factor of its radii.
HALO = 1.7

CORTEX_MM = 2.0
FAT_LAYER_MM = 8.0


@dataclass(frozen=True)
class Grid:
    """An axis-aligned sampling grid: voxel centres along x, y and z (mm).

    The label volume it holds is indexed ``[y, z, x]`` in the order of the
    coronal DICOM slices (k = anterior to posterior, j = head to feet,
    i = patient right to left).
    """

    xs: np.ndarray
    ys: np.ndarray
    zs: np.ndarray

    def block(self, lo: np.ndarray, hi: np.ndarray):
        """Index slices and coordinates of the voxels inside a bounding box."""
        sx = _range(self.xs, lo[0], hi[0])
        sy = _range(self.ys, lo[1], hi[1])
        sz = _range(self.zs, lo[2], hi[2])
        if sx is None or sy is None or sz is None:
            return None
        y, z, x = np.meshgrid(self.ys[sy], self.zs[sz], self.xs[sx], indexing="ij")
        return (sy, sz, sx), np.stack([x, y, z], axis=-1)


def _range(coords: np.ndarray, lo: float, hi: float) -> slice | None:
    """The slice of sorted or reverse-sorted ``coords`` within [lo, hi]."""
    inside = np.nonzero((coords >= lo) & (coords <= hi))[0]
    if inside.size == 0:
        return None
    return slice(int(inside[0]), int(inside[-1]) + 1)


def _segment_coords(points: np.ndarray, a: np.ndarray, b: np.ndarray):
    """Axial position t (mm from a) and radial distance of points to segment ab."""
    axis = b - a
    length = float(np.linalg.norm(axis))
    unit = axis / length
    rel = points - a
    t = rel @ unit
    radial = np.linalg.norm(rel - t[..., None] * unit, axis=-1)
    return t, radial, length


#: Body parts that move as one when a child is positioned (the generator's regions).
BODY_PARTS = ("head_neck", "trunk", "pelvis", "left_arm", "right_arm", "left_leg", "right_leg")


class Phantom:
    """Paints tissue labels into a :class:`Grid`.

    Solids are given in the body's own frame; :attr:`pose` (a 4 x 4 affine,
    body mm -> scanner LPS mm, identity by default) places them, so the same
    body can lie differently at each visit (see :meth:`posed`).
    """

    def __init__(self, grid: Grid):
        self.grid = grid
        self.labels = np.zeros((len(grid.ys), len(grid.zs), len(grid.xs)), dtype=np.uint8)
        self.pose = np.eye(4)

    @contextmanager
    def posed(self, pose: np.ndarray | None) -> Iterator[None]:
        """Paint with ``pose`` (body -> scanner affine) inside the ``with`` block."""
        previous = self.pose
        self.pose = np.eye(4) if pose is None else np.asarray(pose, float)
        try:
            yield
        finally:
            self.pose = previous

    def _block(self, lo: np.ndarray, hi: np.ndarray):
        """Grid voxels that may hold a body-frame box, with their body-frame coordinates."""
        if np.array_equal(self.pose, np.eye(4)):
            return self.grid.block(lo, hi)
        corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
        placed = corners @ self.pose[:3, :3].T + self.pose[:3, 3]
        found = self.grid.block(placed.min(axis=0), placed.max(axis=0))
        if found is None:
            return None
        index, points = found
        inverse = np.linalg.inv(self.pose)
        return index, points @ inverse[:3, :3].T + inverse[:3, 3]

    # -- primitives ---------------------------------------------------------
    def capsule(self, a, b, radius: float, label: int, only=None) -> None:
        """Paint a capsule (segment a-b swept by a sphere)."""
        found = self._around_segment(a, b, radius)
        if found is not None:
            index, t, radial, length = found
            distance = np.hypot(radial, t - np.clip(t, 0, length))
            self._set(index, distance <= radius, label, only)

    def cylinder(self, a, b, radius: float, label: int, only=None) -> None:
        """Paint a flat-ended cylinder from a to b."""
        found = self._around_segment(a, b, radius)
        if found is not None:
            index, t, radial, length = found
            self._set(index, (t >= 0) & (t <= length) & (radial <= radius), label, only)

    def _around_segment(self, a, b, radius: float):
        """Voxels near segment a-b, with their axial and radial coordinates."""
        a, b = np.asarray(a, float), np.asarray(b, float)
        found = self._block(np.minimum(a, b) - radius, np.maximum(a, b) + radius)
        if found is None:
            return None
        index, pts = found
        return (index, *_segment_coords(pts, a, b))

    def ellipsoid(self, centre, radii, label: int, only=None) -> None:
        """Paint an axis-aligned ellipsoid."""
        centre, radii = np.asarray(centre, float), np.asarray(radii, float)
        found = self._block(centre - radii, centre + radii)
        if found is None:
            return
        index, pts = found
        inside = np.sum(((pts - centre) / radii) ** 2, axis=-1) <= 1.0
        self._set(index, inside, label, only)

    def _set(self, index, inside: np.ndarray, label: int, only) -> None:
        view = self.labels[index]
        if only is not None:
            inside = inside & np.isin(view, only)
        view[inside] = label

    # -- composite structures -----------------------------------------------
    def soft(self, kind: str, *args) -> None:
        """Soft tissue: a fat shell around muscle (capsule or ellipsoid)."""
        if kind == "capsule":
            a, b, r = args
            self.capsule(a, b, r, FAT)
            self.capsule(a, b, r - FAT_LAYER_MM, MUSCLE)
        else:
            centre, radii = args
            self.ellipsoid(centre, radii, FAT)
            self.ellipsoid(centre, np.asarray(radii) - FAT_LAYER_MM, MUSCLE)

    def long_bone(self, proximal, distal, radius: float) -> None:
        """A tubular bone with epiphyses, physes and red-marrow metaphyses."""
        p, d = np.asarray(proximal, float), np.asarray(distal, float)
        unit = (d - p) / np.linalg.norm(d - p)
        inner = radius - CORTEX_MM
        self.capsule(p, d, radius, CORTEX)
        self.capsule(p, d, inner, YELLOW_MARROW)
        epiphysis = 1.1 * radius
        for end, direction in ((p, unit), (d, -unit)):
            physis = end + direction * epiphysis
            self.cylinder(physis, physis + direction * 2.5 * radius, inner, RED_MARROW)
            self.cylinder(physis - direction * 1.5, physis + direction * 1.5, inner, PHYSIS)

    def flat_bone(self, a, b, radius: float, marrow: int = RED_MARROW) -> None:
        """A bone with cortex and marrow but no growth plate."""
        self.capsule(a, b, radius, CORTEX)
        self.capsule(a, b, radius - CORTEX_MM, marrow)

    def lesion(self, centre, radii, intensity: str = "marked", margin: str = "sharp",
               surroundings: str = "none") -> None:
        """A CNO lesion: marrow oedema, painted only into marrow.

        ``intensity`` ``"marked"`` or ``"moderate"``; ``margin`` ``"sharp"`` or
        ``"ill-defined"`` (a faint halo); ``surroundings`` ``"none"``,
        ``"periosteal"`` or ``"soft tissue"`` (oedema of the muscle and fat around the bone).
        """
        centre, radii = np.asarray(centre, float), np.asarray(radii, float)
        extra = SURROUNDING_MM.get(surroundings)
        if extra is not None:
            self.ellipsoid(centre, radii + [extra, extra, 1.3 * extra], SOFT_OEDEMA, only=(MUSCLE, FAT))
        if margin == "ill-defined":
            self.ellipsoid(centre, HALO * radii, OEDEMA_FAINT, only=MARROW_LABELS)
        label = LESION_MODERATE if intensity == "moderate" else LESION
        self.ellipsoid(centre, radii, label, only=LESION_TARGETS)


def side_x(side: str, x: float) -> float:
    """x of a structure on the patient's ``side`` (LPS: left is +x)."""
    return x if side == "L" else -x


#: Vertebrae top to bottom with their body height (mm, disc included).
VERTEBRAE = [f"C{i}" for i in range(1, 8)] + [f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)]
_SPINE_TOP_Z = 440.0
_SPINE_Y = 35.0


def vertebra_centres() -> dict[str, tuple[np.ndarray, float, float]]:
    """Centre, height and body radius of every vertebra, C1 to L5."""
    out = {}
    z = _SPINE_TOP_Z
    for name in VERTEBRAE:
        height, radius = {"C": (13.0, 11.0), "T": (18.0, 14.0), "L": (24.0, 18.0)}[name[0]]
        out[name] = (np.array([0.0, _SPINE_Y, z - height / 2]), height, radius)
        z -= height
    return out


#: Long bones: (name, proximal end, distal end, radius), given for the left side.
LONG_BONES = [
    ("humerus", (150, 0, 385), (165, 0, 130), 11.0),
    ("radius", (178, -5, 120), (192, -10, -95), 6.5),
    ("ulna", (160, 5, 125), (172, 5, -95), 6.5),
    ("femur", (100, 0, -90), (75, 0, -450), 13.0),
    ("tibia", (72, 0, -470), (70, 0, -800), 12.0),
    ("fibula", (100, 15, -480), (96, 15, -800), 6.0),
]


Poses = Mapping[str, np.ndarray]


def _limb(side: str, kind: str) -> str:
    return f"{'left' if side == 'L' else 'right'}_{kind}"


def paint_body(ph: Phantom, poses: Poses | None = None) -> None:
    """Paint the whole child: soft tissue, organs and skeleton.

    Parameters
    ----------
    ph : Phantom
        Where to paint.
    poses : mapping, optional
        Body part (:data:`BODY_PARTS`) -> 4 x 4 affine (body -> scanner mm);
        a missing part is not moved.
    """
    poses = poses or {}
    # Soft tissues, outside in.
    with ph.posed(poses.get("head_neck")):
        ph.soft("ellipsoid", (0, 10, 560), (78, 92, 102))
        ph.soft("capsule", (0, 20, 470), (0, 20, 400), 48)
    with ph.posed(poses.get("trunk")):
        ph.soft("ellipsoid", (0, 10, 190), (145, 100, 290))
    for side in "LR":
        with ph.posed(poses.get(_limb(side, "arm"))):
            ph.soft("capsule", (side_x(side, 155), 0, 390), (side_x(side, 170), 0, 120), 38)
            ph.soft("capsule", (side_x(side, 172), 0, 120), (side_x(side, 185), -5, -100), 30)
            ph.soft("ellipsoid", (side_x(side, 188), -10, -160), (28, 18, 60))
        with ph.posed(poses.get(_limb(side, "leg"))):
            ph.soft("capsule", (side_x(side, 90), 0, -70), (side_x(side, 75), 0, -450), 62)
            ph.soft("capsule", (side_x(side, 75), 0, -460), (side_x(side, 72), 10, -820), 45)
            ph.soft("ellipsoid", (side_x(side, 72), -20, -855), (40, 90, 35))
    with ph.posed(poses.get("head_neck")):
        ph.ellipsoid((0, 10, 560), (66, 80, 90), BRAIN)
    with ph.posed(poses.get("trunk")):
        ph.ellipsoid((0, 20, 120), (118, 75, 120), VISCERA)
        for side in "LR":
            ph.ellipsoid((side_x(side, 62), 5, 300), (50, 58, 105), LUNG)
    paint_skeleton(ph, poses)


def paint_skeleton(ph: Phantom, poses: Poses | None = None) -> None:
    """Paint the bones (cortex, marrow, growth plates), each with its body part's pose."""
    poses = poses or {}
    for name, (centre, height, radius) in vertebra_centres().items():
        with ph.posed(poses.get("head_neck" if name.startswith("C") else "trunk")):
            top, bottom = centre + [0, 0, height / 2 - 2], centre - [0, 0, height / 2 - 2]
            ph.cylinder(centre - [0, 0, height / 2], centre + [0, 0, height / 2], radius, DISC)
            ph.cylinder(bottom, top, radius, CORTEX)
            ph.cylinder(bottom + [0, 0, 1.5], top - [0, 0, 1.5], radius - CORTEX_MM, RED_MARROW)
    with ph.posed(poses.get("pelvis")):
        ph.flat_bone((0, 45, -5), (0, 70, -95), 24)  # sacrum
    with ph.posed(poses.get("trunk")):
        ph.flat_bone((0, -70, 385), (0, -75, 250), 9)  # sternum
    for side in "LR":
        with ph.posed(poses.get("head_neck")):
            ph.flat_bone((side_x(side, 40), -45, 470), (0, -60, 452), 8)  # mandible
        with ph.posed(poses.get("trunk")):
            ph.flat_bone((side_x(side, 18), -40, 385), (side_x(side, 130), -10, 402), 7.5)  # clavicle
            ph.flat_bone((side_x(side, 100), 60, 380), (side_x(side, 95), 65, 290), 16)  # scapula
        with ph.posed(poses.get("pelvis")):
            ph.flat_bone((side_x(side, 62), 35, 30), (side_x(side, 95), 10, -60), 22)  # ilium
            ph.flat_bone((side_x(side, 85), -10, -92), (side_x(side, 18), -50, -118), 10)  # pubis
            ph.flat_bone((side_x(side, 80), 20, -95), (side_x(side, 62), 25, -140), 12)  # ischium
        with ph.posed(poses.get(_limb(side, "leg"))):
            ph.flat_bone((side_x(side, 70), 25, -845), (side_x(side, 70), -10, -860), 22, YELLOW_MARROW)  # calcaneus
            ph.flat_bone((side_x(side, 70), 0, -820), (side_x(side, 70), -20, -825), 16, YELLOW_MARROW)  # talus
            ph.flat_bone((side_x(side, 85), 0, -85), (side_x(side, 100), 0, -92), 19, YELLOW_MARROW)  # femoral head
        for name, prox, dist, radius in LONG_BONES:
            with ph.posed(poses.get(_limb(side, BONE_LIMB[name]))):
                ph.long_bone(
                    (side_x(side, prox[0]), prox[1], prox[2]),
                    (side_x(side, dist[0]), dist[1], dist[2]),
                    radius,
                )


#: The limb each long bone belongs to.
BONE_LIMB = {"humerus": "arm", "radius": "arm", "ulna": "arm", "femur": "leg", "tibia": "leg", "fibula": "leg"}


def body_part(bone: str, side: str) -> str:
    """The body part (:data:`BODY_PARTS`) a bone moves with."""
    if bone in BONE_LIMB:
        return _limb(side, BONE_LIMB[bone])
    if bone in ("calcaneus", "talus", "femoral head"):
        return _limb(side, "leg")
    if bone in ("ilium", "pubis", "ischium", "sacrum"):
        return "pelvis"
    if bone.startswith("C") and bone[1:].isdigit() or bone == "mandible":
        return "head_neck"
    return "trunk"


def _bone_axis(bone: str, side: str) -> tuple[np.ndarray, np.ndarray, float]:
    """Proximal end, distal end and radius of a long bone on one side."""
    _name, prox, dist, radius = next(b for b in LONG_BONES if b[0] == bone)
    p = np.array([side_x(side, prox[0]), prox[1], prox[2]], float)
    d = np.array([side_x(side, dist[0]), dist[1], dist[2]], float)
    return p, d, radius


def physis_centre(bone: str, end: str, side: str) -> np.ndarray:
    """Centre of the growth plate at one end of a long bone (body frame)."""
    p, d, radius = _bone_axis(bone, side)
    unit = (d - p) / np.linalg.norm(d - p)
    start, direction = (p, unit) if end == "proximal" else (d, -unit)
    return start + direction * 1.1 * radius


def metaphysis_centre(bone: str, end: str, side: str) -> np.ndarray:
    """Centre of the metaphysis at one end of a long bone, just past the physis."""
    p, d, radius = _bone_axis(bone, side)
    unit = (d - p) / np.linalg.norm(d - p)
    start, direction = (p, unit) if end == "proximal" else (d, -unit)
    return start + direction * (1.1 * radius + 1.2 * radius)


def shaft_point(bone: str, side: str, fraction: float) -> np.ndarray:
    """A point on a long bone's axis, ``fraction`` of the way from its proximal end."""
    p, d, _radius = _bone_axis(bone, side)
    return p + fraction * (d - p)


def paint_variants(ph: Phantom, variants: list[dict], poses: Poses | None = None) -> None:
    """Paint the normal variants that are not part of every body (residual red marrow)."""
    poses = poses or {}
    radius_of = {name: r for name, _p, _d, r in LONG_BONES}
    for variant in variants:
        if variant["kind"] != "residual red marrow":
            continue  # growth plates are painted with the bones
        inner = radius_of[variant["bone"]] - CORTEX_MM
        with ph.posed(poses.get(body_part(variant["bone"], variant["side"]))):
            ph.ellipsoid(variant["lps_mm"], (inner, inner, variant["length_mm"] / 2), RED_MARROW, only=(YELLOW_MARROW,))


def paint_lesions(ph: Phantom, lesions: list[dict], poses: Poses | None = None) -> None:
    """Paint each ground-truth lesion into marrow (centre ``lps_mm`` in the body frame)."""
    poses = poses or {}
    for lesion in lesions:
        with ph.posed(poses.get(body_part(lesion["bone"], lesion["side"]))):
            ph.lesion(lesion["lps_mm"], lesion["radii_mm"], lesion.get("intensity", "marked"),
                      lesion.get("margin", "sharp"), lesion.get("surroundings", "none"))


def render(labels: np.ndarray, sequence: str, rng: np.random.Generator, noise: float = 12.0,
           sub_slices: int = 1) -> np.ndarray:
    """Turn tissue labels into MR signal with partial-volume blur and noise.

    With ``sub_slices`` > 1 the labels were painted at that many positions
    across each slice's thickness (``labels`` axis 0 holds slice x sub-slice)
    and the slice's signal is their mean: thick slices average what they hold.
    """
    image = SIGNAL[sequence][labels]
    if sub_slices > 1:
        image = image.reshape(-1, sub_slices, *image.shape[1:]).mean(axis=1)
    blurred = image.copy()
    blurred[..., 1:-1, :] += image[..., :-2, :] + image[..., 2:, :]
    blurred[..., 1:-1, :] /= 3
    smooth = blurred.copy()
    smooth[..., 1:-1] += blurred[..., :-2] + blurred[..., 2:]
    smooth[..., 1:-1] /= 3
    noisy = np.hypot(smooth + rng.normal(0, noise, smooth.shape), rng.normal(0, noise, smooth.shape))
    return noisy.astype(np.float32)
