"""The local run ledger: one SQLite file shared by every local process.

The ledger at ``<state_dir>/runs.sqlite3`` is the interface between the processes of the local
stack: the functions and the CLI insert PENDING runs, workers claim them, and each run's own process
records its heartbeat and its result. Every state change is one short transaction; claims take the
write lock first (``BEGIN IMMEDIATE``), so two workers, in one process or in two, never claim the
same run and never start more than the concurrency bound allows.

States are Vertex's ``PipelineState`` names without the prefix::

    PENDING -> RUNNING -> SUCCEEDED | FAILED
    PENDING -> CANCELLED
    RUNNING -> CANCELLING -> CANCELLED (or SUCCEEDED, when the run ended first)
    RUNNING -> PENDING (its worker died before starting the run's process: it never ran)

A claim carries a random token; the run's process registers itself with it (``set_run_pid``)
before doing anything, so a run given back to the queue is never executed by a stale process.

The database is the shared SQLite base (:mod:`retrain_trigger._sqlite`): WAL mode (readers never
wait for the writer) and a busy timeout, so a submit waits at most that long for the write lock
before it fails with a retryable error; every SQLite error leaves the ledger as
``BackendUnavailable``.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import math
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from retrain_trigger import _sqlite
from retrain_trigger.constants import FINAL_STATES, rfc3339
from retrain_trigger.errors import BackendRefused, BackendUnavailable, SubmitError
from retrain_trigger_dev.processes import process_alive

if TYPE_CHECKING:
    from retrain_trigger.backends.base import JobStatus

LEDGER_FILE = "runs.sqlite3"
RUNS_DIR = "runs"
SCHEMA_VERSION = 2
DEFAULT_BUSY_TIMEOUT = _sqlite.DEFAULT_BUSY_TIMEOUT

PENDING = "PENDING"
RUNNING = "RUNNING"
CANCELLING = "CANCELLING"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
# Claimed by a worker: the states in which a run has (or is about to have) a process.
CLAIMED = (RUNNING, CANCELLING)

WORKER_GONE = "worker exited before the run finished"
MAX_ERROR_CHARS = 2000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS templates (
    digest      TEXT PRIMARY KEY,
    uri         TEXT NOT NULL,
    raw         BLOB NOT NULL,
    create_time REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    job_id          TEXT PRIMARY KEY,
    job_name        TEXT NOT NULL,
    run_key         TEXT NOT NULL DEFAULT '',
    route           TEXT NOT NULL DEFAULT '',
    display_name    TEXT NOT NULL DEFAULT '',
    template_uri    TEXT NOT NULL DEFAULT '',
    template_digest TEXT NOT NULL REFERENCES templates (digest),
    state           TEXT NOT NULL,
    create_time     REAL NOT NULL,
    start_time      REAL,
    end_time        REAL,
    parameters      TEXT NOT NULL DEFAULT '{}',
    labels          TEXT NOT NULL DEFAULT '{}',
    request         TEXT NOT NULL DEFAULT '{}',
    outputs         TEXT NOT NULL DEFAULT '{}',
    log_path        TEXT NOT NULL DEFAULT '',
    error           TEXT NOT NULL DEFAULT '',
    worker_host     TEXT NOT NULL DEFAULT '',
    worker_pid      INTEGER,
    run_pid         INTEGER,
    claim_token     TEXT,
    heartbeat       REAL
);
CREATE INDEX IF NOT EXISTS runs_by_state ON runs (state, create_time);
CREATE INDEX IF NOT EXISTS runs_by_route ON runs (route, create_time);
CREATE INDEX IF NOT EXISTS runs_by_time ON runs (create_time);
CREATE TABLE IF NOT EXISTS outcome_reports (
    job_id      TEXT PRIMARY KEY REFERENCES runs (job_id),
    reported_at REAL NOT NULL
);
"""

_COLUMNS = (
    "job_id, job_name, run_key, route, display_name, template_uri, template_digest, state, "
    "create_time, start_time, end_time, parameters, labels, request, outputs, log_path, error, "
    "worker_host, worker_pid, run_pid, claim_token, heartbeat"
)


def _ledger_error(path: str, exc: sqlite3.Error, retryable: bool) -> SubmitError:
    """The ledger could not be read or written (locked past the busy timeout, unreadable): the
    submission or the worker's pass fails retryably; a ledger of a newer version is refused."""
    kind = BackendUnavailable if retryable else BackendRefused
    return kind(f"local run ledger {path}: {exc}")


def ledger_path(state_dir: str | os.PathLike[str]) -> str:
    return os.path.join(os.fspath(state_dir), LEDGER_FILE)


def run_dir(state_dir: str | os.PathLike[str], job_id: str) -> str:
    """Where one run keeps its template copy, its log and its local pipeline root."""
    return os.path.join(os.fspath(state_dir), RUNS_DIR, job_id)


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False, default=str)


def _loads(text: str | None) -> Any:
    if not text:
        return {}
    try:
        return json.loads(text)
    except ValueError:
        return {}


@dataclass(frozen=True)
class RunRecord:
    """One row of the ledger. Times are seconds since the epoch."""

    job_id: str
    job_name: str
    state: str
    create_time: float
    run_key: str = ""
    route: str = ""
    display_name: str = ""
    template_uri: str = ""
    template_digest: str = ""
    start_time: float | None = None
    end_time: float | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    request: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    log_path: str = ""
    error: str = ""
    worker_host: str = ""
    worker_pid: int | None = None
    run_pid: int | None = None
    claim_token: str = ""
    heartbeat: float | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> RunRecord:
        return cls(
            job_id=row["job_id"],
            job_name=row["job_name"],
            state=row["state"],
            create_time=row["create_time"],
            run_key=row["run_key"],
            route=row["route"],
            display_name=row["display_name"],
            template_uri=row["template_uri"],
            template_digest=row["template_digest"],
            start_time=row["start_time"],
            end_time=row["end_time"],
            parameters=_loads(row["parameters"]),
            labels=_loads(row["labels"]),
            request=_loads(row["request"]),
            outputs=_loads(row["outputs"]),
            log_path=row["log_path"],
            error=row["error"],
            worker_host=row["worker_host"],
            worker_pid=row["worker_pid"],
            run_pid=row["run_pid"],
            claim_token=row["claim_token"] or "",
            heartbeat=row["heartbeat"],
        )

    @property
    def terminal(self) -> bool:
        return self.state in FINAL_STATES

    def to_status(self) -> JobStatus:
        from retrain_trigger.backends.base import JobStatus

        return JobStatus(
            job_id=self.job_id,
            job_name=self.job_name,
            state=self.state,
            run_key=self.run_key,
            route=self.route,
            create_time=rfc3339(self.create_time),
            start_time=rfc3339(self.start_time),
            end_time=rfc3339(self.end_time),
            error=self.error,
            labels=dict(self.labels),
            parameters=dict(self.parameters),
            outputs=dict(self.outputs),
        )


class Ledger:
    """The runs of one state folder. Safe to use from many threads and processes at once.

    Each operation opens its own short-lived connection, so instances may be shared between
    threads and survive ``fork``.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT
    ) -> None:
        self.path = os.fspath(path)
        self.busy_timeout = busy_timeout
        # FULL: a run's recorded end survives a power cut (the store's NORMAL is enough there).
        self._db = _sqlite.Database(
            self.path, error=_ledger_error, busy_timeout=busy_timeout, synchronous="FULL"
        )
        self._db.init_schema(_SCHEMA, SCHEMA_VERSION)

    @classmethod
    def for_state_dir(cls, state_dir: str | os.PathLike[str], **kwargs: Any) -> Ledger:
        return cls(ledger_path(state_dir), **kwargs)

    # -- connections (the shared SQLite base: retrain_trigger._sqlite) ------------------------

    def connect(self) -> sqlite3.Connection:
        """A new connection in autocommit mode; transactions are opened explicitly."""
        return self._db.connect()

    def _read(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return self._db.read()

    def _write(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """One write transaction holding the write lock from its start (``BEGIN IMMEDIATE``)."""
        return self._db.write()

    # -- submit side -------------------------------------------------------------------------

    def insert(
        self,
        *,
        job_id: str,
        job_name: str,
        template_raw: bytes,
        template_digest: str,
        template_uri: str = "",
        run_key: str = "",
        route: str = "",
        display_name: str = "",
        parameters: Mapping[str, Any] | None = None,
        labels: Mapping[str, str] | None = None,
        request: Mapping[str, Any] | None = None,
        log_path: str = "",
        now: float | None = None,
    ) -> tuple[RunRecord, bool]:
        """Insert a PENDING run. Returns ``(record, created)``; an existing id is left untouched.

        Values that cannot be stored as JSON raise ``ValueError``.
        """
        params_json = _dumps(dict(parameters or {}))
        labels_json = _dumps(dict(labels or {}))
        request_json = _dumps(dict(request or {}))
        created_at = time.time() if now is None else now
        with self._write() as conn:
            try:
                conn.execute(
                    "INSERT OR IGNORE INTO templates (digest, uri, raw, create_time)"
                    " VALUES (?, ?, ?, ?)",
                    (template_digest, template_uri, sqlite3.Binary(template_raw), created_at),
                )
                conn.execute(
                    "INSERT INTO runs (job_id, job_name, run_key, route, display_name, template_uri,"
                    " template_digest, state, create_time, parameters, labels, request, log_path)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        job_id,
                        job_name,
                        run_key,
                        route,
                        display_name,
                        template_uri,
                        template_digest,
                        PENDING,
                        created_at,
                        params_json,
                        labels_json,
                        request_json,
                        log_path,
                    ),
                )
                created = True
            except sqlite3.IntegrityError:
                created = False
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM runs WHERE job_id = ?", (job_id,)
            ).fetchone()
            if row is None:  # the IntegrityError was not about the id
                raise sqlite3.IntegrityError(f"run {job_id} could not be recorded")
        return RunRecord.from_row(row), created

    # -- reads -------------------------------------------------------------------------------

    def get(self, job_id: str) -> RunRecord | None:
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM runs WHERE job_id = ?", (job_id,)
            ).fetchone()
        return RunRecord.from_row(row) if row else None

    def list(self, *, route: str = "", state: str = "", limit: int = 100) -> list[RunRecord]:
        """Most recent first."""
        where, args = [], []
        if route:
            where.append("route = ?")
            args.append(route)
        if state:
            where.append("state = ?")
            args.append(state)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM runs {clause} ORDER BY create_time DESC, rowid DESC LIMIT ?",
                (*args, max(0, int(limit))),
            ).fetchall()
        return [RunRecord.from_row(row) for row in rows]

    def counts(self) -> dict[str, int]:
        with self._read() as conn:
            rows = conn.execute("SELECT state, COUNT(*) FROM runs GROUP BY state").fetchall()
        return {state: count for state, count in rows}

    def has_pending(self) -> bool:
        with self._read() as conn:
            row = conn.execute("SELECT 1 FROM runs WHERE state = ? LIMIT 1", (PENDING,)).fetchone()
        return row is not None

    def template(self, digest: str) -> bytes:
        with self._read() as conn:
            row = conn.execute("SELECT raw FROM templates WHERE digest = ?", (digest,)).fetchone()
        if row is None:
            raise KeyError(digest)
        return bytes(row[0])

    # -- worker side -------------------------------------------------------------------------

    def claim(
        self,
        limit: int,
        *,
        host: str | None = None,
        pid: int | None = None,
        now: float | None = None,
    ) -> RunRecord | None:
        """Move the oldest PENDING run to RUNNING, if fewer than ``limit`` runs are active.

        Atomic across threads and processes: the count, the pick and the update happen under the
        database's write lock.
        """
        host = socket.gethostname() if host is None else host
        pid = os.getpid() if pid is None else pid
        with self._write() as conn:
            active = conn.execute(
                "SELECT COUNT(*) FROM runs WHERE state IN (?, ?)", CLAIMED
            ).fetchone()[0]
            if active >= limit:
                return None
            row = conn.execute(
                "SELECT job_id FROM runs WHERE state = ? ORDER BY create_time, rowid LIMIT 1",
                (PENDING,),
            ).fetchone()
            if row is None:
                return None
            started = time.time() if now is None else now
            conn.execute(
                "UPDATE runs SET state = ?, start_time = ?, heartbeat = ?, worker_host = ?,"
                " worker_pid = ?, run_pid = NULL, claim_token = ? WHERE job_id = ? AND state = ?",
                (RUNNING, started, started, host, pid, uuid.uuid4().hex, row["job_id"], PENDING),
            )
            claimed = conn.execute(
                f"SELECT {_COLUMNS} FROM runs WHERE job_id = ?", (row["job_id"],)
            ).fetchone()
        return RunRecord.from_row(claimed)

    def set_run_pid(self, job_id: str, claim_token: str, pid: int) -> bool:
        """Record the process executing a claimed run. False when the claim is no longer valid
        (the run was given back to the queue, or ended): that process must then not run it."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE runs SET run_pid = ?, heartbeat = ?"
                " WHERE job_id = ? AND claim_token = ? AND state IN (?, ?)",
                (pid, time.time(), job_id, claim_token, *CLAIMED),
            )
            return cursor.rowcount == 1

    def heartbeat(self, job_id: str, *, now: float | None = None) -> str:
        """Record that the run is alive; returns its current state ("" when unknown)."""
        beat = time.time() if now is None else now
        with self._write() as conn:
            conn.execute(
                "UPDATE runs SET heartbeat = ? WHERE job_id = ? AND state IN (?, ?)",
                (beat, job_id, *CLAIMED),
            )
            row = conn.execute("SELECT state FROM runs WHERE job_id = ?", (job_id,)).fetchone()
        return row["state"] if row else ""

    def finish(
        self,
        job_id: str,
        state: str,
        *,
        outputs: Mapping[str, Any] | None = None,
        error: str = "",
        now: float | None = None,
    ) -> bool:
        """Record a run's end, only if it is still active. Returns whether this call recorded it.

        A FAILED end of a run being cancelled is recorded as CANCELLED.
        """
        if state not in FINAL_STATES:
            raise ValueError(f"not a final state: {state!r}")
        ended = time.time() if now is None else now
        outputs_json = _dumps(_json_safe(dict(outputs or {})))
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE runs SET state = CASE WHEN state = ? AND ? = ? THEN ? ELSE ? END,"
                " end_time = ?, error = ?, outputs = ?, heartbeat = ?"
                " WHERE job_id = ? AND state IN (?, ?)",
                (
                    CANCELLING,
                    state,
                    FAILED,
                    CANCELLED,
                    state,
                    ended,
                    error[:MAX_ERROR_CHARS],
                    outputs_json,
                    ended,
                    job_id,
                    *CLAIMED,
                ),
            )
            return cursor.rowcount == 1

    # -- run outcomes (version 2: which ended runs the worker has reported to the trigger) -----

    def unreported_ends(self, limit: int = 20) -> builtins.list[RunRecord]:
        """Ended runs whose outcome has not been reported yet, oldest end first."""
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM runs WHERE state IN (?, ?, ?) AND NOT EXISTS "
                "(SELECT 1 FROM outcome_reports o WHERE o.job_id = runs.job_id) "
                "ORDER BY end_time LIMIT ?",
                (SUCCEEDED, FAILED, CANCELLED, max(int(limit), 1)),
            ).fetchall()
        return [RunRecord.from_row(row) for row in rows]

    def mark_reported(self, job_id: str, *, now: float | None = None) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO outcome_reports (job_id, reported_at) VALUES (?, ?)",
                (job_id, time.time() if now is None else now),
            )

    def cancel(self, job_id: str, *, now: float | None = None) -> RunRecord:
        """PENDING -> CANCELLED at once; RUNNING -> CANCELLING (the run's process stops itself).

        Final runs are left as they are. Raises ``KeyError`` for an unknown id.
        """
        ended = time.time() if now is None else now
        with self._write() as conn:
            conn.execute(
                "UPDATE runs SET state = ?, end_time = ?, error = ? WHERE job_id = ? AND state = ?",
                (CANCELLED, ended, "cancelled before it started", job_id, PENDING),
            )
            conn.execute(
                "UPDATE runs SET state = ? WHERE job_id = ? AND state = ?",
                (CANCELLING, job_id, RUNNING),
            )
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM runs WHERE job_id = ?", (job_id,)
            ).fetchone()
        if row is None:
            raise KeyError(job_id)
        return RunRecord.from_row(row)

    def recover(
        self,
        *,
        stale_after: float,
        host: str | None = None,
        is_alive: Callable[[int | None, str], bool] | None = None,
        now: float | None = None,
    ) -> dict[str, str]:
        """Deal with active runs whose processes are gone. Returns ``{job_id: new state}``.

        A run is gone when, on this host, its run process no longer exists (or the process with
        its pid is not running that job: the pid was reused); before its run process is recorded,
        when the worker that claimed it no longer exists; and on another host, when its heartbeat
        is older than ``stale_after`` seconds. A gone run that had started its run process is marked FAILED
        (CANCELLED if it was being cancelled). One whose worker died before starting the run
        process never ran: it goes back to PENDING, keeping its place in the queue.
        """
        host = socket.gethostname() if host is None else host
        is_alive = is_alive or process_alive
        query = (
            "SELECT job_id, state, worker_host, worker_pid, run_pid, heartbeat FROM runs"
            " WHERE state IN (?, ?)"
        )
        with self._read() as conn:
            rows = conn.execute(query, CLAIMED).fetchall()
        current = time.time() if now is None else now
        if not any(self._gone(row, host, is_alive, current, stale_after) for row in rows):
            return {}
        changed: dict[str, str] = {}
        with self._write() as conn:
            # Checked again under the write lock: a run process records its end before it exits,
            # and records itself (set_run_pid) before it starts, both under this same lock.
            for row in conn.execute(query, CLAIMED).fetchall():
                reason = self._gone(row, host, is_alive, current, stale_after)
                if not reason:
                    continue
                if row["run_pid"] is None and row["state"] == RUNNING:
                    conn.execute(
                        "UPDATE runs SET state = ?, start_time = NULL, heartbeat = NULL,"
                        " worker_host = '', worker_pid = NULL, claim_token = NULL"
                        " WHERE job_id = ? AND state = ? AND run_pid IS NULL",
                        (PENDING, row["job_id"], RUNNING),
                    )
                    changed[row["job_id"]] = PENDING
                    continue
                final = CANCELLED if row["state"] == CANCELLING else FAILED
                conn.execute(
                    "UPDATE runs SET state = ?, end_time = ?, error = ?"
                    " WHERE job_id = ? AND state IN (?, ?)",
                    (final, current, reason, row["job_id"], *CLAIMED),
                )
                changed[row["job_id"]] = final
        return changed

    @staticmethod
    def _gone(
        row: sqlite3.Row,
        host: str,
        is_alive: Callable[[int | None, str], bool],
        now: float,
        stale_after: float,
    ) -> str:
        if row["worker_host"] == host and row["run_pid"] is not None:
            # This host can tell for sure, whatever the heartbeat says (a suspended laptop).
            return "" if is_alive(row["run_pid"], row["job_id"]) else WORKER_GONE
        if row["worker_host"] == host and not is_alive(row["worker_pid"], ""):
            return WORKER_GONE
        beat = row["heartbeat"]
        if beat is not None and now - beat > stale_after:
            return f"{WORKER_GONE} (no heartbeat for {now - beat:.0f} s)"
        return ""


def _json_safe(value: Any, depth: int = 0) -> Any:
    """Only what JSON can hold: non-finite floats become strings, other objects their str()."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if depth > 8:
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v, depth + 1) for v in value]
    return str(value)
