"""What a study offers to the views: labelled series and the default pair."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cno_annotate.datafiles import data_dir
from cno_annotate.errors import CnoError
from cno_annotate.io.kinds import VolumeKind
from cno_annotate.io.roles import SequenceRole

if TYPE_CHECKING:
    from cno_annotate.store.catalog import VolumeRow

SAMPLE_ENV = "CNO_ANNOTATE_SAMPLE"


def series_choices(volumes: Sequence[VolumeRow], blinded: bool = False) -> list[tuple[str, str]]:
    """(volume id, label) for every volume of a study, whole-body first.

    A label starts with what the series is: its role (STIR, T1), or for other
    series the class recognised from the headers ("Dixon water axial"), or,
    when the headers do not say, the vendor's description ("trufi_cor
    coronal"); the plane is the volume's own (from ImageOrientationPatient).
    Stations are numbered head to feet within their role and orientation.
    ``blinded`` labels never use series descriptions or file names (they can
    carry identifying text): only the role or class, orientation and a number.
    """
    stations: dict[tuple, list[VolumeRow]] = {}
    for v in volumes:
        if v.kind == VolumeKind.STACK:
            stations.setdefault((v.role, v.orientation, v.description), []).append(v)
    number = {}
    for group in stations.values():
        group.sort(key=lambda v: -v.affine[2][3])  # origin z: head first
        for n, v in enumerate(group, start=1):
            number[v.volume_id] = (n, len(group))

    def label(v: VolumeRow, index: int) -> str:
        what = _what(v)
        if not what and v.description and not blinded:
            return f"{v.description} {v.orientation}"  # the vendor's name says more than "other"
        text = f"{what or SequenceRole.OTHER} {v.orientation}"
        if v.kind == VolumeKind.COMPOSED:
            return f"{text} whole body ({v.stations} stations)"
        if v.kind != VolumeKind.NIFTI:
            n, total = number[v.volume_id]
            if total > 1:
                return f"{text} station {n}/{total}"
        return f"{text} series {index}" if blinded else f"{text} {v.description}".rstrip()

    order: dict[str, int] = {VolumeKind.COMPOSED: 0, VolumeKind.STACK: 1, VolumeKind.NIFTI: 2}
    ranked = sorted(volumes, key=lambda v: (order[v.kind], v.role == SequenceRole.OTHER, v.role,
                                             number.get(v.volume_id, (0, 0))[0]))
    return [(v.volume_id, label(v, n)) for n, v in enumerate(ranked, start=1)]


def _what(volume: VolumeRow) -> str:
    """What a volume is, for its label: the role, with the recognised class where it says more ("" unknown)."""
    name = volume.sequence
    if volume.overridden:
        return volume.role  # a role the reader set stands alone: the recognised class may contradict it
    if volume.role == SequenceRole.OTHER:
        return name
    if name in ("", volume.role):
        return volume.role
    return f"{volume.role} {name}"


#: Words a narrow selector abbreviates, in order (a whole word or phrase each).
_SHORT_WORDS = ((r"\bcoronal\b", "cor"), (r"\bsagittal\b", "sag"), (r"\baxial\b", "ax"), (r"\bwhole body\b", "WB"),
                (r"\((\d+) stations\)", r"×\1"), (r"\bstation (\d+/\d+)", r"st. \1"), (r"\bseries (\d+)$", r"ser. \1"))


def short_label(label: str) -> str:
    """The short form of a series or preset name, for a selector too narrow for the whole one.

    Planes and "whole body" are abbreviated as on a PACS ("STIR cor WB ×4", "T1 sag st. 2/4"); a name
    with nothing to abbreviate loses a closing remark in parentheses ("Auto (robust)" -> "Auto").
    """
    short = label
    for pattern, replacement in _SHORT_WORDS:
        short = re.sub(pattern, replacement, short)
    if short == label:
        short = re.sub(r"\s*\([^()]*\)$", "", label) or label
    return short


def default_pair(volumes: Sequence[VolumeRow]) -> tuple[str | None, str | None]:
    """The volumes to show first: STIR left and T1 right, whole-body preferred, then coronal, then a series
    that is plainly of its role (a T1 TSE or TFE before the in-phase image of a Dixon)."""

    def best(role: str) -> str | None:
        candidates = [v for v in volumes if v.role == role and v.patient_geometry]
        candidates.sort(key=lambda v: (v.kind != VolumeKind.COMPOSED, v.orientation != "coronal",
                                       v.sequence not in ("", v.role)))
        return candidates[0].volume_id if candidates else None

    left, right = best(SequenceRole.STIR), best(SequenceRole.T1)
    rest = [v.volume_id for v in volumes if v.volume_id not in (left, right)]
    if left is None and rest:
        left = rest.pop(0)
    if right is None and rest:
        right = rest.pop(0)
    return left, right


def bundled_sample_dir() -> Path:
    """The DICOM folder of the bundled sample study.

    ``$CNO_ANNOTATE_SAMPLE`` wins; otherwise ``sample_scans/wbmri-cno-01`` of
    the installed package (or the source tree).

    Raises
    ------
    CnoError
        If the sample cannot be found.
    """
    if os.environ.get(SAMPLE_ENV):
        folder = Path(os.environ[SAMPLE_ENV])
    else:
        folder = data_dir("sample_scans") / "wbmri-cno-01"
    dicom = folder / "DICOM" if (folder / "DICOM").is_dir() else folder
    if not dicom.is_dir():
        raise CnoError(
            f"the bundled sample study is not at {folder}; run from the source tree or set {SAMPLE_ENV}"
        )
    return dicom
