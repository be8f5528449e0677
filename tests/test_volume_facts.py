"""A volume's presets and missing slices, kept beside its cached voxels (issue 12, start-up).

What is kept must be exactly what a scan gives, go when the cached volume goes, and be
ignored (scanned again) when it is damaged, of another version or for another shape.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from cno_annotate.cache import VolumeCache
from cno_annotate.display.facts import FACTS_SCHEMA, VolumeFacts, keep_facts, kept_facts, volume_facts
from cno_annotate.display.missing import find_missing_slices
from cno_annotate.display.windowing import presets
from cno_annotate.io.roles import SequenceRole
from cno_annotate.io.volume import Volume
from cno_annotate.volumes import load_volume


def _with_missing_rows() -> Volume:
    rng = np.random.default_rng(3)
    array = rng.gamma(2.0, 300.0, (6, 40, 30)).astype(np.float32)
    array[2, 10:14] = 0  # four rows of one slice never read
    array[4, 0:3] = 0
    array[4, 20] = 0
    return Volume(array, np.eye(4), "v", SequenceRole.STIR)


def test_kept_facts_are_exactly_what_a_scan_gives():
    volume = _with_missing_rows()
    document = json.loads(json.dumps(volume_facts(volume).to_document(volume.shape)))
    again = VolumeFacts.from_document(document, volume.shape)
    assert again.presets == presets(volume.array, volume.role)  # the same floats, in the same order
    assert list(again.presets) == list(presets(volume.array, volume.role))
    np.testing.assert_array_equal(again.missing.lines, find_missing_slices(volume.array).lines)
    assert again.missing.badge() == "3 slices missing (hatched)"
    assert document["missing_runs"] == [[2, 10, 14], [4, 0, 3], [4, 20, 21]]


@pytest.mark.parametrize("change", [
    {"schema_version": "volume-facts-0"}, {"shape": [6, 40, 31]}, {"presets": []},
    {"missing_runs": [[9, 0, 1]]}, {"missing_runs": [[0, 5, 2]]}, {"presets": "nonsense"},
])
def test_facts_of_another_version_or_shape_or_malformed_are_refused(change):
    volume = _with_missing_rows()
    document = {**volume_facts(volume).to_document(volume.shape), **change}
    with pytest.raises(ValueError):
        VolumeFacts.from_document(document, volume.shape)


def test_what_is_kept_beside_a_cached_volume_goes_with_it(tmp_path):
    cache = VolumeCache(tmp_path, limit=10**9)
    cache.put("vol", "a" * 16, np.ones((2, 3, 4), np.float32))
    entry = cache.path_for("vol", "a" * 16)
    assert VolumeCache.write_beside(entry, f"{entry.stem}.facts.json", "{}")
    assert [p for p, _, _ in cache.entries()] == [entry]  # not an entry of its own
    cache.put("vol", "a" * 16, np.zeros((2, 3, 4), np.float32))  # new voxels under the same name
    assert not (tmp_path / f"{entry.stem}.facts.json").exists()
    VolumeCache.write_beside(entry, f"{entry.stem}.facts.json", "{}")
    cache.put("vol", "b" * 16, np.ones((2, 3, 4), np.float32))  # another version: the old one goes, with it
    assert sorted(p.name for p in tmp_path.iterdir()) == [cache.path_for("vol", "b" * 16).name]
    newer = cache.path_for("vol", "b" * 16)
    VolumeCache.write_beside(newer, f"{newer.stem}.facts.json", "{}")
    size = newer.stat().st_size
    assert cache.clear() == (1, size)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError):
        VolumeCache.write_beside(newer, "other.facts.json", "{}")


def test_a_trimmed_entry_takes_its_facts_along(tmp_path):
    cache = VolumeCache(tmp_path, limit=200)
    cache.put("old", "a" * 16, np.ones(30, np.float32))
    old = cache.path_for("old", "a" * 16)
    VolumeCache.write_beside(old, f"{old.stem}.facts.json", "{}")
    cache.put("new", "b" * 16, np.ones(30, np.float32))  # over the limit: the least recently used goes
    assert sorted(p.name for p in tmp_path.iterdir()) == [cache.path_for("new", "b" * 16).name]


def test_facts_are_kept_for_a_cached_composed_volume_and_a_damaged_copy_is_not_used(sample_copy):
    store = sample_copy()
    row = next(r for r in store.volumes() if r.kind == "composed" and r.role == "STIR")
    for cached in store.cache_dir.glob("*"):
        cached.unlink()
    composed = load_volume(store, row.volume_id)  # composed, and cached
    assert kept_facts(store, composed) is None  # not loaded from the cache
    scanned = volume_facts(composed)
    assert keep_facts(store, composed, scanned)
    cached = load_volume(store, row.volume_id)
    assert cached.load.cached
    kept = kept_facts(store, cached)
    assert kept.presets == scanned.presets
    np.testing.assert_array_equal(kept.missing.lines, scanned.missing.lines)
    (facts_file,) = store.cache_dir.glob("*.facts.json")
    document = json.loads(facts_file.read_text())
    assert document["schema_version"] == FACTS_SCHEMA
    facts_file.write_text(json.dumps({**document, "shape": [1, 2, 3]}))
    assert kept_facts(store, cached) is None  # refused: scanned again
    facts_file.write_text("{not json")
    assert kept_facts(store, cached) is None
    stack = next(r for r in store.volumes() if r.kind == "stack")
    assert not keep_facts(store, load_volume(store, stack.volume_id), scanned)  # only cached volumes keep facts
