"""A de-identified study PACS for online readers: the coordinator publishes, the reader's viewer fetches and caches.

Coordinator side, :func:`publish` sends a de-identified copy of every case of
a reading study to a PACS (STOW-RS or C-STORE, through the PACS client): the
same de-identification as reading packages (:mod:`cno_annotate.deid`,
PS3.15 Basic Profile with the study's options; the reading code as patient
name and ID; stand-in UIDs and date offsets from the study's secret), so the
PACS never receives an identifying header and a case has the same stand-in
UIDs on the PACS as in every package. The identifying originals stay in the
coordinator's store and folders.

Reader side, :func:`fetch_case` looks up where the study PACS holds a case of
the reader's worklist (the server shows a reader only their own cases), and
retrieves it (WADO-RS or C-GET/C-MOVE) into a local image cache: an SQLite
store of this user, one per server database, that holds the de-identified
instances only. The viewer shows the volumes of the cache and keeps the reads
on the server.
"""

from __future__ import annotations

import tempfile
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cno_annotate import reading_study as rs
from cno_annotate.errors import CnoError
from cno_annotate.io.kinds import VolumeKind
from cno_annotate.packages import _dates_kept_in_order, _secret, offset_days, stand_in_uid  # one rule for both
from cno_annotate.store import Store, published
from cno_annotate.store import packages as issued
from cno_annotate.store.reading_studies import Case

if TYPE_CHECKING:  # these load pydicom: imported where a case is published or fetched, not by the viewer's start
    from cno_annotate.deid import Replacements
    from cno_annotate.pacs.client import PacsClient
    from cno_annotate.pacs.retrieve import RetrieveReport

#: The image cache's folder inside the per-user cache of a server store.
CACHE_FOLDER = "study-pacs"


@dataclass
class PublishReport:
    """What :func:`publish` sent."""

    cases: int = 0
    instances: int = 0
    #: Files left out (burned-in text, a header the profile cannot clean), with the reason.
    left_out: list[str] = field(default_factory=list)
    #: Files the PACS refused, with the reason (those cases are not recorded as published).
    refused: list[str] = field(default_factory=list)


def publish(store: Store, name: str, client: PacsClient, actor: str = rs.COORDINATOR,
            codes: list[str] | None = None) -> PublishReport:
    """Send de-identified copies of a reading study's cases (all, or ``codes``) to the study PACS.

    Each case is recorded as published (audited) once the PACS has stored all
    its files; publishing again sends the same instances (same stand-in UIDs),
    which a PACS keeps once.

    Raises
    ------
    CnoError
        If the study or a code is unknown, or a case's files are missing (nothing
        of that case is sent). A refusal of the PACS is reported per file instead.
    PacsError
        If the PACS cannot be reached.
    """
    from cno_annotate.deid import Replacements

    study = rs.get(store, name)
    secret = _secret(store, name)
    cases = rs.cases(store, name)
    if codes:
        unknown = sorted(set(codes) - {c.reading_code for c in cases})
        if unknown:
            raise CnoError(f"reading study {name!r} has no case {', '.join(unknown)}")
        cases = [c for c in cases if c.reading_code in codes]
    report = PublishReport()
    for case in cases:
        pairs: dict[str, str] = {}

        def stand_in(source: str, pairs: dict[str, str] = pairs) -> str:
            return pairs.setdefault(source, stand_in_uid(secret, source))

        subject = case.patient_code if _dates_kept_in_order(study) else case.reading_code
        replacements = Replacements(case.reading_code, -offset_days(secret, subject), stand_in, study.show_age_sex)
        with tempfile.TemporaryDirectory(prefix="cno-publish-") as staging:
            files = _deidentified_copies(store, case, replacements, Path(staging), report.left_out)
            refused = client.send(files)
            report.refused += [f"{case.reading_code} file {path.name}: {why}" for path, why in refused.items()]
            if files and not refused:
                _pair_copy_volumes(store, Path(staging), pairs)
                published.record_case(store, name, case.reading_code, stand_in(case.study_uid), len(files),
                                      pairs, client.node.name, actor)
                report.cases += 1
                report.instances += len(files)
    return report


def _pair_copy_volumes(store: Store, folder: Path, pairs: dict[str, str]) -> None:
    """Add the volume ids the readers' caches give the copies in ``folder`` (indexed here as a reader's cache
    indexes them) to the UID pairs, each with the coordinator's volume of the same images (as packages do)."""
    from cno_annotate.importer import import_paths
    from cno_annotate.packages import _record_volume_ids

    with tempfile.TemporaryDirectory(prefix="cno-publish-index-") as index:
        copies = Store.open(Path(index) / "store")
        try:
            import_paths(copies, [folder])
            _record_volume_ids(store, copies, pairs)
        finally:
            copies.close()


def _deidentified_copies(store: Store, case: Case, replacements: Replacements, folder: Path,
                         left_out: list[str]) -> list[Path]:
    import pydicom

    from cno_annotate.deid import deidentify

    code = case.reading_code
    paths = published.case_files(store, case.study_uid)
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise CnoError(f"{code}: {len(missing)} of its files are missing (if the folder moved, run 'cno-annotate "
                       f"relocate OLD NEW'); nothing of {code} was sent")
    written: list[Path] = []
    for number, path in enumerate(paths, 1):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # what pydicom says about a source header names no patient here
                clean = deidentify(pydicom.dcmread(path), replacements)
        except CnoError as exc:
            left_out.append(f"{code} file {number}: {exc}")
            continue
        target = folder / f"{number:05d}.dcm"
        clean.save_as(target, enforce_file_format=True)
        written.append(target)
    return written


# -- reader side ---------------------------------------------------------------------------------------------------
def image_cache(store: Store) -> Path:
    """This user's local cache of the study PACS for a store (one per server database and login)."""
    return Path(store.cache_dir) / CACHE_FOLDER


def open_cache(store: Store) -> Store:
    """The image cache as a store of its own (de-identified instances only)."""
    return Store.open(image_cache(store))


@dataclass(frozen=True)
class CachedCase:
    """A case fetched into the image cache: where, under which (stand-in) study UID, and what the retrieve did."""

    cache: Path
    study_uid: str
    report: RetrieveReport


def fetch_case(store: Store, name: str, code: str, client: PacsClient,
               progress: Callable[[int, int], None] | None = None,
               cancel: threading.Event | None = None) -> CachedCase:
    """Retrieve a case of the reader's worklist from the study PACS into the local image cache.

    Instances the cache holds already are not fetched again.

    Raises
    ------
    CnoError
        If the case was not published (or is not on this login's worklist).
    PacsError
        If the PACS cannot be reached or does not hold the case.
    """
    from cno_annotate.pacs.retrieve import retrieve_study

    study_uid = published.pacs_study_uid(store, name, code)
    cache = open_cache(store)
    try:
        report = retrieve_study(cache, client, study_uid, progress, cancel)
    finally:
        cache.close()
    return CachedCase(image_cache(store), study_uid, report)


# -- coordinator side: the readers' references back to the source ---------------------------------------------
def source_references(store: Store, name: str) -> dict[str, str]:
    """Stand-in volume and series ids of a reading study's de-identified copies -> the coordinator's own.

    An online reader marks lesions on the copies fetched from the study PACS
    (and a package reader on the package's copies): their lesions and ROIs name
    stand-in series UIDs, split stacks of them and composed volumes of those
    stacks. ``publish`` (and ``package``) index the copies as a reader's cache
    does and record each copy volume with the coordinator's volume of the same
    images (a copy may split a series in another order: it has no private
    attributes). For cases published before that record existed, each source
    stack is taken to have its series' stand-in with the same suffix and each
    composed volume the composed id of its members' stand-ins; a recorded pair
    always wins.
    Empty for a login that may not see the UID pairs (a reader or adjudicator
    on a server): their exports keep the stand-ins.
    """
    from cno_annotate.io.compose import composed_volume_id

    if not published.may_map_back(store):
        return {}
    pairs = issued.uid_pairs(store.db, name)  # source -> stand-in, volume ids of packages included
    if not pairs:
        return {}
    forward: dict[str, str] = {}
    volumes = [v for uid in {c.study_uid for c in rs.cases(store, name)} for v in store.volumes(uid)]
    for volume in volumes:
        if volume.kind == VolumeKind.STACK and volume.series_uid in pairs:
            forward[volume.volume_id] = pairs[volume.series_uid] + volume.volume_id[len(volume.series_uid):]
    for volume in volumes:
        if volume.kind == VolumeKind.COMPOSED and all(m in forward for m in volume.members):
            forward[volume.volume_id] = composed_volume_id([forward[m] for m in volume.members])
    back = {new: old for old, new in pairs.items()}  # recorded at publish: the copies' own volume ids first
    for old, new in forward.items():  # derived (cases published before the copies' volumes were recorded)
        back.setdefault(new, old)
    return back
