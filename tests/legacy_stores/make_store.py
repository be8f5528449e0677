"""Write the frozen store of schema 21 (tests/legacy_stores/store-v21.sqlite) with this release."""
import sys
from pathlib import Path

from cno_annotate import reading_study as rs
from cno_annotate.annotation.reads import ReadSession
from cno_annotate.importer import import_paths
from cno_annotate.store.db import SCHEMA_VERSION, Store

folder = Path(sys.argv[1])
study = Path("/srv/cno-legacy/study")
assert SCHEMA_VERSION == 21, SCHEMA_VERSION
store = Store.open(folder)
import_paths(store, [study])
rs.create(store, "trial", seed=3)
rs.add_cases(store, "trial", [s["study_uid"] for s in store.studies()])
rs.add_readers(store, "trial", ["dr-a", "dr-b"])
rs.add_readers(store, "trial", ["dr-c"], role="adjudicator")
rs.assign(store, "trial")
uid = rs.study_uid_of(store, "trial", "CNO-0001")
series = next(v for v in store.volumes(uid) if v["kind"] == "stack" and v["role"] == "STIR")["volume_id"]
for reader, role, submit in (("dr-a", "reader", True), ("dr-b", "reader", False), ("dr-c", "adjudicator", True)):
    session = ReadSession.open_or_create(store, uid, reader, reading_study="trial", role=role)
    lesion = session.add_lesion((60.0, 0.0, -300.0), series, (10.0, 12.0, 1.0), site_id="femur.distal", side="L",
                                comment="kept across migrations")
    session.set_grade(lesion, "marrow_hyperintensity", 2)
    session.add_roi("rectangle", "coronal", [(50.0, 0.0, -310.0), (70.0, 0.0, -290.0)], series)
    session.mark_unit(session.remaining_units()[-1], "no_lesion")
    session.add_reading_time(95.5)
    if submit:
        session.submit()
store.close()
print("written", folder / "store.sqlite", "schema", SCHEMA_VERSION)
