"""Assemble indexed images into slice stacks.

A DICOM series can hold images that do not form one volume (a localizer
with three planes, mixed matrix sizes, several echoes). :func:`build_stacks`
splits a series into stacks of parallel, equally sized images, orders each
stack by position along the slice normal (never by InstanceNumber), puts the
slices on a uniform grid and reports missing slices as gaps.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from cno_annotate.io.volume import affine_from_dicom, orientation_name, slice_normal

#: Positions closer than this fraction of the slice step count as one slice.
_SAME_POSITION = 0.05


@dataclass
class Stack:
    """Images of one series that form one volume.

    ``images`` are the image rows ordered along the normal; ``slice_index``
    gives, for each, its slice on the uniform grid (equal to its position in
    ``images`` unless there are gaps).
    """

    volume_id: str
    series_uid: str
    images: list[dict]
    slice_index: list[int]
    affine: np.ndarray
    shape: tuple[int, int, int]
    orientation: str
    gaps: list[dict] = field(default_factory=list)
    duplicates: int = 0
    patient_geometry: bool = True


def build_stacks(series_uid: str, images: list[dict]) -> list[Stack]:
    """Split one series' images into ordered slice stacks.

    Parameters
    ----------
    series_uid : str
        The SeriesInstanceUID.
    images : list of dict
        Rows with ``orientation`` (6), ``position`` (3), ``rows``,
        ``columns``, ``pixel_spacing`` (2), ``slice_thickness``, ``echo_time``.

    Returns
    -------
    list of Stack
        One per geometric group; the volume id is the series UID when the
        series forms one stack, otherwise the UID with ``.1``, ``.2``... added.
    """
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for image in images:
        groups[_group_key(image)].append(image)
    parts = []
    for key in sorted(groups, key=lambda k: (-len(groups[k]), k)):
        parts.extend(_split_repeats(groups[key]))
    stacks = []
    for n, part in enumerate(parts, start=1):
        volume_id = series_uid if len(parts) == 1 else f"{series_uid}.{n}"
        stacks.append(_make_stack(volume_id, series_uid, part))
    return stacks


def _group_key(image: dict) -> tuple:
    return (
        image.get("geometry_known", True),
        tuple(round(v, 3) for v in image["orientation"]),
        image["rows"],
        image["columns"],
        tuple(round(v, 4) for v in image["pixel_spacing"]),
    )


def _split_repeats(images: list[dict]) -> list[list[dict]]:
    """Separate echoes that share slice positions into their own stacks."""
    echoes = defaultdict(list)
    for image in images:
        echoes[image.get("echo_time")].append(image)
    if len(echoes) == 1:
        return [images]
    normal = slice_normal(np.array(images[0]["orientation"]))
    positions = {round(float(np.dot(normal, i["position"])), 2) for i in images}
    if len(positions) == len(images):
        return [images]  # echo time varies but every slice is distinct
    return [echoes[te] for te in sorted(echoes, key=lambda t: (t is None, t))]


def _make_stack(volume_id: str, series_uid: str, images: list[dict]) -> Stack:
    orientation = np.array(images[0]["orientation"], dtype=float)
    normal = slice_normal(orientation)
    along = np.array([float(np.dot(normal, i["position"])) for i in images])
    order = np.argsort(along, kind="stable")
    images = [images[n] for n in order]
    along = along[order]
    step = _typical_step(along, images[0].get("slice_thickness") or 1.0)
    kept: list[dict] = []
    index: list[int] = []
    duplicates = 0
    for image, pos in zip(images, along):
        k = int(round((pos - along[0]) / step))
        if index and k == index[-1]:
            duplicates += 1  # same position twice: keep the first
            continue
        kept.append(image)
        index.append(k)
    gaps = [
        {"after_slice": int(a), "missing": int(b - a - 1)}
        for a, b in zip(index, index[1:])
        if b - a > 1
    ]
    slice_step = normal * step
    if len(kept) > 1:
        slice_step = (np.array(kept[-1]["position"]) - np.array(kept[0]["position"])) / index[-1]
    affine = affine_from_dicom(orientation, np.array(kept[0]["position"]), kept[0]["pixel_spacing"], slice_step)
    shape = (index[-1] + 1, int(kept[0]["rows"]), int(kept[0]["columns"]))
    return Stack(
        volume_id=volume_id,
        series_uid=series_uid,
        images=kept,
        slice_index=index,
        affine=affine,
        shape=shape,
        orientation=orientation_name(normal),
        gaps=gaps,
        duplicates=duplicates,
        patient_geometry=bool(images[0].get("geometry_known", True)),
    )


def _typical_step(along: np.ndarray, thickness: float) -> float:
    """The usual distance between neighbouring slices (median of distinct steps)."""
    if len(along) < 2:
        return float(thickness) or 1.0
    steps = np.diff(along)
    scale = max(float(np.median(steps)), 1e-6)
    distinct = steps[steps > _SAME_POSITION * scale]
    if distinct.size == 0:
        return float(thickness) or 1.0
    # The smallest common step is robust to gaps (which are multiples of it).
    return float(np.percentile(distinct, 25)) if distinct.size > 3 else float(distinct.min())
