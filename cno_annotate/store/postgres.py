"""The study store on a PostgreSQL server (psycopg 3): a shared store for readers at several sites.

The rest of the program speaks one SQL: SQLite's ``?`` placeholders and rows
read by position or by name. :class:`PgConnection` runs that SQL on
PostgreSQL: it rewrites the placeholders, the few SQLite-only forms
(``INSERT OR IGNORE``, ``INSERT OR REPLACE``, ``lastrowid``) and returns rows
like :class:`sqlite3.Row`, so every dialect difference stays in this module.

The schema is the one of :mod:`cno_annotate.store.db` (one migration history):
its version is kept in ``store_meta`` (SQLite keeps it in ``PRAGMA user_version``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:  # psycopg is loaded only when a server store is opened (it costs ~0.1 s at start-up)
    import psycopg

DIALECT = "postgresql"
URL_SCHEMES = ("postgresql://", "postgres://")


def is_url(text: object) -> bool:
    """Whether a ``--store`` value names a PostgreSQL server rather than a folder."""
    return isinstance(text, str) and text.startswith(URL_SCHEMES)


def shown_url(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


def plain_name(url: str) -> str:
    """The server and database of a URL, without password and connection options, for one-line messages.

    ``postgresql://dr-a@db.example.org:5432/cnostudy?sslmode=verify-full&sslrootcert=...`` is
    ``postgresql://dr-a@db.example.org:5432/cnostudy``.
    """
    parts = urlsplit(shown_url(url))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


class Row(tuple):
    """A result row read by position or by column name, like :class:`sqlite3.Row`."""

    _names: tuple[str, ...]

    def __new__(cls, names: tuple[str, ...], values: Sequence[Any]) -> Row:
        row = super().__new__(cls, values)
        row._names = names
        return row

    def keys(self) -> list[str]:
        """The column names."""
        return list(self._names)

    def __getitem__(self, key):
        if isinstance(key, str):
            try:
                return tuple.__getitem__(self, self._names.index(key))
            except ValueError:
                raise IndexError(f"no column {key!r}") from None
        return tuple.__getitem__(self, key)


def _row_factory(cursor: psycopg.Cursor) -> Any:
    names = tuple(c.name for c in cursor.description or ())

    def make(values: Sequence[Any]) -> Row:
        return Row(names, values)

    return make


# -- SQLite's SQL on PostgreSQL ------------------------------------------------------------
_PLACEHOLDER = re.compile(r"'(?:[^']|'')*'|\?|%")
_OR_IGNORE = re.compile(r"^\s*INSERT\s+OR\s+IGNORE\s+INTO\s+", re.IGNORECASE)
_OR_REPLACE = re.compile(r"^\s*INSERT\s+OR\s+REPLACE\s+INTO\s+(\w+)", re.IGNORECASE)
_INSERT_INTO = re.compile(r"^\s*INSERT\s+INTO\s+(\w+)", re.IGNORECASE)
_WHERE_ONE = re.compile(r"\bWHERE 1\b(?!\s*=)")


def _placeholders(sql: str) -> str:
    """``?`` -> ``%s`` outside string literals; a literal ``%`` doubled for psycopg."""
    def swap(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "?":
            return "%s"
        if token == "%":
            return "%%"
        return token.replace("%", "%%")
    return _PLACEHOLDER.sub(swap, sql)


class PgConnection:
    """A psycopg connection that runs the store's SQL (autocommit; transactions by :meth:`transaction`)."""

    dialect = DIALECT

    def __init__(self, url: str, connect_timeout: float = 10.0) -> None:
        self.url = url
        self._connect_timeout = connect_timeout
        self._keys: dict[str, tuple[list[str], list[str]]] = {}
        self.raw = self._open()
        self.in_transaction = False
        self._audit_by_server = False
        self.server_edits = False  # True once the store knows the schema has cno_edit_read (migration 19)

    def _open(self) -> psycopg.Connection:
        import psycopg

        connection = psycopg.connect(self.url, autocommit=True, connect_timeout=max(1, int(self._connect_timeout)),
                                     application_name="cno-annotate")
        connection.row_factory = _row_factory
        return connection

    def reconnect_if_lost(self) -> None:
        """A new session if the server ended the old one (restart, ``pg_terminate_backend``)."""
        if self.raw.closed or self.raw.broken:
            self.raw = self._open()
            self.in_transaction = False

    def close(self) -> None:
        """Close the session."""
        self.raw.close()

    @property
    def audit_by_server(self) -> bool:
        """Whether the server writes the audit entries (``cno_audit_append``, migration 12)."""
        if not self._audit_by_server:
            row = self.raw.execute("SELECT to_regprocedure('cno_audit_append(text,text,text,text)') IS NOT NULL"
                                   ).fetchone()
            self._audit_by_server = bool(row and row[0])
        return self._audit_by_server

    def lock_row(self, table: str, column: str, key: str) -> None:
        """Hold a row's lock until the transaction ends (a concurrent change of it waits)."""
        self.execute(f"SELECT 1 FROM {table} WHERE {column} = ? FOR UPDATE", (key,))

    @property
    def backend_pid(self) -> int:
        """The server process of this session (``pg_terminate_backend`` ends it)."""
        return int(self.raw.info.backend_pid)

    # -- running SQL -------------------------------------------------------------------------
    def execute(self, sql: str, params: Sequence[Any] | None = ()) -> _Cursor:
        """Run one statement written for SQLite (``?`` placeholders); a cursor with ``lastrowid``."""
        sql, returning = self._translated(sql)
        cursor = self.raw.cursor()
        cursor.execute(_placeholders(sql) if params else sql, list(params) if params else None)
        return _Cursor(cursor, returning)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement for each parameter row."""
        rows = [list(r) for r in rows]
        if not rows:
            return
        sql, _ = self._translated(sql)
        with self.raw.cursor() as cursor:
            cursor.executemany(_placeholders(sql), rows)

    def script(self, sql: str) -> None:
        """Run a script of several statements (PL/pgSQL bodies included), no parameters."""
        self.raw.execute(sql)

    @contextmanager
    def transaction(self) -> Iterator[PgConnection]:
        """A write transaction: all or nothing; the server session is renewed first if it was lost."""
        self.reconnect_if_lost()
        self.raw.execute("BEGIN")
        self.in_transaction = True
        try:
            yield self
        except BaseException:
            self.in_transaction = False
            if not self.raw.closed and not self.raw.broken:
                self.raw.execute("ROLLBACK")
            raise
        self.in_transaction = False
        self.raw.execute("COMMIT")

    def _translated(self, sql: str) -> tuple[str, str | None]:
        """SQLite-only forms rewritten; the key column to return as ``lastrowid`` for an INSERT."""
        sql = _WHERE_ONE.sub("WHERE TRUE", sql)
        if _DDL.match(sql):
            self._keys.clear()
            return pg_ddl(sql), None
        if _OR_IGNORE.match(sql):
            return _OR_IGNORE.sub("INSERT INTO ", sql, count=1).rstrip().rstrip(";") + " ON CONFLICT DO NOTHING", None
        replace = _OR_REPLACE.match(sql)
        if replace:
            table = replace.group(1)
            columns, keys = self._table_keys(table)
            update = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in keys)
            body = _OR_REPLACE.sub(f"INSERT INTO {table}", sql, count=1).rstrip().rstrip(";")
            action = f"DO UPDATE SET {update}" if update else "DO NOTHING"
            return f"{body} ON CONFLICT ({', '.join(keys)}) {action}", None
        insert = _INSERT_INTO.match(sql)
        if insert and "RETURNING" not in sql.upper():
            _, keys = self._table_keys(insert.group(1))
            if len(keys) == 1:
                return sql.rstrip().rstrip(";") + f" RETURNING {keys[0]}", keys[0]
        return sql, None

    def _table_keys(self, table: str) -> tuple[list[str], list[str]]:
        """(columns in order, primary key columns) of a table, looked up once."""
        if table not in self._keys:
            columns = [r[0] for r in self.raw.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name = %s ORDER BY ordinal_position", (table,))]
            keys = [r[0] for r in self.raw.execute(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                "AND a.attnum = ANY (i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary "
                "ORDER BY array_position(i.indkey, a.attnum)", (table,))]
            self._keys[table] = (columns, keys)
        return self._keys[table]


class _Cursor:
    """A psycopg cursor seen as an :class:`sqlite3.Cursor` (``fetchone``, ``fetchall``, iteration, ``lastrowid``)."""

    def __init__(self, cursor: psycopg.Cursor, returning: str | None):
        self._cursor = cursor
        self.lastrowid: int | None = None
        self._pending: list[Any] = []
        if returning is not None and cursor.description:
            row = cursor.fetchone()
            self.lastrowid = row[0] if row is not None else None

    @property
    def description(self) -> Any:
        """The result's columns (each one's ``[0]`` is its name), or None: as :attr:`sqlite3.Cursor.description`."""
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        """Rows changed by the statement."""
        return self._cursor.rowcount

    def fetchone(self) -> Any:
        """The next row, or None."""
        return self._cursor.fetchone() if self._cursor.description else None

    def fetchall(self) -> list[Any]:
        """The remaining rows."""
        return self._cursor.fetchall() if self._cursor.description else []

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


@dataclass
class RoundTrips:
    """The requests a session sent to the server in a block (see :func:`round_trips`)."""

    messages: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Round trips: requests that wait for the server's answer (a simple query, or a Sync)."""
        return sum(1 for m in self.messages if m in ("Query", "Sync"))


@contextmanager
def round_trips(connection: PgConnection) -> Iterator[RoundTrips]:
    """Count the round trips a session makes in the block, from libpq's trace of the wire protocol.

    A diagnostic for tests and benchmarks: every frontend message is listed
    (``Parse``, ``Bind``, ``Execute``, ``Sync``, ``Query`` ...), available when the block ends.
    """
    import os
    import tempfile

    from psycopg import pq

    counted = RoundTrips()
    handle, path = tempfile.mkstemp(prefix="cno-trace-")
    pgconn = connection.raw.pgconn
    try:
        pgconn.trace(os.dup(handle))
        pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            yield counted
        finally:
            pgconn.untrace()
        with open(path, encoding="utf-8", errors="replace") as trace:
            for line in trace:
                fields = line.split("\t")
                if len(fields) > 2 and fields[0] == "F":
                    counted.messages.append(fields[2].strip())
    finally:
        os.close(handle)
        os.unlink(path)


# -- errors --------------------------------------------------------------------------------
def _loaded() -> Any:
    """psycopg if a server store was opened in this process, else None."""
    import sys

    return sys.modules.get("psycopg")


def is_integrity_error(exc: BaseException) -> bool:
    """A statement refused by a constraint or a lock trigger (SQLSTATE class 23)."""
    psycopg = _loaded()
    return psycopg is not None and isinstance(exc, psycopg.errors.IntegrityError)


def is_privilege_error(exc: BaseException) -> bool:
    """A statement refused by a privilege or row security (SQLSTATE 42501)."""
    psycopg = _loaded()
    return psycopg is not None and isinstance(exc, psycopg.errors.InsufficientPrivilege)


def is_retryable(exc: BaseException) -> bool:
    """Two transactions waited on each other (deadlock, serialisation): nothing was applied."""
    psycopg = _loaded()
    return psycopg is not None and isinstance(exc, (psycopg.errors.SerializationFailure,
                                                    psycopg.errors.DeadlockDetected))


def is_operational(exc: BaseException) -> bool:
    """The server or the session was lost, or a lock wait ended: the transaction was rolled back."""
    psycopg = _loaded()
    return psycopg is not None and isinstance(exc, psycopg.OperationalError)


def is_permission_error(exc: BaseException) -> bool:
    """A statement refused for lack of privilege or by row-level security."""
    psycopg = _loaded()
    return psycopg is not None and isinstance(exc, psycopg.errors.InsufficientPrivilege)


def is_database_error(exc: BaseException) -> bool:
    """Anything the server refused."""
    psycopg = _loaded()
    return psycopg is not None and isinstance(exc, psycopg.DatabaseError)


# -- schema --------------------------------------------------------------------------------
_TYPES = [(re.compile(r"\bINTEGER PRIMARY KEY\b"), "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
          (re.compile(r"\bINTEGER\b"), "BIGINT"), (re.compile(r"\bREAL\b"), "DOUBLE PRECISION")]
_DDL = re.compile(r"^\s*(CREATE\s+TABLE|ALTER\s+TABLE)", re.IGNORECASE)


def pg_ddl(sql: str) -> str:
    """SQLite column types as PostgreSQL's: 64-bit integers, double precision, identity keys."""
    for pattern, replacement in _TYPES:
        sql = pattern.sub(replacement, sql)
    return sql


#: Serialises programs that migrate one database at the same time.
_MIGRATION_LOCK = 7_244_101


def schema_version(connection: PgConnection) -> int:
    """The schema version recorded in ``store_meta`` (0: a new database)."""
    row = connection.execute("SELECT to_regclass('store_meta') IS NOT NULL").fetchone()
    if not row[0]:
        return 0
    return int(connection.execute("SELECT version FROM store_meta WHERE id = 1").fetchone()[0])


def migrate(connection: PgConnection, migrations: Sequence[Any], run_step: Any) -> tuple[int, int]:
    """Apply the missing steps, each in its own transaction, under one advisory lock.

    ``run_step(connection, step)`` applies one step of the shared history.
    """
    before = schema_version(connection)
    if before >= len(migrations):
        return before, before
    connection.execute("SELECT pg_advisory_lock(?)", (_MIGRATION_LOCK,))
    try:
        connection.script("CREATE TABLE IF NOT EXISTS store_meta (id INTEGER PRIMARY KEY CHECK (id = 1), "
                          "version INTEGER NOT NULL); INSERT INTO store_meta VALUES (1, 0) ON CONFLICT DO NOTHING")
        while True:
            with connection.transaction():
                step = int(connection.execute("SELECT version FROM store_meta WHERE id = 1 FOR UPDATE").fetchone()[0])
                if step >= len(migrations):
                    break
                run_step(connection, migrations[step])
                connection.execute("UPDATE store_meta SET version = ? WHERE id = 1", (step + 1,))
    finally:
        connection.execute("SELECT pg_advisory_unlock(?)", (_MIGRATION_LOCK,))
    return before, max(before, len(migrations))


def _raise_locked(message: str) -> str:
    return f"RAISE EXCEPTION USING ERRCODE = 'integrity_constraint_violation', MESSAGE = '{message}'"


def lock_triggers(locked_message: str) -> str:
    """Migration 7 on PostgreSQL: submitted reads (their row, lesions, marks, grades) refuse any change."""
    raise_locked = _raise_locked(locked_message)
    parts = f"""
    CREATE FUNCTION cno_read_locked() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
    BEGIN
        IF OLD.status = 'submitted' THEN {raise_locked}; END IF;
        IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
        RETURN NEW;
    END $$;
    CREATE TRIGGER reads_locked BEFORE UPDATE OR DELETE ON reads FOR EACH ROW EXECUTE FUNCTION cno_read_locked();
    CREATE FUNCTION cno_part_locked() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
    BEGIN
        IF TG_OP <> 'DELETE' AND EXISTS (SELECT 1 FROM reads WHERE read_id = NEW.read_id AND status = 'submitted')
        THEN {raise_locked}; END IF;
        IF TG_OP <> 'INSERT' AND EXISTS (SELECT 1 FROM reads WHERE read_id = OLD.read_id AND status = 'submitted')
        THEN {raise_locked}; END IF;
        IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
        RETURN NEW;
    END $$;
    """
    return parts + "".join(part_lock_trigger(table) for table in ("lesions", "unit_marks", "unit_grades"))


def part_lock_trigger(table: str) -> str:
    """A table of a read's parts refuses any change while its read is submitted (cno_part_locked, migration 7)."""
    return (f"CREATE TRIGGER {table}_locked BEFORE INSERT OR UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION cno_part_locked();\n")


#: Migration 10 on PostgreSQL: a package's stand-in UIDs never change (the tables are db.PACKAGE_TABLES).
PACKAGE_UIDS_FIXED = """
CREATE FUNCTION cno_package_uid_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'integrity_constraint_violation', MESSAGE = 'a stand-in UID never changes';
END $$;
CREATE TRIGGER package_uids_fixed BEFORE UPDATE ON package_uids FOR EACH ROW EXECUTE FUNCTION cno_package_uid_fixed();
"""


#: The groups every login role of a store belongs to (one of them).
GROUPS = {"coordinator": "cno_coordinator", "reader": "cno_reader", "adjudicator": "cno_adjudicator"}

_ACCESS = r"""
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cno_coordinator') THEN CREATE ROLE cno_coordinator NOLOGIN; END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cno_reader') THEN CREATE ROLE cno_reader NOLOGIN; END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cno_adjudicator') THEN CREATE ROLE cno_adjudicator NOLOGIN; END IF;
END $$;

-- The audit trail: written only by cno_audit_append (in the caller's transaction), never changed.
ALTER TABLE audit ADD COLUMN xact BIGINT NOT NULL DEFAULT txid_current();
CREATE INDEX audit_by_xact ON audit (xact);
INSERT INTO audit_head
    SELECT 1, COALESCE(MAX(seq), 0), COALESCE((SELECT hash FROM audit ORDER BY seq DESC LIMIT 1), repeat('0', 64))
    FROM audit ON CONFLICT DO NOTHING;

CREATE FUNCTION cno_is_coordinator() RETURNS boolean LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
    SELECT pg_has_role(session_user, 'cno_coordinator', 'MEMBER')
        OR NOT (pg_has_role(session_user, 'cno_reader', 'MEMBER') OR pg_has_role(session_user, 'cno_adjudicator', 'MEMBER'))
$$;

CREATE FUNCTION cno_audit_append(p_actor text, p_action text, p_entity text, p_detail text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    who text := session_user;
    head_seq bigint;
    head_hash text;
    stamp text := to_char(statement_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS') || '+00:00';
    digest text;
BEGIN
    IF NOT cno_is_coordinator() THEN
        IF p_actor <> who THEN
            RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
                MESSAGE = format('%s cannot write audit entries as %s', who, p_actor);
        END IF;
        IF p_entity NOT LIKE 'read:%' OR NOT EXISTS (SELECT 1 FROM reads WHERE read_id = substr(p_entity, 6) AND reader = who)
           AND NOT (p_action = 'delete' AND NOT EXISTS (SELECT 1 FROM reads WHERE read_id = substr(p_entity, 6))) THEN
            RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
                MESSAGE = format('%s cannot write audit entries about %s', who, p_entity);
        END IF;
    END IF;
    SELECT seq, hash INTO head_seq, head_hash FROM audit_head WHERE id = 1 FOR UPDATE;
    head_seq := head_seq + 1;
    digest := encode(sha256(convert_to(head_hash || '[' || head_seq || ',' || to_json(stamp)::text || ','
        || to_json(p_actor)::text || ',' || to_json(p_action)::text || ',' || to_json(p_entity)::text || ','
        || to_json(p_detail)::text || ']', 'UTF8')), 'hex');
    INSERT INTO audit (seq, at, actor, action, entity, detail, prev_hash, hash)
        VALUES (head_seq, stamp, p_actor, p_action, p_entity, p_detail, head_hash, digest);
    UPDATE audit_head SET seq = head_seq, hash = digest WHERE id = 1;
    RETURN head_seq;
END $$;

CREATE FUNCTION cno_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'audit_head' AND TG_OP = 'UPDATE' AND NEW.seq = OLD.seq + 1
       AND EXISTS (SELECT 1 FROM audit WHERE seq = NEW.seq AND hash = NEW.hash AND xact = txid_current()) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
        MESSAGE = format('the audit trail is append-only: %s on %s refused', TG_OP, TG_TABLE_NAME);
END $$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION cno_audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION cno_audit_append_only();
CREATE TRIGGER audit_head_append_only BEFORE UPDATE OR DELETE ON audit_head
    FOR EACH ROW EXECUTE FUNCTION cno_audit_append_only();
CREATE TRIGGER audit_head_no_truncate BEFORE TRUNCATE ON audit_head
    FOR EACH STATEMENT EXECUTE FUNCTION cno_audit_append_only();

-- Every change of a read is audited in its own transaction: checked by the database at commit.
CREATE FUNCTION cno_require_audit() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    rid text := CASE WHEN TG_OP = 'DELETE' THEN OLD.read_id ELSE NEW.read_id END;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM audit WHERE xact = txid_current() AND entity = 'read:' || rid) THEN
        RAISE EXCEPTION USING ERRCODE = 'integrity_constraint_violation',
            MESSAGE = format('read %s was changed without an audit entry in the same transaction', rid);
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER reads_audited AFTER INSERT OR UPDATE OR DELETE ON reads
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION cno_require_audit();
CREATE CONSTRAINT TRIGGER lesions_audited AFTER INSERT OR UPDATE OR DELETE ON lesions
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION cno_require_audit();
CREATE CONSTRAINT TRIGGER unit_marks_audited AFTER INSERT OR UPDATE OR DELETE ON unit_marks
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION cno_require_audit();
CREATE CONSTRAINT TRIGGER unit_grades_audited AFTER INSERT OR UPDATE OR DELETE ON unit_grades
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION cno_require_audit();
CREATE CONSTRAINT TRIGGER rois_audited AFTER INSERT OR UPDATE OR DELETE ON rois
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION cno_require_audit();

-- Privileges: coordinators everything but rewriting the trail; readers and adjudicators only what they need.
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
REVOKE ALL ON FUNCTION cno_audit_append(text, text, text, text) FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO cno_coordinator, cno_reader, cno_adjudicator;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO cno_coordinator;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO cno_coordinator;
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON audit, audit_head, store_meta FROM cno_coordinator;
GRANT EXECUTE ON FUNCTION cno_audit_append(text, text, text, text) TO cno_coordinator, cno_reader, cno_adjudicator;
GRANT SELECT ON store_meta, audit TO cno_reader, cno_adjudicator;
GRANT SELECT, INSERT, UPDATE, DELETE ON reads, lesions, unit_marks, unit_grades, rois TO cno_reader, cno_adjudicator;
GRANT SELECT ON reading_studies, rs_cases, rs_readers, rs_worklists TO cno_reader, cno_adjudicator;
GRANT SELECT (study_uid) ON studies TO cno_reader, cno_adjudicator;
GRANT SELECT (volume_id, study_uid, series_uid) ON volumes TO cno_reader, cno_adjudicator;

-- Rows: a reader sees their own reads and worklist; an adjudicator also the submitted reads of their cases.
ALTER TABLE reads ENABLE ROW LEVEL SECURITY;
CREATE POLICY coordinator_all ON reads TO cno_coordinator USING (true) WITH CHECK (true);
CREATE POLICY own_reads ON reads TO cno_reader, cno_adjudicator
    USING (reader = session_user) WITH CHECK (reader = session_user);
CREATE POLICY adjudicated_cases ON reads FOR SELECT TO cno_adjudicator USING (
    status = 'submitted' AND role = 'reader' AND EXISTS (
        SELECT 1 FROM rs_worklists w JOIN rs_cases c ON c.reading_study = w.reading_study
            AND c.reading_code = w.reading_code
        WHERE w.reader = session_user AND w.reading_study = reads.reading_study AND c.study_uid = reads.study_uid));
"""

_PARTS = """
ALTER TABLE {t} ENABLE ROW LEVEL SECURITY;
CREATE POLICY coordinator_all ON {t} TO cno_coordinator USING (true) WITH CHECK (true);
CREATE POLICY visible_reads ON {t} FOR SELECT TO cno_reader, cno_adjudicator
    USING (EXISTS (SELECT 1 FROM reads r WHERE r.read_id = {t}.read_id));
CREATE POLICY own_reads ON {t} TO cno_reader, cno_adjudicator
    USING (EXISTS (SELECT 1 FROM reads r WHERE r.read_id = {t}.read_id AND r.reader = session_user))
    WITH CHECK (EXISTS (SELECT 1 FROM reads r WHERE r.read_id = {t}.read_id AND r.reader = session_user));
"""

_STUDY_TABLES = """
ALTER TABLE rs_worklists ENABLE ROW LEVEL SECURITY;
CREATE POLICY coordinator_all ON rs_worklists TO cno_coordinator USING (true) WITH CHECK (true);
CREATE POLICY own_worklist ON rs_worklists FOR SELECT TO cno_reader, cno_adjudicator USING (reader = session_user);
ALTER TABLE rs_readers ENABLE ROW LEVEL SECURITY;
CREATE POLICY coordinator_all ON rs_readers TO cno_coordinator USING (true) WITH CHECK (true);
CREATE POLICY own_registration ON rs_readers FOR SELECT TO cno_reader, cno_adjudicator USING (reader = session_user);
ALTER TABLE rs_cases ENABLE ROW LEVEL SECURITY;
CREATE POLICY coordinator_all ON rs_cases TO cno_coordinator USING (true) WITH CHECK (true);
CREATE POLICY worklist_cases ON rs_cases FOR SELECT TO cno_reader, cno_adjudicator USING (EXISTS (
    SELECT 1 FROM rs_worklists w WHERE w.reading_study = rs_cases.reading_study
        AND w.reading_code = rs_cases.reading_code AND w.reader = session_user));
ALTER TABLE reading_studies ENABLE ROW LEVEL SECURITY;
CREATE POLICY coordinator_all ON reading_studies TO cno_coordinator USING (true) WITH CHECK (true);
CREATE POLICY own_studies ON reading_studies FOR SELECT TO cno_reader, cno_adjudicator USING (EXISTS (
    SELECT 1 FROM rs_readers x WHERE x.reading_study = reading_studies.name AND x.reader = session_user));
ALTER TABLE studies ENABLE ROW LEVEL SECURITY;
CREATE POLICY coordinator_all ON studies TO cno_coordinator USING (true) WITH CHECK (true);
CREATE POLICY worklist_studies ON studies FOR SELECT TO cno_reader, cno_adjudicator
    USING (EXISTS (SELECT 1 FROM rs_cases c WHERE c.study_uid = studies.study_uid));
ALTER TABLE volumes ENABLE ROW LEVEL SECURITY;
CREATE POLICY coordinator_all ON volumes TO cno_coordinator USING (true) WITH CHECK (true);
CREATE POLICY worklist_volumes ON volumes FOR SELECT TO cno_reader, cno_adjudicator
    USING (EXISTS (SELECT 1 FROM rs_cases c WHERE c.study_uid = volumes.study_uid));
ALTER TABLE audit ENABLE ROW LEVEL SECURITY;
CREATE POLICY coordinator_all ON audit FOR SELECT TO cno_coordinator USING (true);
CREATE POLICY visible_reads ON audit FOR SELECT TO cno_reader, cno_adjudicator USING (
    entity LIKE 'read:%' AND EXISTS (SELECT 1 FROM reads r WHERE r.read_id = substr(audit.entity, 6)));
"""


def access_rules() -> str:
    """Migration 12 on PostgreSQL: the append-only audit written by the database, roles, privileges, row security."""
    return _ACCESS + "".join(_PARTS.format(t=t) for t in ("lesions", "unit_marks", "unit_grades", "rois")) + _STUDY_TABLES


def followup_rules() -> str:
    """Migration 13 on PostgreSQL: follow-up outcomes locked, audited and visible like the other parts of a read.

    The table (db.FOLLOWUP_TABLE) comes after the access rules of migration 12,
    so it gets their lock trigger, commit-time audit check, privileges and row
    security here.
    """
    return (part_lock_trigger("followup_outcomes")
            + "CREATE CONSTRAINT TRIGGER followup_outcomes_audited AFTER INSERT OR UPDATE OR DELETE ON followup_outcomes "
              "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION cno_require_audit();\n"
            + "REVOKE ALL ON followup_outcomes FROM PUBLIC;\n"
            + "GRANT SELECT, INSERT, UPDATE, DELETE ON followup_outcomes TO cno_coordinator;\n"
            + "GRANT SELECT, INSERT, UPDATE, DELETE ON followup_outcomes TO cno_reader, cno_adjudicator;\n"
            + _PARTS.format(t="followup_outcomes"))


def design_fixed_trigger(message: str) -> str:
    """Migration 14 on PostgreSQL: a reading study's design cannot change once any of its reads exists."""
    return f"""
    CREATE FUNCTION cno_design_fixed() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
    BEGIN
        IF NEW.design <> OLD.design AND EXISTS (SELECT 1 FROM reads WHERE reading_study = OLD.name) THEN
            {_raise_locked(message)};
        END IF;
        RETURN NEW;
    END $$;
    CREATE TRIGGER reading_study_design_fixed BEFORE UPDATE OF design ON reading_studies
        FOR EACH ROW EXECUTE FUNCTION cno_design_fixed();
    """


def one_instance_per_file_trigger(message: str) -> str:
    """Migration 18 on PostgreSQL: no path is recorded for two SOPInstanceUIDs."""
    return f"""
    CREATE FUNCTION cno_one_instance_per_file() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.path <> '' AND EXISTS (SELECT 1 FROM images WHERE path = NEW.path AND sop_uid <> NEW.sop_uid) THEN
            {_raise_locked(message)};
        END IF;
        RETURN NEW;
    END $$;
    CREATE TRIGGER images_one_instance_per_file BEFORE INSERT OR UPDATE OF path ON images
        FOR EACH ROW EXECUTE FUNCTION cno_one_instance_per_file();
    """


def reading_time_rules() -> str:
    """Migration 15 on PostgreSQL: a read's active time locked with its read and under the read's access rules.

    A reader (or adjudicator) sees the times of the reads they see and writes
    only the times of their own reads; coordinators all (like a read's parts, migration 12).
    """
    return (part_lock_trigger("read_times")
            + "REVOKE ALL ON read_times FROM PUBLIC;\n"
            + "GRANT SELECT, INSERT, UPDATE, DELETE ON read_times TO cno_coordinator, cno_reader, cno_adjudicator;\n"
            + _PARTS.format(t="read_times"))


#: Migration 19 on PostgreSQL: a read's content hash, its whole state as JSON, and one edit, all by the database.
_EDITS = r"""
-- A value as Python's json.dumps(ensure_ascii=False) writes it: the audited state hashes the same on both sides.
CREATE FUNCTION cno_json(v text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT COALESCE(to_json(v)::text, 'null')
$$;

-- The content hash of a read (audit.read_state computes the same from Python): its row, lesions, marks,
-- grades, then ROIs and the follow-up only where there are any. NULL: no such read.
CREATE FUNCTION cno_read_state(p_read_id text) RETURNS text LANGUAGE plpgsql STABLE SET search_path = public AS $$
DECLARE
    r reads%ROWTYPE;
    parts text;
    roi_part text;
    outcome_part text;
BEGIN
    SELECT * INTO r FROM reads WHERE read_id = p_read_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    parts := '[[' || concat_ws(',', cno_json(r.read_id), cno_json(r.study_uid), cno_json(r.reader),
        cno_json(r.scheme_id), cno_json(r.scheme_version), cno_json(r.taxonomy), cno_json(r.status),
        cno_json(r.started), cno_json(r.submitted), cno_json(r.modified), r.revision::text, r.next_lesion::text,
        cno_json(r.reading_study), cno_json(r.role), r.version::text, cno_json(r.supersedes), cno_json(r.reason))
        || '],['
        || COALESCE((SELECT string_agg('[' || cno_json(lesion_id) || ',' || ordinal || ',' || cno_json(data) || ']',
                                       ',' ORDER BY lesion_id) FROM lesions WHERE read_id = p_read_id), '')
        || '],['
        || COALESCE((SELECT string_agg('[' || cno_json(unit_id) || ',' || cno_json(mark) || ']', ',' ORDER BY unit_id)
                     FROM unit_marks WHERE read_id = p_read_id), '')
        || '],['
        || COALESCE((SELECT string_agg('[' || cno_json(unit_id) || ',' || cno_json(item_id) || ',' || cno_json(grade)
                                       || ']', ',' ORDER BY unit_id, item_id)
                     FROM unit_grades WHERE read_id = p_read_id), '')
        || ']';
    roi_part := (SELECT string_agg('[' || cno_json(roi_id) || ',' || ordinal || ',' || cno_json(data) || ','
                                   || cno_json(role) || ']', ',' ORDER BY roi_id) FROM rois WHERE read_id = p_read_id);
    IF roi_part IS NOT NULL THEN
        parts := parts || ',[' || roi_part || ']';
    END IF;
    outcome_part := (SELECT string_agg('[' || cno_json(tracking_uid) || ',' || cno_json(status) || ']', ','
                                       ORDER BY tracking_uid) FROM followup_outcomes WHERE read_id = p_read_id);
    IF r.prior_read IS NOT NULL OR outcome_part IS NOT NULL THEN
        parts := parts || ',[' || cno_json(r.prior_read) || ',[' || COALESCE(outcome_part, '') || ']]';
    END IF;
    RETURN encode(sha256(convert_to(parts || ']', 'UTF8')), 'hex');
END $$;

-- The state the latest audit entry about an object recorded (NULL: none recorded one, or it recorded none).
-- Every entry about a read records one since migration 7: the latest entry alone is read (by index).
CREATE FUNCTION cno_audited_state(p_entity text) RETURNS text LANGUAGE plpgsql STABLE SET search_path = public AS $$
DECLARE
    latest json;
BEGIN
    SELECT detail::json INTO latest FROM audit WHERE entity = p_entity ORDER BY seq DESC LIMIT 1;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF latest -> 'state' IS NOT NULL THEN
        RETURN latest ->> 'state';
    END IF;
    RETURN (SELECT d ->> 'state' FROM (SELECT seq, detail::json AS d FROM audit WHERE entity = p_entity) entries
            WHERE d -> 'state' IS NOT NULL ORDER BY seq DESC LIMIT 1);
END $$;

-- A read and all its parts as one JSON object (lesions and ROIs in their order); NULL: no such read.
CREATE FUNCTION cno_read_json(p_read_id text) RETURNS json LANGUAGE sql STABLE SET search_path = public AS $$
    SELECT json_build_object(
        'row', to_json(r),
        'lesions', COALESCE((SELECT json_agg(json_build_array(lesion_id, data) ORDER BY ordinal)
                             FROM lesions WHERE read_id = r.read_id), '[]'),
        'unit_marks', COALESCE((SELECT json_agg(json_build_array(unit_id, mark) ORDER BY unit_id)
                                FROM unit_marks WHERE read_id = r.read_id), '[]'),
        'unit_grades', COALESCE((SELECT json_agg(json_build_array(unit_id, item_id, grade) ORDER BY unit_id, item_id)
                                 FROM unit_grades WHERE read_id = r.read_id), '[]'),
        'rois', COALESCE((SELECT json_agg(json_build_array(roi_id, data, role) ORDER BY ordinal)
                          FROM rois WHERE read_id = r.read_id), '[]'),
        'outcomes', COALESCE((SELECT json_agg(json_build_array(tracking_uid, status) ORDER BY tracking_uid)
                              FROM followup_outcomes WHERE read_id = r.read_id AND r.prior_read IS NOT NULL), '[]'),
        'active_seconds', COALESCE((SELECT active_seconds FROM read_times WHERE read_id = r.read_id), 0))
    FROM reads r WHERE r.read_id = p_read_id
$$;

-- One edit of a draft read, in the caller's transaction (one statement: its own): the read's row locked, its
-- stored state checked against its audited state, the revision bumped only if it is still p_revision (and the
-- lesion counter taken if p_next_lesion is given), the parts written, the audit entry appended with the states
-- before and after. Returns the read as cno_read_json does, or {"refused": {status, revision}} (or
-- {"refused": null}: no such read) with nothing written. Runs with the caller's rights: row security applies.
-- p_parts: {"lesions": [[id, ordinal, data|null, existed]], "unit_marks": [[unit, mark|null, existed]],
--           "unit_grades": [[unit, item, grade|null]], "rois": [[id, ordinal, data|null, role]],
--           "outcomes": [[tracking uid, status|null]]}; p_detail: the entry's JSON object without the states.
CREATE FUNCTION cno_edit_read(p_read_id text, p_revision bigint, p_next_lesion bigint, p_stamp text, p_actor text,
                              p_action text, p_parts jsonb, p_detail text) RETURNS json
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
    entity text := 'read:' || p_read_id;
    state_before text;
    state_after text;
    result json;
    part jsonb;
BEGIN
    PERFORM 1 FROM reads WHERE read_id = p_read_id FOR UPDATE;
    state_before := cno_read_state(p_read_id);
    IF state_before IS DISTINCT FROM cno_audited_state(entity) THEN
        RAISE EXCEPTION USING ERRCODE = 'CNO01', MESSAGE = format(
            'read %s was changed outside the program since its last audited change; run cno-annotate store check',
            p_read_id);
    END IF;
    UPDATE reads SET revision = revision + 1, modified = p_stamp,
                     next_lesion = next_lesion + (p_next_lesion IS NOT NULL)::int
        WHERE read_id = p_read_id AND revision = p_revision AND status = 'draft'
          AND (p_next_lesion IS NULL OR next_lesion = p_next_lesion);
    IF NOT FOUND THEN
        RETURN json_build_object('refused', (SELECT json_build_object('status', status, 'revision', revision)
                                             FROM reads WHERE read_id = p_read_id));
    END IF;
    FOR part IN SELECT jsonb_array_elements(COALESCE(p_parts -> 'lesions', '[]')) LOOP
        IF part ->> 2 IS NULL THEN
            DELETE FROM lesions WHERE read_id = p_read_id AND lesion_id = part ->> 0;
        ELSIF NOT (part -> 3)::boolean THEN
            INSERT INTO lesions VALUES (p_read_id, part ->> 0, (part ->> 1)::bigint, part ->> 2);
        ELSE
            UPDATE lesions SET data = part ->> 2 WHERE read_id = p_read_id AND lesion_id = part ->> 0;
        END IF;
    END LOOP;
    FOR part IN SELECT jsonb_array_elements(COALESCE(p_parts -> 'unit_marks', '[]')) LOOP
        IF part ->> 1 IS NULL THEN
            DELETE FROM unit_marks WHERE read_id = p_read_id AND unit_id = part ->> 0;
        ELSIF NOT (part -> 2)::boolean THEN
            INSERT INTO unit_marks VALUES (p_read_id, part ->> 0, part ->> 1);
        ELSE
            UPDATE unit_marks SET mark = part ->> 1 WHERE read_id = p_read_id AND unit_id = part ->> 0;
        END IF;
    END LOOP;
    FOR part IN SELECT jsonb_array_elements(COALESCE(p_parts -> 'unit_grades', '[]')) LOOP
        DELETE FROM unit_grades WHERE read_id = p_read_id AND unit_id = part ->> 0 AND item_id = part ->> 1;
        IF part ->> 2 IS NOT NULL THEN
            INSERT INTO unit_grades VALUES (p_read_id, part ->> 0, part ->> 1, part ->> 2);
        END IF;
    END LOOP;
    FOR part IN SELECT jsonb_array_elements(COALESCE(p_parts -> 'rois', '[]')) LOOP
        DELETE FROM rois WHERE read_id = p_read_id AND roi_id = part ->> 0;
    END LOOP;
    FOR part IN SELECT jsonb_array_elements(COALESCE(p_parts -> 'rois', '[]')) LOOP
        IF part ->> 2 IS NOT NULL THEN
            INSERT INTO rois VALUES (p_read_id, part ->> 0, (part ->> 1)::bigint, part ->> 2, part ->> 3);
        END IF;
    END LOOP;
    FOR part IN SELECT jsonb_array_elements(COALESCE(p_parts -> 'outcomes', '[]')) LOOP
        DELETE FROM followup_outcomes WHERE read_id = p_read_id AND tracking_uid = part ->> 0;
        IF part ->> 1 IS NOT NULL THEN
            INSERT INTO followup_outcomes VALUES (p_read_id, part ->> 0, part ->> 1);
        END IF;
    END LOOP;
    state_after := cno_read_state(p_read_id);
    result := cno_read_json(p_read_id);
    -- Last: the audit chain's head stays locked from here until the commit, for every writer of the store.
    PERFORM cno_audit_append(p_actor, p_action, entity, left(p_detail, -1) || ', "state": ' || cno_json(state_after)
                             || ', "state_before": ' || cno_json(state_before) || '}');
    RETURN result;
END $$;
"""

_TRUTHFUL_AUDIT = r"""
-- A reader's or adjudicator's entry must tell the truth: about a read of theirs, with the state the database
-- computes for it now and, before it, the state the trail last recorded; about a read that no longer exists,
-- only its deletion, and only if the trail recorded it as theirs. The coordinator's entries are as before.
CREATE OR REPLACE FUNCTION cno_audit_append(p_actor text, p_action text, p_entity text, p_detail text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    who text := session_user;
    read_key text := substr(p_entity, 6);
    detail jsonb;
    head_seq bigint;
    head_hash text;
    stamp text := to_char(statement_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS') || '+00:00';
    digest text;
BEGIN
    IF NOT cno_is_coordinator() THEN
        IF p_actor <> who THEN
            RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
                MESSAGE = format('%s cannot write audit entries as %s', who, p_actor);
        END IF;
        BEGIN
            detail := p_detail::jsonb;
        EXCEPTION WHEN others THEN
            detail := NULL;
        END;
        IF p_entity NOT LIKE 'read:%' OR jsonb_typeof(detail) IS DISTINCT FROM 'object'
           OR (detail ->> 'state') IS DISTINCT FROM cno_read_state(read_key)
           OR (detail ->> 'state_before') IS DISTINCT FROM cno_audited_state(p_entity)
           OR (EXISTS (SELECT 1 FROM reads WHERE read_id = read_key)
               AND NOT EXISTS (SELECT 1 FROM reads WHERE read_id = read_key AND reader = who))
           OR (NOT EXISTS (SELECT 1 FROM reads WHERE read_id = read_key)
               AND (p_action <> 'delete' OR cno_audited_state(p_entity) IS NULL
                    OR NOT EXISTS (SELECT 1 FROM audit WHERE entity = p_entity AND actor = who))) THEN
            RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
                MESSAGE = format('%s cannot write this audit entry about %s: it must record the state the '
                                 'database holds for a read of theirs', who, p_entity);
        END IF;
    END IF;
    SELECT seq, hash INTO head_seq, head_hash FROM audit_head WHERE id = 1 FOR UPDATE;
    head_seq := head_seq + 1;
    digest := encode(sha256(convert_to(head_hash || '[' || head_seq || ',' || to_json(stamp)::text || ','
        || to_json(p_actor)::text || ',' || to_json(p_action)::text || ',' || to_json(p_entity)::text || ','
        || to_json(p_detail)::text || ']', 'UTF8')), 'hex');
    INSERT INTO audit (seq, at, actor, action, entity, detail, prev_hash, hash)
        VALUES (head_seq, stamp, p_actor, p_action, p_entity, p_detail, head_hash, digest);
    UPDATE audit_head SET seq = head_seq, hash = digest WHERE id = 1;
    RETURN head_seq;
END $$;
REVOKE ALL ON FUNCTION cno_audit_append(text, text, text, text) FROM PUBLIC;
"""


def truthful_audit() -> str:
    """Migration 20 on PostgreSQL: a reader's or adjudicator's audit entry must record the read's true state.

    Readers append their own entries (create, submit, follow-up, and every edit through
    ``cno_edit_read``), so the function stays theirs to run; what they may write is checked
    instead: their own read, the state the database computes for it, and the trail's last
    state before it. A forged entry cannot then make ``audit verify`` report a change, nor
    lock the read against the program's next edit.
    """
    return _TRUTHFUL_AUDIT


#: Migration 22 on PostgreSQL: a hash chain per audited object (see audit.py), written by cno_audit_append.
_AUDIT_CHAINS = r"""
ALTER TABLE audit ADD COLUMN prev_seq BIGINT;
CREATE TABLE audit_heads (entity TEXT PRIMARY KEY, seq BIGINT NOT NULL, hash TEXT NOT NULL);
CREATE SEQUENCE audit_seq;
SELECT setval('audit_seq', COALESCE((SELECT MAX(seq) FROM audit), 0) + 1, false);
REVOKE ALL ON audit_heads FROM PUBLIC;
REVOKE ALL ON SEQUENCE audit_seq FROM PUBLIC;
GRANT SELECT ON audit_heads TO cno_coordinator;

-- The trail stays append-only: a chain's recorded end moves only to an entry of this transaction on that chain.
CREATE OR REPLACE FUNCTION cno_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'audit_head' AND TG_OP = 'UPDATE' AND NEW.seq > OLD.seq
       AND EXISTS (SELECT 1 FROM audit WHERE seq = NEW.seq AND hash = NEW.hash AND xact = txid_current()) THEN
        RETURN NEW;
    END IF;
    IF TG_TABLE_NAME = 'audit_heads' AND TG_OP IN ('INSERT', 'UPDATE') THEN
        IF (TG_OP = 'INSERT' OR NEW.entity = OLD.entity AND NEW.seq > OLD.seq)
           AND EXISTS (SELECT 1 FROM audit WHERE seq = NEW.seq AND hash = NEW.hash AND entity = NEW.entity
                       AND xact = txid_current()) THEN
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
        MESSAGE = format('the audit trail is append-only: %s on %s refused', TG_OP, TG_TABLE_NAME);
END $$;
CREATE TRIGGER audit_heads_append_only BEFORE INSERT OR UPDATE OR DELETE ON audit_heads
    FOR EACH ROW EXECUTE FUNCTION cno_audit_append_only();
CREATE TRIGGER audit_heads_no_truncate BEFORE TRUNCATE ON audit_heads
    FOR EACH STATEMENT EXECUTE FUNCTION cno_audit_append_only();

-- The newest entry once no entry before it can still be written (audit anchor): writers hold ROW EXCLUSIVE on
-- the trail from before they take their number until they commit, so this waits for them.
CREATE FUNCTION cno_audit_cut() RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
    LOCK TABLE audit IN SHARE MODE;
    RETURN COALESCE((SELECT MAX(seq) FROM audit), 0);
END $$;
REVOKE ALL ON FUNCTION cno_audit_cut() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cno_audit_cut() TO cno_coordinator;

-- As migration 20 (a reader's entry must tell the truth), but the entry goes on its object's own chain: only the
-- object's chain end is locked until commit (for a read, a lock its writer holds anyway), not one row for every
-- writer. An object's first entry follows the spine (audit_head), which only such entries lock.
CREATE OR REPLACE FUNCTION cno_audit_append(p_actor text, p_action text, p_entity text, p_detail text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    who text := session_user;
    read_key text := substr(p_entity, 6);
    detail jsonb;
    parent_seq bigint;
    parent_hash text;
    opening boolean := false;
    entry_seq bigint;
    stamp text := to_char(statement_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS') || '+00:00';
    digest text;
BEGIN
    IF NOT cno_is_coordinator() THEN
        IF p_actor <> who THEN
            RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
                MESSAGE = format('%s cannot write audit entries as %s', who, p_actor);
        END IF;
        BEGIN
            detail := p_detail::jsonb;
        EXCEPTION WHEN others THEN
            detail := NULL;
        END;
        IF p_entity NOT LIKE 'read:%' OR jsonb_typeof(detail) IS DISTINCT FROM 'object'
           OR (detail ->> 'state') IS DISTINCT FROM cno_read_state(read_key)
           OR (detail ->> 'state_before') IS DISTINCT FROM cno_audited_state(p_entity)
           OR (EXISTS (SELECT 1 FROM reads WHERE read_id = read_key)
               AND NOT EXISTS (SELECT 1 FROM reads WHERE read_id = read_key AND reader = who))
           OR (NOT EXISTS (SELECT 1 FROM reads WHERE read_id = read_key)
               AND (p_action <> 'delete' OR cno_audited_state(p_entity) IS NULL
                    OR NOT EXISTS (SELECT 1 FROM audit WHERE entity = p_entity AND actor = who))) THEN
            RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
                MESSAGE = format('%s cannot write this audit entry about %s: it must record the state the '
                                 'database holds for a read of theirs', who, p_entity);
        END IF;
    END IF;
    SELECT seq, hash INTO parent_seq, parent_hash FROM audit_heads WHERE entity = p_entity FOR UPDATE;
    IF NOT FOUND THEN
        SELECT seq, hash INTO parent_seq, parent_hash FROM audit_head WHERE id = 1 FOR UPDATE;
        opening := true;
        -- Another writer may have begun this object's chain while this one waited for the spine.
        PERFORM 1 FROM audit_heads WHERE entity = p_entity FOR UPDATE;
        IF FOUND THEN
            SELECT seq, hash INTO parent_seq, parent_hash FROM audit_heads WHERE entity = p_entity;
            opening := false;
        END IF;
    END IF;
    LOCK TABLE audit IN ROW EXCLUSIVE MODE;  -- before the number is taken: an anchor (cno_audit_cut) waits
    entry_seq := nextval('audit_seq');
    digest := encode(sha256(convert_to(parent_hash || '[' || entry_seq || ',' || parent_seq || ','
        || to_json(stamp)::text || ',' || to_json(p_actor)::text || ',' || to_json(p_action)::text || ','
        || to_json(p_entity)::text || ',' || to_json(p_detail)::text || ']', 'UTF8')), 'hex');
    INSERT INTO audit (seq, at, actor, action, entity, detail, prev_hash, hash, prev_seq)
        VALUES (entry_seq, stamp, p_actor, p_action, p_entity, p_detail, parent_hash, digest, parent_seq);
    IF opening THEN
        INSERT INTO audit_heads VALUES (p_entity, entry_seq, digest);
        UPDATE audit_head SET seq = entry_seq, hash = digest WHERE id = 1;
    ELSE
        UPDATE audit_heads SET seq = entry_seq, hash = digest WHERE entity = p_entity;
    END IF;
    RETURN entry_seq;
END $$;
REVOKE ALL ON FUNCTION cno_audit_append(text, text, text, text) FROM PUBLIC;
"""


def audit_chains() -> str:
    """Migration 22 on PostgreSQL: a hash chain per audited object, its end in ``audit_heads``, numbers from a sequence.

    ``cno_audit_append`` locks the end of the entry's own chain (and, for an
    object's first entry, the spine) instead of one head for the whole store, so
    edits of different reads commit side by side; what a reader may append is
    checked as in migration 20. ``cno_audit_cut`` gives ``audit anchor`` an entry
    no later-committing entry can precede.
    """
    return _AUDIT_CHAINS


#: Migration 23 on PostgreSQL: every write of a read's content in one statement (cno_change_read).
_ONE_STATEMENT_WRITES = r"""
-- One change of a draft read, as cno_edit_read (migration 19), and also: the read made first when p_create is given
-- ({"row": the reads row as JSON, "detail": the 'create' entry's JSON without the states, "seconds": reading time
-- measured before it existed}), the read submitted (p_row {"status": "submitted"}) or made a follow-up
-- (p_row {"prior_read": id}). So a read's first change, an edit, a submit and a follow-up are one round trip each.
CREATE FUNCTION cno_change_read(p_read_id text, p_revision bigint, p_next_lesion bigint, p_stamp text, p_actor text,
                                p_action text, p_parts jsonb, p_detail text, p_row jsonb, p_create jsonb)
RETURNS json LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
    entity text := 'read:' || p_read_id;
    state_before text;
    state_after text;
    result json;
    part jsonb;
BEGIN
    IF p_create IS NOT NULL THEN
        IF cno_read_state(p_read_id) IS DISTINCT FROM cno_audited_state(entity) THEN
            RAISE EXCEPTION USING ERRCODE = 'CNO01', MESSAGE = format(
                'read %s was changed outside the program since its last audited change; run cno-annotate store check',
                p_read_id);
        END IF;
        INSERT INTO reads SELECT * FROM jsonb_populate_record(NULL::reads, p_create -> 'row');
        PERFORM cno_audit_append(p_actor, 'create', entity, left(p_create ->> 'detail', -1) || ', "state": '
                                 || cno_json(cno_read_state(p_read_id)) || ', "state_before": null}');
        IF (p_create ->> 'seconds')::float8 > 0 THEN
            INSERT INTO read_times VALUES (p_read_id, (p_create ->> 'seconds')::float8);
        END IF;
    END IF;
    PERFORM 1 FROM reads WHERE read_id = p_read_id FOR UPDATE;
    state_before := cno_read_state(p_read_id);
    IF state_before IS DISTINCT FROM cno_audited_state(entity) THEN
        RAISE EXCEPTION USING ERRCODE = 'CNO01', MESSAGE = format(
            'read %s was changed outside the program since its last audited change; run cno-annotate store check',
            p_read_id);
    END IF;
    UPDATE reads SET revision = revision + 1, modified = p_stamp,
                     next_lesion = next_lesion + (p_next_lesion IS NOT NULL)::int,
                     prior_read = CASE WHEN p_row ? 'prior_read' THEN p_row ->> 'prior_read' ELSE prior_read END
        WHERE read_id = p_read_id AND revision = p_revision AND status = 'draft'
          AND (p_next_lesion IS NULL OR next_lesion = p_next_lesion);
    IF NOT FOUND THEN
        RETURN json_build_object('refused', (SELECT json_build_object('status', status, 'revision', revision)
                                             FROM reads WHERE read_id = p_read_id));
    END IF;
    FOR part IN SELECT jsonb_array_elements(COALESCE(p_parts -> 'lesions', '[]')) LOOP
        IF part ->> 2 IS NULL THEN
            DELETE FROM lesions WHERE read_id = p_read_id AND lesion_id = part ->> 0;
        ELSIF NOT (part -> 3)::boolean THEN
            INSERT INTO lesions VALUES (p_read_id, part ->> 0, (part ->> 1)::bigint, part ->> 2);
        ELSE
            UPDATE lesions SET data = part ->> 2 WHERE read_id = p_read_id AND lesion_id = part ->> 0;
        END IF;
    END LOOP;
    FOR part IN SELECT jsonb_array_elements(COALESCE(p_parts -> 'unit_marks', '[]')) LOOP
        IF part ->> 1 IS NULL THEN
            DELETE FROM unit_marks WHERE read_id = p_read_id AND unit_id = part ->> 0;
        ELSIF NOT (part -> 2)::boolean THEN
            INSERT INTO unit_marks VALUES (p_read_id, part ->> 0, part ->> 1);
        ELSE
            UPDATE unit_marks SET mark = part ->> 1 WHERE read_id = p_read_id AND unit_id = part ->> 0;
        END IF;
    END LOOP;
    FOR part IN SELECT jsonb_array_elements(COALESCE(p_parts -> 'unit_grades', '[]')) LOOP
        DELETE FROM unit_grades WHERE read_id = p_read_id AND unit_id = part ->> 0 AND item_id = part ->> 1;
        IF part ->> 2 IS NOT NULL THEN
            INSERT INTO unit_grades VALUES (p_read_id, part ->> 0, part ->> 1, part ->> 2);
        END IF;
    END LOOP;
    FOR part IN SELECT jsonb_array_elements(COALESCE(p_parts -> 'rois', '[]')) LOOP
        DELETE FROM rois WHERE read_id = p_read_id AND roi_id = part ->> 0;
    END LOOP;
    FOR part IN SELECT jsonb_array_elements(COALESCE(p_parts -> 'rois', '[]')) LOOP
        IF part ->> 2 IS NOT NULL THEN
            INSERT INTO rois VALUES (p_read_id, part ->> 0, (part ->> 1)::bigint, part ->> 2, part ->> 3);
        END IF;
    END LOOP;
    FOR part IN SELECT jsonb_array_elements(COALESCE(p_parts -> 'outcomes', '[]')) LOOP
        DELETE FROM followup_outcomes WHERE read_id = p_read_id AND tracking_uid = part ->> 0;
        IF part ->> 1 IS NOT NULL THEN
            INSERT INTO followup_outcomes VALUES (p_read_id, part ->> 0, part ->> 1);
        END IF;
    END LOOP;
    IF p_row ->> 'status' = 'submitted' THEN  -- last: the read is locked from here on
        UPDATE reads SET status = 'submitted', submitted = p_stamp WHERE read_id = p_read_id;
    END IF;
    state_after := cno_read_state(p_read_id);
    result := cno_read_json(p_read_id);
    PERFORM cno_audit_append(p_actor, p_action, entity, left(p_detail, -1) || ', "state": ' || cno_json(state_after)
                             || ', "state_before": ' || cno_json(state_before) || '}');
    RETURN result;
END $$;
"""


def one_statement_writes() -> str:
    """Migration 23 on PostgreSQL: a read's first change, edits, submit and follow-up, each one statement."""
    return _ONE_STATEMENT_WRITES


_READER_ENTRIES = r"""
-- The actions the program writes for a reader or adjudicator about a read of theirs (annotation/reads.py): the
-- read's creation, new version, follow-up link and submission, and the labels of its edits (an undo or redo of
-- an edit is named after it).
CREATE FUNCTION cno_reader_edit_action(p_action text) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT regexp_replace(p_action, '^(undo|redo) ', '') ~ ('^(add lesion|delete lesion|draw ROI|delete ROI'
        || '|edit (site_id|side|subsite|extent|grades|comment|confidence|position|series_uid|voxel)'
        || '(, (site_id|side|subsite|extent|grades|comment|confidence|position|series_uid|voxel))*'
        || '|mark [A-Za-z0-9_.:-]+|mark [0-9]+ remaining units (no_lesion|not_assessable)'
        || '|grade [A-Za-z0-9_.:-]+ [A-Za-z0-9_.-]+|ROI R[0-9]+ (measurement|muscle|lesion)'
        || '|(persisting|resolved|not assessable|unconfirm) prior lesion)$')
$$;

-- A reader's or adjudicator's entry tells the truth (migration 20), goes on its object's chain (migration 22), and
-- is one the program writes for them: about a read of theirs, under the action that matches what happened to it ('create' and 'new-version' first of its
-- trail, 'follow-up' once it follows a read, 'submit' once it is submitted, an edit's label while it is a draft);
-- or the export of reads, all of them theirs ('export', 'export-csv' about 'reads'). The coordinator's entries are
-- as before.
CREATE OR REPLACE FUNCTION cno_audit_append(p_actor text, p_action text, p_entity text, p_detail text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    who text := session_user;
    read_key text := substr(p_entity, 6);
    detail jsonb;
    r reads%ROWTYPE;
    allowed boolean;
    parent_seq bigint;
    parent_hash text;
    opening boolean := false;
    entry_seq bigint;
    stamp text := to_char(statement_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS') || '+00:00';
    digest text;
BEGIN
    IF NOT cno_is_coordinator() THEN
        IF p_actor <> who THEN
            RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
                MESSAGE = format('%s cannot write audit entries as %s', who, p_actor);
        END IF;
        BEGIN
            detail := p_detail::jsonb;
        EXCEPTION WHEN others THEN
            detail := NULL;
        END;
        IF jsonb_typeof(detail) IS DISTINCT FROM 'object' THEN
            RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
                MESSAGE = format('%s cannot write this audit entry about %s: its detail is not a JSON object',
                                 who, p_entity);
        END IF;
        IF p_entity = 'reads' THEN
            IF p_action NOT IN ('export', 'export-csv') OR (detail -> 'after' ->> 'reader') IS DISTINCT FROM who
               OR jsonb_typeof(detail -> 'after' -> 'reads') IS DISTINCT FROM 'array'
               OR EXISTS (SELECT 1 FROM jsonb_array_elements_text(detail -> 'after' -> 'reads') AS e(read_id)
                          WHERE NOT EXISTS (SELECT 1 FROM reads x WHERE x.read_id = e.read_id AND x.reader = who)) THEN
                RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
                    MESSAGE = format('%s cannot write this audit entry about reads: only the export of their own '
                                     'reads', who);
            END IF;
        ELSE
            SELECT * INTO r FROM reads WHERE read_id = read_key AND p_entity LIKE 'read:%';
            IF NOT FOUND OR r.reader <> who
               OR (detail ->> 'state') IS DISTINCT FROM cno_read_state(read_key)
               OR (detail ->> 'state_before') IS DISTINCT FROM cno_audited_state(p_entity) THEN
                RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
                    MESSAGE = format('%s cannot write this audit entry about %s: it must record the state the '
                                     'database holds for a read of theirs', who, p_entity);
            END IF;
            allowed := CASE
                WHEN p_action = 'create' THEN NOT EXISTS (SELECT 1 FROM audit WHERE entity = p_entity)
                WHEN p_action = 'new-version' THEN r.supersedes IS NOT NULL
                                                   AND NOT EXISTS (SELECT 1 FROM audit WHERE entity = p_entity)
                WHEN p_action = 'follow-up' THEN r.prior_read IS NOT NULL
                WHEN p_action = 'submit' THEN r.status = 'submitted'
                ELSE r.status = 'draft' AND cno_reader_edit_action(p_action)
            END;
            IF NOT allowed THEN
                RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
                    MESSAGE = format('%s cannot write a %L entry about %s: the program writes no such entry for '
                                     'this read', who, p_action, p_entity);
            END IF;
        END IF;
    END IF;
    SELECT seq, hash INTO parent_seq, parent_hash FROM audit_heads WHERE entity = p_entity FOR UPDATE;
    IF NOT FOUND THEN
        SELECT seq, hash INTO parent_seq, parent_hash FROM audit_head WHERE id = 1 FOR UPDATE;
        opening := true;
        -- Another writer may have begun this object's chain while this one waited for the spine.
        PERFORM 1 FROM audit_heads WHERE entity = p_entity FOR UPDATE;
        IF FOUND THEN
            SELECT seq, hash INTO parent_seq, parent_hash FROM audit_heads WHERE entity = p_entity;
            opening := false;
        END IF;
    END IF;
    LOCK TABLE audit IN ROW EXCLUSIVE MODE;  -- before the number is taken: an anchor (cno_audit_cut) waits
    entry_seq := nextval('audit_seq');
    digest := encode(sha256(convert_to(parent_hash || '[' || entry_seq || ',' || parent_seq || ','
        || to_json(stamp)::text || ',' || to_json(p_actor)::text || ',' || to_json(p_action)::text || ','
        || to_json(p_entity)::text || ',' || to_json(p_detail)::text || ']', 'UTF8')), 'hex');
    INSERT INTO audit (seq, at, actor, action, entity, detail, prev_hash, hash, prev_seq)
        VALUES (entry_seq, stamp, p_actor, p_action, p_entity, p_detail, parent_hash, digest, parent_seq);
    IF opening THEN
        INSERT INTO audit_heads VALUES (p_entity, entry_seq, digest);
        UPDATE audit_head SET seq = entry_seq, hash = digest WHERE id = 1;
    ELSE
        UPDATE audit_heads SET seq = entry_seq, hash = digest WHERE entity = p_entity;
    END IF;
    RETURN entry_seq;
END $$;
REVOKE ALL ON FUNCTION cno_audit_append(text, text, text, text) FROM PUBLIC;
"""


def reader_entries() -> str:
    """Migration 24 on PostgreSQL: a reader's or adjudicator's audit entry is one the program writes for them.

    Migration 20 made their entries record the read's true state, under any
    action name (migration 22 kept that, on per-object chains). Now the name
    must be one the program writes, and match the read: ``create`` and
    ``new-version`` open the read's trail, ``follow-up`` needs the read to follow one, ``submit`` needs it submitted, the labels of
    edits need a draft. A reader may also audit the export of reads that are
    all theirs (``export``, ``export-csv`` about ``reads``, under their login).
    """
    return _READER_ENTRIES


#: Migration 29 on PostgreSQL: an edit hashes the read's state twice (before and after) and reads its audited state
#: once, as the store's owner, instead of five times under the caller's row security.
_TRUSTED_EDITS = r"""
-- Whether the program writes this entry for a reader or adjudicator about their read r as it now stands
-- (the rule of migration 24, in one place for cno_audit_append and cno_change_read).
CREATE FUNCTION cno_reader_entry_allowed(p_action text, p_entity text, r reads) RETURNS boolean
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT CASE
        WHEN p_action = 'create' THEN NOT EXISTS (SELECT 1 FROM audit WHERE entity = p_entity)
        WHEN p_action = 'new-version' THEN r.supersedes IS NOT NULL
                                           AND NOT EXISTS (SELECT 1 FROM audit WHERE entity = p_entity)
        WHEN p_action = 'follow-up' THEN r.prior_read IS NOT NULL
        WHEN p_action = 'submit' THEN r.status = 'submitted'
        ELSE r.status = 'draft' AND cno_reader_edit_action(p_action)
    END
$$;
REVOKE ALL ON FUNCTION cno_reader_entry_allowed(text, text, reads) FROM PUBLIC;

-- The entry on its object's chain (migration 22), unchecked: only the owner's functions call it, after their checks.
CREATE FUNCTION cno_audit_write(p_actor text, p_action text, p_entity text, p_detail text) RETURNS bigint
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    parent_seq bigint;
    parent_hash text;
    opening boolean := false;
    entry_seq bigint;
    stamp text := to_char(statement_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS') || '+00:00';
    digest text;
BEGIN
    SELECT seq, hash INTO parent_seq, parent_hash FROM audit_heads WHERE entity = p_entity FOR UPDATE;
    IF NOT FOUND THEN
        SELECT seq, hash INTO parent_seq, parent_hash FROM audit_head WHERE id = 1 FOR UPDATE;
        opening := true;
        -- Another writer may have begun this object's chain while this one waited for the spine.
        PERFORM 1 FROM audit_heads WHERE entity = p_entity FOR UPDATE;
        IF FOUND THEN
            SELECT seq, hash INTO parent_seq, parent_hash FROM audit_heads WHERE entity = p_entity;
            opening := false;
        END IF;
    END IF;
    LOCK TABLE audit IN ROW EXCLUSIVE MODE;  -- before the number is taken: an anchor (cno_audit_cut) waits
    entry_seq := nextval('audit_seq');
    digest := encode(sha256(convert_to(parent_hash || '[' || entry_seq || ',' || parent_seq || ','
        || to_json(stamp)::text || ',' || to_json(p_actor)::text || ',' || to_json(p_action)::text || ','
        || to_json(p_entity)::text || ',' || to_json(p_detail)::text || ']', 'UTF8')), 'hex');
    INSERT INTO audit (seq, at, actor, action, entity, detail, prev_hash, hash, prev_seq)
        VALUES (entry_seq, stamp, p_actor, p_action, p_entity, p_detail, parent_hash, digest, parent_seq);
    IF opening THEN
        INSERT INTO audit_heads VALUES (p_entity, entry_seq, digest);
        UPDATE audit_head SET seq = entry_seq, hash = digest WHERE id = 1;
    ELSE
        UPDATE audit_heads SET seq = entry_seq, hash = digest WHERE entity = p_entity;
    END IF;
    RETURN entry_seq;
END $$;
REVOKE ALL ON FUNCTION cno_audit_write(text, text, text, text) FROM PUBLIC;

-- As migration 24: a reader's or adjudicator's entry tells the truth and is one the program writes for them.
CREATE OR REPLACE FUNCTION cno_audit_append(p_actor text, p_action text, p_entity text, p_detail text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    who text := session_user;
    read_key text := substr(p_entity, 6);
    detail jsonb;
    r reads%ROWTYPE;
BEGIN
    IF NOT cno_is_coordinator() THEN
        IF p_actor <> who THEN
            RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
                MESSAGE = format('%s cannot write audit entries as %s', who, p_actor);
        END IF;
        BEGIN
            detail := p_detail::jsonb;
        EXCEPTION WHEN others THEN
            detail := NULL;
        END;
        IF jsonb_typeof(detail) IS DISTINCT FROM 'object' THEN
            RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
                MESSAGE = format('%s cannot write this audit entry about %s: its detail is not a JSON object',
                                 who, p_entity);
        END IF;
        IF p_entity = 'reads' THEN
            IF p_action NOT IN ('export', 'export-csv') OR (detail -> 'after' ->> 'reader') IS DISTINCT FROM who
               OR jsonb_typeof(detail -> 'after' -> 'reads') IS DISTINCT FROM 'array'
               OR EXISTS (SELECT 1 FROM jsonb_array_elements_text(detail -> 'after' -> 'reads') AS e(read_id)
                          WHERE NOT EXISTS (SELECT 1 FROM reads x WHERE x.read_id = e.read_id AND x.reader = who)) THEN
                RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
                    MESSAGE = format('%s cannot write this audit entry about reads: only the export of their own '
                                     'reads', who);
            END IF;
        ELSE
            SELECT * INTO r FROM reads WHERE read_id = read_key AND p_entity LIKE 'read:%';
            IF NOT FOUND OR r.reader <> who
               OR (detail ->> 'state') IS DISTINCT FROM cno_read_state(read_key)
               OR (detail ->> 'state_before') IS DISTINCT FROM cno_audited_state(p_entity) THEN
                RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
                    MESSAGE = format('%s cannot write this audit entry about %s: it must record the state the '
                                     'database holds for a read of theirs', who, p_entity);
            END IF;
            IF NOT cno_reader_entry_allowed(p_action, p_entity, r) THEN
                RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
                    MESSAGE = format('%s cannot write a %L entry about %s: the program writes no such entry for '
                                     'this read', who, p_action, p_entity);
            END IF;
        END IF;
    END IF;
    RETURN cno_audit_write(p_actor, p_action, p_entity, p_detail);
END $$;
REVOKE ALL ON FUNCTION cno_audit_append(text, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cno_audit_append(text, text, text, text) TO cno_coordinator, cno_reader, cno_adjudicator;

-- One change of a read (migration 23), run as the store's owner: it checks the caller's access itself, with the
-- rules row security applies to them (a reader or adjudicator changes only their own reads, under their own login,
-- and writes only the entries the program writes for them, migration 24); a read not theirs is refused as if it
-- did not exist. A stale copy (revision, status or lesion counter) is refused before any lock is waited for or
-- any state hashed, with the read as stored ("read", as cno_read_json gives it), so the editor need not ask again. Then, with the read's row locked: its stored state hashed and checked against its audited
-- state (the latest entry, by index), the parts written, the state hashed again and the entry appended with both.
CREATE OR REPLACE FUNCTION cno_change_read(p_read_id text, p_revision bigint, p_next_lesion bigint, p_stamp text,
                                           p_actor text, p_action text, p_parts jsonb, p_detail text, p_row jsonb,
                                           p_create jsonb)
RETURNS json LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    who text := session_user;
    limited boolean := NOT cno_is_coordinator();
    entity text := 'read:' || p_read_id;
    r reads%ROWTYPE;
    state_before text;
    state_after text;
    result json;
    part jsonb;
BEGIN
    IF limited AND p_actor IS DISTINCT FROM who THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
            MESSAGE = format('%s cannot write audit entries as %s', who, p_actor);
    END IF;
    IF p_create IS NOT NULL THEN
        IF limited AND (p_create -> 'row' ->> 'reader') IS DISTINCT FROM who THEN
            RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
                MESSAGE = format('%s cannot make a read of %s', who, p_create -> 'row' ->> 'reader');
        END IF;
        IF NOT EXISTS (SELECT 1 FROM reads WHERE read_id = p_read_id) AND cno_audited_state(entity) IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'CNO01', MESSAGE = format(
                'read %s was changed outside the program since its last audited change; run cno-annotate store check',
                p_read_id);
        END IF;
        INSERT INTO reads SELECT * FROM jsonb_populate_record(NULL::reads, p_create -> 'row');
        SELECT * INTO r FROM reads WHERE read_id = p_read_id;
        IF limited AND NOT cno_reader_entry_allowed('create', entity, r) THEN
            RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
                MESSAGE = format('%s cannot write a %L entry about %s: the program writes no such entry for '
                                 'this read', who, 'create', entity);
        END IF;
        state_before := cno_read_state(p_read_id);
        PERFORM cno_audit_write(p_actor, 'create', entity, left(p_create ->> 'detail', -1) || ', "state": '
                                || cno_json(state_before) || ', "state_before": null}');
        IF (p_create ->> 'seconds')::float8 > 0 THEN
            INSERT INTO read_times VALUES (p_read_id, (p_create ->> 'seconds')::float8);
        END IF;
    END IF;
    SELECT * INTO r FROM reads WHERE read_id = p_read_id;  -- not locked: a stale copy waits for nobody
    IF NOT FOUND OR limited AND r.reader <> who THEN
        RETURN json_build_object('refused', NULL);
    END IF;
    IF r.revision <> p_revision OR r.status <> 'draft' OR r.next_lesion <> COALESCE(p_next_lesion, r.next_lesion) THEN
        RETURN json_build_object('refused', json_build_object('status', r.status, 'revision', r.revision),
                                 'read', cno_read_json(p_read_id));
    END IF;
    SELECT * INTO r FROM reads WHERE read_id = p_read_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN json_build_object('refused', NULL);
    END IF;
    IF r.revision <> p_revision OR r.status <> 'draft' OR r.next_lesion <> COALESCE(p_next_lesion, r.next_lesion) THEN
        RETURN json_build_object('refused', json_build_object('status', r.status, 'revision', r.revision),
                                 'read', cno_read_json(p_read_id));
    END IF;
    IF p_create IS NULL THEN  -- a read made just now holds the state its 'create' entry recorded
        state_before := cno_read_state(p_read_id);
        IF state_before IS DISTINCT FROM cno_audited_state(entity) THEN
            RAISE EXCEPTION USING ERRCODE = 'CNO01', MESSAGE = format(
                'read %s was changed outside the program since its last audited change; run cno-annotate store check',
                p_read_id);
        END IF;
    END IF;
    UPDATE reads SET revision = revision + 1, modified = p_stamp,
                     next_lesion = next_lesion + (p_next_lesion IS NOT NULL)::int,
                     prior_read = CASE WHEN p_row ? 'prior_read' THEN p_row ->> 'prior_read' ELSE prior_read END
        WHERE read_id = p_read_id;
    FOR part IN SELECT jsonb_array_elements(COALESCE(p_parts -> 'lesions', '[]')) LOOP
        IF part ->> 2 IS NULL THEN
            DELETE FROM lesions WHERE read_id = p_read_id AND lesion_id = part ->> 0;
        ELSIF NOT (part -> 3)::boolean THEN
            INSERT INTO lesions VALUES (p_read_id, part ->> 0, (part ->> 1)::bigint, part ->> 2);
        ELSE
            UPDATE lesions SET data = part ->> 2 WHERE read_id = p_read_id AND lesion_id = part ->> 0;
        END IF;
    END LOOP;
    FOR part IN SELECT jsonb_array_elements(COALESCE(p_parts -> 'unit_marks', '[]')) LOOP
        IF part ->> 1 IS NULL THEN
            DELETE FROM unit_marks WHERE read_id = p_read_id AND unit_id = part ->> 0;
        ELSIF NOT (part -> 2)::boolean THEN
            INSERT INTO unit_marks VALUES (p_read_id, part ->> 0, part ->> 1);
        ELSE
            UPDATE unit_marks SET mark = part ->> 1 WHERE read_id = p_read_id AND unit_id = part ->> 0;
        END IF;
    END LOOP;
    FOR part IN SELECT jsonb_array_elements(COALESCE(p_parts -> 'unit_grades', '[]')) LOOP
        DELETE FROM unit_grades WHERE read_id = p_read_id AND unit_id = part ->> 0 AND item_id = part ->> 1;
        IF part ->> 2 IS NOT NULL THEN
            INSERT INTO unit_grades VALUES (p_read_id, part ->> 0, part ->> 1, part ->> 2);
        END IF;
    END LOOP;
    FOR part IN SELECT jsonb_array_elements(COALESCE(p_parts -> 'rois', '[]')) LOOP
        DELETE FROM rois WHERE read_id = p_read_id AND roi_id = part ->> 0;
    END LOOP;
    FOR part IN SELECT jsonb_array_elements(COALESCE(p_parts -> 'rois', '[]')) LOOP
        IF part ->> 2 IS NOT NULL THEN
            INSERT INTO rois VALUES (p_read_id, part ->> 0, (part ->> 1)::bigint, part ->> 2, part ->> 3);
        END IF;
    END LOOP;
    FOR part IN SELECT jsonb_array_elements(COALESCE(p_parts -> 'outcomes', '[]')) LOOP
        DELETE FROM followup_outcomes WHERE read_id = p_read_id AND tracking_uid = part ->> 0;
        IF part ->> 1 IS NOT NULL THEN
            INSERT INTO followup_outcomes VALUES (p_read_id, part ->> 0, part ->> 1);
        END IF;
    END LOOP;
    IF p_row ->> 'status' = 'submitted' THEN  -- last: the read is locked from here on
        UPDATE reads SET status = 'submitted', submitted = p_stamp WHERE read_id = p_read_id;
    END IF;
    IF limited THEN
        SELECT * INTO r FROM reads WHERE read_id = p_read_id;
        IF NOT cno_reader_entry_allowed(p_action, entity, r) THEN
            RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
                MESSAGE = format('%s cannot write a %L entry about %s: the program writes no such entry for '
                                 'this read', who, p_action, entity);
        END IF;
    END IF;
    state_after := cno_read_state(p_read_id);
    result := cno_read_json(p_read_id);
    PERFORM cno_audit_write(p_actor, p_action, entity, left(p_detail, -1) || ', "state": ' || cno_json(state_after)
                            || ', "state_before": ' || cno_json(state_before) || '}');
    RETURN result;
END $$;
REVOKE ALL ON FUNCTION cno_change_read(text, bigint, bigint, text, text, text, jsonb, text, jsonb, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cno_change_read(text, bigint, bigint, text, text, text, jsonb, text, jsonb, jsonb)
    TO cno_coordinator, cno_reader, cno_adjudicator;

-- A session's own temporary tables (pg_temp) are searched before the schema unless the search path lists pg_temp:
-- a reader's temporary "reads" or "audit" then stood in for the store's inside the functions that run as the
-- owner (a submitted read's lock trigger saw a draft, the commit-time audit check an entry of the reader's making).
-- Every function of the store that sets its search path now searches pg_temp last.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
             WHERE p.pronamespace = 'public'::regnamespace AND 'search_path=public' = ANY (p.proconfig) LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = public, pg_temp', f);
    END LOOP;
END $$;
"""


def trusted_edits() -> str:
    """Migration 29 on PostgreSQL: ``cno_change_read`` runs as the store's owner and checks the caller's access itself.

    Under the caller's row security an edit hashed the read's state three times
    (before, after, and again in ``cno_audit_append``'s check that the entry tells
    the truth) and looked up its audited state twice, each lookup reading every
    entry of the read (the row-security filter kept the planner off the index
    order), so an edit slowed down as its read's trail grew. Now the function
    checks what row security and ``cno_audit_append`` checked for a reader or
    adjudicator (their own read, made under their own login, an entry the
    program writes for them), refuses a stale copy before waiting for any lock
    or hashing anything (and sends the read as stored with the refusal, so the
    editor's reload is no second round trip), hashes the state before and after the change once each,
    reads the audited state once, and appends through ``cno_audit_write``, which
    only the owner's functions may call.

    Every function of the store that sets its search path (all that run as the
    owner) now searches the session's temporary schema last: a reader's temporary
    table named like the store's stood in for it inside them (a submitted read's
    lock and the commit-time audit check were passed that way). A function added
    later must say ``SET search_path = public, pg_temp`` too (a test checks).
    """
    return _TRUSTED_EDITS


_PRIVATE_CHANNELS = r"""
-- A secret of this database (the owner's alone) names each login's channel; nobody can guess another's.
CREATE TABLE live_secret (id INTEGER PRIMARY KEY CHECK (id = 1), secret TEXT NOT NULL);
INSERT INTO live_secret VALUES (1, md5(gen_random_uuid()::text) || md5(gen_random_uuid()::text));
REVOKE ALL ON live_secret FROM PUBLIC;

-- The channel of a login ('' : the coordinators' channel).
CREATE FUNCTION cno_channel_of(p_login text) RETURNS text LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = public AS $$
    SELECT 'cno_live_' || left(encode(sha256(convert_to(secret || ':' || p_login, 'UTF8')), 'hex'), 40)
    FROM live_secret WHERE id = 1
$$;
REVOKE ALL ON FUNCTION cno_channel_of(text) FROM PUBLIC;

-- The channel this session listens on: its own login's, or the coordinators'.
CREATE FUNCTION cno_live_channel() RETURNS text LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
    SELECT cno_channel_of(CASE WHEN cno_is_coordinator() THEN '' ELSE session_user END)
$$;
REVOKE ALL ON FUNCTION cno_live_channel() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cno_live_channel() TO cno_coordinator, cno_reader, cno_adjudicator;

-- A read created, deleted or changing status: its reader, the coordinators, and (once it was submitted by a
-- reader) the adjudicators of its case hear of it; nobody else.
CREATE OR REPLACE FUNCTION cno_notify_read() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public AS $$
DECLARE
    r reads%ROWTYPE;
    adjudicator text;
BEGIN
    IF TG_OP = 'DELETE' THEN
        r := OLD;
    ELSIF TG_OP = 'UPDATE' AND NEW.status IS NOT DISTINCT FROM OLD.status THEN
        RETURN NULL;
    ELSE
        r := NEW;
    END IF;
    PERFORM pg_notify(cno_channel_of(''), 'read:' || r.read_id);
    PERFORM pg_notify(cno_channel_of(r.reader), 'read:' || r.read_id);
    IF r.role = 'reader' AND (r.status = 'submitted' OR (TG_OP = 'UPDATE' AND OLD.status = 'submitted')) THEN
        FOR adjudicator IN SELECT DISTINCT w.reader FROM rs_worklists w
            JOIN rs_cases c ON c.reading_study = w.reading_study AND c.reading_code = w.reading_code
            JOIN rs_readers x ON x.reading_study = w.reading_study AND x.reader = w.reader AND x.role = 'adjudicator'
            WHERE w.reading_study = r.reading_study AND c.study_uid = r.study_uid LOOP
            PERFORM pg_notify(cno_channel_of(adjudicator), 'read:' || r.read_id);
        END LOOP;
    END IF;
    RETURN NULL;
END $$;

-- A worklist changing: its reader and the coordinators.
CREATE OR REPLACE FUNCTION cno_notify_worklist() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public AS $$
BEGIN
    PERFORM pg_notify(cno_channel_of(''), 'worklist:' || COALESCE(NEW.reading_study, OLD.reading_study));
    IF TG_OP <> 'INSERT' THEN
        PERFORM pg_notify(cno_channel_of(OLD.reader), 'worklist:' || OLD.reading_study);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM pg_notify(cno_channel_of(NEW.reader), 'worklist:' || NEW.reading_study);
    END IF;
    RETURN NULL;
END $$;
"""


def private_channels() -> str:
    """Migration 25 on PostgreSQL: live progress on one secret channel per login, not one channel for all.

    Every login may LISTEN on any channel, so on the shared channel of
    migration 16 a reader heard of every other reader's reads (their ids and
    the sending session's PID, hence when each reader worked). Now each
    login listens on a channel named from a secret of the database that
    only the owner reads (``cno_live_channel()`` gives a session its own),
    and the server notifies a read's reader, the coordinators and, once a
    reader submitted it, the adjudicators of its case; a worklist change its
    reader and the coordinators. Nothing is sent on the shared channel.
    """
    return _PRIVATE_CHANNELS


#: Deployment step (docs/deployment.md), run once per study database by a superuser: only coordinators (and
#: the database's owner) see the server's sessions, locks and per-backend statistics; a reader's or
#: adjudicator's login no longer learns which other logins are connected, when, and from where.
HIDE_ACTIVITY = """
DO $$
DECLARE
    f regprocedure;
    owner text := (SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database());
BEGIN
    FOR f IN SELECT oid::regprocedure FROM pg_proc WHERE pronamespace = 'pg_catalog'::regnamespace
             AND (proname LIKE 'pg\\_stat\\_get\\_backend\\_%' OR proname IN ('pg_stat_get_activity',
                  'pg_lock_status', 'pg_blocking_pids', 'pg_safe_snapshot_blocking_pids',
                  'pg_stat_get_progress_info')) LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO cno_coordinator, %I', f, owner);
    END LOOP;
END $$;
"""


#: Migration 26 on PostgreSQL: readers and adjudicators select nothing of the imaging tables. Migration 12 let them
#: select the study UIDs of their worklist's studies and the volume ids, study and series UIDs of their volumes: the
#: source (identifying) UIDs of the hospital's studies and series, which an online reader never needs (the viewer
#: shows the de-identified copies of its image cache, under their stand-in UIDs).
IMAGING_HIDDEN = """
REVOKE ALL ON studies, volumes FROM cno_reader, cno_adjudicator;
DROP POLICY worklist_studies ON studies;
DROP POLICY worklist_volumes ON volumes;
"""


_CASES_SEEN = """
CREATE VIEW rs_cases_seen WITH (security_barrier) AS
    SELECT c.reading_study, c.reading_code, c.study_uid,
        CASE WHEN cno_is_coordinator() OR s.design <> 'unpaired-blinded' OR s.reveal_timepoints <> 0
             THEN c.patient_code END AS patient_code,
        CASE WHEN cno_is_coordinator() OR s.design = 'paired-chronological' OR s.reveal_timepoints <> 0
             THEN c.timepoint END AS timepoint
    FROM rs_cases c JOIN reading_studies s ON s.name = c.reading_study
    WHERE cno_is_coordinator() OR EXISTS (SELECT 1 FROM rs_worklists w WHERE w.reading_study = c.reading_study
                                          AND w.reading_code = c.reading_code AND w.reader = session_user);
REVOKE ALL ON rs_cases_seen FROM PUBLIC;
GRANT SELECT ON rs_cases_seen TO cno_coordinator, cno_reader, cno_adjudicator;
REVOKE SELECT ON rs_cases FROM cno_reader, cno_adjudicator;
GRANT SELECT (reading_study, reading_code, study_uid) ON rs_cases TO cno_reader, cno_adjudicator;
"""


def cases_seen() -> str:
    """Migration 21 on PostgreSQL: readers see a case's patient and timepoint only as the study's design allows.

    Readers and adjudicators may select only the reading study, code and study UID
    of ``rs_cases``; the view ``rs_cases_seen`` (their worklist's cases) adds the
    patient code in paired designs or when timepoints are revealed, and the
    timepoint in the paired chronological design or when revealed (NULL otherwise).
    Coordinators see every case as it is.
    """
    return _CASES_SEEN


#: Raised by cno_edit_read when the stored read differs from its audited state.
CHANGED_OUTSIDE = "CNO01"


def edit_functions() -> str:
    """Migration 19 on PostgreSQL: a read's state hash, its JSON, and one edit in one statement (cno_edit_read)."""
    return _EDITS


def limited_login(connection: PgConnection) -> str | None:
    """The login of a reader's or adjudicator's session (row security limits what it sees); None for a coordinator.

    A login in none of the groups (the store's owner) counts as a coordinator, as in ``cno_is_coordinator``.
    """
    row = connection.execute("SELECT session_user, pg_has_role(session_user, 'cno_coordinator', 'MEMBER') OR NOT "
                             "(pg_has_role(session_user, 'cno_reader', 'MEMBER') OR "
                             "pg_has_role(session_user, 'cno_adjudicator', 'MEMBER'))").fetchone()
    return None if row[1] else str(row[0])


def grant(connection: PgConnection, login: str, kind: str, password: str | None = None) -> bool:
    """Create (or extend) a login role in a group; True if the role was created.

    Run by the store's owner. The role's name is the reader id the store knows
    the person by (``rs_readers.reader``, ``reads.reader``).
    """
    from psycopg import sql

    if kind not in GROUPS:
        raise ValueError(f"kind is one of {', '.join(GROUPS)}, not {kind!r}")
    exists = connection.execute("SELECT 1 FROM pg_roles WHERE rolname = ?", (login,)).fetchone() is not None
    name = sql.Identifier(login)
    if not exists:
        statement = sql.SQL("CREATE ROLE {} LOGIN").format(name)
        if password is not None:
            statement = sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(name, sql.Literal(password))
        connection.raw.execute(statement)
    connection.raw.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(GROUPS[kind]), name))
    connection.raw.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
        sql.Identifier(connection.raw.info.dbname), name))
    return not exists


#: The channel on which the server announces changes of reading progress (migration 16, :mod:`.live`).
LIVE_CHANNEL = "cno_reading"

#: Migration 16 on PostgreSQL: a read created, deleted or changing status, or a worklist changing, is
#: announced on :data:`LIVE_CHANNEL` when its transaction commits. Every login may LISTEN to every
#: channel, so the payload names no reader, case or status: ``read:<read id>`` (an opaque id the
#: listener looks up through its own row security) or ``worklist:<reading study>``.
LIVE_NOTIFY = f"""
CREATE FUNCTION cno_notify_read() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('{LIVE_CHANNEL}', 'read:' || OLD.read_id);
        RETURN OLD;
    END IF;
    IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status THEN
        PERFORM pg_notify('{LIVE_CHANNEL}', 'read:' || NEW.read_id);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER reads_notify AFTER INSERT OR UPDATE OF status OR DELETE ON reads
    FOR EACH ROW EXECUTE FUNCTION cno_notify_read();
CREATE FUNCTION cno_notify_worklist() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{LIVE_CHANNEL}', 'worklist:' || CASE WHEN TG_OP = 'DELETE' THEN OLD.reading_study
                                                          ELSE NEW.reading_study END);
    RETURN NULL;
END $$;
CREATE TRIGGER rs_worklists_notify AFTER INSERT OR UPDATE OR DELETE ON rs_worklists
    FOR EACH ROW EXECUTE FUNCTION cno_notify_worklist();
"""

#: Migration 27 on PostgreSQL: a reader or adjudicator records the opening of (and the time looking at) only the
#: cases of their own worklist, under their own login; coordinators see all.
OPENED_RULES = """
REVOKE ALL ON rs_opened FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON rs_opened TO cno_coordinator;
GRANT SELECT, INSERT, UPDATE ON rs_opened TO cno_reader, cno_adjudicator;
ALTER TABLE rs_opened ENABLE ROW LEVEL SECURITY;
CREATE POLICY coordinator_all ON rs_opened TO cno_coordinator USING (true) WITH CHECK (true);
CREATE POLICY own_worklist_cases ON rs_opened TO cno_reader, cno_adjudicator
    USING (reader = session_user) WITH CHECK (reader = session_user AND EXISTS (
        SELECT 1 FROM rs_worklists w JOIN rs_cases c ON c.reading_study = w.reading_study
            AND c.reading_code = w.reading_code
        WHERE w.reader = session_user AND w.reading_study = rs_opened.reading_study
            AND c.study_uid = rs_opened.study_uid));
"""

_OPENED_FOLLOWS_WORKLIST = """
-- A case's opened record exists only while the case is on that reader's worklist. AFTER the row (a reader's
-- row security answers first for their own login); a coordinator's write is checked here.
CREATE FUNCTION cno_opened_on_worklist() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM rs_worklists w JOIN rs_cases c ON c.reading_study = w.reading_study
                   AND c.reading_code = w.reading_code WHERE w.reading_study = NEW.reading_study
                   AND w.reader = NEW.reader AND c.study_uid = NEW.study_uid) THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation', MESSAGE = %(message)s;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER rs_opened_on_worklist AFTER INSERT OR UPDATE OF reading_study, reader, study_uid ON rs_opened
    FOR EACH ROW EXECUTE FUNCTION cno_opened_on_worklist();

-- A case taken off a worklist (or moved to another reader): that reader's opened record goes.
CREATE FUNCTION cno_worklist_forget_opened() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND (NEW.reading_study, NEW.reader, NEW.reading_code)
                            IS NOT DISTINCT FROM (OLD.reading_study, OLD.reader, OLD.reading_code) THEN
        RETURN NULL;
    END IF;
    DELETE FROM rs_opened o USING rs_cases c
    WHERE c.reading_study = OLD.reading_study AND c.reading_code = OLD.reading_code
      AND o.reading_study = OLD.reading_study AND o.reader = OLD.reader AND o.study_uid = c.study_uid
      AND NOT EXISTS (SELECT 1 FROM rs_worklists w WHERE w.reading_study = OLD.reading_study
                      AND w.reader = OLD.reader AND w.reading_code = OLD.reading_code);
    RETURN NULL;
END $$;
CREATE TRIGGER rs_worklists_forget_opened AFTER DELETE OR UPDATE ON rs_worklists
    FOR EACH ROW EXECUTE FUNCTION cno_worklist_forget_opened();

-- A reader's first opening of a case: the coordinators and the reader's own sessions hear of it (as of a read).
CREATE FUNCTION cno_notify_opened() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public AS $$
DECLARE
    payload text;
BEGIN
    SELECT 'opened:' || json_build_object('reading_study', NEW.reading_study, 'reader', NEW.reader,
                                          'reading_code', c.reading_code)::text INTO payload
    FROM rs_cases c WHERE c.reading_study = NEW.reading_study AND c.study_uid = NEW.study_uid;
    IF payload IS NOT NULL THEN
        PERFORM pg_notify(cno_channel_of(''), payload);
        PERFORM pg_notify(cno_channel_of(NEW.reader), payload);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER rs_opened_notify AFTER INSERT ON rs_opened FOR EACH ROW EXECUTE FUNCTION cno_notify_opened();
"""


def opened_follows_worklist() -> str:
    """Migration 28 on PostgreSQL: opened records follow the worklists, and a first opening is announced.

    A case taken off a reader's worklist (or moved to another reader) loses
    that reader's ``rs_opened`` row (the coordinator's audit entry keeps the
    time looked); no row is written for a case off the worklist (a reader's
    row security refuses it first, a coordinator's write is refused here). A
    reader's first opening of a case notifies the coordinators' channel and
    the reader's own (``opened:`` and a JSON object of the reading study,
    reader and reading code), which :mod:`.live` turns into ``CaseOpened``.
    """
    from cno_annotate.store.db import OFF_WORKLIST_MESSAGE

    return _OPENED_FOLLOWS_WORKLIST % {"message": "'" + OFF_WORKLIST_MESSAGE.replace("'", "''") + "'"}


#: Migration 17 on PostgreSQL: coordinators publish cases to the study PACS; a reader or adjudicator sees
#: where the cases of their own worklist are (the stand-in study UID, nothing of the source study).
PUBLISHED_RULES = """
REVOKE ALL ON rs_published FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON rs_published TO cno_coordinator;
GRANT SELECT ON rs_published TO cno_reader, cno_adjudicator;
ALTER TABLE rs_published ENABLE ROW LEVEL SECURITY;
CREATE POLICY coordinator_all ON rs_published TO cno_coordinator USING (true) WITH CHECK (true);
CREATE POLICY worklist_cases ON rs_published FOR SELECT TO cno_reader, cno_adjudicator USING (EXISTS (
    SELECT 1 FROM rs_worklists w WHERE w.reading_study = rs_published.reading_study
        AND w.reading_code = rs_published.reading_code AND w.reader = session_user));
"""

#: Migration 30 on PostgreSQL: a reader's or adjudicator's login names a case by its key, the stand-in study UID of the
#: reading study's UID pairs (what the study PACS holds the case under), never by its source UID. They may no longer
#: select rs_cases.study_uid; rs_cases_seen shows them the key as the study UID (coordinators see the source, and the
#: key in case_key, to map their reads back). Their reads and openings are keyed so: the server refuses a read of a
#: registered reader, or an opening, that names a case by its source UID (a coordinator's program writing it for them).
CASE_KEYS = """
CREATE OR REPLACE VIEW rs_cases_seen WITH (security_barrier) AS
    SELECT c.reading_study, c.reading_code,
        CASE WHEN cno_is_coordinator() THEN c.study_uid ELSE p.package_uid END AS study_uid,
        CASE WHEN cno_is_coordinator() OR s.design <> 'unpaired-blinded' OR s.reveal_timepoints <> 0
             THEN c.patient_code END AS patient_code,
        CASE WHEN cno_is_coordinator() OR s.design = 'paired-chronological' OR s.reveal_timepoints <> 0
             THEN c.timepoint END AS timepoint,
        p.package_uid AS case_key
    FROM rs_cases c JOIN reading_studies s ON s.name = c.reading_study
        LEFT JOIN package_uids p ON p.reading_study = c.reading_study AND p.source_uid = c.study_uid
    WHERE cno_is_coordinator() OR EXISTS (SELECT 1 FROM rs_worklists w WHERE w.reading_study = c.reading_study
                                          AND w.reading_code = c.reading_code AND w.reader = session_user);
REVOKE SELECT (study_uid) ON rs_cases FROM cno_reader, cno_adjudicator;

-- Whether a case of this login's worklist has this key (a key is all a reader knows of a case).
CREATE FUNCTION cno_worklist_case(p_study text, p_key text) RETURNS boolean LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = public, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM rs_worklists w JOIN rs_cases c ON c.reading_study = w.reading_study
                       AND c.reading_code = w.reading_code
                   JOIN package_uids p ON p.reading_study = c.reading_study AND p.source_uid = c.study_uid
                   WHERE w.reader = session_user AND w.reading_study = p_study AND p.package_uid = p_key)
$$;
REVOKE ALL ON FUNCTION cno_worklist_case(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cno_worklist_case(text, text) TO cno_coordinator, cno_reader, cno_adjudicator;

DROP POLICY adjudicated_cases ON reads;
CREATE POLICY adjudicated_cases ON reads FOR SELECT TO cno_adjudicator USING (
    status = 'submitted' AND role = 'reader' AND cno_worklist_case(reading_study, study_uid));
DROP POLICY own_worklist_cases ON rs_opened;
CREATE POLICY own_worklist_cases ON rs_opened TO cno_reader, cno_adjudicator
    USING (reader = session_user) WITH CHECK (reader = session_user AND cno_worklist_case(reading_study, study_uid));

-- A registered reader's read of a reading study, and any opening, names its case by the key: their login sees it.
CREATE FUNCTION cno_keyed_by_stand_in() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp AS $$
BEGIN
    IF NEW.reading_study IS NOT NULL
       AND EXISTS (SELECT 1 FROM rs_cases c WHERE c.reading_study = NEW.reading_study AND c.study_uid = NEW.study_uid)
       AND (TG_TABLE_NAME = 'rs_opened' OR EXISTS (SELECT 1 FROM rs_readers x
                                                  WHERE x.reading_study = NEW.reading_study AND x.reader = NEW.reader))
    THEN
        RAISE EXCEPTION USING ERRCODE = 'integrity_constraint_violation', MESSAGE = format(
            '%s of %s in reading study %s names its case by the source study UID, which their login would see; '
            'on a server it names the case by its key (rs_cases_seen.case_key)',
            CASE WHEN TG_TABLE_NAME = 'reads' THEN 'a read' ELSE 'an opening' END, NEW.reader, NEW.reading_study);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER reads_keyed_by_stand_in BEFORE INSERT OR UPDATE OF study_uid, reader, reading_study ON reads
    FOR EACH ROW EXECUTE FUNCTION cno_keyed_by_stand_in();
CREATE TRIGGER rs_opened_keyed_by_stand_in BEFORE INSERT OR UPDATE OF study_uid, reader, reading_study ON rs_opened
    FOR EACH ROW EXECUTE FUNCTION cno_keyed_by_stand_in();

-- The adjudicators of a read's case hear of its submission: the case found by its key (or, for a read made before
-- schema 30, its source UID).
CREATE OR REPLACE FUNCTION cno_notify_read() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp AS $$
DECLARE
    r reads%ROWTYPE;
    adjudicator text;
BEGIN
    IF TG_OP = 'DELETE' THEN
        r := OLD;
    ELSIF TG_OP = 'UPDATE' AND NEW.status IS NOT DISTINCT FROM OLD.status THEN
        RETURN NULL;
    ELSE
        r := NEW;
    END IF;
    PERFORM pg_notify(cno_channel_of(''), 'read:' || r.read_id);
    PERFORM pg_notify(cno_channel_of(r.reader), 'read:' || r.read_id);
    IF r.role = 'reader' AND (r.status = 'submitted' OR (TG_OP = 'UPDATE' AND OLD.status = 'submitted')) THEN
        FOR adjudicator IN SELECT DISTINCT w.reader FROM rs_worklists w
            JOIN rs_cases c ON c.reading_study = w.reading_study AND c.reading_code = w.reading_code
            JOIN rs_readers x ON x.reading_study = w.reading_study AND x.reader = w.reader AND x.role = 'adjudicator'
            LEFT JOIN package_uids p ON p.reading_study = c.reading_study AND p.source_uid = c.study_uid
            WHERE w.reading_study = r.reading_study AND r.study_uid IN (c.study_uid, p.package_uid) LOOP
            PERFORM pg_notify(cno_channel_of(adjudicator), 'read:' || r.read_id);
        END LOOP;
    END IF;
    RETURN NULL;
END $$;
"""


#: Migration 30 on PostgreSQL: migration 28's opened records find their case by its key too (MESSAGE: its refusal).
_OPENED_BY_KEY = """
CREATE OR REPLACE FUNCTION cno_opened_on_worklist() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM rs_worklists w JOIN rs_cases c ON c.reading_study = w.reading_study
                   AND c.reading_code = w.reading_code
                   LEFT JOIN package_uids p ON p.reading_study = c.reading_study AND p.source_uid = c.study_uid
                   WHERE w.reading_study = NEW.reading_study AND w.reader = NEW.reader
                   AND NEW.study_uid IN (c.study_uid, p.package_uid)) THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation', MESSAGE = MESSAGE_TEXT;
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION cno_worklist_forget_opened() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND (NEW.reading_study, NEW.reader, NEW.reading_code)
                            IS NOT DISTINCT FROM (OLD.reading_study, OLD.reader, OLD.reading_code) THEN
        RETURN NULL;
    END IF;
    DELETE FROM rs_opened o USING rs_cases c
        LEFT JOIN package_uids p ON p.reading_study = c.reading_study AND p.source_uid = c.study_uid
    WHERE c.reading_study = OLD.reading_study AND c.reading_code = OLD.reading_code
      AND o.reading_study = OLD.reading_study AND o.reader = OLD.reader AND o.study_uid IN (c.study_uid, p.package_uid)
      AND NOT EXISTS (SELECT 1 FROM rs_worklists w WHERE w.reading_study = OLD.reading_study
                      AND w.reader = OLD.reader AND w.reading_code = OLD.reading_code);
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION cno_notify_opened() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp AS $$
DECLARE
    payload text;
BEGIN
    SELECT 'opened:' || json_build_object('reading_study', NEW.reading_study, 'reader', NEW.reader,
                                          'reading_code', c.reading_code)::text INTO payload
    FROM rs_cases c LEFT JOIN package_uids p ON p.reading_study = c.reading_study AND p.source_uid = c.study_uid
    WHERE c.reading_study = NEW.reading_study AND NEW.study_uid IN (c.study_uid, p.package_uid);
    IF payload IS NOT NULL THEN
        PERFORM pg_notify(cno_channel_of(''), payload);
        PERFORM pg_notify(cno_channel_of(NEW.reader), payload);
    END IF;
    RETURN NULL;
END $$;
"""


#: Migration 32 on PostgreSQL: what a reading study that shows age and sex lets a reader know of a case (the sex,
#: and the age at the visit in years), given by the owner for a case of the caller's worklist (a coordinator: any
#: case), since readers and adjudicators select nothing of the studies and patients tables (migration 26).
CASE_AGE_SEX = """
CREATE FUNCTION cno_case_age_sex(p_study text, p_code text) RETURNS TABLE (sex text, age_years double precision)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    v_sex text;
    v_birth text;
    v_visit text;
    v_age double precision;
BEGIN
    SELECT p.sex, p.birth_date, s.study_date INTO v_sex, v_birth, v_visit
    FROM rs_cases c JOIN reading_studies r ON r.name = c.reading_study AND r.show_age_sex <> 0
        JOIN studies s ON s.study_uid = c.study_uid JOIN patients p ON p.patient_key = s.patient_key
    WHERE c.reading_study = p_study AND c.reading_code = p_code
        AND (cno_is_coordinator() OR EXISTS (SELECT 1 FROM rs_worklists w WHERE w.reading_study = c.reading_study
                                             AND w.reading_code = c.reading_code AND w.reader = session_user));
    IF NOT FOUND THEN
        RETURN;
    END IF;
    BEGIN
        v_age := round(((to_date(substr(v_visit, 1, 8), 'YYYYMMDD') - to_date(substr(v_birth, 1, 8), 'YYYYMMDD'))
                        / 365.25)::numeric, 1);
    EXCEPTION WHEN others THEN
        v_age := NULL;  -- a date missing or not YYYYMMDD: the age is unknown, as the program says on SQLite
    END;
    RETURN QUERY SELECT NULLIF(v_sex, ''), v_age;
END $$;
REVOKE ALL ON FUNCTION cno_case_age_sex(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cno_case_age_sex(text, text) TO cno_coordinator, cno_reader, cno_adjudicator;
"""

def case_keys(connection: PgConnection) -> None:
    """Migration 30 on PostgreSQL: every case's key recorded (the reading study's UID pairs), then :data:`CASE_KEYS`,
    and migration 28's opened records made to find their case by its key."""
    from cno_annotate.packages import record_case_keys
    from cno_annotate.store.db import OFF_WORKLIST_MESSAGE

    studies: dict[str, list[str]] = {}
    for row in connection.execute("SELECT reading_study, study_uid FROM rs_cases ORDER BY reading_study, study_uid"):
        studies.setdefault(row[0], []).append(row[1])
    for name, study_uids in studies.items():
        record_case_keys(connection, name, study_uids)
    connection.script(CASE_KEYS)
    connection.script(_OPENED_BY_KEY.replace("MESSAGE_TEXT", "'" + OFF_WORKLIST_MESSAGE.replace("'", "''") + "'"))


#: Migration 31 on PostgreSQL: the functions an edit calls planned once per session, not once per call.
PLANNED_ONCE = r"""
-- cno_json was declared IMMUTABLE around to_json, which is only STABLE: the planner would not inline it, so every
-- call site in cno_read_state planned "SELECT COALESCE(to_json(v)::text, 'null')" anew at each hash (about
-- twenty plans per edit). STABLE, it is inlined; the text it gives, and so every hash, is the same.
ALTER FUNCTION cno_json(text) STABLE;

-- A SQL function that sets its search path is never inlined and its statements are planned at every call; the same
-- bodies in PL/pgSQL keep their plans for the session. Same results; CREATE OR REPLACE keeps owner and grants.
CREATE OR REPLACE FUNCTION cno_read_json(p_read_id text) RETURNS json
LANGUAGE plpgsql STABLE SET search_path = public, pg_temp AS $$
BEGIN
    RETURN (SELECT json_build_object(
        'row', to_json(r),
        'lesions', COALESCE((SELECT json_agg(json_build_array(lesion_id, data) ORDER BY ordinal)
                             FROM lesions WHERE read_id = r.read_id), '[]'),
        'unit_marks', COALESCE((SELECT json_agg(json_build_array(unit_id, mark) ORDER BY unit_id)
                                FROM unit_marks WHERE read_id = r.read_id), '[]'),
        'unit_grades', COALESCE((SELECT json_agg(json_build_array(unit_id, item_id, grade) ORDER BY unit_id, item_id)
                                 FROM unit_grades WHERE read_id = r.read_id), '[]'),
        'rois', COALESCE((SELECT json_agg(json_build_array(roi_id, data, role) ORDER BY ordinal)
                          FROM rois WHERE read_id = r.read_id), '[]'),
        'outcomes', COALESCE((SELECT json_agg(json_build_array(tracking_uid, status) ORDER BY tracking_uid)
                              FROM followup_outcomes WHERE read_id = r.read_id AND r.prior_read IS NOT NULL), '[]'),
        'active_seconds', COALESCE((SELECT active_seconds FROM read_times WHERE read_id = r.read_id), 0))
    FROM reads r WHERE r.read_id = p_read_id);
END $$;

CREATE OR REPLACE FUNCTION cno_reader_entry_allowed(p_action text, p_entity text, r reads) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = public, pg_temp AS $$
BEGIN
    RETURN CASE
        WHEN p_action = 'create' THEN NOT EXISTS (SELECT 1 FROM audit WHERE entity = p_entity)
        WHEN p_action = 'new-version' THEN r.supersedes IS NOT NULL
                                           AND NOT EXISTS (SELECT 1 FROM audit WHERE entity = p_entity)
        WHEN p_action = 'follow-up' THEN r.prior_read IS NOT NULL
        WHEN p_action = 'submit' THEN r.status = 'submitted'
        ELSE r.status = 'draft' AND cno_reader_edit_action(p_action)
    END;
END $$;

-- Called by every edit too, and not inlined there (a SECURITY DEFINER function never is).
CREATE OR REPLACE FUNCTION cno_is_coordinator() RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    RETURN pg_has_role(session_user, 'cno_coordinator', 'MEMBER')
        OR NOT (pg_has_role(session_user, 'cno_reader', 'MEMBER') OR pg_has_role(session_user, 'cno_adjudicator', 'MEMBER'));
END $$;

CREATE OR REPLACE FUNCTION cno_reader_edit_action(p_action text) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN regexp_replace(p_action, '^(undo|redo) ', '') ~ ('^(add lesion|delete lesion|draw ROI|delete ROI'
        || '|edit (site_id|side|subsite|extent|grades|comment|confidence|position|series_uid|voxel)'
        || '(, (site_id|side|subsite|extent|grades|comment|confidence|position|series_uid|voxel))*'
        || '|mark [A-Za-z0-9_.:-]+|mark [0-9]+ remaining units (no_lesion|not_assessable)'
        || '|grade [A-Za-z0-9_.:-]+ [A-Za-z0-9_.-]+|ROI R[0-9]+ (measurement|muscle|lesion)'
        || '|(persisting|resolved|not assessable|unconfirm) prior lesion)$');
END $$;
"""
