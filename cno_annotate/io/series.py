"""Assemble indexed images into slice stacks.

A DICOM series can hold images that do not form one volume (a localizer
with three planes, mixed matrix sizes, several echoes, water and fat images
of a Dixon, several b-values). :func:`build_stacks` splits a series into
stacks of parallel, equally sized images of one kind, orders each stack by
position along the slice normal (never by InstanceNumber), puts the slices
on a uniform grid and reports missing slices as gaps.

Images are of one kind when they share ImageType, b-value, diffusion direction and echo number
(these change the contrast, so they always split), and, where images repeat
a position, echo time, temporal position and acquisition number (a 2-D
series acquired in parts at distinct positions stays one volume). A series
holding several stations (the same depths at other table positions) is split
into one stack per station first, numbered head first ("station 1", ...). Each stack
of a split series carries a ``variant`` naming what sets it apart
("WATER", "b=800", "echo 2", "axial", ...).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from cno_annotate.io.volume import affine_from_dicom, orientation_name, slice_normal

if TYPE_CHECKING:
    from cno_annotate.store.instances import ImageRow

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
    images: list[ImageRow]
    slice_index: list[int]
    affine: np.ndarray
    shape: tuple[int, int, int]
    orientation: str
    gaps: list[dict] = field(default_factory=list)
    duplicates: int = 0
    patient_geometry: bool = True
    #: What sets this stack apart from the other stacks of its series ("" when it is the only one).
    variant: str = ""


#: Per-image values that always split a series: they change the contrast.
CONTRAST_KEYS = ("image_type", "b_value", "diffusion_direction", "echo_number")
#: Values that split a series only where images repeat a position.
REPEAT_KEYS = ("echo_time", "temporal_position", "acquisition")


def unusable_reason(image: ImageRow) -> str:
    """Why a stored image row cannot be stacked ("" when it can).

    Indexing refuses such files; this catches rows committed by older
    versions (NaN or infinite geometry), so that one bad row cannot stop
    every later rebuild of its study.
    """
    numbers = [*image.position, *image.orientation, *image.pixel_spacing]
    if len(image.position) != 3 or len(image.orientation) != 6 or len(image.pixel_spacing) != 2:
        return "malformed geometry in the store"
    if not all(np.isfinite(numbers)) or min(image.pixel_spacing) <= 0:
        return "non-finite or zero geometry in the store"
    if int(image.rows) < 1 or int(image.columns) < 1:
        return f"empty image ({image.rows} x {image.columns})"
    if not all(np.isfinite(image.rescale)) or image.rescale[0] == 0:
        return f"invalid rescale {list(image.rescale)}"
    return ""


def usable_images(images: list[ImageRow]) -> tuple[list[ImageRow], list[dict]]:
    """Split image rows into those :func:`build_stacks` may use and ``{"path", "reason"}`` for the rest."""
    usable, refused = [], []
    for image in images:
        reason = unusable_reason(image)
        if reason:
            refused.append({"path": image.path, "reason": f"{reason}; re-import the file"})
        else:
            usable.append(image)
    return usable, refused


def build_stacks(series_uid: str, images: list[ImageRow]) -> list[Stack]:
    """Split one series' images into ordered slice stacks.

    Parameters
    ----------
    series_uid : str
        The SeriesInstanceUID.
    images : list of ImageRow
        Rows with ``orientation`` (6), ``position`` (3), ``rows``,
        ``columns``, ``pixel_spacing`` (2), ``slice_thickness``,
        ``echo_time`` and optionally ``split_values`` (see
        ``dicom_index.split_values``).

    Returns
    -------
    list of Stack
        One per geometric group and kind of image; the volume id is the
        series UID when the series forms one stack, otherwise the UID with
        ``.1``, ``.2``... added. A stack never mixes images that differ in
        ImageType, b-value, diffusion direction or echo number, nor, at one position, in echo
        time, temporal position or acquisition number.
    """
    groups: dict[tuple, list[ImageRow]] = defaultdict(list)
    for image in images:
        groups[_group_key(image) + _contrast_key(image)].append(image)
    parts: list[tuple[dict, list[ImageRow]]] = []
    for key in sorted(groups, key=lambda k: (-len(groups[k]), _sortable(k))):
        contrast = dict(zip(CONTRAST_KEYS, key[-len(CONTRAST_KEYS):]))
        for station, images_of_station in _split_stations(groups[key]):
            for values, part in _split_repeats(images_of_station):
                parts.append(({**contrast, **station, **values}, part))
    stacks = []
    for n, (_values, part) in enumerate(parts, start=1):
        volume_id = series_uid if len(parts) == 1 else f"{series_uid}.{n}"
        stacks.append(_make_stack(volume_id, series_uid, part))
    for stack, label in zip(stacks, _variants([values for values, _ in parts], stacks)):
        stack.variant = label
    return stacks


def _group_key(image: ImageRow) -> tuple:
    return (
        image.geometry_known,
        tuple(round(v, 3) for v in image.orientation),
        image.rows,
        image.columns,
        tuple(round(v, 4) for v in image.pixel_spacing),
    )


def _split(image: ImageRow) -> dict:
    values = dict(image.split_values or {})
    if "echo_time" not in values and image.echo_time is not None:
        values["echo_time"] = image.echo_time
    return values


def _contrast_key(image: ImageRow) -> tuple:
    values = _split(image)
    return tuple(_hashable(values.get(k)) for k in CONTRAST_KEYS)


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value


def _sortable(key: tuple) -> tuple:
    """A key whose None and mixed values sort without error."""
    return tuple((v is None, v if isinstance(v, (int, float, tuple)) else "" if v is None else str(v))
                 for v in key)


def _split_repeats(images: list[ImageRow]) -> list[tuple[dict, list[ImageRow]]]:
    """Separate images that share slice positions by echo time, temporal position, acquisition."""
    parts: list[tuple[dict, list[ImageRow]]] = [({}, images)]
    for key in REPEAT_KEYS:
        next_parts = []
        for values, part in parts:
            by_value: dict = defaultdict(list)
            for image in part:
                by_value[_split(image).get(key)].append(image)
            if len(by_value) == 1 or not _repeats_positions(part):
                next_parts.append((values, part))
                continue
            for value in sorted(by_value, key=lambda v: (v is None, v or 0)):
                next_parts.append(({**values, key: value}, by_value[value]))
        parts = next_parts
    return parts


def _split_stations(images: list[ImageRow]) -> list[tuple[dict, list[ImageRow]]]:
    """Separate the stations of a series that holds several (same depths, other table positions).

    Images that repeat positions along the slice normal but lie at distinct
    in-plane origins (the table moved between them) are stations; each is
    numbered head first (``{"station": n}``). A series whose images share one
    in-plane origin, or without patient geometry, is returned whole.
    """
    if not images[0].geometry_known or not _repeats_positions(images):
        return [({}, images)]
    orientation = np.array(images[0].orientation, dtype=float)
    tolerance = max(float(max(images[0].pixel_spacing)), 1.0)
    origins: list[np.ndarray] = []
    members: list[list[ImageRow]] = []
    for image in images:
        position = np.array(image.position, dtype=float)
        origin = np.array([orientation[:3] @ position, orientation[3:] @ position])
        for n, known in enumerate(origins):
            if np.all(np.abs(known - origin) <= tolerance):
                members[n].append(image)
                break
        else:
            origins.append(origin)
            members.append([image])
    if len(members) < 2 or min(len(m) for m in members) < 2:
        return [({}, images)]
    members.sort(key=lambda m: -float(np.mean([i.position[2] for i in m])))  # head first (LPS: +z is up)
    return [({"station": n}, m) for n, m in enumerate(members, start=1)]


def _repeats_positions(images: list[ImageRow]) -> bool:
    normal = slice_normal(np.array(images[0].orientation))
    positions = {round(float(np.dot(normal, i.position)), 2) for i in images}
    return len(positions) < len(images)


def _variants(values: list[dict], stacks: list[Stack]) -> list[str]:
    """For each part of a split series, what sets it apart from the others ("" if not split)."""
    if len(stacks) < 2:
        return [""] * len(stacks)
    labels: list[list[str]] = [[] for _ in stacks]
    if len({s.orientation for s in stacks}) > 1:
        for label, stack in zip(labels, stacks):
            label.append(stack.orientation)
    if len({s.shape[1:] for s in stacks}) > 1:
        for label, stack in zip(labels, stacks):
            label.append(f"{stack.shape[2]}x{stack.shape[1]}")
    types = [set(str(v.get("image_type") or "").split("\\")) - {""} for v in values]
    if len({frozenset(t) for t in types}) > 1:
        common = set.intersection(*types) if all(types) else set()
        for label, value in zip(labels, values):
            own = [t for t in str(value.get("image_type") or "").split("\\") if t and t not in common]
            label.append(" ".join(own) if own else (value.get("image_type") or "no ImageType"))
    for key, text in (("station", "station {}"), ("b_value", "b={:g}"), ("diffusion_direction", "direction {}"), ("echo_number", "echo {}"),
                      ("echo_time", "TE {:g} ms"), ("temporal_position", "time {}"),
                      ("acquisition", "acquisition {}")):
        if len({v.get(key) for v in values}) > 1:
            for label, value in zip(labels, values):
                if value.get(key) is not None:
                    label.append(text.format(value[key]))
    out = [", ".join(label) for label in labels]
    seen: dict[str, int] = defaultdict(int)
    for text in out:
        seen[text] += 1
    return [text if text and seen[text] == 1 else (f"{text}, part {n}" if text else f"part {n}")
            for n, text in enumerate(out, start=1)]


def _make_stack(volume_id: str, series_uid: str, images: list[ImageRow]) -> Stack:
    orientation = np.array(images[0].orientation, dtype=float)
    normal = slice_normal(orientation)
    along = np.array([float(np.dot(normal, i.position)) for i in images])
    order = np.argsort(along, kind="stable")
    images = [images[n] for n in order]
    along = along[order]
    step = _typical_step(along, images[0].slice_thickness or 1.0)
    geometry_known = bool(images[0].geometry_known)
    kept: list[ImageRow] = []
    index: list[int] = []
    duplicates, previous = 0, None
    for image, pos in zip(images, along):
        if geometry_known:
            k = int(round((pos - along[0]) / step))
            same = bool(index) and k == index[-1]
        else:  # without patient geometry, positions only order the images: no gaps
            k, same = len(kept), pos == previous
        if same:
            duplicates += 1  # same position twice: keep the first
            continue
        kept.append(image)
        index.append(k)
        previous = pos
    gaps = [
        {"after_slice": int(a), "missing": int(b - a - 1)}
        for a, b in zip(index, index[1:])
        if b - a > 1
    ]
    slice_step = normal * step
    if len(kept) > 1 and geometry_known:
        slice_step = (np.array(kept[-1].position) - np.array(kept[0].position)) / index[-1]
    affine = affine_from_dicom(orientation, np.array(kept[0].position), kept[0].pixel_spacing, slice_step)
    shape = (index[-1] + 1, int(kept[0].rows), int(kept[0].columns))
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
        patient_geometry=bool(images[0].geometry_known),
    )


def _typical_step(along: np.ndarray, thickness: float) -> float:
    """The usual distance between neighbouring slices (median of distinct steps)."""
    if len(along) < 2:
        return float(thickness) or 1.0
    steps = np.diff(along)
    scale = max(_quantile(steps, 0.5), 1e-6)
    distinct = steps[steps > _SAME_POSITION * scale]
    if distinct.size == 0:
        return float(thickness) or 1.0
    # The smallest common step is robust to gaps (which are multiples of it).
    return _quantile(distinct, 0.25) if distinct.size > 3 else float(distinct.min())


def _quantile(values: np.ndarray, q: float) -> float:
    """``np.quantile(values, q)`` (linear interpolation), without the numpy.ma import it costs (~20 ms)."""
    ordered = np.sort(values)
    position = q * (ordered.size - 1)
    below = int(position)
    above = min(below + 1, ordered.size - 1)
    return float(ordered[below] + (ordered[above] - ordered[below]) * (position - below))
