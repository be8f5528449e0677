"""Counts in the words a reader reads: "1 lesion", "2 lesions", "1 series"."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and the noun, in the plural unless ``n`` is 1.

    Parameters
    ----------
    n
        How many.
    noun
        The singular ("case").
    plural
        The plural when it is not the noun with an "s" ("studies", "series").

    Examples
    --------
    >>> counted(1, "case"), counted(3, "case"), counted(2, "study", "studies")
    ('1 case', '3 cases', '2 studies')
    """
    return f"{n} {noun}" if n == 1 else f"{n} {plural or noun + 's'}"
