"""One volume type: shape, affine and header known before the pixels are read (nibabel's model)."""

from __future__ import annotations

import numpy as np
import pytest

from cno_annotate.io.kinds import VolumeKind
from cno_annotate.io.roles import SequenceRole
from cno_annotate.io.volume import Volume, VolumeHeader
from cno_annotate.volumes import load_volume, open_volume


def test_a_store_volume_opens_without_reading_pixels_and_reads_them_once(sample_store):
    row = next(v for v in sample_store.volumes() if v.kind == "composed" and v.role == "STIR")
    volume = open_volume(sample_store, row.volume_id)
    assert not volume.in_memory
    assert volume.shape == tuple(row.shape)
    assert np.allclose(volume.affine, row.affine)
    assert volume.header.kind is VolumeKind.COMPOSED and volume.role is SequenceRole.STIR
    assert len(volume.header.members) == row.stations
    data = volume.array
    assert volume.in_memory and data.shape == volume.shape and data is volume.array
    assert np.array_equal(data, load_volume(sample_store, row.volume_id).array)


def test_a_released_lazy_volume_reads_its_pixels_again():
    calls = []

    def read(volume: Volume) -> np.ndarray:
        calls.append(volume.volume_id)
        return np.full((2, 3, 4), 7.0, dtype=np.float32)

    volume = Volume.lazy(read, (2, 3, 4), np.eye(4), VolumeHeader(volume_id="v1", role=SequenceRole.T1))
    assert volume.shape == (2, 3, 4) and calls == []
    assert volume.array.sum() == 7.0 * 24 and calls == ["v1"]
    volume.release()
    assert not volume.in_memory
    volume.array  # noqa: B018
    assert calls == ["v1", "v1"]


def test_a_loader_that_returns_another_shape_is_refused():
    volume = Volume.lazy(lambda v: np.zeros((1, 1, 1), np.float32), (2, 2, 2), np.eye(4), VolumeHeader())
    with pytest.raises(ValueError, match="expected"):
        volume.array  # noqa: B018


def test_a_stack_read_says_which_slices_were_missing(sample_store):
    row = next(v for v in sample_store.volumes() if v.kind == "stack")
    volume = load_volume(sample_store, row.volume_id)
    assert volume.header.kind is VolumeKind.STACK
    assert volume.load.errors == [] and volume.load.missing_slices == [] and not volume.load.cached
