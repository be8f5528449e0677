"""Atomic file writes: a crash never leaves a half-written file.

Write to a temporary file in the target folder, flush it to disk, then
rename it over the target (a rename within one file system is atomic).
Outputs the user names with ``--out`` are checked first (never a device,
pipe, folder or symbolic link; an existing file only with ``--force``) and
several files of one export are staged and published together.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from cno_annotate.errors import CnoError


def atomic_write(path: Path | str, write: Callable[[BinaryIO], object], suffix: str = "") -> Path:
    """Write a file atomically.

    Parameters
    ----------
    path : Path
        The file to create or replace.
    write : callable
        Called with a binary file object open for writing.
    suffix : str
        Suffix of the temporary name (some writers look at it).

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or ".tmp")
    try:
        with os.fdopen(handle, "wb") as fp:
            write(fp)
            fp.flush()
            os.fsync(fp.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path | str, text: str) -> Path:
    """Write UTF-8 text atomically."""
    return atomic_write(path, lambda fp: fp.write(text.encode("utf-8")))


def check_output_file(path: Path | str, force: bool = False) -> Path:
    """Refuse an output target that is not a new or regular file, or an existing file without ``force``.

    Raises
    ------
    CnoError
        For a symbolic link, a folder, a device node, a pipe or socket (never
        replaced), an existing file (unless ``force``), or a missing folder.
    """
    path = Path(path)
    if str(path) == "-":
        raise CnoError("--out -: standard output is not supported (every export is an audited file); name the file")
    if path.is_symlink():
        raise CnoError(f"{path} is a symbolic link; name the file itself")
    if path.exists():
        if not path.is_file():
            raise CnoError(f"{path} is not a regular file (a folder, device or pipe); choose another name")
        if not force:
            raise CnoError(f"{path} exists; use --force to overwrite it")
    else:
        check_parent_folder(path)
    return path


def check_parent_folder(path: Path) -> None:
    """Refuse an output file whose folder is missing (it is not created) or is not a folder."""
    if not path.parent.exists():
        raise CnoError(f"{path.parent} does not exist; create the folder first")
    if not path.parent.is_dir():
        raise CnoError(f"{path.parent} is not a folder")


def check_output_folder(folder: Path | str) -> Path:
    """Refuse an output folder that is a symbolic link, or exists but is not a folder."""
    folder = Path(folder)
    if folder.is_symlink():
        raise CnoError(f"{folder} is a symbolic link; name the folder itself")
    if folder.exists() and not folder.is_dir():
        raise CnoError(f"{folder} is not a folder")
    return folder


class Staging:
    """Output written into a hidden folder inside its destination, then moved into place together.

    Nothing appears under the destination's visible names until :meth:`publish`;
    :meth:`discard` (always call it, e.g. in ``finally``) removes what was not
    published, and the destination folder itself if this staging created it.

    Parameters
    ----------
    destination : Path
        The folder the files are for (created if missing).
    """

    def __init__(self, destination: Path | str):
        self.destination = check_output_folder(destination)
        self.created = not self.destination.exists()
        try:
            self.destination.mkdir(parents=True, exist_ok=True)
            self.folder = Path(tempfile.mkdtemp(dir=self.destination, prefix=".staging-"))
        except OSError as exc:
            raise CnoError(f"cannot write in {self.destination}: {exc.strerror}") from None
        self.published: list[Path] = []

    def names(self) -> list[str]:
        """The files written so far, relative to the destination (``report.json``, ``figures/a.png``)."""
        return sorted(str(p.relative_to(self.folder)) for p in self.folder.rglob("*") if p.is_file())

    def check(self, force: bool) -> list[Path]:
        """The final paths, after refusing targets that are not regular files or exist without ``force``."""
        targets = []
        for name in self.names():
            target = self.destination / name
            for parent in reversed(target.relative_to(self.destination).parents[:-1]):
                folder = self.destination / parent
                if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
                    raise CnoError(f"{folder} is not a folder")
            if target.parent.is_dir():
                check_output_file(target, force)
            targets.append(target)
        return targets

    def publish(self, force: bool) -> list[Path]:
        """Move every staged file to its final name (each an atomic rename)."""
        targets = self.check(force)
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.folder / target.relative_to(self.destination), target)
            self.published.append(target)
        return targets

    def unpublish(self) -> None:
        """Remove what :meth:`publish` put in place (when the step that should follow it failed)."""
        for path in self.published:
            path.unlink(missing_ok=True)
        self.published = []

    def discard(self) -> None:
        """Remove the staging folder (and the destination, if it was created here and stayed empty)."""
        shutil.rmtree(self.folder, ignore_errors=True)
        if self.created:
            try:
                self.destination.rmdir()
            except OSError:
                pass
