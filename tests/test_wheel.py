"""The built wheel works outside the checkout (``pip install .``, not editable).

The wheel is built from this tree, installed into a fresh virtual environment in
a temporary folder, and driven as a user would: sample, import, a read made
through the installed package, ``read export`` (validated against the schema),
``report`` and ``view --screenshot``. The new environment gets its third-party
dependencies from the test environment's site-packages (a plain path in a
``.pth`` file, so the editable install of this tree is *not* visible there),
which keeps the test off the network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

MAKE_READ = textwrap.dedent("""
    import sys
    from cno_annotate.store.db import Store
    from cno_annotate.annotation.reads import ReadSession
    store = Store.open(sys.argv[1])
    study = store.db.execute("SELECT study_uid FROM studies").fetchone()[0]
    series = store.db.execute("SELECT series_uid FROM volumes").fetchone()[0]
    session = ReadSession.open_or_create(store, study, "dr-wheel", reading_study="trial", role="adjudicator")
    lesion = session.add_lesion((10.0, 20.0, 30.0), series, (1, 2, 3))
    session.update_lesion(lesion, site_id="femur.distal", side="L")
    session.submit()
    import cno_annotate
    print(cno_annotate.__file__)
""")


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    """A fresh venv outside the checkout with the freshly built wheel installed."""
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(root / "dist"), str(REPO)], check=True, capture_output=True, cwd=root)
    wheel = next((root / "dist").glob("cno_annotate-*.whl"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             check=True, capture_output=True, text=True).stdout.strip()
    deps = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    Path(purelib, "test-deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    str(wheel)], check=True, capture_output=True)
    return wheel, venv, root


def _run(venv, cwd, *args, check=True):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CNO_ANNOTATE", "PYTHONPATH"))}
    env["QT_QPA_PLATFORM"] = "offscreen"
    proc = subprocess.run([str(venv / "bin" / args[0]), *map(str, args[1:])], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc


def test_wheel_carries_data_and_no_clashing_package(wheel_env):
    wheel, _, _ = wheel_env
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert "ui" not in top and "cno_annotate_ui" in top
    assert "cno_annotate/_data/schemas/annotation.schema.json" in names
    assert any(n.startswith("cno_annotate/_data/sample_scans/wbmri-cno-01/DICOM/") for n in names)


def test_installed_wheel_runs_the_whole_loop_outside_the_checkout(wheel_env):
    _, venv, root = wheel_env
    work = root / "user"
    work.mkdir()
    store = work / "store"
    _run(venv, work, "cno-annotate", "sample", "--out", "study", "--stations", "2", "--slices", "6")
    _run(venv, work, "cno-annotate", "import", "study", "--store", store)
    for args in (("create", "trial"), ("add-cases", "trial", "--all"),
                 ("add-readers", "trial", "dr-wheel", "--adjudicator")):
        _run(venv, work, "cno-annotate", "reading-study", *args, "--store", store)
    made = _run(venv, work, "python", "-c", MAKE_READ, store)
    assert str(REPO) not in made.stdout and "site-packages" in made.stdout
    _run(venv, work, "cno-annotate", "read", "export", "--store", store, "--out", "reads.json")
    document = json.loads((work / "reads.json").read_text())
    from cno_annotate.annotation.resources import validation_errors, versioned_schema
    assert validation_errors(document, versioned_schema("annotation", document["schema_version"])) == []
    assert "femur.distal" in json.dumps(document)
    _run(venv, work, "cno-annotate", "report", "distribution", "trial", "--store", store, "--out", "report")
    assert "femur" in (work / "report" / "report.html").read_text().lower()
    _run(venv, work, "cno-annotate", "view", "--sample", "--store", work / "sample-store",
         "--screenshot", "shot.png", "--size", "800x600")
    assert (work / "shot.png").stat().st_size > 10_000
