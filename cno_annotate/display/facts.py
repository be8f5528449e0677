"""What a view needs of a whole volume before it paints: its window presets and missing slices.

Both scan the whole volume (a composed STIR of 37 M voxels: 30-50 ms, and, for
a volume memory-mapped from the cache, page faults over 150 MB). The viewer's
loading thread computes them beside the voxels, so the window's thread only
shows them; for a composed volume they are kept beside its cached ``.npy``
(``<name>.facts.json``), so a second start reads a few hundred bytes instead of
scanning the volume again. What is kept is exactly what a scan gives: the same
presets and the same missing slices.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cno_annotate.cache import VolumeCache
from cno_annotate.display.missing import MissingSlices, find_missing_slices
from cno_annotate.display.windowing import Window, presets
from cno_annotate.io.kinds import VolumeKind
from cno_annotate.io.volume import Volume

#: The version of the document kept beside a cached volume (another version is not read, it is recomputed).
FACTS_SCHEMA = "volume-facts-1"


@dataclass(frozen=True)
class VolumeFacts:
    """A volume's named window presets and, unless it is a preview, its missing slices.

    Parameters
    ----------
    presets : dict of str to Window
        As :func:`cno_annotate.display.windowing.presets` gives them (automatic first).
    missing : MissingSlices or None
        As :func:`cno_annotate.display.missing.find_missing_slices` finds them; None for a
        composed volume still being built (its other stations are not read yet).
    """

    presets: dict[str, Window]
    missing: MissingSlices | None

    def to_document(self, shape: tuple[int, ...]) -> dict:
        """A JSON document of the facts of a volume of ``shape`` (missing rows as runs ``[k, first, end]``)."""
        runs = []
        if self.missing is not None:
            for k, row in enumerate(self.missing.lines):
                edges = np.flatnonzero(np.diff(np.concatenate(([0], row.view(np.int8), [0]))))
                runs += [[k, int(a), int(b)] for a, b in zip(edges[::2], edges[1::2])]
        return {"schema_version": FACTS_SCHEMA, "shape": [int(n) for n in shape],
                "presets": [[name, w.level, w.width] for name, w in self.presets.items()],
                "missing_runs": runs if self.missing is not None else None}

    @classmethod
    def from_document(cls, document: dict, shape: tuple[int, ...]) -> VolumeFacts:
        """The facts a document holds for a volume of ``shape``.

        Raises
        ------
        ValueError
            If the document is of another version, another shape, or malformed.
        """
        try:
            if document["schema_version"] != FACTS_SCHEMA or list(document["shape"]) != [int(n) for n in shape]:
                raise ValueError("another version or shape")
            named = {str(name): Window(float(level), float(width)) for name, level, width in document["presets"]}
            if not named:
                raise ValueError("no presets")
            runs = document["missing_runs"]
            missing = None
            if runs is not None:
                lines = np.zeros(tuple(int(n) for n in shape[:2]), dtype=bool)
                for k, first, end in runs:
                    if not (0 <= k < lines.shape[0] and 0 <= first < end <= lines.shape[1]):
                        raise ValueError("a missing run outside the volume")
                    lines[k, first:end] = True
                missing = MissingSlices(lines=lines)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed: {exc}") from None
        return cls(presets=named, missing=missing)


def volume_facts(volume: Volume) -> VolumeFacts:
    """Scan a volume's voxels for its facts (a preview's missing slices are not looked for)."""
    array = volume.array
    return VolumeFacts(presets=presets(array, volume.role),
                       missing=None if volume.load.preview else find_missing_slices(array))


def kept_facts(store, volume: Volume) -> VolumeFacts | None:
    """The facts kept beside the cached voxels a composed volume was just loaded from, or None."""
    entry = _cache_entry(store, volume)
    if entry is None or not volume.load.cached:
        return None
    try:
        document = json.loads(_facts_path(entry).read_text(encoding="utf-8"))
        return VolumeFacts.from_document(document, volume.shape)
    except (OSError, ValueError):
        return None  # not kept yet, or damaged: scanned (and kept) again


def keep_facts(store, volume: Volume, facts: VolumeFacts) -> bool:
    """Keep a composed volume's facts beside its cached voxels for the next start; whether they were kept.

    Nothing is kept for a volume that is not cached (a preview, a volume with unread files, a full cache).
    """
    entry = _cache_entry(store, volume)
    if entry is None or not entry.exists():
        return False
    return VolumeCache.write_beside(entry, _facts_path(entry).name, json.dumps(facts.to_document(volume.shape)))


def _cache_entry(store, volume: Volume) -> Path | None:
    """The cache file of a composed volume read without errors (it may not exist), or None for any other."""
    if volume.header.kind != VolumeKind.COMPOSED or volume.load.errors or volume.load.preview:
        return None
    row = store.volume(volume.volume_id)
    return VolumeCache.of(store).path_for(row.volume_id, row.fingerprint)


def _facts_path(entry: Path) -> Path:
    return entry.with_name(f"{entry.stem}.facts.json")
