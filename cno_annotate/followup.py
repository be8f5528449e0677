"""Follow-up reading: which earlier study may be shown, and carrying the prior read's lesions forward.

A follow-up read names the prior read it follows (:meth:`ReadSession.follow_up`).
The prior read's lesions appear on the current study as *ghosts*, placed by
mapping their positions through the registration between the two studies
(a :class:`~cno_annotate.registration.PiecewiseTransform`, or none while it
is being computed: then at the same patient coordinates, marked unregistered).
The reader says of each ghost whether it persists (it becomes a lesion of the
current read with the same tracking UID, graded anew), resolved, or cannot be
assessed; lesions marked anew are new lesions. :class:`CarryForward` holds
that logic; the viewer only shows it.

Which studies may be opened beside the current one: outside a reading study,
the other studies of the same patient (never another patient's); inside one,
what the study's design allows (:func:`cno_annotate.reading_study.comparison_cases`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from cno_annotate.annotation.model import FollowupStatus, Lesion, Read
from cno_annotate.annotation.reads import ReadSession, list_reads, load_read
from cno_annotate.errors import CnoError
from cno_annotate.store import catalog
from cno_annotate.store.db import Store

#: Region name shown while no registration is available (ghosts at the same patient coordinates).
UNREGISTERED = "unregistered"


class PointMap(Protocol):
    """What carry-forward needs of a registration: map a prior LPS point onto the current study."""

    def map_point(self, point_lps: Any) -> Any:  # returns an object with ``point`` and ``region``
        ...


@dataclass(frozen=True)
class Prior:
    """A study that may be shown beside the current one: its study UID (never shown) and a label."""

    study_uid: str
    label: str
    reading_code: str | None = None


def prior_studies(store: Store, study_uid: str) -> list[Prior]:
    """Outside a reading study: the patient's other studies acquired before ``study_uid``, latest first.

    A study is the same patient's when both name the same patient record
    (patient ID, name and birth date); a study with no patient record has no priors.
    """
    studies = {s.study_uid: s for s in store.studies(count_missing=False)}
    if study_uid not in studies:
        raise CnoError(f"study {study_uid} is not in the store")
    keys = catalog.patient_keys(store.db)
    key, date = keys.get(study_uid), studies[study_uid].study_date or ""
    if key is None:
        return []
    earlier = [s for uid, s in studies.items() if uid != study_uid and keys.get(uid) == key
               and (s.study_date or "") < date]
    earlier.sort(key=lambda s: s.study_date or "", reverse=True)
    return [Prior(s.study_uid, f"{_date(s.study_date)} {s.description or ''}".strip()) for s in earlier]


def reading_study_priors(store: Store, name: str, code: str) -> list[Prior]:
    """In a reading study: the visits of the case's patient the design lets the reader open (labels blinded)."""
    from cno_annotate import reading_study as rs

    return [Prior(c["study_uid"], c["label"], c["reading_code"]) for c in rs.comparison_cases(store, name, code)]


def _date(text: str | None) -> str:
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if text and len(text) == 8 else "undated"


def prior_read_of(store: Store, prior_study_uid: str, reader: str, reading_study: str | None) -> Read | None:
    """The reader's latest submitted read of the prior study (in the same reading study), if any."""
    rows = [r for r in list_reads(store, prior_study_uid, reader, reading_study)
            if r["status"] == "submitted" and r["reading_study"] == reading_study and r["role"] == "reader"]
    return load_read(store, max(rows, key=lambda r: r["version"])["read_id"]) if rows else None


@dataclass(frozen=True)
class Ghost:
    """A lesion of the prior read, shown on the current study."""

    tracking_uid: str
    prior: Lesion
    position: tuple[float, float, float]  # on the current study (mapped through the registration)
    region: str  # the registration region whose transform placed it, or UNREGISTERED
    status: FollowupStatus | None  # None: not yet confirmed

    @property
    def label(self) -> str:
        """Prior lesion id and site, for lists ("prior L3 femur.distal R")."""
        site = " ".join(v for v in (self.prior.site_id, self.prior.side) if v)
        return f"prior {self.prior.lesion_id} {site}".strip()


class CarryForward:
    """The prior read's lesions on the current read: candidates, outcomes, what remains unconfirmed.

    Parameters
    ----------
    session : ReadSession
        The current (follow-up) read; it is made a follow-up of ``prior`` if it is not yet.
    prior : Read
        The reader's submitted read of the earlier study.
    transform : PointMap, optional
        The registration from the prior study to the current one; None until it is computed.
    """

    def __init__(self, session: ReadSession, prior: Read, transform: PointMap | None = None):
        if prior.reader != session.read.reader:
            raise CnoError(f"read {prior.read_id} is another reader's: only your own prior read is carried forward")
        self.session = session
        self.prior = prior
        self.transform = transform
        if session.editable and (session.read.followup is None
                                 or session.read.followup.prior_read_id != prior.read_id):
            session.follow_up(prior.read_id)

    def set_transform(self, transform: PointMap | None) -> None:
        """Use a (new or nudged) registration for the ghosts."""
        self.transform = transform

    def map(self, point) -> tuple[tuple[float, float, float], str]:
        """A prior LPS point on the current study, and the region whose transform placed it."""
        if self.transform is None:
            x, y, z = (float(v) for v in point)
            return (x, y, z), UNREGISTERED
        mapped = self.transform.map_point(np.asarray(point, float))
        x, y, z = (float(v) for v in mapped.point)
        return (x, y, z), str(mapped.region)

    def ghosts(self) -> list[Ghost]:
        """Every prior lesion with its mapped position and the reader's outcome so far."""
        outcomes = self.session.read.followup.outcomes if self.session.read.followup else {}
        out = []
        for lesion in self.prior.lesions:
            position, region = self.map(lesion.position)
            out.append(Ghost(lesion.tracking_uid, lesion, position, region, outcomes.get(lesion.tracking_uid)))
        return out

    def unconfirmed(self) -> list[Ghost]:
        """The prior lesions the reader has not yet said anything about."""
        return [g for g in self.ghosts() if g.status is None]

    def new_lesions(self) -> list[Lesion]:
        """Lesions of the current read that are not carried from the prior read."""
        prior = {l.tracking_uid for l in self.prior.lesions}
        return [l for l in self.session.read.lesions if l.tracking_uid not in prior]

    def counts(self) -> dict[str, int]:
        """How many prior lesions are persisting, resolved, not assessable, unconfirmed; and new lesions."""
        ghosts = self.ghosts()
        out = {str(s): sum(g.status == s for g in ghosts) for s in FollowupStatus}
        out["unconfirmed"] = sum(g.status is None for g in ghosts)
        out["new"] = len(self.new_lesions())
        return out

    def _ghost(self, tracking_uid: str) -> Ghost:
        for ghost in self.ghosts():
            if ghost.tracking_uid == tracking_uid:
                return ghost
        raise CnoError(f"the prior read has no lesion with tracking UID {tracking_uid}")

    def persisting(self, tracking_uid: str, volume_id: str, voxel_of: Callable[[Any], Any],
                   position=None, **fields) -> str:
        """Confirm a prior lesion as persisting: a lesion of this read with its tracking UID; returns its id.

        It is placed at ``position`` (default: the ghost's mapped position) on
        ``volume_id``; ``voxel_of`` turns an LPS point into that volume's voxel
        index. Site, side and sub-site are taken from the prior lesion unless
        given; grades are not (the reader grades the lesion anew).
        """
        ghost = self._ghost(tracking_uid)
        where = ghost.position if position is None else tuple(float(v) for v in position)
        prior = ghost.prior
        lesion = {"position": where, "series_uid": volume_id,
                  "voxel": tuple(float(v) for v in voxel_of(np.asarray(where, float))),
                  "site_id": prior.site_id, "side": prior.side, "subsite": prior.subsite, **fields}
        lesion_id = self.session.set_outcome(tracking_uid, FollowupStatus.PERSISTING, lesion)
        if lesion_id is None:
            return next(l.lesion_id for l in self.session.read.lesions if l.tracking_uid == tracking_uid)
        return lesion_id

    def resolved(self, tracking_uid: str) -> None:
        """Confirm that a prior lesion has resolved."""
        self._ghost(tracking_uid)
        self.session.set_outcome(tracking_uid, FollowupStatus.RESOLVED)

    def not_assessable(self, tracking_uid: str) -> None:
        """Say that a prior lesion cannot be assessed on the current study."""
        self._ghost(tracking_uid)
        self.session.set_outcome(tracking_uid, FollowupStatus.NOT_ASSESSABLE)

    def unconfirm(self, tracking_uid: str) -> None:
        """Take back the outcome of a prior lesion (a persisting lesion is removed)."""
        self._ghost(tracking_uid)
        self.session.set_outcome(tracking_uid, None)


# -- registration between the two studies ---------------------------------------------------------
def registration_between(store: Store, prior_volume_id: str, current_volume_id: str, progress=None,
                         same_patient: bool = False):
    """The prior -> current registration (computed and cached, or from the cache); may run in a worker thread.

    ``same_patient``: as :func:`cno_annotate.registration.transform_between`.
    """
    from cno_annotate.registration import transform_between

    return transform_between(store, prior_volume_id, current_volume_id, progress=progress,
                             same_patient=same_patient)


def save_transform(store: Store, transform) -> None:
    """Keep a reader's nudged registration with the studies (in the registration cache, beside the computed one)."""
    import json

    from cno_annotate.fileio import atomic_write_text
    from cno_annotate.registration import cache_path

    prior, current = store.volume(transform.source_volume_id), store.volume(transform.target_volume_id)
    path = cache_path(store, prior, current)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(transform.to_dict(), indent=1) + "\n")
