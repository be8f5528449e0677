"""PACS retrieve benchmark: cno-annotate (DICOMweb, C-GET, C-MOVE) against dcmtk's getscu / movescu.

Starts a local Orthanc (tests/orthanc_server.py: loopback, free ports, temporary storage), uploads a
400-instance whole-body study written by ``cno-annotate sample`` (4 stations x 2 series x 50 coronal
slices of 128 x 128), and measures, median of ``--repeats`` runs, each into a fresh store / folder:

- cno-annotate ``retrieve_study`` by DICOMweb (WADO-RS), C-GET and C-MOVE: the whole retrieve
  including the import of every series into the store, and the time until the first STIR station
  series was imported (the first STIR image could be shown);
- dcmtk ``getscu`` and ``movescu`` (Debian ``dcmtk``) retrieving the same study to a folder
  (transfer and file writes only: no import).

Run: ``python bench/pacs_bench.py [--repeats 3]``. Needs Debian orthanc, orthanc-dicomweb, dcmtk.
Nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cno_annotate.cli import main as cli  # noqa: E402
from cno_annotate.pacs.client import open_client  # noqa: E402
from cno_annotate.pacs.config import PacsNode, Protocol, RetrieveMethod  # noqa: E402
from cno_annotate.pacs.retrieve import retrieve_study  # noqa: E402
from cno_annotate.store import Store  # noqa: E402
from tests import orthanc_server  # noqa: E402

AE = "CNOBENCH"


def _ours(node: PacsNode, study_uid: str, work: Path) -> tuple[float, float, int]:
    """(total s, first STIR series imported s, instances) of one retrieve into a fresh store."""
    store_dir = work / "store"
    shutil.rmtree(store_dir, ignore_errors=True)
    store = Store.open(store_dir)
    first_stir: list[float] = []

    def imported(series, seconds: float) -> None:
        if not first_stir and "tirm" in series.description:
            first_stir.append(seconds)

    try:
        started = time.perf_counter()
        with open_client(node, timeout=120) as client:
            report = retrieve_study(store, client, study_uid, series_imported=imported)
        total = time.perf_counter() - started
    finally:
        store.close()
    return total, first_stir[0] if first_stir else float("nan"), report.received


def _dcmtk(tool: str, server: orthanc_server.Orthanc, study_uid: str, work: Path, move_port: int) -> tuple[float, int]:
    out = work / "dcmtk"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    command = [tool, "-aet", AE, "-aec", orthanc_server.CALLED_AE, "-S", "-k", "QueryRetrieveLevel=STUDY",
               "-k", f"StudyInstanceUID={study_uid}", "-od", str(out), "127.0.0.1", str(server.dicom_port)]
    if tool == "movescu":
        command[1:1] = ["-aem", AE, "--port", str(move_port)]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started, sum(1 for _ in out.iterdir())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    why = orthanc_server.missing() or (None if shutil.which("getscu") else "dcmtk (getscu, movescu) is missing")
    if why:
        print(why, file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="cno-pacs-bench-"))
    os.environ["CNO_ANNOTATE_CONFIG"] = str(work / "config")
    os.environ["CNO_PACS_USER_WEB"] = orthanc_server.USER
    os.environ["CNO_PACS_PASSWORD_WEB"] = orthanc_server.PASSWORD
    move_port = orthanc_server.free_port()
    server = orthanc_server.Orthanc(work / "orthanc", {AE: move_port})
    try:
        study = work / "study"
        assert cli(["sample", "--out", str(study), "--stations", "4", "--slices", "50", "--matrix", "128"]) == 0
        study_uid = json.loads((study / "ground_truth.json").read_text())["study_uid"]
        server.start()
        files = sorted(p for p in study.rglob("*") if p.is_file() and p.name != "ground_truth.json")
        server.upload(files)
        dimse = dict(called_ae=orthanc_server.CALLED_AE, host="127.0.0.1", port=server.dicom_port, calling_ae=AE,
                     move_port=move_port)
        nodes = {
            "DICOMweb (WADO-RS)": PacsNode("web", Protocol.DICOMWEB, url=server.dicomweb_url),
            "C-GET": PacsNode("get", Protocol.DIMSE, retrieve=RetrieveMethod.GET, **dimse),
            "C-MOVE": PacsNode("move", Protocol.DIMSE, retrieve=RetrieveMethod.MOVE, **dimse),
        }
        rows: dict[str, list] = {}
        for _ in range(args.repeats):  # interleaved, so a busy moment of the shared machine hits every row
            for label, node in nodes.items():
                rows.setdefault(label, []).append(_ours(node, study_uid, work))
            for tool in ("getscu", "movescu"):
                rows.setdefault(tool, []).append(_dcmtk(tool, server, study_uid, work, move_port))
        getscu = statistics.median(r[0] for r in rows["getscu"])
        movescu = statistics.median(r[0] for r in rows["movescu"])
        print(f"{len(files)} instances, {sum(p.stat().st_size for p in files) / 1e6:.0f} MB, "
              f"median of {args.repeats} runs\n")
        print("| retrieve | median s | first STIR station imported s | instances | x getscu | x movescu |")
        print("|---|---|---|---|---|---|")
        for label, results in rows.items():
            total = statistics.median(r[0] for r in results)
            first = f"{statistics.median(r[1] for r in results):.2f}" if len(results[0]) == 3 else "-"
            count = results[0][-1]
            print(f"| {label} | {total:.2f} | {first} | {count} | {total / getscu:.2f} | {total / movescu:.2f} |")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
