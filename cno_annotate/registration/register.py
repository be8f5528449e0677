"""Piecewise rigid (or affine) registration of two whole-body volumes with SimpleITK.

The fixed image is the source (prior) volume, the moving image the target
(current) one, so each region's result maps source points to target points.
First the whole body is aligned (centres of mass, then one rigid registration
inside the body mask); each region then starts from that trunk-level
transform, re-centred on the region, and is refined with the fixed image
masked to the region's box. Correlation is the metric (same sequence, scanner
gain may differ), sampled at a fixed seed so that results repeat exactly.

The arms come last. An arm is thin, often cut by the edge of the field of
view, and its length gives a rigid fit little hold along it, so where the seam
between arm and trunk is seen (:func:`~cno_annotate.registration.regions.arm_boundaries`)
an arm is registered as a turn about its shoulder: the shoulder goes where
the trunk region's transform takes it, and only the rotation is optimised
(three resolution levels), with the metric on the arm's side of the seam
(air around the arm included: its outline is what moves) and only on voxels
that lie inside both fields of view.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from cno_annotate.errors import CnoError
from cno_annotate.io.volume import Volume
from cno_annotate.registration.regions import (
    ArmBoundary,
    RegionBox,
    arm_boundaries,
    body_regions,
    projection_axes,
    with_arm_seams,
)
from cno_annotate.registration.transform import PiecewiseTransform, RegionTransform

#: Fewest slices a volume needs: SimpleITK's Gaussian smoothing wants four voxels along every axis.
MIN_SLICES = 4
#: Fewest fixed-image voxels a region needs to be registered on its own.
MIN_REGION_VOXELS = 500
SAMPLING_SEED = 20261128
#: Share of the (masked) fixed voxels the metric samples at each level.
SAMPLING_FRACTION = 0.2
#: Optimiser: most steps per resolution level, first step length (mm, after scaling).
ITERATIONS = 100
LEARNING_RATE = 2.0
#: Resolution levels: shrink factor and Gaussian smoothing (mm) of each.
SHRINK_FACTORS = (2, 1)
SMOOTHING_MM = (2.0, 0.0)
#: An arm's levels (when its cropped image has :data:`ARM_LEVELS_MIN_VOXELS` along every axis) and steps per level.
ARM_SHRINK_FACTORS = (4, 2, 1)
ARM_SMOOTHING_MM = (4.0, 2.0, 0.0)
ARM_LEVELS_MIN_VOXELS = 16
ARM_ITERATIONS = 150
#: The shoulder (an arm's pivot): the centre of the arm's region in its top this many mm, at its top.
SHOULDER_DEPTH_MM = 40.0
#: An arm's metric keeps fixed voxels whose start position is this many voxels inside the moving image.
FOV_MARGIN_VOXELS = 1.0
#: Optimiser scale that holds a parameter where it started (its steps become negligible).
HELD = 1.0e12


@dataclass
class RegistrationTimes:
    """Seconds spent, per step (``whole_body`` and each region)."""

    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        """All steps together."""
        return sum(self.seconds.values())


def to_sitk(volume: Volume) -> sitk.Image:
    """A SimpleITK image with the volume's LPS geometry (ITK works in LPS too)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array, dtype=np.float32))
    linear = np.asarray(volume.affine, float)[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(v) for v in np.asarray(volume.affine, float)[:3, 3]])
    image.SetDirection([float(v) for v in (linear / spacing).ravel()])
    return image


def body_mask(image: sitk.Image) -> sitk.Image:
    """Voxels brighter than 15 % of the image's bright end (uint8, same grid)."""
    array = sitk.GetArrayViewFromImage(image)
    level = 0.15 * float(np.percentile(array, 99.5))
    mask = sitk.GetImageFromArray((array > level).astype(np.uint8))
    mask.CopyInformation(image)
    return mask


def region_labels(image: sitk.Image, boxes: list[RegionBox]) -> np.ndarray:
    """Per voxel ``[k, j, i]``, the index of the first box (priority order) holding it; -1 for none."""
    size = image.GetSize()
    i, j, k = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in size), indexing="ij")
    index = np.stack([i, j, k], axis=-1).reshape(-1, 3)
    linear = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    lps = index @ linear.T.astype(np.float32) + np.array(image.GetOrigin(), dtype=np.float32)
    labels = np.full(len(lps), -1, dtype=np.int16)
    for n in reversed(range(len(boxes))):  # the first box wins: paint it last
        inside = np.all((lps >= boxes[n].lo) & (lps <= boxes[n].hi), axis=1)
        labels[inside] = n
    return labels.reshape(size).transpose(2, 1, 0)


def region_mask(mask: sitk.Image, labels: np.ndarray, number: int) -> sitk.Image:
    """The body mask limited to the voxels a region holds."""
    array = sitk.GetArrayViewFromImage(mask) * (labels == number)
    out = sitk.GetImageFromArray(array.astype(np.uint8))
    out.CopyInformation(mask)
    return out


def _centroid(mask: sitk.Image) -> np.ndarray | None:
    array = sitk.GetArrayViewFromImage(mask)
    if int(array.sum()) < MIN_REGION_VOXELS:
        return None
    k, j, i = (float(np.mean(a)) for a in np.nonzero(array))
    return np.array(mask.TransformContinuousIndexToPhysicalPoint((i, j, k)))


def _crop(image: sitk.Image, mask: sitk.Image, margin: int = 4) -> tuple[sitk.Image, sitk.Image]:
    """The image and mask cut to the mask's bounding box (plus ``margin`` voxels)."""
    array = sitk.GetArrayViewFromImage(mask)
    lo, hi = [], []
    for axis in (2, 1, 0):  # i, j, k
        others = tuple(a for a in (0, 1, 2) if a != axis)
        used = np.nonzero(array.any(axis=others))[0]
        size = array.shape[axis]
        lo.append(max(int(used[0]) - margin, 0))
        hi.append(min(int(used[-1]) + margin + 1, size))
    extent = [h - low for low, h in zip(lo, hi)]
    return sitk.RegionOfInterest(image, extent, lo), sitk.RegionOfInterest(mask, extent, lo)


def matrix_of(transform: sitk.Transform) -> np.ndarray:
    """The 4 x 4 affine of a linear SimpleITK transform (fixed -> moving points).

    Read off the images of the origin and of three 100 mm steps, which works
    for any linear transform type (rigid, affine, or a composite of them).
    """
    origin = np.array(transform.TransformPoint((0.0, 0.0, 0.0)))
    out = np.eye(4)
    for axis in range(3):
        step = [0.0, 0.0, 0.0]
        step[axis] = 100.0
        out[:3, axis] = (np.array(transform.TransformPoint(tuple(step))) - origin) / 100.0
    out[:3, 3] = origin
    return out


def _euler_from(matrix: np.ndarray, centre: np.ndarray) -> sitk.Euler3DTransform:
    """A rigid transform equal to ``matrix`` (its rigid part), centred at ``centre``."""
    euler = sitk.Euler3DTransform()
    euler.SetCenter([float(v) for v in centre])
    euler.SetMatrix([float(v) for v in matrix[:3, :3].ravel()])
    offset = matrix[:3, 3]
    euler.SetTranslation([float(v) for v in matrix[:3, :3] @ centre + offset - centre])
    return euler


def _method(fixed_mask: sitk.Image | None) -> sitk.ImageRegistrationMethod:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsCorrelation()
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(SAMPLING_FRACTION, SAMPLING_SEED)
    if fixed_mask is not None:
        method.SetMetricFixedMask(fixed_mask)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=LEARNING_RATE, minStep=1e-3, numberOfIterations=ITERATIONS, relaxationFactor=0.6)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(SHRINK_FACTORS))
    method.SetSmoothingSigmasPerLevel(list(SMOOTHING_MM))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return method


def _register(fixed: sitk.Image, moving: sitk.Image, initial: sitk.Transform,
              fixed_mask: sitk.Image | None) -> np.ndarray:
    method = _method(fixed_mask)
    method.SetInitialTransform(initial, inPlace=False)
    try:
        result = method.Execute(fixed, moving)
    except RuntimeError as exc:  # e.g. too few samples inside the mask
        raise CnoError(f"registration failed: {str(exc).strip().splitlines()[-1]}") from None
    return matrix_of(result)


def whole_body_rigid(fixed: sitk.Image, moving: sitk.Image, mask: sitk.Image | None = None) -> np.ndarray:
    """One rigid transform for the whole volume, started at the centres of mass."""
    initial = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS)
    return _register(fixed, moving, initial, mask)


def naive_rigid(fixed_volume: Volume, moving_volume: Volume) -> np.ndarray:
    """SimpleITK's plain way: one rigid registration of the whole volumes, geometric centres.

    For comparison in ``bench/registration_bench.py``.
    """
    fixed, moving = to_sitk(fixed_volume), to_sitk(moving_volume)
    initial = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.GEOMETRY)
    return _register(fixed, moving, initial, None)


def register_piecewise(
    source: Volume,
    target: Volume,
    *,
    affine: bool = False,
    progress: Callable[[int, int], None] | None = None,
    times: RegistrationTimes | None = None,
) -> PiecewiseTransform:
    """Register ``target`` onto ``source`` region by region.

    Parameters
    ----------
    source, target : Volume
        Prior and current volumes (same sequence), LPS.
    affine : bool
        Refine each region with an affine transform after the rigid one (an
        arm registered about its shoulder keeps the trunk's isotropic scaling).
    progress : callable, optional
        ``progress(done, total)`` after each step.
    times : RegistrationTimes, optional
        Filled with the seconds each step took.

    Returns
    -------
    PiecewiseTransform
        Source (prior) to target (current) LPS mm, one transform per region.

    Raises
    ------
    CnoError
        If a volume has fewer than :data:`MIN_SLICES` slices along any axis, or
        SimpleITK fails; one line either way.
    """
    times = times if times is not None else RegistrationTimes()
    for volume in (source, target):
        _require_slices(volume)
    fixed, moving = to_sitk(source), to_sitk(target)
    mask = body_mask(fixed)
    boxes = body_regions(source)
    seams = arm_boundaries(source, boxes)
    boxes = with_arm_seams(boxes, seams)
    labels = region_labels(fixed, boxes)
    total = len(boxes) + 1
    start = time.perf_counter()
    whole_body = whole_body_rigid(fixed, moving, mask)
    times.seconds["whole_body"] = time.perf_counter() - start
    if progress is not None:
        progress(1, total)
    done: dict[str, RegionTransform] = {}
    arms_last = sorted(range(len(boxes)), key=lambda n: boxes[n].name.endswith("_arm"))
    for step, number in enumerate(arms_last, start=2):
        box = boxes[number]
        start = time.perf_counter()
        if box.name.endswith("_arm"):  # from the trunk's own transform: the shoulders move with it
            trunk = done["trunk"].matrix if "trunk" in done else whole_body
            seam = seams.get(box.name)
            if seam is not None:
                done[box.name] = _register_arm(fixed, moving, source, seam, box, trunk)
            else:
                done[box.name] = _register_region(fixed, moving, region_mask(mask, labels, number), box, trunk,
                                                  affine)
        else:
            done[box.name] = _register_region(fixed, moving, region_mask(mask, labels, number), box, whole_body,
                                              affine)
        times.seconds[box.name] = time.perf_counter() - start
        if progress is not None:
            progress(step, total)
    method = "piecewise-affine" if affine else "piecewise-rigid"
    return PiecewiseTransform(source.volume_id, target.volume_id, tuple(done[b.name] for b in boxes), method)


def _require_slices(volume: Volume) -> None:
    """Refuse, in one line, a volume too thin to register (the views stay linked by patient coordinates)."""
    slices = min(volume.shape)
    if slices < MIN_SLICES:
        raise CnoError(f"volume {volume.volume_id or '?'} has {slices} slices: registration needs at least "
                       f"{MIN_SLICES}; the views stay linked by patient coordinates")


def _register_region(fixed, moving, masked, box: RegionBox, trunk: np.ndarray, affine: bool) -> RegionTransform:
    """One region's transform (fixed image masked to the region), starting from the whole-body one."""
    centre = _centroid(masked)
    if centre is None:  # the region is (almost) outside the field of view: keep the trunk's
        return RegionTransform(box.name, trunk, np.array(box.lo), np.array(box.hi))
    fixed, masked = _crop(fixed, masked)
    matrix = _register(fixed, moving, _euler_from(trunk, centre), masked)
    if affine:
        matrix = _register(fixed, moving, _affine_from(matrix, centre), masked)
    return RegionTransform(box.name, matrix, np.array(box.lo), np.array(box.hi))


def arm_mask(fixed: sitk.Image, source: Volume, seam: ArmBoundary, box: RegionBox) -> sitk.Image:
    """The voxels on the arm's side of its seam within the box's height, at every depth (air included)."""
    axes = projection_axes(source.affine)
    assert axes is not None  # a seam is only found on a volume with LPS-aligned axes
    ax_x, ax_y, ax_z = axes
    affine = np.asarray(source.affine, float)
    shape = tuple(int(n) for n in source.shape)
    x_of = affine[0, 3] + np.arange(shape[ax_x]) * affine[0, 2 - ax_x]
    z_of = affine[2, 3] + np.arange(shape[ax_z]) * affine[2, 2 - ax_z]
    plane = seam.lateral(x_of[None, :], z_of[:, None]) & ((z_of >= box.lo[2]) & (z_of <= box.hi[2]))[:, None]
    order = sorted((ax_z, ax_x))
    if order[0] != ax_z:
        plane = plane.T
    array = np.broadcast_to(np.expand_dims(plane, axis=ax_y), shape).astype(np.uint8)
    out = sitk.GetImageFromArray(np.ascontiguousarray(array))
    out.CopyInformation(fixed)
    return out


def inside_both_fovs(masked: sitk.Image, moving: sitk.Image, start: np.ndarray,
                     margin: float = FOV_MARGIN_VOXELS) -> sitk.Image:
    """The mask limited to voxels ``margin`` voxels inside its own image and, moved by ``start``, inside ``moving``.

    A limb cut by the edge of the field of view is cut at another place of the
    limb at each visit; voxels near either edge would compare tissue with
    nothing, so the metric leaves them out from the start (not point by point
    as the transform changes).
    """
    array = sitk.GetArrayFromImage(masked)
    k, j, i = np.nonzero(array)
    index = np.stack([i, j, k], axis=1).astype(float)
    linear = np.array(masked.GetDirection()).reshape(3, 3) * np.array(masked.GetSpacing())
    lps = index @ linear.T + np.array(masked.GetOrigin())
    there = lps @ start[:3, :3].T + start[:3, 3]
    moving_linear = np.array(moving.GetDirection()).reshape(3, 3) * np.array(moving.GetSpacing())
    moving_index = (there - np.array(moving.GetOrigin())) @ np.linalg.inv(moving_linear).T
    keep = np.ones(len(index), dtype=bool)
    for where, size in ((index, masked.GetSize()), (moving_index, moving.GetSize())):
        keep &= np.all((where >= margin - 0.5) & (where <= np.array(size, float) - 0.5 - margin), axis=1)
    out = np.zeros_like(array)
    out[k[keep], j[keep], i[keep]] = 1
    image = sitk.GetImageFromArray(out)
    image.CopyInformation(masked)
    return image


def shoulder(masked: sitk.Image) -> np.ndarray | None:
    """An arm's pivot: the centre of its region's top :data:`SHOULDER_DEPTH_MM`, at the region's top (LPS mm)."""
    array = sitk.GetArrayViewFromImage(masked)
    if int(array.sum()) < MIN_REGION_VOXELS:
        return None
    k, j, i = np.nonzero(array)
    linear = np.array(masked.GetDirection()).reshape(3, 3) * np.array(masked.GetSpacing())
    lps = np.stack([i, j, k], axis=1).astype(float) @ linear.T + np.array(masked.GetOrigin())
    top = float(lps[:, 2].max())
    pivot = lps[lps[:, 2] >= top - SHOULDER_DEPTH_MM].mean(axis=0)
    pivot[2] = top
    return pivot


def _register_arm(fixed, moving, source: Volume, seam: ArmBoundary, box: RegionBox, trunk: np.ndarray) -> RegionTransform:
    """An arm as a turn about its shoulder, which follows the trunk; see the module's docstring.

    With an affine trunk the arm keeps the trunk's scaling (a child's growth)
    and is turned on top of it: a cut-off arm gives no hold for a scaling of its own.
    """
    masked = arm_mask(fixed, source, seam, box)
    pivot = shoulder(masked)
    masked = inside_both_fovs(masked, moving, trunk)
    if pivot is None or int(sitk.GetArrayViewFromImage(masked).sum()) < MIN_REGION_VOXELS:
        return RegionTransform(box.name, trunk, np.array(box.lo), np.array(box.hi))
    fixed, masked = _crop(fixed, masked)
    return RegionTransform(box.name, _turn_about(fixed, moving, masked, pivot, trunk), np.array(box.lo),
                           np.array(box.hi))


def _turn_about(fixed: sitk.Image, moving: sitk.Image, masked: sitk.Image, pivot: np.ndarray,
                start: np.ndarray) -> np.ndarray:
    """The rotation about ``pivot`` (which ``start`` places) that best matches, as a 4 x 4 matrix.

    A similarity transform centred on the pivot, started at ``start`` (its
    rotation, where it takes the pivot, and for an affine ``start`` its
    isotropic scaling), of which only the rotation moves: the optimiser's
    scales hold translation and scaling, and the steps are scaled to
    millimetres of shift at the region's far end, as the rigid regions' are.
    """
    rotation = nearest_rotation(start[:3, :3])
    turn = sitk.Similarity3DTransform()
    turn.SetCenter([float(v) for v in pivot])
    turn.SetMatrix([float(v) for v in rotation.ravel()])
    turn.SetScale(float(np.cbrt(np.linalg.det(start[:3, :3]))))
    turn.SetTranslation([float(v) for v in start[:3, :3] @ pivot + start[:3, 3] - pivot])
    size = np.array(fixed.GetSize(), float) - 1
    corners = np.array([[a, b, c] for a in (0, size[0]) for b in (0, size[1]) for c in (0, size[2])])
    linear = np.array(fixed.GetDirection()).reshape(3, 3) * np.array(fixed.GetSpacing())
    reach = 2.0 * float(np.max(np.linalg.norm(corners @ linear.T + np.array(fixed.GetOrigin()) - pivot, axis=1)))
    method = _method(masked)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=LEARNING_RATE / reach, minStep=1e-3 / reach, numberOfIterations=ARM_ITERATIONS,
        relaxationFactor=0.6, gradientMagnitudeTolerance=1e-12)
    method.SetOptimizerScales([reach ** 2] * 3 + [HELD] * 4)  # versor; translation and scale held
    if min(fixed.GetSize()) >= ARM_LEVELS_MIN_VOXELS:
        method.SetShrinkFactorsPerLevel(list(ARM_SHRINK_FACTORS))
        method.SetSmoothingSigmasPerLevel(list(ARM_SMOOTHING_MM))
    method.SetInitialTransform(turn, inPlace=True)
    try:
        method.Execute(fixed, moving)
    except RuntimeError as exc:
        raise CnoError(f"registration failed: {str(exc).strip().splitlines()[-1]}") from None
    return matrix_of(turn)


def nearest_rotation(linear: np.ndarray) -> np.ndarray:
    """The rotation closest to a 3 x 3 matrix (its polar factor): an affine start's rigid part."""
    u, _, vt = np.linalg.svd(linear)
    if np.linalg.det(u @ vt) < 0:
        u[:, -1] *= -1
    return u @ vt


def _affine_from(matrix: np.ndarray, centre: np.ndarray) -> sitk.AffineTransform:
    """An affine transform equal to ``matrix``, centred at ``centre``."""
    out = sitk.AffineTransform(3)
    out.SetCenter([float(v) for v in centre])
    out.SetMatrix([float(v) for v in matrix[:3, :3].ravel()])
    out.SetTranslation([float(v) for v in matrix[:3, :3] @ centre + matrix[:3, 3] - centre])
    return out
