"""Seeded fuzzing of ``read import`` with mutations of a valid read document.

Each mutation of a valid document (a value replaced by a hostile one, a key
removed or added, an item repeated, a key written twice, NaN, a lone
surrogate, deep nesting, a cut-off file) is imported into a fresh copy of a
store. The outcome must be one of:

- refused: a :class:`CnoError` whose message is one line and names the file and
  the JSON path (or line and column for text that is not JSON), with the store
  unchanged (reads, lesions, audit trail);
- accepted: and then every export works on the store: ``read export`` (strict
  JSON, read back), ``export-csv``, the unblinded export and the report.

Anything else (a traceback, a store changed by a refusal, an export that fails
after an accepted import) is a finding. The suite runs a small seeded version
(``tests/test_document_fuzz.py``); run more with::

    python stress/document_fuzz.py --mutations 2000 --seed 7
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cno_annotate import reading_study as rs
from cno_annotate.annotation.csv_export import write_tables
from cno_annotate.annotation.documents import export_document, import_document, write_document
from cno_annotate.annotation.reads import ReadSession
from cno_annotate.annotation.validation import load_strict_json
from cno_annotate.errors import CnoError
from cno_annotate.store import Store, audit

READING_STUDY = "fuzz"
HOSTILE_VALUES: list[Any] = [
    None, "", "x" * 300, -1, 0, 1, 7, 2**63, 2**64, -(2**63) - 1, 1e308, -0.0, 0.5, True, False, [], {}, [1, 2, 3],
    {"a": 1}, "\ud800", "=cmd|' /C calc'!A0", "@SUM(1)", "NA", "R", "L", "X", "femur.distal", "spine.T8",
    "femur.distal:R", "no_lesion", "not_assessable", "submitted", "draft", "adjudicator", "reader", "dr-a", "dr-b",
    "no-such-read", "1.2.3", "9.9.9", "cno-sites", "rai-cromris", "metaphysis", "box", "ellipse", "coronal",
    float("nan"), float("inf"), "$\\foo$", "<b>x</b>",
]


@dataclass
class Outcome:
    """What a fuzz run found."""

    mutations: int = 0
    refused: int = 0
    accepted: int = 0
    findings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        """One line of counts."""
        return (f"{self.mutations} mutations: {self.refused} refused, {self.accepted} accepted and exported, "
                f"{len(self.findings)} findings, {self.seconds:.1f} s")


def build_base(root: Path, dicom: Path) -> tuple[Path, dict]:
    """A store with the sample study, reading study ``fuzz`` and dr-a's submitted read; returns (store dir, document).

    The document is dr-a's read as a new read of dr-b (registered, no read yet), so it imports as it is.
    """
    from cno_annotate.importer import import_paths
    from cno_annotate.volumes import open_volume

    store = Store.open(root / "base")
    import_paths(store, [dicom])
    uid = store.studies()[0].study_uid
    rs.create(store, READING_STUDY)
    rs.add_cases(store, READING_STUDY, [uid])
    rs.add_readers(store, READING_STUDY, ["dr-a", "dr-b"])
    rs.add_readers(store, READING_STUDY, ["dr-adj"], "adjudicator")
    session = ReadSession.open_or_create(store, uid, "dr-a", reading_study=READING_STUDY)
    series = store.volumes(uid)[0].volume_id
    volume = open_volume(store, series)  # voxel indices derive from the positions (import checks them)
    femur = session.add_lesion((-77.0, 0.0, -420.0), series, volume.lps_to_index((-77.0, 0.0, -420.0)), side="R")
    session.update_lesion(femur, site_id="femur.distal", subsite="metaphysis", comment="bright", confidence=4,
                          extent={"kind": "ellipse", "plane": "coronal", "radii_mm": [10, 9],
                                  "slice_range_mm": [-6, 6]})
    session.set_grade(femur, "marrow_hyperintensity", 2)
    spine = session.add_lesion((0.0, 30.0, -100.0), series, volume.lps_to_index((0.0, 30.0, -100.0)),
                               extent={"kind": "box", "min_mm": [-5, 25, -105], "max_mm": [5, 35, -95]})
    session.update_lesion(spine, site_id="spine.T8")
    session.set_grade(spine, "vertebral_collapse", 1)
    session.mark_unit("spine.L5", "not_assessable")
    session.mark_unit("clavicle.medial:R", "no_lesion")
    session.submit()
    document = export_document(store)
    read = document["reads"][0]
    read["read_id"], read["reader"] = "fuzz-read", "dr-b"
    store.close()
    return root / "base", document


def _nodes(value: Any, path: tuple = ()) -> list[tuple]:
    """Every path into a JSON value (the root included)."""
    out = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _nodes(item, (*path, key))
    elif isinstance(value, list):
        for n, item in enumerate(value):
            out += _nodes(item, (*path, n))
    return out


def _parent(document: Any, path: tuple) -> Any:
    for step in path[:-1]:
        document = document[step]
    return document


def mutate(document: dict, rng: random.Random) -> str:
    """Text of a mutated copy of ``document`` (one or two mutations)."""
    doc = copy.deepcopy(document)
    kind = rng.choice(["replace"] * 6 + ["delete", "add_key", "repeat", "text"])
    paths = [p for p in _nodes(doc) if p]
    for _ in range(rng.choice([1, 1, 1, 2])):
        path = rng.choice(paths)
        parent, last = _parent(doc, path), path[-1]
        try:
            if kind == "replace":
                parent[last] = copy.deepcopy(rng.choice(HOSTILE_VALUES))
            elif kind == "delete":
                del parent[last]
            elif kind == "add_key" and isinstance(parent[last], dict):
                parent[last][rng.choice(["extra", "lesion_id", "unit_id", "x"])] = rng.choice(HOSTILE_VALUES)
            elif kind == "repeat" and isinstance(parent[last], list) and parent[last]:
                parent[last].append(copy.deepcopy(rng.choice(parent[last])))
        except (KeyError, IndexError, TypeError):
            pass
        paths = [p for p in _nodes(doc) if p]
    text = json.dumps(doc, indent=2, ensure_ascii=rng.random() < 0.5)
    if kind == "text":
        choice = rng.randrange(4)
        if choice == 0:  # a key written twice
            text = text.replace('"reader": "dr-b"', '"reader": "dr-b", "reader": "dr-a"', 1)
        elif choice == 1:  # deep nesting
            depth = rng.choice([40, 3000])
            text = text.replace('"reason": null', '"reason": ' + "[" * depth + "]" * depth, 1)
        elif choice == 2:  # cut off
            text = text[: rng.randrange(len(text))]
        else:  # a lone surrogate escape in a comment
            text = text.replace('"comment": "bright"', '"comment": "br\\udc00ight"', 1)
    return text


def _state(store: Store) -> tuple:
    return export_document(store), audit.entries(store.db, 1_000_000)


def check_exports(store: Store, out: Path) -> None:
    """Every export of the store: strict JSON (read back), CSV, unblinded, report."""
    from cno_annotate.analysis import report
    from cno_annotate.clinical import CoordinatorDB, unblinded_document, write_unblinded

    document = export_document(store)
    path = write_document(document, out / "reads.json")
    if load_strict_json(path) != json.loads(json.dumps(document)):
        raise AssertionError("read export does not read back equal")
    write_tables(document, out / "csv")
    db = CoordinatorDB.open(out / "key.sqlite")
    write_unblinded(unblinded_document(store, db, READING_STUDY), out / "unblinded")
    db.close()
    report.run(store, READING_STUDY, list(report.SECTIONS), out / "report", None, "adjudicated", strict=False)


def run_one(base: Path, document: dict, rng: random.Random, work: Path, outcome: Outcome, with_report: bool) -> None:
    """Import one mutation into a fresh copy of the base store and check the outcome."""
    text = mutate(document, rng)
    folder = Path(tempfile.mkdtemp(dir=work))
    shutil.copytree(base, folder / "store")
    source = folder / "reads.json"
    source.write_text(text, encoding="utf-8", errors="surrogatepass")
    store = Store.open(folder / "store")
    outcome.mutations += 1
    try:
        before = _state(store)
        try:
            import_document(store, source)
        except CnoError as exc:
            outcome.refused += 1
            message = str(exc)
            if "\n" in message or not message.startswith(str(source)):
                outcome.findings.append(f"refusal is not one line naming the file: {message!r}")
            elif "$" not in message and "not valid JSON (line" not in message and "not valid UTF-8" not in message:
                outcome.findings.append(f"refusal names no JSON path: {message!r}")
            if _state(store) != before:
                outcome.findings.append(f"refused but the store changed: {message!r}")
            return
        outcome.accepted += 1
        if with_report:
            check_exports(store, folder)
        else:
            write_document(export_document(store), folder / "reads.json.out")
    except Exception as exc:  # a traceback is a finding
        outcome.findings.append(f"{type(exc).__name__}: {exc} (mutation kept in {source})")
        return
    finally:
        store.close()
    shutil.rmtree(folder, ignore_errors=True)


def fuzz(base: Path, document: dict, mutations: int, seed: int, work: Path, reports: int = 10) -> Outcome:
    """Run ``mutations`` seeded mutations; the full export check (with the report) on the first ``reports`` accepted."""
    rng = random.Random(seed)
    outcome = Outcome()
    start = time.perf_counter()
    for _ in range(mutations):
        run_one(base, document, rng, work, outcome, with_report=outcome.accepted < reports)
    outcome.seconds = time.perf_counter() - start
    return outcome


def main(argv: list[str] | None = None) -> int:
    """Command line: ``--mutations N --seed S``; exit 1 if anything was found."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutations", type=int, default=500, help="how many mutated documents (default 500)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--reports", type=int, default=50, help="accepted imports that also build the report")
    args = parser.parse_args(argv)
    dicom = Path(__file__).resolve().parents[1] / "sample_scans" / "wbmri-cno-01" / "DICOM"
    with tempfile.TemporaryDirectory() as tmp:
        base, document = build_base(Path(tmp), dicom)
        outcome = fuzz(base, document, args.mutations, args.seed, Path(tmp), args.reports)
    print(outcome.summary())
    for finding in outcome.findings[:50]:
        print("  " + finding)
    return 1 if outcome.findings else 0


if __name__ == "__main__":
    sys.exit(main())
