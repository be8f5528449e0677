"""What a reader sees when the server fails an edit: what to do first, the store named without its connection options.

The reader's status bar is one line; the URL of a real deployment carries ``sslmode=verify-full&sslrootcert=...``,
which pushed "it may have been saved: reopen the read to see" out of a 1280-pixel window (issue-16 trial).
"""

from __future__ import annotations

import os
import socket

import pytest

from cno_annotate.store import Store
from cno_annotate.store.db import INTERACTIVE_BUSY_TIMEOUT, StoreWriteError
from tests.test_postgres_store import _raw, _start_read

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _with_options(url: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}sslmode=disable&connect_timeout=9"


def _named_plainly(message: str) -> None:
    assert "postgresql://dr-a@" in message
    assert "sslmode" not in message and "connect_timeout" not in message and "?" not in message.split(" (")[0]


def test_a_connection_lost_mid_edit_says_first_that_the_change_may_be_saved(trial_database):
    store = Store.open(_with_options(trial_database("dr-a")))
    try:
        session = _start_read(store, "dr-a")
        lesion = session.read.lesions[0].lesion_id
        socket.socket(fileno=os.dup(store.pg.raw.fileno())).shutdown(socket.SHUT_RDWR)  # the network goes
        with pytest.raises(StoreWriteError) as refused:
            session.update_lesion(lesion, comment="sent as the network went")
        message = str(refused.value)
        assert message.startswith("your change may have been saved: reopen the read to see"), message
        _named_plainly(message)
    finally:
        store.close()


def test_an_edit_refused_on_a_lock_names_the_store_without_its_options(trial_database):
    store = Store.open(_with_options(trial_database("dr-a")), busy_timeout=INTERACTIVE_BUSY_TIMEOUT)
    owner = _raw(Store.open(trial_database("cno_owner")))
    try:
        session = _start_read(store, "dr-a")
        owner.execute("BEGIN")
        owner.execute("SELECT 1 FROM reads WHERE read_id = ? FOR UPDATE", (session.read.read_id,))
        with pytest.raises(StoreWriteError) as refused:
            session.update_lesion(session.read.lesions[0].lesion_id, comment="blocked")
        owner.execute("ROLLBACK")
        assert "nothing was changed" in str(refused.value)
        _named_plainly(str(refused.value))
    finally:
        owner.close()
        store.close()
