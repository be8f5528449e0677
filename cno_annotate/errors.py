"""Exceptions for expected failures.

Every failure a user can cause (a missing file, a bad argument, an unknown
series) raises :class:`CnoError`; the CLI prints its message on one line and
exits 1, with no traceback.
"""


class CnoError(Exception):
    """An expected failure with a message meant for the user."""


class UsageError(CnoError):
    """Options that do not go together (the CLI exits 2, as for argparse's usage errors)."""


class StoreWriteError(CnoError):
    """The store could not be written (locked, full, read-only); ``reason`` is SQLite's."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason


class ReadConflict(CnoError):
    """A read changed in another window or program since it was loaded; the edit was refused."""


class ReadLocked(CnoError):
    """A submitted read cannot change (the database refuses it)."""
