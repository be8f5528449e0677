"""Follow-up reading: reading-study designs, which prior may be shown, carrying the prior read forward."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from cno_annotate import reading_study as rs
from cno_annotate.annotation.documents import export_document, import_document, write_document
from cno_annotate.annotation.model import FollowupStatus
from cno_annotate.annotation.reads import ReadSession, load_read
from cno_annotate.errors import CnoError
from cno_annotate.followup import UNREGISTERED, CarryForward, prior_read_of, prior_studies
from cno_annotate.importer import import_paths
from cno_annotate.store import Store, audit
from tests.followup_data import visits
from tests.voxels import voxel_at


@pytest.fixture(scope="module")
def visit_dirs(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("visits")
    return root, visits(root)


@pytest.fixture
def patient(tmp_path, visit_dirs) -> tuple[Store, dict[str, str]]:
    root, uids = visit_dirs
    store = Store.open(tmp_path / "store")
    import_paths(store, [root])
    return store, uids


def _stir(store: Store, study_uid: str) -> str:
    return next(v.volume_id for v in store.volumes(study_uid) if v.kind == "composed" and v.role == "STIR")


class Shift:
    """A test registration: every prior point moves by a fixed offset, in one region."""

    def __init__(self, offset, region="trunk"):
        self.offset, self.region = np.asarray(offset, float), region

    def map_point(self, point_lps):
        class Mapped:
            pass

        mapped = Mapped()
        mapped.point, mapped.region = np.asarray(point_lps, float) + self.offset, self.region
        return mapped


def _study(store: Store, design: str, name: str = "fu") -> None:
    rs.create(store, name, seed=5, design=design)
    rs.add_cases(store, name, [s.study_uid for s in store.studies()])
    rs.add_readers(store, name, ["dr-a", "dr-b"])
    rs.assign(store, name)


# -- designs ----------------------------------------------------------------------------------
def test_the_default_design_is_unpaired_blinded_and_shows_no_prior(patient, cli):
    store, uids = patient
    _study(store, "unpaired-blinded")
    assert rs.get(store, "fu").design == rs.ReadingDesign.UNPAIRED_BLINDED
    rs.create(store, "plain")
    assert rs.get(store, "plain").design == rs.ReadingDesign.UNPAIRED_BLINDED
    for case in rs.cases(store, "fu"):
        assert rs.comparison_cases(store, "fu", case.reading_code) == []
    assert all(set(e) == {"position", "reading_code", "status"} for e in rs.worklist(store, "fu", "dr-a"))
    code, out, _ = cli("--store", str(store.root), "reading-study", "show", "fu")
    assert code == 0 and "design      unpaired-blinded: unpaired blinded" in out


def test_the_design_is_fixed_once_reading_starts_in_the_program_and_in_the_database(patient, cli, tmp_path):
    store, uids = patient
    _study(store, "unpaired-blinded")
    rs.set_design(store, "fu", "paired-chronological")
    assert rs.get(store, "fu").design == rs.ReadingDesign.PAIRED_CHRONOLOGICAL
    session = ReadSession.open_or_create(store, uids["baseline"], "dr-a", reading_study="fu")
    session.add_lesion((0.0, 0.0, -100.0), _stir(store, uids["baseline"]), voxel_at(store, _stir(store, uids["baseline"]), (0.0, 0.0, -100.0)))
    with pytest.raises(CnoError, match="fixed once reading has started"):
        rs.set_design(store, "fu", "paired-hidden-order")
    code, _, err = cli("--store", str(store.root), "reading-study", "design", "fu", "unpaired-blinded")
    assert code != 0 and "fixed once reading has started" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(sqlite3.IntegrityError, match="fixed once reading has started"):
        store.db.execute("UPDATE reading_studies SET design = 'unpaired-blinded' WHERE name = 'fu'")
    assert rs.get(store, "fu").design == rs.ReadingDesign.PAIRED_CHRONOLOGICAL
    code, out, _ = cli("--store", str(store.root), "reading-study", "show", "fu")
    assert "paired-chronological" in out and "(fixed: reading has started)" in out
    assert audit.verify(store.db).ok
    from cno_annotate.analysis import report

    built = report.run(store, "fu", ["design"], tmp_path / "report")
    assert built["design"]["id"] == "paired-chronological"
    html = (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
    assert "Reading design: paired chronological" in html and "reading design paired chronological" in html
    with pytest.raises(CnoError, match="design is one of"):
        rs.create(store, "bad", design="paired")
    with pytest.raises(CnoError, match="cannot reveal timepoints"):
        rs.create(store, "bad", design="paired-hidden-order", reveal_timepoints=True)


def test_a_changed_design_reassigns_the_worklists_so_their_order_tells_nothing(patient):
    store, uids = patient
    code_of: dict[str, str] = {}
    for seed in range(40):  # the first seed whose shuffled worklist puts the follow-up first (not vacuous)
        name = f"s{seed}"
        rs.create(store, name, seed=seed)
        rs.add_cases(store, name, [s.study_uid for s in store.studies()])
        rs.add_readers(store, name, ["dr-a"])
        rs.assign(store, name)
        code_of = {c.study_uid: c.reading_code for c in rs.cases(store, name)}
        shuffled = [e["reading_code"] for e in rs.worklist(store, name, "dr-a")]
        if shuffled.index(code_of[uids["followup"]]) < shuffled.index(code_of[uids["baseline"]]):
            break
    else:
        pytest.fail("no seed puts the follow-up first")
    rs.set_design(store, name, "paired-chronological")
    order = [e["reading_code"] for e in rs.worklist(store, name, "dr-a")]
    assert order.index(code_of[uids["baseline"]]) < order.index(code_of[uids["followup"]])
    rs.set_design(store, name, "paired-hidden-order")
    assert [e["reading_code"] for e in rs.worklist(store, name, "dr-a")] == shuffled  # the plain seeded order
    assert audit.verify(store.db).ok


def test_paired_chronological_shows_the_earlier_visit_of_the_same_patient_only(patient):
    store, uids = patient
    _study(store, "paired-chronological")
    code_of = {c.study_uid: c.reading_code for c in rs.cases(store, "fu")}
    [prior] = rs.comparison_cases(store, "fu", code_of[uids["followup"]])
    assert prior["study_uid"] == uids["baseline"] and "prior" in prior["label"]
    assert rs.comparison_cases(store, "fu", code_of[uids["baseline"]]) == []  # nothing before the first visit
    assert rs.comparison_cases(store, "fu", code_of[uids["other"]]) == []  # the other patient's only study
    for reader in ("dr-a", "dr-b"):
        order = [e["reading_code"] for e in rs.worklist(store, "fu", reader)]
        assert order.index(code_of[uids["baseline"]]) < order.index(code_of[uids["followup"]])
        entry = next(e for e in rs.worklist(store, "fu", reader) if e["reading_code"] == code_of[uids["followup"]])
        assert (entry["timepoint"], entry["timepoints"]) == (2, 2)


def test_outside_a_reading_study_only_the_same_patients_earlier_studies_are_offered(patient):
    store, uids = patient
    offered = prior_studies(store, uids["followup"])
    assert [p.study_uid for p in offered] == [uids["baseline"]]  # the other patient's study is earlier still
    assert offered[0].label.startswith("2019-01-04")
    assert prior_studies(store, uids["baseline"]) == []
    assert prior_studies(store, uids["other"]) == []


def _reader_visible(store: Store, cli, name: str, reader: str, tmp_path: Path) -> list[str]:
    """Every string the hidden-order study lets a reader see: worklists, comparison labels, exports, CLI output."""
    texts = [json.dumps(rs.worklist(store, name, reader))]
    for case in rs.cases(store, name):
        texts.append(json.dumps([{k: v for k, v in c.items() if k != "study_uid"}
                                 for c in rs.comparison_cases(store, name, case.reading_code)]))
    for args in (("worklist", name, reader), ("worklist", name, reader, "--json")):
        texts.append(cli("--store", str(store.root), "reading-study", *args)[1])
    return texts


def test_hidden_order_never_reveals_which_visit_is_earlier(tmp_path, cli):
    """Two stores with the visit dates swapped give the reader exactly the same strings."""
    seen = []
    for n, (first, second) in enumerate((("20190104", "20190704"), ("20190704", "20190104"))):
        root = tmp_path / f"data{n}"
        visits(root, first, second)
        store = Store.open(tmp_path / f"store{n}")
        import_paths(store, [root])
        _study(store, "paired-hidden-order")
        texts = _reader_visible(store, cli, "fu", "dr-a", tmp_path)
        code_of = {c.study_uid: c.reading_code for c in rs.cases(store, "fu")}
        followup = next(uid for uid, c in code_of.items() if rs.comparison_cases(store, "fu", c))
        session = ReadSession.open_or_create(store, followup, "dr-a", reading_study="fu")
        session.add_lesion((0.0, 0.0, -100.0), _stir(store, followup), voxel_at(store, _stir(store, followup), (0.0, 0.0, -100.0)), site_id="spine.L2")
        document = rs.reader_document(store, "fu", "dr-a", audited=False)
        exported = json.dumps(document)
        for text in texts + [exported]:
            for hint in ("2019", "timepoint", "prior", "earlier", "later", "baseline", "follow-up", "first", "second"):
                assert not re.search(rf"\b{hint}\b", text.lower()), (hint, text[:200])
        assert all(r["followup"] is None for r in document["reads"])
        entry = rs.worklist(store, "fu", "dr-a")
        assert {e.get("visit") for e in entry} >= {"A", "B"}
        seen.append(texts)
    assert seen[0] == seen[1]


# -- carry-forward ------------------------------------------------------------------------------
def _baseline(store: Store, uids: dict, reading_study: str | None = None):
    volume = _stir(store, uids["baseline"])
    session = ReadSession.open_or_create(store, uids["baseline"], "dr-a", reading_study=reading_study)
    ids = [session.add_lesion((-70.0, 0.0, -400.0), volume, voxel_at(store, volume, (-70.0, 0.0, -400.0)), site_id="femur.distal", side="R",
                              subsite="metaphysis"),
           session.add_lesion((0.0, 0.0, -100.0), volume, voxel_at(store, volume, (0.0, 0.0, -100.0)), site_id="spine.L2"),
           session.add_lesion((30.0, 0.0, -250.0), volume, voxel_at(store, volume, (30.0, 0.0, -250.0)), site_id="ilium", side="L")]
    for lesion_id in ids:
        session.set_grade(lesion_id, "marrow_hyperintensity", 2)
    session.submit()
    return session.read


def test_prior_lesions_are_carried_forward_confirmed_and_the_read_submitted_only_when_all_are(patient, tmp_path):
    store, uids = patient
    prior = _baseline(store, uids)
    assert prior_read_of(store, uids["baseline"], "dr-a", None).read_id == prior.read_id
    assert prior_read_of(store, uids["baseline"], "dr-b", None) is None  # never another reader's read
    volume = _stir(store, uids["followup"])
    session = ReadSession.open_or_create(store, uids["followup"], "dr-a")
    carry = CarryForward(session, prior)
    assert {g.region for g in carry.ghosts()} == {UNREGISTERED}  # before the registration is known
    carry.set_transform(Shift((2.0, -1.0, 15.0)))
    ghosts = carry.ghosts()
    assert [g.position for g in ghosts] == [tuple(np.add(l.position, (2.0, -1.0, 15.0))) for l in prior.lesions]
    assert {g.region for g in ghosts} == {"trunk"} and all(g.status is None for g in ghosts)
    femur, spine, ilium = (l.tracking_uid for l in prior.lesions)
    kept = carry.persisting(femur, volume, lambda p: voxel_at(store, volume, p))
    carry.resolved(spine)
    lesion = session.read.lesion(kept)
    assert lesion.tracking_uid == femur and lesion.position == ghosts[0].position
    assert (lesion.site_id, lesion.side, lesion.subsite, lesion.grades) == ("femur.distal", "R", "metaphysis", {})
    session.set_grade(kept, "marrow_hyperintensity", 1)  # graded anew
    assert [g.tracking_uid for g in carry.unconfirmed()] == [ilium]
    with pytest.raises(CnoError, match=f"not yet confirmed.*{prior.lesions[2].lesion_id}"):
        session.submit()
    carry.not_assessable(ilium)
    new = session.add_lesion((-30.0, 0.0, -300.0), volume, voxel_at(store, volume, (-30.0, 0.0, -300.0)), site_id="tibia.shaft", side="L")
    expected = {"persisting": 1, "resolved": 1, "not_assessable": 1, "unconfirmed": 0, "new": 1}
    assert carry.counts() == expected
    assert [l.lesion_id for l in carry.new_lesions()] == [new]
    session.undo()
    session.undo()  # the not-assessable outcome
    assert carry.counts()["unconfirmed"] == 1
    session.redo()
    session.redo()
    assert carry.counts() == expected
    session.submit()
    stored = load_read(store, session.read.read_id)
    assert stored.followup.prior_read_id == prior.read_id
    assert stored.followup.outcomes == {femur: FollowupStatus.PERSISTING, spine: FollowupStatus.RESOLVED,
                                        ilium: FollowupStatus.NOT_ASSESSABLE}
    document = export_document(store)
    path = write_document(document, tmp_path / "reads.json")
    assert audit.verify(store.db).ok
    followup = next(r for r in document["reads"] if r["followup"])
    assert {o["status"] for o in followup["followup"]["outcomes"]} == {"persisting", "resolved", "not_assessable"}
    assert path.exists()


def test_changing_a_persisting_lesion_to_resolved_removes_it_and_deleting_it_unconfirms(patient):
    store, uids = patient
    prior = _baseline(store, uids)
    volume = _stir(store, uids["followup"])
    session = ReadSession.open_or_create(store, uids["followup"], "dr-a")
    carry = CarryForward(session, prior, Shift((0.0, 0.0, 0.0)))
    femur = prior.lesions[0].tracking_uid
    kept = carry.persisting(femur, volume, lambda p: voxel_at(store, volume, p))
    carry.resolved(femur)
    assert session.read.lesions == [] and carry.counts()["resolved"] == 1
    kept = carry.persisting(femur, volume, lambda p: voxel_at(store, volume, p))
    session.delete_lesion(kept)
    assert carry.counts()["unconfirmed"] == 3 and session.read.lesions == []


def test_a_follow_up_import_is_checked_by_the_one_validator(patient, tmp_path):
    store, uids = patient
    prior = _baseline(store, uids)
    session = ReadSession.open_or_create(store, uids["followup"], "dr-a")
    carry = CarryForward(session, prior, Shift((0.0, 0.0, 0.0)))
    carry.persisting(prior.lesions[0].tracking_uid, _stir(store, uids["followup"]), lambda p: voxel_at(store, _stir(store, uids["followup"]), p))
    document = export_document(store, study_uid=uids["followup"])
    broken = json.loads(json.dumps(document))
    broken["reads"][0]["lesions"] = []  # the persisting lesion is gone: its outcome now says too much
    broken["reads"][0]["scores"] = document["reads"][0]["scores"]
    (tmp_path / "b.json").write_text(json.dumps(broken))
    with pytest.raises(CnoError, match=r"followup.outcomes\[0\]: prior lesion .* is marked persisting"):
        import_document(store, tmp_path / "b.json", replace=True)
    missing = json.loads(json.dumps(document))
    missing["reads"][0]["followup"]["prior_read_id"] = "nope"
    (tmp_path / "m.json").write_text(json.dumps(missing))
    with pytest.raises(CnoError, match="prior read nope does not exist"):
        import_document(store, tmp_path / "m.json", replace=True)
    path = write_document(document, tmp_path / "ok.json")
    import_document(store, path, replace=True)
    assert load_read(store, session.read.read_id).followup == session.read.followup


def test_in_a_reading_study_only_the_chronological_design_carries_the_prior_forward(patient):
    store, uids = patient
    _study(store, "paired-chronological")
    prior = _baseline(store, uids, reading_study="fu")
    session = ReadSession.open_or_create(store, uids["followup"], "dr-a", reading_study="fu")
    CarryForward(session, prior)
    assert session.read.followup.prior_read_id == prior.read_id
    other = ReadSession.open_or_create(store, uids["other"], "dr-a", reading_study="fu")
    with pytest.raises(CnoError, match="not a read of an earlier visit of this case's patient"):
        other.follow_up(prior.read_id)
    _study(store, "unpaired-blinded", name="blind")
    blind_prior = _baseline(store, uids, reading_study="blind")
    blind = ReadSession.open_or_create(store, uids["followup"], "dr-a", reading_study="blind")
    with pytest.raises(CnoError, match="unpaired-blinded: the prior read is not carried forward"):
        CarryForward(blind, blind_prior)


# -- prior beside current: views linked through the registration ----------------------------------
class _Piecewise:
    """A test registration with ``inverse`` and ``nudged``: a shift per side of the body (x < 0: right)."""

    def __init__(self, shifts: dict[str, tuple], sign: float = 1.0):
        self.shifts, self.sign = {k: np.asarray(v, float) for k, v in shifts.items()}, sign

    def map_point(self, point_lps):
        region = "right_leg" if point_lps[0] < 0 else "left_leg"
        return Shift(self.sign * self.shifts[region], region).map_point(point_lps)

    def inverse(self):
        return _Piecewise(self.shifts, -self.sign)

    def nudged(self, region, delta_mm):
        shifts = dict(self.shifts)
        shifts[region] = shifts[region] + np.asarray(delta_mm, float)
        nudged = _Piecewise(shifts, self.sign)
        nudged.nudges = {**self.nudges, region: self.nudges.get(region, np.zeros(3)) + np.asarray(delta_mm, float)}
        return nudged

    nudges: dict = {}

    def region(self, name):
        class Region:
            nudge_mm = self.nudges.get(name, np.zeros(3))

        return Region()


def test_prior_and_current_views_follow_each_other_through_the_registration():
    from cno_annotate.display.session import CURRENT, PRIOR, UNREGISTERED, ViewerSession
    from cno_annotate.io.volume import Volume

    volume = Volume(np.zeros((20, 40, 40), np.float32), np.diag([5.0, 5.0, 5.0, 1.0]), "v", "STIR")
    session = ViewerSession()
    session.set_frame("left", PRIOR)
    session.set_frame("right", CURRENT)
    session.set_volume("left", volume)
    session.set_volume("right", volume)
    session.set_point("right", (-20.0, 50.0, 60.0))
    assert session.region == UNREGISTERED  # before the registration: the same coordinates
    np.testing.assert_allclose(session.views["left"].point, (-20.0, 50.0, 60.0))
    session.set_transform(_Piecewise({"right_leg": (3.0, 0.0, 10.0), "left_leg": (-2.0, 0.0, 0.0)}))
    np.testing.assert_allclose(session.views["left"].point, (-23.0, 50.0, 50.0))  # current -> prior: inverse
    assert session.region == "right_leg"
    session.set_point("left", (30.0, 40.0, 20.0))  # a click in the prior view
    np.testing.assert_allclose(session.views["right"].point, (28.0, 40.0, 20.0))
    assert session.region == "left_leg"
    session.nudge((0.0, 0.0, 4.0))  # the reader corrects the left leg by 4 mm
    np.testing.assert_allclose(session.views["left"].point, (30.0, 40.0, 16.0))
    assert session.transform.shifts["left_leg"].tolist() == [-2.0, 0.0, 4.0]


def test_an_ungraded_persisting_lesion_stops_submit_in_the_editor_and_in_read_import(patient, tmp_path):
    store, uids = patient
    prior = _baseline(store, uids)
    session = ReadSession.open_or_create(store, uids["followup"], "dr-a")
    carry = CarryForward(session, prior, Shift((0.0, 0.0, 0.0)))
    kept = carry.persisting(prior.lesions[0].tracking_uid, _stir(store, uids["followup"]), lambda p: voxel_at(store, _stir(store, uids["followup"]), p))
    for other in prior.lesions[1:]:
        carry.resolved(other.tracking_uid)
    with pytest.raises(CnoError, match=f"persisting lesion {kept} of a submitted follow-up read needs a grade"):
        session.submit()
    document = export_document(store, study_uid=uids["followup"])
    document["reads"][0]["status"] = "submitted"
    (tmp_path / "s.json").write_text(json.dumps(document))
    with pytest.raises(CnoError, match=r"lesions\[0\]\.grades: persisting lesion .* needs a grade"):
        import_document(store, tmp_path / "s.json", replace=True)
    session.set_grade(kept, "marrow_hyperintensity", 1)
    session.submit()
    assert load_read(store, session.read.read_id).status == "submitted"


def test_showing_the_prior_creates_no_read_and_the_first_change_stores_the_link(patient):
    """README: opening a case creates no read, the first change does; carrying the prior forward is no change."""
    store, uids = patient
    _study(store, "paired-chronological")
    prior = _baseline(store, uids, reading_study="fu")
    session = ReadSession.open_or_create(store, uids["followup"], "dr-a", reading_study="fu")
    carry = CarryForward(session, prior, Shift((0.0, 0.0, 0.0)))
    assert session.read.followup.prior_read_id == prior.read_id  # the views and the dock have it
    assert len(carry.ghosts()) == 3 and carry.counts()["unconfirmed"] == 3
    stored = store.db.execute("SELECT COUNT(*) FROM reads WHERE study_uid = ? AND reader = 'dr-a'",
                              (uids["followup"],)).fetchone()[0]
    assert stored == 0
    assert next(p for p in rs.progress(store, "fu") if p["reader"] == "dr-a")["draft"] == 0
    carry.resolved(prior.lesions[1].tracking_uid)  # the first real change: the read, its link and the outcome
    kept = load_read(store, session.read.read_id)
    assert kept.followup.prior_read_id == prior.read_id
    assert kept.followup.outcomes == {prior.lesions[1].tracking_uid: FollowupStatus.RESOLVED}
    assert audit.verify(store.db).ok
