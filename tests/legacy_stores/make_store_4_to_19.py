"""Write the frozen store of one schema version 4..19 with the release on PYTHONPATH.

Usage (from a checkout of the release, e.g. ``git archive COMMIT cno_annotate schemas | tar -x -C /tmp/rel``)::

    PYTHONPATH=/tmp/rel python tests/legacy_stores/make_store_4_to_19.py /srv/cno-legacy/sN N

It builds the v3 reading study from the study at the neutral path /srv/cno-legacy/study and gives
each read what that release could store: a graded lesion and a unit marked no lesion (all), a
rectangle ROI (schema 11 on), 95.5 s of reading time (schema 15 on). dr-b's read stays a draft.
"""
import inspect
import sys
from pathlib import Path

from cno_annotate import reading_study as rs
from cno_annotate.annotation.reads import ReadSession
from cno_annotate.importer import import_paths
from cno_annotate.store.db import SCHEMA_VERSION, Store


def field(volume, key: str):
    """A volume's field: volumes are dicts in some releases, objects in others."""
    return volume[key] if isinstance(volume, dict) else getattr(volume, key)


folder = Path(sys.argv[1])
assert SCHEMA_VERSION == int(sys.argv[2]), SCHEMA_VERSION
store = Store.open(folder)
import_paths(store, [Path("/srv/cno-legacy/study")])
rs.create(store, "trial", seed=3)
rs.add_cases(store, "trial", [s["study_uid"] for s in store.studies()])
rs.add_readers(store, "trial", ["dr-a", "dr-b"])
rs.add_readers(store, "trial", ["dr-c"], role="adjudicator")
rs.assign(store, "trial")
uid = rs.study_uid_of(store, "trial", "CNO-0001")
series = next(field(v, "volume_id") for v in store.volumes(uid)
              if field(v, "kind") == "stack" and field(v, "role") == "STIR")
takes_role = "role" in inspect.signature(ReadSession.open_or_create).parameters
done = set()
for reader, role, submit in (("dr-a", "reader", True), ("dr-b", "reader", False), ("dr-c", "adjudicator", True)):
    session = ReadSession.open_or_create(store, uid, reader, reading_study="trial",
                                         **({"role": role} if takes_role else {}))
    lesion = session.add_lesion((60.0, 0.0, -300.0), series, (10.0, 12.0, 1.0), site_id="femur.distal", side="L",
                                comment="kept across migrations")
    session.set_grade(lesion, "marrow_hyperintensity", 2)
    session.mark_unit("toe_phalanges:L", "no_lesion")
    done |= {"grade", "unit"}
    if hasattr(session, "add_roi"):
        session.add_roi("rectangle", "coronal", [(50.0, 0.0, -310.0), (70.0, 0.0, -290.0)], series)
        done.add("roi")
    if hasattr(session, "add_reading_time"):
        session.add_reading_time(95.5)
        done.add("time")
    if submit:
        session.submit()
store.close()
print("written", folder / "store.sqlite", "schema", SCHEMA_VERSION, sorted(done))
