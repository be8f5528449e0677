"""Registration of two visits: the piecewise transform's behaviour and its accuracy.

Accuracy is checked against the sample generator's true per-region transforms:
the target registration error at the truth lesions is at most one in-plane voxel.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from cno_annotate.errors import CnoError
from cno_annotate.importer import import_paths
from cno_annotate.registration import (
    SCHEMA_VERSION,
    PiecewiseTransform,
    RegionTransform,
    cache_path,
    transform_between,
)
from cno_annotate.sample import StudyPlan, generate_study
from cno_annotate.sample_visits import rigid
from cno_annotate.store import Store

FAR = 1e4


def _two_regions() -> PiecewiseTransform:
    """An arm box (x > 100) turned 10 degrees about z, and a shifted trunk everywhere else."""
    arm = RegionTransform("left_arm", rigid([0, 0, 10], [0, 0, 0], [150, 0, 0]), [100, -FAR, -FAR], [FAR, FAR, FAR])
    trunk = RegionTransform("trunk", rigid([0, 0, 0], [5, -3, 12], [0, 0, 0]), [-FAR] * 3, [FAR] * 3)
    return PiecewiseTransform("prior", "current", (arm, trunk))


def test_a_point_is_mapped_by_the_first_region_whose_box_holds_it():
    transform = _two_regions()
    assert transform.regions == ("left_arm", "trunk")
    trunk_point = transform.map_point([0, 0, 0])
    assert trunk_point.region == "trunk" and np.allclose(trunk_point.point, [5, -3, 12])
    arm_point = transform.map_point([150, 0, 0])  # on the pivot: does not move
    assert arm_point.region == "left_arm" and np.allclose(arm_point.point, [150, 0, 0])


def test_the_inverse_maps_back_in_every_region():
    transform = _two_regions()
    for point in ([0, 10, -40], [180, 20, 5], [120, -5, 300]):
        there = transform.map_point(point)
        back = transform.inverse().map_point(there.point)
        assert back.region == there.region
        assert np.allclose(back.point, point)


def test_a_nudge_moves_one_region_and_keeps_the_computed_matrix():
    transform = _two_regions()
    nudged = transform.nudged("trunk", [0, 0, 2])
    assert np.allclose(nudged.map_point([0, 0, 0]).point, [5, -3, 14])
    assert np.allclose(nudged.map_point([150, 0, 0]).point, [150, 0, 0])  # the arm is not nudged
    assert np.allclose(nudged.region("trunk").matrix, transform.region("trunk").matrix)
    assert nudged.is_corrected and not transform.is_corrected
    assert np.allclose(nudged.inverse().map_point([5, -3, 14]).point, [0, 0, 0])
    with pytest.raises(CnoError, match="no region 'spleen'"):
        transform.nudged("spleen", [1, 0, 0])


def test_the_document_round_trips_and_bad_documents_are_refused():
    nudged = _two_regions().nudged("left_arm", [1, 2, 3])
    document = nudged.to_dict()
    assert document["schema_version"] == SCHEMA_VERSION
    again = PiecewiseTransform.from_dict(document)
    assert again.regions == nudged.regions
    assert np.allclose(again.map_point([170, 4, 4]).point, nudged.map_point([170, 4, 4]).point)
    with pytest.raises(CnoError, match="schema_version"):
        PiecewiseTransform.from_dict({**document, "schema_version": "registration-0.1"})
    flat = {**document, "regions": [{**document["regions"][0], "matrix": np.zeros((4, 4)).tolist()}]}
    with pytest.raises(CnoError, match="not an invertible affine"):
        PiecewiseTransform.from_dict(flat)


def _visits(root, plan: StudyPlan):
    """Two visits of one patient (repositioned), imported: (store, truth, prior id, current id)."""
    truth = generate_study(root / "study", plan)
    store = Store.open(root / "store")
    import_paths(store, [root / "study"])

    def stir(study_uid: str) -> str:
        return next(v.volume_id for v in store.volumes(study_uid) if v.kind == "composed" and v.role == "STIR")

    return store, truth, stir(truth["visits"][0]["study_uid"]), stir(truth["visits"][1]["study_uid"])


@pytest.fixture(scope="module")
def two_visits(tmp_path_factory):
    """Four stations, seed 5 (lesions in both arms, the legs, pelvis and trunk)."""
    store, *rest = _visits(tmp_path_factory.mktemp("visits"),
                           StudyPlan(stations=4, slices=16, matrix=96, seed=5, timepoints=2))
    yield store, *rest
    store.close()


@pytest.fixture(scope="module")
def arms_cut_by_the_field_of_view(tmp_path_factory):
    """Five stations (340 mm field of view: both arms partly outside it), seed 21: a lesion near each elbow."""
    store, *rest = _visits(tmp_path_factory.mktemp("narrow"),
                           StudyPlan(stations=5, slices=16, matrix=96, seed=21, timepoints=2))
    yield store, *rest
    store.close()


def _lesion_errors(truth: dict, mapping) -> dict[tuple[str, str], float]:
    """TRE (mm) at the first visit's lesions against the generator's true per-part transforms."""
    true = truth["transforms"][0]["regions"]
    errors = {}
    for lesion in truth["visits"][0]["lesions"]:
        matrix = np.array(true[lesion["body_part"]])
        point = np.array(lesion["lps_mm"])
        expected = matrix[:3, :3] @ point + matrix[:3, 3]
        errors[lesion["id"], lesion["body_part"]] = float(np.linalg.norm(mapping(point) - expected))
    return errors


def test_registration_error_at_the_lesions_is_within_one_in_plane_voxel(two_visits):
    store, truth, prior, current = two_visits
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(t=transform_between(store, prior, current)))
    worker.start()  # from a worker thread, with the main thread's store object
    worker.join()
    transform = result["t"]
    voxel = StudyPlan(stations=4, matrix=96).pixel_mm
    errors = _lesion_errors(truth, lambda p: transform.map_point(p).point)
    assert len(errors) >= 5 and max(errors.values()) <= voxel, errors


def test_arms_cut_by_the_field_of_view_register_within_one_in_plane_voxel(arms_cut_by_the_field_of_view):
    store, truth, prior, current = arms_cut_by_the_field_of_view
    plan = StudyPlan(stations=5, matrix=96)
    assert plan.station_fov < 350  # narrower than the child with its arms (about 430 mm)
    transform = transform_between(store, prior, current)
    errors = _lesion_errors(truth, lambda p: transform.map_point(p).point)
    arms = {key: e for key, e in errors.items() if key[1].endswith("_arm")}
    assert {part for _, part in arms} == {"left_arm", "right_arm"}
    assert max(errors.values()) <= plan.pixel_mm, errors


def test_affine_registration_follows_a_child_who_grew_between_visits(arms_cut_by_the_field_of_view):
    """The current visit scaled by 4 % about the navel (growth) on top of the repositioning.

    Every region takes the growth up (the arms, turned about their shoulders,
    take the trunk's), and the lesions stay within one in-plane voxel.
    """
    from cno_annotate.registration import register_piecewise
    from cno_annotate.volumes import load_volume

    store, truth, prior, current = arms_cut_by_the_field_of_view
    growth = np.diag([1.04, 1.04, 1.04, 1.0])
    growth[:3, 3] = np.array([0.0, 10.0, 100.0]) * (1 - 1.04)  # about (0, 10, 100): points there stay
    grown = load_volume(store, current)
    grown.affine = growth @ grown.affine
    transform = register_piecewise(load_volume(store, prior), grown, affine=True)
    assert transform.method == "piecewise-affine"
    voxel = StudyPlan(stations=5, matrix=96).pixel_mm
    errors = _lesion_errors(truth, lambda p: (np.linalg.inv(growth) @ [*transform.map_point(p).point, 1.0])[:3])
    assert len(errors) >= 5 and max(errors.values()) <= voxel, errors
    scales = [np.cbrt(np.linalg.det(transform.region(name).matrix[:3, :3])) for name in transform.regions]
    assert all(s == pytest.approx(1.04, abs=0.01) for s in scales), dict(zip(transform.regions, scales))


def test_the_transform_is_cached_and_answers_the_reverse_question(two_visits):
    store, _truth, prior, current = two_visits
    computed = transform_between(store, prior, current)
    assert cache_path(store, store.volume(prior), store.volume(current)).is_file()
    cached = transform_between(store, prior, current, compute=False)
    assert cached is not None and cached.regions == computed.regions
    backward = transform_between(store, current, prior, compute=False)
    assert backward is not None
    point = [40.0, 10.0, 200.0]
    assert np.allclose(backward.map_point(cached.map_point(point).point).point, point, atol=1e-6)


def test_nothing_is_computed_when_not_asked_and_other_patients_are_refused(two_visits, tmp_path):
    store, _truth, prior, current = two_visits
    other = tmp_path / "other"
    generate_study(other, StudyPlan(stations=2, slices=3, matrix=32, seed=9))
    import_paths(store, [other])
    stranger = next(v.volume_id for v in store.volumes() if v.kind == "composed" and v.role == "STIR"
                    and v.volume_id not in (prior, current))
    with pytest.raises(CnoError, match="different patients"):
        transform_between(store, prior, stranger)
    for path in cache_path(store, store.volume(prior), store.volume(current)).parent.glob("*.json"):
        path.unlink()
    assert transform_between(store, prior, current, compute=False) is None


def test_a_volume_of_fewer_than_four_slices_is_refused_in_one_line_naming_its_slices():
    from cno_annotate.io.volume import Volume
    from cno_annotate.registration import register_piecewise

    rng = np.random.default_rng(3)
    affine = np.diag([1.5, 1.5, 6.0, 1.0])
    thin = Volume(rng.random((3, 48, 48)).astype(np.float32) * 100, affine, volume_id="thin")
    full = Volume(rng.random((12, 48, 48)).astype(np.float32) * 100, affine, volume_id="full")
    for source, target in ((thin, full), (full, thin)):
        with pytest.raises(CnoError) as caught:
            register_piecewise(source, target)
        message = str(caught.value)
        assert "3 slices" in message and "at least 4" in message and "patient coordinates" in message
        assert "\n" not in message


def test_two_visits_of_one_patient_in_a_reading_package_are_registered(tmp_path):
    """A package gives each case its reading code as patient ID; its reading study says which cases share a patient.

    Prior beside current in a paired package registered nothing ("different patients"), so a lesion
    carried forward as persisting landed at the prior's coordinates on a repositioned child. The two
    cases of one patient code are one patient; a case of another patient code is still refused.
    """
    from cno_annotate import packages
    from cno_annotate import reading_study as rs

    generate_study(tmp_path / "visits", StudyPlan(stations=2, slices=4, matrix=32, seed=61, timepoints=2))
    generate_study(tmp_path / "other", StudyPlan(stations=2, slices=4, matrix=32, seed=62))
    coordinator = Store.open(tmp_path / "coordinator")
    import_paths(coordinator, [tmp_path / "visits", tmp_path / "other"])
    rs.create(coordinator, "paired", design="paired-chronological")
    rs.add_cases(coordinator, "paired", [s.study_uid for s in coordinator.studies()])
    rs.add_readers(coordinator, "paired", ["dr-p"])
    rs.assign(coordinator, "paired")
    packages.build(coordinator, "paired", "dr-p", tmp_path / "package")
    coordinator.close()
    store = Store.open(tmp_path / "package" / "store")
    try:
        cases = rs.cases(store, "paired")
        by_patient: dict[str, list[str]] = {}
        for case in sorted(cases, key=lambda c: c.timepoint):
            stir = next(v.volume_id for v in store.volumes(case.study_uid) if v.kind == "composed" and v.role == "STIR")
            by_patient.setdefault(case.patient_code, []).append(stir)
        (prior, current), (stranger,) = sorted(by_patient.values(), key=len, reverse=True)
        assert len({s.patient_id for s in store.studies()}) == 3  # each case its own patient ID (the reading code)
        assert transform_between(store, prior, current, compute=False) is None  # not refused: nothing cached yet
        with pytest.raises(CnoError, match="different patients"):
            transform_between(store, prior, stranger, compute=False)
    finally:
        store.close()
