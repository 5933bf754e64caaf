"""The SQLite conventions shared by the local run ledger and the local state store.

Short-lived connections in autocommit mode (transactions are opened explicitly, ``BEGIN
IMMEDIATE`` for read-modify-write), a busy timeout so that processes sharing the file wait for
each other instead of failing, and WAL so that readers never wait for the writer.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator


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
