"""Reads as exports and reports take them: checked against the audit trail, naming the source series.

An export or report must not carry a read that ``audit verify`` would find
changed outside the program (an SQLite shell, raw SQL on the server). Checking
the whole trail at every export costs every entry and every object; this checks
only the reads being exported, the way ``audit verify`` checks each read: its
stored content hashed (:func:`cno_annotate.store.audit.read_state`) against the
state its latest audit entry recorded, and the read's own chain of entries
(each entry's hash, each link, the chain's recorded end:
:func:`cno_annotate.store.audit.object_chain_problem`), so an entry rewritten to
match a changed read is caught too. A read that differs, or that no entry
records, is refused with one line naming it (reports: unless the user asks to
include such reads, and then the report names them).

Readers who read de-identified copies (online readers on the study PACS,
package readers) mark lesions on stand-in series and volumes; a coordinator's
export names the source series and volumes instead (:class:`SourceReferences`,
from the UID pairs only the coordinator's store holds), as ``reading-study
collect`` maps a package's results back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from cno_annotate.annotation.documents import document_of
from cno_annotate.annotation.model import Read
from cno_annotate.annotation.reads import list_reads, load_read
from cno_annotate.errors import CnoError
from cno_annotate.store import Store, audit


class TamperedReads(CnoError):
    """Reads whose stored content is not their audited state; ``read_ids`` names them."""

    def __init__(self, message: str, read_ids: list[str]):
        super().__init__(message)
        self.read_ids = read_ids


def unaudited_reads(store: Store, read_ids: Iterable[str]) -> list[str]:
    """Of ``read_ids``, those whose stored content differs from their latest audited state (or that no entry
    records), or whose own chain of audit entries does not verify (an entry rewritten to match a changed read)."""
    from cno_annotate.reading_study import limited_login

    check_end = limited_login(store) is None  # a reader's login may not read where each chain ends
    out = []
    for read_id in dict.fromkeys(read_ids):
        entity = f"read:{read_id}"
        if audit.read_state(store.db, read_id) != audit.audited_state(store.db, entity) \
                or audit.object_chain_problem(store.db, entity, check_end) is not None:
            out.append(read_id)
    return out


def _named(read_ids: list[str]) -> str:
    """'read X' or 'reads X, Y and 2 more'."""
    if len(read_ids) == 1:
        return f"read {read_ids[0]}"
    shown = ", ".join(read_ids[:5])
    return f"reads {shown}" + (f" and {len(read_ids) - 5} more" if len(read_ids) > 5 else "")


def require_audited(store: Store, read_ids: Iterable[str], what: str = "exported") -> None:
    """Refuse, in one line naming them, reads that ``audit verify`` would find changed outside the program.

    Raises
    ------
    TamperedReads
        If a read's stored content differs from its latest audited state.
    """
    changed = unaudited_reads(store, read_ids)
    if changed:
        raise TamperedReads(f"{_named(changed)} {'was' if len(changed) == 1 else 'were'} changed outside the program "
                            f"since the last audited change (audit verify finds it), so nothing was {what}; "
                            f"run cno-annotate store check", changed)


class SourceReferences:
    """Maps the stand-in series and volume ids in a read back to the store's own (per reading study, read once)."""

    def __init__(self, store: Store):
        self.store = store
        self._maps: dict[str, dict[str, str]] = {}

    def back(self, reading_study: str | None) -> dict[str, str]:
        """Stand-in id -> source id for a reading study's copies (empty outside reading studies)."""
        if reading_study is None:
            return {}
        if reading_study not in self._maps:
            from cno_annotate.study_pacs import source_references

            self._maps[reading_study] = source_references(self.store, reading_study)
        return self._maps[reading_study]

    def resolved(self, read: Read) -> Read:
        """The read with its lesions' and ROIs' series named by the source ids (the stored read is unchanged)."""
        back = self.back(read.reading_study)
        if not back:
            return read
        return dataclasses.replace(
            read, lesions=[dataclasses.replace(lesion, series_uid=back.get(lesion.series_uid, lesion.series_uid))
                           for lesion in read.lesions],
            rois=[dataclasses.replace(roi, series_uid=back.get(roi.series_uid, roi.series_uid)) for roi in read.rois])


def load_for_export(store: Store, read_ids: list[str]) -> list[Read]:
    """The reads, each checked against the audit trail (:func:`require_audited`), naming the source series.

    They are loaded first, so a damaged row is named as such (lesion L of read X is damaged).
    """
    reads = [load_read(store, read_id) for read_id in read_ids]
    require_audited(store, read_ids)
    sources = SourceReferences(store)
    return [sources.resolved(read) for read in reads]


def export_document(store: Store, study_uid: str | None = None, reader: str | None = None,
                    reading_study: str | None = None, latest_only: bool = False) -> dict:
    """Every matching read as one validated document, each checked against the audit trail first."""
    rows = list_reads(store, study_uid, reader, reading_study, latest_only=latest_only)
    return document_of(load_for_export(store, [r["read_id"] for r in rows]))
