"""The state store in one SQLite file, ``<state_dir>/state.sqlite3``: the local default.

Safe across threads and processes (two functions-framework servers share the file): every
operation opens its own short-lived connection, the database runs in WAL mode with a busy timeout,
and every read-modify-write is one ``BEGIN IMMEDIATE`` transaction, which takes the write lock
before it reads. A partial unique index keeps at most one OPEN window per route even so.

Tables::

    windows       (window_id PK, route, state, opened_at, last_event_at, item_count, owner,
                   lease_until, claimed_at, claims, manifest_uri, run_key, job_id, job_name,
                   closed_at, expire_at)          one OPEN per route (unique partial index)
    window_items  ((route, item_key) PK, window_id, seq, bucket, object, generation, size,
                   event_id, event_time, added_at, expire_at)
    pending       (route PK, run_key, request_json, queued_at)
    active        (route PK, job_id, job_name, started_at, lease_until, others, revision)
    decisions     (id PK, time, expire_at, route, outcome, object_key, run_key, job_id,
                   window_id, entry)              indexed by object, route, outcome, time, expiry

``expire_at`` of a window and its items is set when the window closes (close time plus
``retention_seconds``); :meth:`SQLiteStore.purge_expired` deletes what expired, a bounded number
of rows per call. Schema version 2 added ``expire_at`` to windows and items and the reservation
fields to ``active``; a version 1 file is migrated when opened, its closed windows expiring
``retention_seconds`` after their close.

(Above ~400 lines on purpose: one implementation of the whole store protocol, each operation one
transaction; split by state kind, the schema and its migration would be spread over files.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from retrain_trigger import _sqlite
from retrain_trigger.errors import StoreError
from retrain_trigger.store.base import (
    DEFAULT_CHAMPION_LIMIT,
    DEFAULT_DECISION_LIMIT,
    DEFAULT_ITEM_PAGE,
    DEFAULT_OBJECT_LIMIT,
    DEFAULT_PAGE_SIZE,
    DEFAULT_PURGE_LIMIT,
    DEFAULT_RETENTION_SECONDS,
    DEFAULT_RUN_LIMIT,
    ActiveJob,
    ChampionChange,
    DecisionRecord,
    Pause,
    Pending,
    RunEnd,
    RunRecord,
    Window,
    WindowInfo,
    WindowItem,
    WindowState,
    champion_id,
    check_object_filter,
    check_page_limit,
    check_page_token,
    check_route,
    check_run_page_token,
    check_run_state,
    ended_record,
    new_window_id,
    object_key,
    page_token_of,
    run_page_key,
    unknown_run,
)
from retrain_trigger.store.base import positive_ttl as _positive

STATE_FILE = "state.sqlite3"
SCHEMA_VERSION = 3
DEFAULT_BUSY_TIMEOUT = _sqlite.DEFAULT_BUSY_TIMEOUT

_SCHEMA = """
CREATE TABLE IF NOT EXISTS windows (
    window_id     TEXT PRIMARY KEY,
    route         TEXT NOT NULL,
    state         TEXT NOT NULL,
    opened_at     REAL NOT NULL,
    last_event_at REAL NOT NULL,
    item_count    INTEGER NOT NULL DEFAULT 0,
    owner         TEXT NOT NULL DEFAULT '',
    lease_until   REAL,
    claimed_at    REAL,
    claims        INTEGER NOT NULL DEFAULT 0,
    manifest_uri  TEXT NOT NULL DEFAULT '',
    run_key       TEXT NOT NULL DEFAULT '',
    job_id        TEXT NOT NULL DEFAULT '',
    job_name      TEXT NOT NULL DEFAULT '',
    closed_at     REAL,
    expire_at     REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS windows_one_open ON windows (route) WHERE state = 'OPEN';
CREATE INDEX IF NOT EXISTS windows_by_state ON windows (state, route, opened_at);
CREATE INDEX IF NOT EXISTS windows_by_route ON windows (route, opened_at);
CREATE TABLE IF NOT EXISTS window_items (
    route       TEXT NOT NULL,
    item_key    TEXT NOT NULL,
    window_id   TEXT NOT NULL REFERENCES windows (window_id),
    seq         INTEGER NOT NULL,
    bucket      TEXT NOT NULL,
    object      TEXT NOT NULL,
    generation  TEXT NOT NULL,
    size        INTEGER,
    event_id    TEXT NOT NULL DEFAULT '',
    event_time  TEXT NOT NULL DEFAULT '',
    added_at    REAL NOT NULL,
    expire_at   REAL,
    PRIMARY KEY (route, item_key)
);
CREATE INDEX IF NOT EXISTS window_items_by_window ON window_items (window_id, seq);
CREATE TABLE IF NOT EXISTS pending (
    route        TEXT PRIMARY KEY,
    run_key      TEXT NOT NULL,
    request_json TEXT NOT NULL,
    queued_at    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS active (
    route       TEXT PRIMARY KEY,
    job_id      TEXT NOT NULL,
    job_name    TEXT NOT NULL DEFAULT '',
    started_at  REAL NOT NULL,
    lease_until REAL,
    others      TEXT NOT NULL DEFAULT '[]',
    revision    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS decisions (
    id         TEXT PRIMARY KEY,
    time       REAL NOT NULL,
    expire_at  REAL NOT NULL,
    route      TEXT NOT NULL DEFAULT '',
    outcome    TEXT NOT NULL DEFAULT '',
    object_key TEXT NOT NULL DEFAULT '',
    run_key    TEXT NOT NULL DEFAULT '',
    job_id     TEXT NOT NULL DEFAULT '',
    window_id  TEXT NOT NULL DEFAULT '',
    entry      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_by_object ON decisions (object_key, time DESC)
    WHERE object_key != '';
CREATE INDEX IF NOT EXISTS decisions_by_route ON decisions (route, time DESC);
CREATE INDEX IF NOT EXISTS decisions_by_outcome ON decisions (outcome, time DESC);
CREATE INDEX IF NOT EXISTS decisions_by_time ON decisions (time DESC);
CREATE INDEX IF NOT EXISTS decisions_by_expiry ON decisions (expire_at);
"""

# Columns added after version 1, with their declarations (ALTER TABLE ... ADD COLUMN).
_ADDED_COLUMNS = (
    ("windows", "expire_at", "REAL"),
    ("window_items", "expire_at", "REAL"),
    ("active", "lease_until", "REAL"),
    ("active", "others", "TEXT NOT NULL DEFAULT '[]'"),
    ("active", "revision", "INTEGER NOT NULL DEFAULT 0"),
)
# Run outcomes (schema version 3): created with the schema, so a version 2 file gains them too.
_RUN_OUTCOMES_SCHEMA = """;
CREATE TABLE IF NOT EXISTS runs (
    job_id      TEXT PRIMARY KEY,
    route       TEXT NOT NULL,
    state       TEXT NOT NULL,
    page_key    TEXT NOT NULL,
    check_after REAL,
    expire_at   REAL,
    record      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_route ON runs (route, page_key);
CREATE INDEX IF NOT EXISTS runs_by_page ON runs (page_key);
CREATE INDEX IF NOT EXISTS runs_to_check ON runs (check_after) WHERE check_after IS NOT NULL;
CREATE INDEX IF NOT EXISTS runs_by_expiry ON runs (expire_at);
CREATE TABLE IF NOT EXISTS champions (
    id         TEXT PRIMARY KEY,
    route      TEXT NOT NULL,
    changed_at REAL NOT NULL,
    expire_at  REAL NOT NULL,
    record     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS champions_by_route ON champions (route, changed_at);
CREATE INDEX IF NOT EXISTS champions_by_expiry ON champions (expire_at);
"""
_EXPIRY_INDEXES = """
CREATE INDEX IF NOT EXISTS windows_by_expiry ON windows (expire_at) WHERE expire_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS window_items_by_expiry ON window_items (expire_at)
    WHERE expire_at IS NOT NULL;
"""

_WINDOW_COLUMNS = (
    "window_id, route, state, opened_at, last_event_at, item_count, owner, lease_until, "
    "claimed_at, claims, manifest_uri, run_key, job_id, job_name, closed_at, expire_at, "
    "(SELECT COALESCE(SUM(i.size), 0) FROM window_items i "
    "WHERE i.window_id = windows.window_id) AS size_bytes"
)


# ``gs://bucket/object`` of a recorded decision, as ``base.entry_object_uri`` reads it from the
# entry (its trigger's bucket and object, else a ``gs://`` ``gs_uri``), for the object filter.
_ENTRY_OBJECT_URI = (
    "CASE WHEN json_type(entry, '$.trigger') = 'object' "
    "AND COALESCE(json_extract(entry, '$.trigger.bucket'), '') != '' "
    "AND COALESCE(json_extract(entry, '$.trigger.object'), '') != '' "
    "THEN 'gs://' || json_extract(entry, '$.trigger.bucket') || '/' "
    "|| json_extract(entry, '$.trigger.object') "
    "WHEN substr(COALESCE(json_extract(entry, '$.gs_uri'), ''), 1, 5) = 'gs://' "
    "THEN json_extract(entry, '$.gs_uri') ELSE '' END"
)


def _store_error(path: str, exc: sqlite3.Error, retryable: bool) -> StoreError:
    """Busy, locked or unreadable: retryable; a file of a newer version is not."""
    return StoreError(f"state store {path}: {exc}", retryable=retryable)


def state_path(state_dir: str | os.PathLike[str]) -> str:
    return os.path.join(os.fspath(state_dir), STATE_FILE)


def _window(row: sqlite3.Row) -> Window:
    return Window(
        window_id=row["window_id"],
        route=row["route"],
        state=WindowState(row["state"]),
        opened_at=row["opened_at"],
        last_event_at=row["last_event_at"],
        count=row["item_count"],
        owner=row["owner"],
        lease_until=row["lease_until"],
        claimed_at=row["claimed_at"],
        claims=row["claims"],
        manifest_uri=row["manifest_uri"],
        run_key=row["run_key"],
        job_id=row["job_id"],
        job_name=row["job_name"],
        closed_at=row["closed_at"],
        expire_at=row["expire_at"],
        size_bytes=int(row["size_bytes"] or 0),
    )


def _active(row: sqlite3.Row | None) -> ActiveJob | None:
    if row is None:
        return None
    return ActiveJob(
        route=row["route"],
        job_id=row["job_id"],
        job_name=row["job_name"],
        started_at=row["started_at"],
        lease_until=row["lease_until"],
        others=tuple(json.loads(row["others"] or "[]")),
        revision=row["revision"],
    )


class SQLiteStore:
    """The :class:`~retrain_trigger.store.base.StateStore` on one SQLite file."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        clock: Callable[[], float] = time.time,
        retention_seconds: float = DEFAULT_RETENTION_SECONDS,
    ) -> None:
        if retention_seconds <= 0:
            raise ValueError(f"retention_seconds must be positive, got {retention_seconds!r}")
        self.path = os.fspath(path)
        self.busy_timeout = busy_timeout
        self.retention_seconds = float(retention_seconds)
        self._clock = clock
        self._db = _sqlite.Database(self.path, error=_store_error, busy_timeout=busy_timeout)
        self._db.init_schema(_SCHEMA + _RUN_OUTCOMES_SCHEMA, SCHEMA_VERSION, self._migrate)

    @classmethod
    def for_state_dir(cls, state_dir: str | os.PathLike[str], **kwargs: Any) -> SQLiteStore:
        return cls(state_path(state_dir), **kwargs)

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    # -- connections (the shared SQLite base: retrain_trigger._sqlite) ------------------------

    def _read(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return self._db.read()

    def _write(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """One transaction holding the write lock from its start (``BEGIN IMMEDIATE``)."""
        return self._db.write()

    def _migrate(self, conn: sqlite3.Connection, version: int) -> None:
        """Adds what version 2 added to a file of an earlier version (a new file: version 0)."""
        for table, column, declaration in _ADDED_COLUMNS:
            have = {row["name"] for row in conn.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
        for statement in _EXPIRY_INDEXES.split(";"):
            if statement.strip():
                conn.execute(statement)
        if version >= 1:  # windows closed before expiry existed: kept for the retention from now
            conn.execute(
                "UPDATE windows SET expire_at = closed_at + ? "
                "WHERE state = 'CLOSED' AND expire_at IS NULL",
                (self.retention_seconds,),
            )
            conn.execute(
                "UPDATE window_items SET expire_at = ("
                "SELECT w.expire_at FROM windows w WHERE w.window_id = window_items.window_id) "
                "WHERE expire_at IS NULL AND window_id IN "
                "(SELECT window_id FROM windows WHERE state = 'CLOSED')"
            )

    def close(self) -> None:
        """Nothing to release: connections live for one operation."""

    # -- run outcomes (version 3: the runs and champions tables, created with the schema) -----

    def record_run(self, record: RunRecord, ttl_seconds: float) -> RunRecord:
        check_route(record.route)
        check_run_state(record.state)
        expire_at = record.submitted_at + _positive(ttl_seconds)
        with self._write() as conn:
            row = conn.execute("SELECT record FROM runs WHERE job_id = ?", (record.job_id,))
            found = row.fetchone()
            if found:
                return RunRecord.from_dict(json.loads(found["record"]))
            stored = dataclasses.replace(record, expire_at=expire_at)
            self._put_run(conn, stored)
            return stored

    @staticmethod
    def _put_run(conn: sqlite3.Connection, record: RunRecord) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO runs (job_id, route, state, page_key, check_after, "
            "expire_at, record) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                record.job_id,
                record.route,
                record.state,
                run_page_key(record),
                record.check_after,
                record.expire_at,
                json.dumps(record.to_dict(), sort_keys=True, default=str),
            ),
        )

    def get_run(self, job_id: str) -> RunRecord | None:
        with self._read() as conn:
            row = conn.execute("SELECT record FROM runs WHERE job_id = ?", (job_id,)).fetchone()
        return RunRecord.from_dict(json.loads(row["record"])) if row else None

    def end_run(self, end: RunEnd, ttl_seconds: float) -> tuple[RunRecord, bool]:
        check_run_state(end.state)
        ttl = _positive(ttl_seconds)
        with self._write() as conn:
            row = conn.execute("SELECT record FROM runs WHERE job_id = ?", (end.job_id,))
            found = row.fetchone()
            record = RunRecord.from_dict(json.loads(found["record"])) if found else None
            if record is not None and record.ended:
                return record, False
            if record is None:
                record = unknown_run(end)
            ended = ended_record(record, end, end.ended_at + ttl)
            self._put_run(conn, ended)
            return ended, True

    def runs_to_check(self, now: float, limit: int = 100) -> list[RunRecord]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT record FROM runs WHERE state NOT IN ('SUCCEEDED', 'FAILED', "
                "'CANCELLED') AND check_after IS NOT NULL AND check_after <= ? "
                "ORDER BY check_after LIMIT ?",
                (now, max(int(limit), 0)),
            ).fetchall()
        return [RunRecord.from_dict(json.loads(row["record"])) for row in rows]

    def defer_check(self, job_id: str, check_after: float) -> None:
        with self._write() as conn:
            row = conn.execute("SELECT record FROM runs WHERE job_id = ?", (job_id,)).fetchone()
            if row is None:
                return
            record = RunRecord.from_dict(json.loads(row["record"]))
            if record.ended:
                return
            self._put_run(conn, dataclasses.replace(record, check_after=check_after))

    def mark_notified(self, job_id: str) -> None:
        with self._write() as conn:
            row = conn.execute("SELECT record FROM runs WHERE job_id = ?", (job_id,)).fetchone()
            if row is not None:
                record = RunRecord.from_dict(json.loads(row["record"]))
                self._put_run(conn, dataclasses.replace(record, notified=True))

    def list_runs(
        self, route: str | None, limit: int = DEFAULT_RUN_LIMIT, page_token: str | None = None
    ) -> tuple[list[RunRecord], str | None]:
        size = max(int(limit), 1)
        sql = "SELECT page_key, record FROM runs WHERE 1 = 1"
        args: list[Any] = []
        if route:
            sql += " AND route = ?"
            args.append(check_route(route))
        if page_token:
            sql += " AND page_key > ?"
            args.append(check_run_page_token(page_token))
        sql += " ORDER BY page_key LIMIT ?"
        args.append(size + 1)
        with self._read() as conn:
            rows = conn.execute(sql, args).fetchall()
        records = [RunRecord.from_dict(json.loads(row["record"])) for row in rows[:size]]
        token = rows[size - 1]["page_key"] if len(rows) > size else None
        return records, token

    def record_champion(self, change: ChampionChange, ttl_seconds: float) -> bool:
        check_route(change.route)
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO champions (id, route, changed_at, expire_at, record) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    champion_id(change),
                    change.route,
                    change.changed_at,
                    change.changed_at + _positive(ttl_seconds),
                    json.dumps(change.to_dict(), sort_keys=True),
                ),
            )
            return cursor.rowcount > 0

    def champion_history(
        self, route: str, limit: int = DEFAULT_CHAMPION_LIMIT
    ) -> list[ChampionChange]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT record FROM (SELECT record, changed_at, id FROM champions "
                "WHERE route = ? ORDER BY changed_at DESC, id DESC LIMIT ?) "
                "ORDER BY changed_at, id",
                (check_route(route), max(int(limit), 1)),
            ).fetchall()
        return [ChampionChange.from_dict(json.loads(row["record"])) for row in rows]

    def _purge_run_outcomes(self, now: float, budget: int) -> int:
        deleted = 0
        for table in ("runs", "champions"):
            if deleted >= budget:
                break
            with self._write() as conn:
                deleted += conn.execute(
                    f"DELETE FROM {table} WHERE rowid IN "
                    f"(SELECT rowid FROM {table} WHERE expire_at <= ? LIMIT ?)",
                    (now, budget - deleted),
                ).rowcount
        return deleted

    # -- end of run outcomes ------------------------------------------------------------------

    # -- windows -----------------------------------------------------------------------------

    @staticmethod
    def _get_window(conn: sqlite3.Connection, window_id: str) -> Window | None:
        row = conn.execute(
            f"SELECT {_WINDOW_COLUMNS} FROM windows WHERE window_id = ?", (window_id,)
        ).fetchone()
        return _window(row) if row else None

    def add_to_window(self, route: str, item: WindowItem, now: float) -> WindowInfo:
        check_route(route)
        with self._write() as conn:
            held = conn.execute(
                "SELECT i.window_id, i.added_at, w.state, w.opened_at FROM window_items i "
                "JOIN windows w ON w.window_id = i.window_id "
                "WHERE i.route = ? AND i.item_key = ?",
                (route, item.key),
            ).fetchone()
            if held:
                return WindowInfo(
                    window_id=held["window_id"],
                    route=route,
                    state=WindowState(held["state"]),
                    count=None,
                    opened_at=held["opened_at"],
                    last_event_at=held["added_at"],
                    added=False,
                )
            row = conn.execute(
                "SELECT window_id, opened_at, item_count FROM windows "
                "WHERE route = ? AND state = 'OPEN'",
                (route,),
            ).fetchone()
            if row is None:
                window_id = new_window_id(route, now)
                opened_at = now
                conn.execute(
                    "INSERT INTO windows (window_id, route, state, opened_at, last_event_at) "
                    "VALUES (?, ?, 'OPEN', ?, ?)",
                    (window_id, route, now, now),
                )
                seq = 0
            else:
                window_id, opened_at, seq = row["window_id"], row["opened_at"], row["item_count"]
            conn.execute(
                "INSERT INTO window_items (route, item_key, window_id, seq, bucket, object, "
                "generation, size, event_id, event_time, added_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    route,
                    item.key,
                    window_id,
                    seq,
                    item.bucket,
                    item.object,
                    item.generation,
                    item.size,
                    item.event_id,
                    item.event_time,
                    now,
                ),
            )
            # One writer at a time holds the file anyway: the row's count and time stay exact.
            conn.execute(
                "UPDATE windows SET item_count = item_count + 1, "
                "last_event_at = MAX(last_event_at, ?) WHERE window_id = ?",
                (now, window_id),
            )
            return WindowInfo(
                window_id=window_id,
                route=route,
                state=WindowState.OPEN,
                count=None,
                opened_at=opened_at,
                last_event_at=now,
                added=True,
            )

    def due_windows(
        self, route: str | None, now: float, quiet_seconds: float, max_wait_seconds: float
    ) -> list[WindowInfo]:
        sql = f"SELECT {_WINDOW_COLUMNS} FROM windows WHERE state IN ('OPEN', 'CLOSING')"
        args: tuple[Any, ...] = ()
        if route is not None:
            sql += " AND route = ?"
            args = (check_route(route),)
        with self._read() as conn:
            windows = [_window(row) for row in conn.execute(sql + " ORDER BY opened_at", args)]
        return [w.info() for w in windows if w.due(now, quiet_seconds, max_wait_seconds)]

    def claim_window(
        self, window_id: str, owner: str, now: float, lease_seconds: float
    ) -> Window | None:
        if not owner:
            raise ValueError("a window claim needs an owner")
        with self._write() as conn:
            window = self._get_window(conn, window_id)
            if window is None or window.state is WindowState.CLOSED:
                return None
            if window.state is WindowState.CLOSING and not (
                window.owner == owner or window.lease_expired(now)
            ):
                return None
            conn.execute(
                "UPDATE windows SET state = 'CLOSING', owner = ?, lease_until = ?, "
                "claimed_at = ?, claims = claims + 1 WHERE window_id = ?",
                (owner, now + lease_seconds, now, window_id),
            )
            return self._get_window(conn, window_id)

    def window_items(self, window_id: str) -> list[WindowItem]:
        return list(self.iter_window_items(window_id))

    def iter_window_items(
        self, window_id: str, page_size: int = DEFAULT_ITEM_PAGE
    ) -> Iterator[WindowItem]:
        """Pages of ``page_size`` rows, each one short read after the last ``seq`` seen."""
        if page_size < 1:
            raise ValueError(f"page_size must be at least 1, got {page_size!r}")
        after = -1
        while True:
            with self._read() as conn:
                rows = conn.execute(
                    "SELECT seq, bucket, object, generation, size, event_id, event_time, added_at "
                    "FROM window_items WHERE window_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                    (window_id, after, page_size),
                ).fetchall()
            for row in rows:
                yield WindowItem.from_dict(dict(row))
            if len(rows) < page_size:
                return
            after = rows[-1]["seq"]

    def set_window_manifest(
        self, window_id: str, manifest_uri: str, run_key: str, job_id: str
    ) -> Window:
        if not run_key or not job_id:
            raise ValueError("a window manifest needs a run key and a job id")
        with self._write() as conn:
            window = self._get_window(conn, window_id)
            if window is None:
                raise LookupError(f"no window {window_id!r}")
            if window.state is WindowState.OPEN:
                raise ValueError(f"window {window_id!r} is OPEN: claim it first")
            if window.run_key or window.state is not WindowState.CLOSING:
                return window
            conn.execute(
                "UPDATE windows SET manifest_uri = ?, run_key = ?, job_id = ? WHERE window_id = ?",
                (manifest_uri, run_key, job_id, window_id),
            )
            updated = self._get_window(conn, window_id)
            assert updated is not None
            return updated

    def close_window(
        self, window_id: str, owner: str, job_name: str, now: float | None = None
    ) -> bool:
        closed_at = self._clock() if now is None else now
        with self._write() as conn:
            window = self._get_window(conn, window_id)
            if window is None or window.owner != owner:
                return False
            if window.state is WindowState.CLOSED:
                return True
            if window.state is not WindowState.CLOSING:
                return False
            expire_at = closed_at + self.retention_seconds
            conn.execute(
                "UPDATE windows SET state = 'CLOSED', job_name = ?, closed_at = ?, "
                "lease_until = NULL, expire_at = ? WHERE window_id = ?",
                (job_name, closed_at, expire_at, window_id),
            )
            conn.execute(
                "UPDATE window_items SET expire_at = ? WHERE window_id = ?",
                (expire_at, window_id),
            )
            return True

    def get_window(self, window_id: str) -> Window | None:
        with self._read() as conn:
            return self._get_window(conn, window_id)

    def list_windows(self, route: str, state: WindowState | str | None = None) -> list[Window]:
        sql = f"SELECT {_WINDOW_COLUMNS} FROM windows WHERE route = ?"
        args: tuple[Any, ...] = (check_route(route),)
        if state is not None:
            sql += " AND state = ?"
            args += (str(WindowState(state)),)
        with self._read() as conn:
            return [_window(row) for row in conn.execute(sql + " ORDER BY opened_at", args)]

    # -- concurrency -------------------------------------------------------------------------

    @staticmethod
    def _pending(row: sqlite3.Row | None) -> Pending | None:
        if row is None:
            return None
        return Pending(
            route=row["route"],
            run_key=row["run_key"],
            request_json=row["request_json"],
            queued_at=row["queued_at"],
        )

    def set_pending(
        self, route: str, request_json: str, run_key: str, now: float
    ) -> Pending | None:
        check_route(route)
        with self._write() as conn:
            previous = self._pending(
                conn.execute("SELECT * FROM pending WHERE route = ?", (route,)).fetchone()
            )
            conn.execute(
                "INSERT OR REPLACE INTO pending (route, run_key, request_json, queued_at) "
                "VALUES (?, ?, ?, ?)",
                (route, run_key, request_json, now),
            )
            return previous

    def take_pending(self, route: str, run_key: str = "") -> Pending | None:
        check_route(route)
        with self._write() as conn:
            pending = self._pending(
                conn.execute("SELECT * FROM pending WHERE route = ?", (route,)).fetchone()
            )
            if pending is None or (run_key and pending.run_key != run_key):
                return None
            conn.execute("DELETE FROM pending WHERE route = ?", (route,))
            return pending

    def get_pending(self, route: str) -> Pending | None:
        check_route(route)
        with self._read() as conn:
            return self._pending(
                conn.execute("SELECT * FROM pending WHERE route = ?", (route,)).fetchone()
            )

    def set_active(
        self,
        route: str,
        job_id: str,
        job_name: str,
        now: float,
        *,
        expect_job_id: str | None = None,
        expect_revision: int | None = None,
        lease_seconds: float | None = None,
    ) -> bool:
        check_route(route)
        lease_until = None if lease_seconds is None else now + lease_seconds
        with self._write() as conn:
            current = _active(
                conn.execute("SELECT * FROM active WHERE route = ?", (route,)).fetchone()
            )
            if expect_job_id is not None and (current.job_id if current else "") != expect_job_id:
                return False
            if expect_revision is not None and (current.revision if current else 0) != (
                expect_revision
            ):
                return False
            others = [j for j in (current.others if current else ()) if j != job_id]
            conn.execute(
                "INSERT OR REPLACE INTO active (route, job_id, job_name, started_at, lease_until, "
                "others, revision) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    route,
                    job_id,
                    job_name,
                    now,
                    lease_until,
                    json.dumps(others),
                    (current.revision if current else 0) + 1,
                ),
            )
            return True

    def get_active(self, route: str) -> ActiveJob | None:
        check_route(route)
        with self._read() as conn:
            return _active(
                conn.execute("SELECT * FROM active WHERE route = ?", (route,)).fetchone()
            )

    def track_active(self, route: str, job_id: str, job_name: str, now: float) -> None:
        check_route(route)
        with self._write() as conn:
            current = _active(
                conn.execute("SELECT * FROM active WHERE route = ?", (route,)).fetchone()
            )
            if current is None:
                conn.execute(
                    "INSERT INTO active (route, job_id, job_name, started_at, revision) "
                    "VALUES (?, ?, ?, ?, 1)",
                    (route, job_id, job_name, now),
                )
            elif job_id != current.job_id and job_id not in current.others:
                conn.execute(
                    "UPDATE active SET others = ? WHERE route = ?",
                    (json.dumps([*current.others, job_id]), route),
                )

    def clear_active(self, route: str, job_id: str) -> bool:
        check_route(route)
        with self._write() as conn:
            current = _active(
                conn.execute("SELECT * FROM active WHERE route = ?", (route,)).fetchone()
            )
            if current is None:
                return False
            if job_id in current.others:
                others = [j for j in current.others if j != job_id]
                conn.execute(
                    "UPDATE active SET others = ? WHERE route = ?", (json.dumps(others), route)
                )
                return True
            if job_id != current.job_id:
                return False
            if not current.others:
                conn.execute("DELETE FROM active WHERE route = ?", (route,))
                return True
            conn.execute(
                "UPDATE active SET job_id = ?, job_name = '', lease_until = NULL, others = ?, "
                "revision = revision + 1 WHERE route = ?",
                (current.others[0], json.dumps(list(current.others[1:])), route),
            )
            return True

    # -- decision history --------------------------------------------------------------------

    def record_decision(self, entry: Mapping[str, Any], ttl_seconds: float) -> str:
        record = DecisionRecord.prepare(entry, ttl_seconds, self._clock())
        with self._read() as conn:
            conn.execute(
                "INSERT INTO decisions (id, time, expire_at, route, outcome, object_key, "
                "run_key, job_id, window_id, entry) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.time,
                    record.expire_at,
                    record.route,
                    record.outcome,
                    record.object_key,
                    record.run_key,
                    record.job_id,
                    record.window_id,
                    record.entry_json,
                ),
            )
        return record.id

    def decisions_for_object(
        self, gs_uri: str, limit: int = DEFAULT_OBJECT_LIMIT
    ) -> list[dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT id, entry, expire_at FROM decisions "
                "WHERE object_key = ? AND object_key != '' AND expire_at > ? "
                "ORDER BY time DESC, id DESC LIMIT ?",
                (object_key(gs_uri), self._clock(), max(int(limit), 0)),
            ).fetchall()
        return [DecisionRecord.output(r["id"], r["entry"], r["expire_at"]) for r in rows]

    def list_decisions(
        self,
        since: float,
        until: float | None = None,
        route: str | None = None,
        outcome: str | None = None,
        limit: int = DEFAULT_DECISION_LIMIT,
    ) -> list[dict[str, Any]]:
        sql = "SELECT id, entry, expire_at FROM decisions WHERE time >= ? AND expire_at > ?"
        args: list[Any] = [since, self._clock()]
        if until is not None:
            sql += " AND time < ?"
            args.append(until)
        if route is not None:
            sql += " AND route = ?"
            args.append(route)
        if outcome is not None:
            sql += " AND outcome = ?"
            args.append(str(outcome))
        sql += " ORDER BY time DESC, id DESC LIMIT ?"
        args.append(max(int(limit), 0))
        with self._read() as conn:
            rows = conn.execute(sql, args).fetchall()
        return [DecisionRecord.output(r["id"], r["entry"], r["expire_at"]) for r in rows]

    # -- pauses ------------------------------------------------------------------------
    # A table of its own, created by the first pause (so that a file written before pauses
    # existed needs no migration: no table means no route is paused).

    _PAUSES = (
        "CREATE TABLE IF NOT EXISTS pauses (route TEXT PRIMARY KEY, reason TEXT NOT NULL, "
        "by_whom TEXT NOT NULL, paused_at REAL NOT NULL)"
    )

    @staticmethod
    def _pause(row: sqlite3.Row) -> Pause:
        return Pause(
            route=row["route"], reason=row["reason"], by=row["by_whom"], paused_at=row["paused_at"]
        )

    def _pause_rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._read() as conn:
            try:
                return list(conn.execute(sql, args))
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return []
                raise

    def set_pause(self, route: str, reason: str, by: str, now: float) -> Pause:
        check_route(route)
        with self._write() as conn:
            conn.execute(self._PAUSES)
            conn.execute(
                "INSERT OR REPLACE INTO pauses (route, reason, by_whom, paused_at) "
                "VALUES (?, ?, ?, ?)",
                (route, reason, by, now),
            )
        return Pause(route=route, reason=reason, by=by, paused_at=now)

    def clear_pause(self, route: str) -> bool:
        check_route(route)
        with self._write() as conn:
            conn.execute(self._PAUSES)
            return conn.execute("DELETE FROM pauses WHERE route = ?", (route,)).rowcount > 0

    def get_pause(self, route: str) -> Pause | None:
        check_route(route)
        rows = self._pause_rows("SELECT * FROM pauses WHERE route = ?", (route,))
        return self._pause(rows[0]) if rows else None

    def paused_routes(self) -> dict[str, Pause]:
        rows = self._pause_rows("SELECT * FROM pauses ORDER BY route")
        return {row["route"]: self._pause(row) for row in rows}

    # -- end pauses --------------------------------------------------------------------

    def purge_expired(self, now: float, limit: int = DEFAULT_PURGE_LIMIT) -> int:
        """Decisions first, then window items, then the windows left without items (a window's
        items go before it: they reference it)."""
        budget = max(int(limit), 0)
        deleted = 0
        statements = (
            "DELETE FROM decisions WHERE rowid IN "
            "(SELECT rowid FROM decisions WHERE expire_at <= ? LIMIT ?)",
            "DELETE FROM window_items WHERE rowid IN "
            "(SELECT rowid FROM window_items WHERE expire_at <= ? LIMIT ?)",
            "DELETE FROM windows WHERE window_id IN (SELECT w.window_id FROM windows w "
            "WHERE w.expire_at <= ? AND NOT EXISTS "
            "(SELECT 1 FROM window_items i WHERE i.window_id = w.window_id) LIMIT ?)",
        )
        for statement in statements:
            if deleted >= budget:
                break
            with self._write() as conn:
                deleted += conn.execute(statement, (now, budget - deleted)).rowcount
        if deleted < budget:  # run outcomes
            deleted += self._purge_run_outcomes(now, budget - deleted)
        return deleted

    # -- decision paging (the status page) ---------------------------------------------------

    def page_decisions(
        self,
        route: str | None = None,
        outcome: str | None = None,
        object_contains: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        page_token: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first by time, then id; the page token is the (time, id) of the previous page's
        last decision, so a page is one indexed range however deep it is."""
        limit = check_page_limit(limit)
        after = check_page_token(page_token)
        needle = check_object_filter(object_contains)
        sql = "SELECT id, time, entry, expire_at FROM decisions WHERE expire_at > ?"
        args: list[Any] = [self._clock()]
        if after is not None:
            sql += " AND (time < ? OR (time = ? AND id < ?))"
            args.extend([after[0], after[0], after[1]])
        if route is not None:
            sql += " AND route = ?"
            args.append(str(route))
        if outcome is not None:
            sql += " AND outcome = ?"
            args.append(str(outcome))
        if needle is not None:
            sql += f" AND object_key != '' AND instr({_ENTRY_OBJECT_URI}, ?) > 0"
            args.append(needle)
        sql += " ORDER BY time DESC, id DESC LIMIT ?"
        args.append(limit + 1)
        with self._read() as conn:
            rows = conn.execute(sql, args).fetchall()
        page = [DecisionRecord.output(r["id"], r["entry"], r["expire_at"]) for r in rows[:limit]]
        last = rows[limit - 1] if len(rows) > limit else None
        return page, (page_token_of(last["time"], last["id"]) if last is not None else None)
