"""Audited exports: nothing leaves the store unrecorded, and a failed export leaves nothing.

Every export command (``read export``, ``export-csv``, ``export-nifti``,
``report``, ``reading-study export-unblinded``) writes its files into a hidden
staging folder inside the destination first. Then, in one store transaction,
it appends the audit entry and moves the files to their names. If the audit
entry cannot be written (the store is locked or read-only) the staged files
are removed and nothing appears; if moving them fails, the entry is rolled
back and the files already moved are removed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from cno_annotate.fileio import Staging, check_output_file
from cno_annotate.store import audit

T = TypeVar("T")
COORDINATOR = "coordinator"


def audited_export(store, destination: Path, force: bool, action: str, entity: str,
                   write: Callable[[Path], tuple[T, dict]], actor: str = COORDINATOR,
                   replace_run: bool = False) -> tuple[T, list[Path]]:
    """Stage an export, then audit it and publish its files in one step.

    Parameters
    ----------
    store : Store
        Where the audit entry goes.
    destination : Path
        The folder that receives the files (created if missing).
    force : bool
        Whether existing files may be replaced (``--force``).
    action, entity : str
        The audit entry's action (``export-csv``) and entity (``reads``, ``volume:<id>``).
    write : callable
        Called with the staging folder; writes the files there and returns
        ``(result, detail)`` (``detail`` goes into the audit entry).
    replace_run : bool
        Whether the export is one run that replaces the earlier one in ``destination``
        (a report): then, with ``force``, files an earlier audited export of this
        ``action`` wrote there and this run did not are removed, so no stale file
        of another run stays mixed in; other files are left alone.

    Returns
    -------
    result, paths
        What ``write`` returned and the published files.

    Raises
    ------
    CnoError
        If a target is not a regular file, exists without ``force``, or the
        store cannot record the export; then no file was published and no entry written.
    """
    staging = Staging(destination)
    try:
        result, detail = write(staging.folder)
        staging.check(force)
        files = [str(destination / name) for name in staging.names()]
        try:
            with store.transaction() as db:
                audit.append(db, actor, action, entity, after={**detail, "files": files})
                paths = staging.publish(force)
                stale = _stale_files(db, action, destination, paths) if replace_run and force else []
        except BaseException:
            staging.unpublish()
            raise
        for path in stale:
            path.unlink(missing_ok=True)
        return result, paths
    finally:
        staging.discard()


def _stale_files(db, action: str, destination: Path, published: list[Path]) -> list[Path]:
    """Regular files under ``destination`` that earlier ``action`` exports wrote and this run did not."""
    keep = {str(p) for p in published}
    root = str(destination)
    return [Path(f) for f in sorted(audit.exported_files(db, action))
            if f not in keep and Path(f).parent.is_relative_to(root) and Path(f).is_file()
            and not Path(f).is_symlink()]


def audited_file_export(store, path: Path, force: bool, action: str, entity: str,
                        write: Callable[[Path], tuple[T, dict]], actor: str = COORDINATOR) -> T:
    """:func:`audited_export` of one file ``path``; ``write`` gets the staged path to write."""
    path = check_output_file(path, force)
    result, _ = audited_export(store, path.parent, force, action, entity,
                               lambda folder: write(folder / path.name), actor)
    return result
