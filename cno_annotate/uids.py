"""Deterministic DICOM UIDs.

pydicom's ``generate_uid(prefix=None)`` returns a random UUID-derived UID and
ignores its entropy sources, so ids that must be stable across runs (composed
volumes, NIfTI volumes, the sample study) come from here instead: a
``2.25.<integer>`` UID (ISO/IEC 9834-8 form) whose 128-bit integer is taken
from a SHA-256 of the given parts.
"""

from __future__ import annotations

import hashlib
import re
import uuid


def stable_uid(*parts: str) -> str:
    """A UID that is the same for the same parts, and differs otherwise.

    Examples
    --------
    >>> stable_uid("composed", "1.2.3") == stable_uid("composed", "1.2.3")
    True
    """
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


#: A DICOM UID (PS3.5 9.1): dot-separated numbers without leading zeros, at most 64 characters.
UID_PATTERN = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+")
UID_MAX_LENGTH = 64


def new_uid() -> str:
    """A new random DICOM UID (``2.25.<UUID4 as an integer>``), e.g. a lesion's tracking UID."""
    return f"2.25.{uuid.uuid4().int}"


def is_uid(text: str) -> bool:
    """Whether ``text`` is a valid DICOM UID."""
    return len(text) <= UID_MAX_LENGTH and UID_PATTERN.fullmatch(text) is not None
