"""Live reading progress from a PostgreSQL store: LISTEN for the server's notifications, deliver typed events.

The server announces, when a transaction commits, every read created, deleted
or changing status (``read:<read id>``), every worklist change
(``worklist:<reading study>``) and, since migration 28, a reader's first
opening of a case (``opened:`` and a JSON object of the reading study, reader
and reading code). Any login may listen to any channel, so since
migration 25 each login listens on a channel of its own, named from a secret
of the database (``cno_live_channel()``), and the server notifies only those
who may see the change: a read's reader, the coordinators and, once a reader
submitted it, the adjudicators of its case. The listener still looks each
notification up on its own session, under its own row security.

The listener keeps one server session of its own. A front end watches
:meth:`ProgressListener.fileno` (Qt: a ``QSocketNotifier``) and calls
:meth:`ProgressListener.pending` when it becomes readable; nothing polls.
An SQLite store has no server: :func:`listener_for` returns None for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cno_annotate.errors import CnoError
from cno_annotate.store import postgres

if TYPE_CHECKING:
    from cno_annotate.store import Store


@dataclass(frozen=True)
class ReadStatusChanged:
    """A read of a reading study was started, submitted, reopened as a new version or removed.

    ``status`` is ``draft`` or ``submitted``.
    """

    reading_study: str
    reading_code: str
    reader: str
    status: str


@dataclass(frozen=True)
class WorklistChanged:
    """Cases were assigned to (or taken from) worklists of a reading study."""

    reading_study: str


@dataclass(frozen=True)
class CaseOpened:
    """A reader opened a case of their worklist for the first time (looked at it; no read yet)."""

    reading_study: str
    reading_code: str
    reader: str


LiveEvent = ReadStatusChanged | WorklistChanged | CaseOpened

#: A read's case found by its source UID (the coordinator's) or its key (what a reader's read names it by).
_READ = ("SELECT r.reading_study, c.reading_code, r.reader, r.status FROM reads r JOIN rs_cases_seen c "
         "ON c.reading_study = r.reading_study AND r.study_uid IN (c.study_uid, c.case_key) WHERE r.read_id = %s")
_STUDY = "SELECT 1 FROM reading_studies WHERE name = %s"
_OPENED = ("SELECT 1 FROM rs_opened o JOIN rs_cases_seen c ON c.reading_study = o.reading_study "
           "AND o.study_uid IN (c.study_uid, c.case_key) "
           "WHERE o.reading_study = %s AND o.reader = %s AND c.reading_code = %s")


class ProgressListener:
    """A server session listening for reading progress; :meth:`pending` turns notifications into events.

    Parameters
    ----------
    url : str
        The store's ``postgresql://`` URL (the same login as the program's store session).

    Raises
    ------
    CnoError
        If the server cannot be reached or refuses the login.
    """

    def __init__(self, url: str) -> None:
        import psycopg

        self.url = url
        try:
            self._connection = psycopg.connect(url, autocommit=True, connect_timeout=10,
                                               application_name="cno-annotate live")
        except psycopg.Error as exc:
            raise CnoError(f"cannot listen for live updates at {postgres.plain_name(url)}: "
                           f"{' '.join(str(exc).split())}") from None
        from psycopg import sql

        row = self._connection.execute("SELECT cno_live_channel()").fetchone()
        self.channel = str(row[0]) if row else ""
        self._connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))

    def fileno(self) -> int:
        """The session's socket: readable when a notification (or anything else) arrived."""
        return self._connection.fileno()

    def pending(self) -> list[LiveEvent]:
        """The events of the notifications received so far, without waiting (none: an empty list)."""
        return self._events(self._connection.notifies(timeout=0))

    def wait(self, timeout: float) -> list[LiveEvent]:
        """Block until at least one notification arrives or ``timeout`` seconds pass; its events (maybe none).

        A notification this login may not see (another reader's read) gives no
        event, so an empty list does not mean that the time ran out.
        """
        received = list(self._connection.notifies(timeout=timeout, stop_after=1))
        return self._events([*received, *self._connection.notifies(timeout=0)])

    def close(self) -> None:
        """End the listening session."""
        self._connection.close()

    def _events(self, notifications: Any) -> list[LiveEvent]:
        payloads = list(dict.fromkeys(n.payload for n in notifications if n.channel == self.channel))
        events: list[LiveEvent] = []
        handlers = {"read": self._read_event, "worklist": self._worklist_event, "opened": self._opened_event}
        for payload in payloads:
            kind, _, key = payload.partition(":")
            handler = handlers.get(kind)
            event = handler(key) if handler is not None else None
            if event is not None and event not in events:
                events.append(event)
        return events

    def _read_event(self, read_id: str) -> ReadStatusChanged | None:
        row = self._connection.execute(_READ, (read_id,)).fetchone()
        return None if row is None else ReadStatusChanged(*row)

    def _worklist_event(self, reading_study: str) -> WorklistChanged | None:
        seen = self._connection.execute(_STUDY, (reading_study,)).fetchone() is not None
        return WorklistChanged(reading_study) if seen else None


    def _opened_event(self, key: str) -> CaseOpened | None:
        try:
            said = json.loads(key)
            event = CaseOpened(str(said["reading_study"]), str(said["reading_code"]), str(said["reader"]))
        except (ValueError, TypeError, KeyError):
            return None
        seen = self._connection.execute(_OPENED, (event.reading_study, event.reader, event.reading_code)).fetchone()
        return event if seen is not None else None


def listener_for(store: Store) -> ProgressListener | None:
    """A listener on the store's server, or None for an SQLite store (no live updates there)."""
    url = getattr(store, "url", None)
    return ProgressListener(url) if isinstance(url, str) and postgres.is_url(url) else None
