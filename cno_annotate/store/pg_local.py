"""A throwaway PostgreSQL server in a folder, on loopback: for the tests, the benchmark, and trying a shared store.

Debian's ``postgresql`` package installs ``initdb`` and ``pg_ctl`` under
``/usr/lib/postgresql/VERSION/bin``; the server runs as the calling user, or
as ``nobody`` when called as root (PostgreSQL refuses to run as root), in a
folder that user owns, listening on 127.0.0.1 only.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

OWNER = "cno_owner"


def server_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl`` (the newest Debian version), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).resolve().parent if pg_ctl else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class LocalServer:
    """A running server: its folder, port and the owner's password; :meth:`stop` ends it."""

    folder: Path
    port: int
    password: str
    run_as: str | None
    binaries: Path

    @property
    def passfile(self) -> Path:
        """A libpq password file (``PGPASSFILE``) with the owner's password and those :meth:`remember` added."""
        return self.folder / "pgpass"

    def remember(self, user: str, password: str) -> None:
        """Add a login's password to :attr:`passfile`, so URLs need not carry it."""
        with open(self.passfile, "a", encoding="utf-8") as out:
            out.write(f"127.0.0.1:{self.port}:*:{user}:{password}\n")
        os.chmod(self.passfile, 0o600)

    def url(self, database: str = "postgres", user: str = OWNER, password: str | None = None) -> str:
        """A connection URL for a login role (the owner by default); with ``password``, it is in the URL."""
        auth = f"{user}:{password}" if password else user
        if user == OWNER and password is None:
            auth = f"{user}:{self.password}"
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def plain_url(self, database: str = "postgres", user: str = OWNER) -> str:
        """A connection URL without a password (libpq finds it in ``PGPASSFILE``)."""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; its URL for the owner."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def stop(self) -> None:
        """Stop the server at once (its data is thrown away) and remove its folder."""
        _run([str(self.binaries / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop"],
             self.run_as, check=False)
        shutil.rmtree(self.folder, ignore_errors=True)


def _run(command: list[str], run_as: str | None, check: bool = True) -> subprocess.CompletedProcess:
    if run_as is not None:
        command = ["runuser", "-u", run_as, "--", *command]
    return subprocess.run(command, check=check, capture_output=True, text=True)


def start(binaries: Path | None = None, durable: bool = True) -> LocalServer:
    """Create a cluster in a temporary folder and start it on 127.0.0.1 and a free port.

    ``durable=False`` (tests) turns ``fsync`` off: a commit is not on disk when it
    returns, which a throwaway server does not need and which makes creating a
    database per test quick. The benchmark keeps it on.

    Raises
    ------
    RuntimeError
        If the server binaries are missing or the server does not start (with its log).
    """
    binaries = binaries or server_binaries()
    if binaries is None:
        raise RuntimeError("PostgreSQL server binaries not found (Debian: apt-get install postgresql)")
    run_as = "nobody" if os.geteuid() == 0 else None
    folder = Path(tempfile.mkdtemp(prefix="cno-pg-"))
    password = secrets.token_hex(16)
    (folder / "pw").write_text(password + "\n")
    if run_as is not None:
        import pwd

        entry = pwd.getpwnam(run_as)
        os.chmod(folder, 0o700)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
        os.chown(folder / "pw", entry.pw_uid, entry.pw_gid)
    data = folder / "data"
    try:
        _run([str(binaries / "initdb"), "-D", str(data), "-U", OWNER, "--pwfile", str(folder / "pw"),
              "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
              "--no-sync"], run_as)
        port = _free_port()
        options = (f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={folder} "
                   f"-c fsync={'on' if durable else 'off'} -c max_connections=60 -c shared_buffers=32MB")
        _run([str(binaries / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-o", options, "-w",
              "-t", "60", "start"], run_as)
    except subprocess.CalledProcessError as exc:
        log = (folder / "log").read_text() if (folder / "log").exists() else ""
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {exc.stderr or exc.stdout}{log[-2000:]}") from None
    (folder / "pw").unlink()
    server = LocalServer(folder, port, password, run_as, binaries)
    server.remember(OWNER, password)
    return server
