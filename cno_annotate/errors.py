"""Exceptions for expected failures.

Every failure a user can cause (a missing file, a bad argument, an unknown
series) raises :class:`CnoError`; the CLI prints its message on one line and
exits 1, with no traceback.
"""


class CnoError(Exception):
    """An expected failure with a message meant for the user."""
