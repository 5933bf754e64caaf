"""The one SQLite base, shared by the local state store and the local run ledger.

:class:`Database` is one file used by many threads and processes at once:

- short-lived connections in autocommit mode: each operation opens its own, so an instance may
  be shared between threads and survives ``fork``;
- WAL, so that readers never wait for the writer;
- a busy timeout (:data:`DEFAULT_BUSY_TIMEOUT`), so that processes sharing the file wait for
  each other instead of failing at once;
- :meth:`Database.write`: one transaction holding the write lock from its start
  (``BEGIN IMMEDIATE``), for every read-modify-write, rolled back on any error;
- a versioned schema (``PRAGMA user_version``), created or migrated when the file is opened;
- one error convention: every ``sqlite3.Error`` leaving an operation becomes the exception the
  owner names (``StoreError`` for the store, ``BackendUnavailable`` for the ledger), with the
  file's path in its message.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator

# Seconds a writer waits for another's write lock before its operation fails (retryably).
DEFAULT_BUSY_TIMEOUT = 10.0

# (path, what failed, whether retrying can help) -> the exception to raise instead.
ErrorFactory = Callable[[str, sqlite3.Error, bool], Exception]
Migration = Callable[[sqlite3.Connection, int], None]


def connect(path: str, busy_timeout: float, *, synchronous: str = "NORMAL") -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def use_wal(conn: sqlite3.Connection, path: str) -> None:
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":  # pragma: no cover - e.g. a file system without shm
        raise sqlite3.OperationalError(f"cannot switch {path} to WAL mode (got {mode})")


@contextlib.contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One transaction holding the write lock from its start; rolled back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class Database:
    """One SQLite file; see the module's documentation."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        error: ErrorFactory,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        synchronous: str = "NORMAL",
    ) -> None:
        self.path = os.fspath(path)
        self.busy_timeout = busy_timeout
        self.synchronous = synchronous
        self._error = error
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)

    def connect(self) -> sqlite3.Connection:
        """A new connection in autocommit mode (transactions are opened explicitly)."""
        return connect(self.path, self.busy_timeout, synchronous=self.synchronous)

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A connection for one operation; closed after it, its errors mapped."""
        try:
            conn = self.connect()
        except sqlite3.Error as exc:
            raise self._error(self.path, exc, True) from exc
        try:
            yield conn
        except sqlite3.Error as exc:
            raise self._error(self.path, exc, True) from exc
        finally:
            conn.close()

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One transaction holding the write lock from its start (``BEGIN IMMEDIATE``)."""
        with self.read() as conn, immediate(conn):
            yield conn

    def init_schema(self, schema: str, version: int, migrate: Migration | None = None) -> None:
        """Switches to WAL and creates the tables; a file of an earlier schema version is
        migrated (``migrate(conn, its version)``) in the same transaction. A file of a newer
        version is the owner's error, one that retrying cannot fix."""
        with self.read() as conn:
            use_wal(conn, self.path)
            with immediate(conn):
                found = conn.execute("PRAGMA user_version").fetchone()[0]
                if found > version:
                    newer = sqlite3.DatabaseError(
                        f"{self.path} has schema version {found}, newer than {version}"
                    )
                    raise self._error(self.path, newer, False)
                for statement in schema.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                if found < version and migrate is not None:
                    migrate(conn, found)
                conn.execute(f"PRAGMA user_version = {version}")
