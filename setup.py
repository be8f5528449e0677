"""Build hook: copy the data folders into the wheel.

``schemas/`` and ``sample_scans/`` stay at the top of the repository (they are
documents in their own right); a wheel carries them as ``cno_annotate/_data/``
so that ``pip install .`` gives a program that works outside the checkout.
"""

import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

DATA_FOLDERS = ("schemas", "sample_scans")


class BuildWithData(build_py):
    """``build_py`` that also copies the shipped data folders into the package."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads them from the source tree
        here = Path(__file__).resolve().parent
        for name in DATA_FOLDERS:
            target = Path(self.build_lib) / "cno_annotate" / "_data" / name
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(here / name, target, ignore=shutil.ignore_patterns("__pycache__"))


setup(
    packages=[*find_packages(include=["cno_annotate", "cno_annotate.*"]), "cno_annotate_ui"],
    package_dir={"cno_annotate_ui": "ui"},
    cmdclass={"build_py": BuildWithData},
)
