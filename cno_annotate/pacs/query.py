"""What a PACS search asks for and what it answers, whatever the protocol."""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

from cno_annotate.errors import CnoError

_DATE = r"\d{8}"


def _dicom_date(text: str) -> str:
    """``YYYYMMDD`` from ``YYYYMMDD`` or ``YYYY-MM-DD`` (empty stays empty)."""
    compact = text.replace("-", "") if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) else text
    if compact and not re.fullmatch(_DATE, compact):
        raise CnoError(f"date {text!r}: write it as YYYYMMDD or YYYY-MM-DD")
    if compact:
        try:
            datetime.date(int(compact[:4]), int(compact[4:6]), int(compact[6:]))
        except ValueError:
            raise CnoError(f"date {text!r} is not a day of the calendar") from None
    return compact


def parse_date_range(text: str) -> tuple[str, str]:
    """``(from, to)`` as DICOM dates from ``FROM-TO``, ``FROM-``, ``-TO`` or one date.

    Examples
    --------
    >>> parse_date_range("20240101-20241231")
    ('20240101', '20241231')
    >>> parse_date_range("2024-03-01")
    ('20240301', '20240301')
    """
    text = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}|\d{8}", text):
        day = _dicom_date(text)
        return day, day
    match = re.fullmatch(r"(\d{8}|\d{4}-\d{2}-\d{2})?-(\d{8}|\d{4}-\d{2}-\d{2})?", text)
    if not match or not (match[1] or match[2]):
        raise CnoError(f"date range {text!r}: write FROM-TO as YYYYMMDD-YYYYMMDD (either end may be left out)")
    start, end = _dicom_date(match[1] or ""), _dicom_date(match[2] or "")
    if start and end and start > end:
        raise CnoError(f"date range {text!r} ends before it starts")
    return start, end


@dataclass(frozen=True)
class StudyQuery:
    """Study-level search keys (empty: any). ``patient_name`` may hold ``*`` wildcards."""

    patient_id: str = ""
    patient_name: str = ""
    date_from: str = ""
    date_to: str = ""
    accession: str = ""
    modality: str = ""

    def __post_init__(self) -> None:
        for key in ("date_from", "date_to"):
            object.__setattr__(self, key, _dicom_date(getattr(self, key)))
        if self.modality and not re.fullmatch(r"[A-Z0-9]{1,16}", self.modality.upper()):
            raise CnoError(f"modality {self.modality!r} is not a DICOM modality code (e.g. MR)")
        object.__setattr__(self, "modality", self.modality.upper())

    @property
    def date_range(self) -> str:
        """The DICOM range matching value for StudyDate (empty: any date)."""
        if not (self.date_from or self.date_to):
            return ""
        if self.date_from == self.date_to:
            return self.date_from
        return f"{self.date_from}-{self.date_to}"


@dataclass(frozen=True)
class StudyMatch:
    """One study a PACS found."""

    study_uid: str
    patient_id: str = ""
    patient_name: str = ""
    study_date: str = ""
    accession: str = ""
    description: str = ""
    modalities: str = ""
    series: int | None = None
    instances: int | None = None

    def as_dict(self) -> dict:
        """JSON-ready fields."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class SeriesMatch:
    """One series of a study a PACS found."""

    series_uid: str
    modality: str = ""
    number: int | None = None
    description: str = ""
    instances: int | None = None

    def as_dict(self) -> dict:
        """JSON-ready fields."""
        return dict(self.__dict__)


def whole_number(value) -> int | None:
    """An IS / US value as int, or None when absent or not a number."""
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None
