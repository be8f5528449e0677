"""Locate the data folders that ship with the program (``schemas/``, ``sample_scans/``).

In the source tree they sit beside the package; a built wheel carries copies
under ``cno_annotate/_data/`` (``setup.py`` puts them there), so an installed
program finds them without the checkout.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """The shipped data folder ``name``: the wheel's copy, else the source tree's.

    Parameters
    ----------
    name
        ``"schemas"`` or ``"sample_scans"``.

    Returns
    -------
    Path
        The folder; it may not exist (an install that lacks it), which the
        caller reports.
    """
    packaged = _PACKAGE / "_data" / name
    if packaged.is_dir():
        return packaged
    return _PACKAGE.parent / name
