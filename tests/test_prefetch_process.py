"""A cold start composes the first volume in a child process (issue 12, start-up: the 0.5 s aim).

In a thread of the viewer's process the composition held the interpreter's lock while
the window's thread imported Qt and built the window, and the window waited for it. On
Linux a prefetch of a volume that must be composed now forks a child that composes into
memory shared with the viewer. These tests check that what the viewer gets is what the
thread gave, that the child is a process of its own that is reaped, that a child that
dies is a one-line failure, and where the child is not used.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

import cno_annotate.display.prefetch as prefetch_module
from cno_annotate.cache import VolumeCache
from cno_annotate.display.prefetch import Prefetch
from cno_annotate.importer import import_paths
from cno_annotate.store import Store
from cno_annotate.volumes import load_volume
from tests.conftest import SAMPLE

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the child is forked on Linux only")


@pytest.fixture
def forking(monkeypatch):
    """Fork here although pytest's process has other threads (numpy's BLAS pool, Qt's if a GUI test ran):
    the child runs the loader's code only. The viewer forks with no other thread (last test)."""
    monkeypatch.setattr(prefetch_module, "can_fork", lambda: True)


@pytest.fixture
def cold(tmp_path):
    """A store of its own copy of the sample study's files, nothing cached: (root, composed STIR row, its voxels
    composed in-process). Its own files: a test removes one."""
    shutil.copytree(SAMPLE / "DICOM", tmp_path / "study")
    root = tmp_path / "store"
    store = Store.open(root)
    import_paths(store, [tmp_path / "study"])
    row = next(r for r in store.volumes() if r.kind == "composed" and r.role == "STIR")
    expected = load_volume(store, row.volume_id, use_cache=False)
    store.close()
    return root, row, expected


def _events(prefetch: Prefetch) -> list[tuple]:
    events: list[tuple] = []
    prefetch.attach(lambda *event: events.append(event))
    prefetch.join(120)
    return events


def test_a_cold_volume_is_composed_by_a_child_process_into_memory_the_viewer_shares(cold, forking):
    root, row, expected = cold
    prefetch = Prefetch.start(root, row.volume_id, shape=tuple(row.shape))
    assert "process" in prefetch._thread.name  # a relay of a child, not the composing thread
    child = int(prefetch._thread.name.rsplit(" ", 1)[1].rstrip(")"))
    assert child != os.getpid()
    events = _events(prefetch)
    kinds = [e[0] for e in events]
    assert kinds[-1] == "loaded", events[-1]
    assert "preview" in kinds and kinds.index("preview") < len(kinds) - 1
    volume, facts = events[-1][1], events[-1][2]
    np.testing.assert_array_equal(volume.array, expected.array)  # what the in-process composition gives
    np.testing.assert_allclose(volume.affine, expected.affine)
    assert volume.header == expected.header and volume.load.errors == []
    assert facts.missing is not None and facts.presets
    preview = next(e[1] for e in events if e[0] == "preview")
    assert preview.load.preview and np.shares_memory(preview.array, volume.array)  # one array, shown then refined
    prefetch._thread.join(60)  # the relay ends when the child has exited
    assert not prefetch._thread.is_alive()
    with pytest.raises(ChildProcessError):
        os.waitpid(child, os.WNOHANG)  # the child was reaped: no zombie left
    store = Store.open(root)
    try:  # the child kept the volume in the cache, with its facts, for the next start
        cached = VolumeCache.of(store).get(row.volume_id, row.fingerprint, tuple(row.shape))
        assert cached is not None and np.array_equal(cached, expected.array)
        assert list((root / "cache").glob("*.facts.json"))
    finally:
        store.close()


def test_a_child_that_dies_is_a_one_line_failure(cold, forking, monkeypatch):
    root, row, _ = cold

    def dies(*args):
        os._exit(3)  # the forked child runs this (it was patched before the fork)

    monkeypatch.setattr(prefetch_module, "_load_in_child", dies)
    events = _events(Prefetch.start(root, row.volume_id, shape=tuple(row.shape)))
    assert events == [("failed", "the process reading the images ended unexpectedly (exit status 3)")]


def test_an_unreadable_slice_is_reported_by_the_child_as_by_the_thread(cold, forking):
    root, row, _ = cold
    store = Store.open(root)
    member = store.volume(row.members[0])
    first_file = next(iter(store.images(member.series_uid))).path
    store.close()
    assert str(root.parent) in str(first_file)  # this test's own copy
    os.unlink(first_file)  # one slice of the first station is gone: reported, the rest composed
    thread_events = _events(Prefetch.start(root, row.volume_id))
    shutil.rmtree(root / "cache", ignore_errors=True)
    child_events = _events(Prefetch.start(root, row.volume_id, shape=tuple(row.shape)))
    said = [e[0] for e in child_events if e[0] != "progress"]
    assert said == [e[0] for e in thread_events if e[0] != "progress"] == ["preview", "loaded"]
    assert child_events[-1][1].load.errors == thread_events[-1][1].load.errors != []  # the slice that is gone
    np.testing.assert_array_equal(child_events[-1][1].array, thread_events[-1][1].array)


def test_no_child_is_forked_while_another_thread_runs(cold):
    script = ("import threading\n"
              "from cno_annotate.display.prefetch import can_fork\n"
              "alone = can_fork()\n"
              "gate = threading.Event()\n"
              "other = threading.Thread(target=gate.wait)\n"
              "other.start()\n"
              "print(alone, can_fork())\n"
              "gate.set()\n")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}  # as the viewer sets it: numpy starts no thread
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert result.stdout.split() == ["True", "False"], result.stderr  # another thread could hold a lock
    root, row, _ = cold
    gate = threading.Event()
    other = threading.Thread(target=gate.wait)
    other.start()
    try:  # with another thread running, the prefetch composes in a thread of its own
        prefetch = Prefetch.start(root, row.volume_id, shape=tuple(row.shape))
    finally:
        gate.set()
        other.join()
    assert "process" not in prefetch._thread.name
    assert _events(prefetch)[-1][0] == "loaded"


def test_one_child_composes_the_left_and_then_the_right_views_volume(cold, forking):
    root, stir_row, stir = cold
    store = Store.open(root)
    t1_row = next(r for r in store.volumes() if r.kind == "composed" and r.role == "T1")
    t1 = load_volume(store, t1_row.volume_id, use_cache=False)
    store.close()
    shutil.rmtree(root / "cache", ignore_errors=True)
    order: list[tuple[str, str]] = []
    volumes = {}
    left, right = Prefetch.start_several(root, [(stir_row.volume_id, tuple(stir_row.shape)),
                                                (t1_row.volume_id, tuple(t1_row.shape))])
    assert left._thread is right._thread and "process" in left._thread.name  # one child, one relay

    def record(prefetch, kind, *payload):
        order.append((prefetch.volume_id, kind))
        if kind == "loaded":
            volumes[prefetch.volume_id] = payload[0]

    for prefetch in (left, right):
        prefetch.attach(lambda kind, *payload, p=prefetch: record(p, kind, *payload))
    left.join(120)
    right.join(120)
    said = [entry for entry in order if entry[1] != "progress"]
    assert said == [(stir_row.volume_id, "preview"), (stir_row.volume_id, "loaded"),
                    (t1_row.volume_id, "preview"), (t1_row.volume_id, "loaded")]  # the left's first, whole
    np.testing.assert_array_equal(volumes[stir_row.volume_id].array, stir.array)
    np.testing.assert_array_equal(volumes[t1_row.volume_id].array, t1.array)


def test_the_viewer_forks_its_composing_child_with_no_other_thread(cold, tmp_path):
    """``cno-annotate view`` as a user starts it, on a cold cache: the left view's volume comes from a child."""
    root, row, _ = cold
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "CNO_ANNOTATE_TIMING": "1"}
    env.pop("OPENBLAS_NUM_THREADS", None)  # the viewer sets it itself
    result = subprocess.run([sys.executable, "-m", "cno_annotate", "view", "--store", str(root), "--screenshot",
                             str(tmp_path / "shot.png")], capture_output=True, text=True, env=env, timeout=120,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    previews = [line for line in result.stderr.splitlines() if line.startswith("start-phase prefetch-preview")]
    assert previews and all("(process " in line for line in previews), result.stderr
    assert row.volume_id in previews[0]
    assert (tmp_path / "shot.png").stat().st_size > 0


def test_a_cached_volume_is_checked_by_the_child_and_mapped_by_the_viewer(cold, forking):
    """A warm start: the child checks the files and reads the kept facts (40-70 ms that held the viewer's
    interpreter lock in a thread); the viewer maps the cached file itself, without a copy."""
    root, row, expected = cold
    first = _events(Prefetch.start(root, row.volume_id, shape=tuple(row.shape)))  # composes and caches
    assert first[-1][0] == "loaded" and not first[-1][1].load.cached
    prefetch = Prefetch.start(root, row.volume_id, shape=tuple(row.shape))
    assert "process" in prefetch._thread.name
    events = _events(prefetch)
    assert [e[0] for e in events if e[0] != "progress"] == ["loaded"]
    volume, facts = events[-1][1], events[-1][2]
    assert volume.load.cached and isinstance(volume.array, np.memmap)  # the cache file, mapped here
    assert str(root / "cache") in str(volume.array.filename)
    np.testing.assert_array_equal(volume.array, expected.array)
    composed_facts = first[-1][2]  # the kept facts are those the composition found
    assert facts.presets == composed_facts.presets
    np.testing.assert_array_equal(facts.missing.lines, composed_facts.missing.lines)
