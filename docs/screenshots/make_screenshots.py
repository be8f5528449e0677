"""Render the README's screenshots of the viewer: scenes x window sizes, offscreen, small PNGs.

    python docs/screenshots/make_screenshots.py            # every scene at every size
    python docs/screenshots/make_screenshots.py --scene checklist --size 1280x800

Scenes: ``dark`` (the default dark theme, a graded lesion selected), ``layout-2x2``,
``measure`` (a ruler, a muscle reference ROI, the selected lesion's ROI with its STIR
lesion:muscle ratio, a polygon), ``checklist`` (bone units in every state) and ``reader`` (reader mode of a blinded study that
shows the reading timer). Sizes: 1280x800, 1920x1080, and 1280x800 logical at 2x scaling
(``QT_SCALE_FACTOR=2``, a 2560x1600 image). Each scene runs in its own process (the scale
factor is read at start). PNGs are reduced to an adaptive palette (they are greys and a few
colours), so each stays small. Look at every one after rendering.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SAMPLE = REPO / "sample_scans" / "wbmri-cno-01" / "DICOM"
SCENES = ("dark", "layout-2x2", "measure", "checklist", "reader")
SIZES = {"1280x800": ((1280, 800), "1"), "1920x1080": ((1920, 1080), "1"), "2x": ((1280, 800), "2")}
L1 = (-77.07, 0.0, -420.17)  # the sample's right distal femur lesion
L2 = (71.83, 0.0, -497.6)  # left proximal tibia


def prepare(folder: Path) -> Path:
    """A store with the sample study and a blinded reading study (timer shown) for reader mode."""
    from cno_annotate import reading_study as rs
    from cno_annotate.importer import import_paths
    from cno_annotate.store import Store

    store = Store.open(folder / "store")
    import_paths(store, [SAMPLE])
    rs.create(store, "trial", show_timer=True)
    rs.add_cases(store, "trial", [s.study_uid for s in store.studies()])
    rs.add_readers(store, "trial", ["dr-a"])
    rs.assign(store, "trial")
    store.close()
    return folder / "store"


def _lesion(window, lps, site, side, grades) -> str:
    import numpy as np

    session, state = window.read_session, window.session.views["left"]
    lesion = session.add_lesion(lps, state.volume.volume_id, state.volume.lps_to_index(np.array(lps)),
                                site_id=site, side=side,
                                extent={"kind": "ellipse", "plane": "coronal", "radii_mm": [10, 9],
                                        "slice_range_mm": [lps[1] - 6, lps[1] + 6]})
    for item, value in grades.items():
        session.set_grade(lesion, item, value)
    return lesion


def _measure(window, lesion: str) -> None:
    """A ruler, the muscle reference, the selected lesion's ROI (its ratio) and a polygon, on L1's slice."""
    import numpy as np

    window.session.set_point("left", L1)
    x, y, z = L1

    def draw(kind: str, offsets) -> None:
        window._roi_drawn("left", kind, [np.array((x + dx, y, z + dz)) for dx, dz in offsets])

    draw("ellipse", [(0, 0), (12, 12)])
    window.set_roi_role("lesion")
    draw("rectangle", [(20, 70), (50, 120)])  # thigh muscle above the knee
    window.set_roi_role("muscle")
    draw("polygon", [(120, 40), (150, 40), (140, 90)])
    window.session.add_ruler("left", (x - 40, y, z - 40), (x + 40, y, z - 60))
    window.lesion_panel.select(lesion)


def render(store: Path, scene: str, size: tuple[int, int], out: Path) -> None:
    """Open the window on the scene, wait for its images, grab it and save a palette PNG."""
    from cno_annotate_ui.main_window import MainWindow
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    reader_mode = scene == "reader"
    window = MainWindow(store, reader="dr-a", reading_study="trial" if reader_mode else None)
    window.resize(*size)
    window.show()
    loaded: list[bool] = []
    window.all_loaded.connect(lambda: loaded.append(True))
    if reader_mode:
        window.open_next_case()
    else:
        window.select_study(window.store.studies()[0].study_uid)
    while not loaded:
        app.processEvents()
        QTest.qWait(20)
    grades = {"marrow_hyperintensity": 2, "signal_extension": 2, "soft_tissue_periosteal": 1, "bony_expansion": 0}
    if scene in ("dark", "checklist", "layout-2x2", "reader", "measure"):
        first = _lesion(window, L1, "femur.distal", "R", grades)
        _lesion(window, L2, "tibia.proximal", "L", {**grades, "signal_extension": 1})
        window.lesion_panel.select(first)
    if scene == "measure":
        _measure(window, first)
    if scene == "checklist":
        session = window.read_session
        session.mark_unit("skull", "not_assessable")
        for unit in session.remaining_units():
            if any(unit.startswith(p) for p in ("femur", "tibia", "fibula", "patella", "talus", "calcaneus",
                                                "navicular", "cuboid", "cuneiforms", "metatarsals", "toe")):
                session.mark_unit(unit, "no_lesion")
        window.go_to_unit("tibia.proximal:L")
    if scene == "layout-2x2":
        window.set_layout("2x2")
        loaded.clear()
        while not loaded:
            app.processEvents()
            QTest.qWait(20)
    for _ in range(5):
        app.processEvents()
        QTest.qWait(30)
    image = window.grab().toImage()
    window.close()
    raw = out.with_suffix(".raw.png")
    image.save(str(raw))
    _palette(raw, out)
    raw.unlink()


def _palette(source: Path, target: Path) -> None:
    """Save with an adaptive 256-colour palette (greys and a few marker colours): a fraction of the size."""
    from PIL import Image

    with Image.open(source) as image:
        image.convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(target, optimize=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", choices=SCENES, action="append")
    parser.add_argument("--size", choices=list(SIZES), action="append")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)  # one scene, in a child process
    args = parser.parse_args(argv)
    scenes, sizes = args.scene or list(SCENES), args.size or list(SIZES)
    if args.store is not None:
        (width, height), _ = SIZES[sizes[0]]
        render(args.store, scenes[0], (width, height), args.out / f"{scenes[0]}-{sizes[0]}.png")
        return 0
    with tempfile.TemporaryDirectory(prefix="cno-shots-") as tmp:
        base = prepare(Path(tmp))
        for scene in scenes:
            for size in sizes:
                store = Path(tmp) / f"{scene}-{size}"
                subprocess.run(["cp", "-r", str(base), str(store)], check=True)
                env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "QT_SCALE_FACTOR": SIZES[size][1],
                       "CNO_ANNOTATE_CONFIG": str(Path(tmp) / "config")}
                subprocess.run([sys.executable, __file__, "--scene", scene, "--size", size, "--out", str(args.out),
                                "--store", str(store)], check=True, env=env)
                path = args.out / f"{scene}-{size}.png"
                print(f"wrote {path} ({path.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
