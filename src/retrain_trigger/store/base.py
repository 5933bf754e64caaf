"""The state store protocol and the values it holds.

Three kinds of state, each safe against two function instances racing each other:

- **Batch windows** of data routes. Events accumulate in the route's one OPEN window; a flush claims
  a due window (OPEN -> CLOSING, with an owner and a lease), records the manifest and the run key it
  is about to submit, submits, and closes it (CLOSING -> CLOSED). A crash between the manifest and
  the submit leaves a CLOSING window whose lease expires; the next flush reclaims it and submits the
  recorded run key again (a second create with the same job id answers ``duplicate``).
- **Concurrency** of routes whose policy is ``skip_if_running`` or ``queue_latest``: the route's
  active job, and at most one pending (queued) run per route, replaced by newer ones. The active
  record is taken by compare-and-set (on its ``revision``) as a *reservation* with a lease before
  the create is sent, and becomes the created job once the create has been answered.
- **Decision history**, kept for a time-to-live and queried by object, time, route and outcome.

**Retention.** Every record that grows with traffic carries ``expire_at``: a decision from the
moment it is recorded (its time plus the history TTL), a batch window and its items from the
moment the window is CLOSED (close time plus the store's ``retention_seconds``), never before,
so a window's items are kept while it is open or closing. ``purge_expired`` deletes what
expired, a bounded number per call (the flush calls it); Firestore's TTL policies on
``expire_at`` delete the same in production.

Times are seconds since the epoch (floats) throughout; every operation that depends on the time
takes it as ``now`` so that callers and tests control the clock.

(Above ~400 lines on purpose: the protocol with its documented contract, and the values and key
helpers both implementations share; the contract suite tests exactly this file's promises.)
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
import secrets
import time as _time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from retrain_trigger.constants import rfc3339

if TYPE_CHECKING:
    from retrain_trigger.model import Trigger

DEFAULT_DECISION_LIMIT = 100
DEFAULT_OBJECT_LIMIT = 20
# How long closed windows and their items are kept when the store is given no retention.
DEFAULT_RETENTION_SECONDS = 30 * 86400.0
# The most records one purge_expired call deletes when it is given no limit.
DEFAULT_PURGE_LIMIT = 1000

# Decision paging (the status page): the default and largest page.
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500

# How many window items one read of iter_window_items returns.
DEFAULT_ITEM_PAGE = 1000

_ROUTE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
_MAX_MILLIS = 10**13 - 1


class WindowState(enum.StrEnum):
    OPEN = "OPEN"
    CLOSING = "CLOSING"
    CLOSED = "CLOSED"


@dataclass(frozen=True)
class WindowItem:
    """One finalized object in a batch window; identified by ``gs://bucket/object#generation``."""

    bucket: str
    object: str
    generation: str
    size: int | None = None
    event_id: str = ""
    event_time: str = ""
    added_at: float = 0.0

    @property
    def gcs_uri(self) -> str:
        return f"gs://{self.bucket}/{self.object}"

    @property
    def key(self) -> str:
        return f"{self.gcs_uri}#{self.generation}"

    @classmethod
    def from_trigger(cls, trigger: Trigger) -> WindowItem:
        return cls(
            bucket=trigger.bucket,
            object=trigger.object,
            generation=str(trigger.generation),
            size=trigger.size,
            event_id=trigger.event_id,
            event_time=trigger.event_time,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "object": self.object,
            "generation": self.generation,
            "size": self.size,
            "event_id": self.event_id,
            "event_time": self.event_time,
            "added_at": self.added_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WindowItem:
        size = data.get("size")
        return cls(
            bucket=str(data.get("bucket") or ""),
            object=str(data.get("object") or ""),
            generation=str(data.get("generation") or ""),
            size=None if size is None else int(size),
            event_id=str(data.get("event_id") or ""),
            event_time=str(data.get("event_time") or ""),
            added_at=float(data.get("added_at") or 0.0),
        )


@dataclass(frozen=True)
class WindowInfo:
    """A window as seen when adding to it or when looking for due ones.

    ``added`` is False when the item was already recorded for the route (a redelivery); the info
    then describes the window that holds it, which may be CLOSING or CLOSED already.

    From :meth:`StateStore.add_to_window`, ``count`` is None (adding an object never counts the
    window: that would cost in proportion to the window's size on every event) and
    ``last_event_at`` is the time the item was recorded (for a redelivery, the first time).
    From :meth:`StateStore.due_windows` both describe the whole window.
    """

    window_id: str
    route: str
    state: WindowState
    count: int | None
    opened_at: float
    last_event_at: float
    added: bool = True


@dataclass(frozen=True)
class Window:
    """A batch window with its lease and the run it became."""

    window_id: str
    route: str
    state: WindowState
    opened_at: float
    last_event_at: float
    count: int = 0
    owner: str = ""
    lease_until: float | None = None
    claimed_at: float | None = None
    claims: int = 0
    manifest_uri: str = ""
    run_key: str = ""
    job_id: str = ""
    job_name: str = ""
    closed_at: float | None = None
    expire_at: float | None = None
    # The sum of the items' sizes (bytes; items of unknown size count 0).
    size_bytes: int = 0

    def info(self, *, added: bool = True) -> WindowInfo:
        return WindowInfo(
            window_id=self.window_id,
            route=self.route,
            state=self.state,
            count=self.count,
            opened_at=self.opened_at,
            last_event_at=self.last_event_at,
            added=added,
        )

    def lease_expired(self, now: float) -> bool:
        return self.lease_until is None or self.lease_until <= now

    def due(self, now: float, quiet_seconds: float, max_wait_seconds: float) -> bool:
        """OPEN and quiet for ``quiet_seconds`` or open for ``max_wait_seconds``; or CLOSING
        with an expired lease (its flush crashed and must be finished)."""
        if self.state is WindowState.OPEN:
            return (
                now - self.last_event_at >= quiet_seconds
                or now - self.opened_at >= max_wait_seconds
            )
        return self.state is WindowState.CLOSING and self.lease_expired(now)


@dataclass(frozen=True)
class Pending:
    """The one run waiting for a route's active job to finish (``queue_latest``)."""

    route: str
    run_key: str
    request_json: str
    queued_at: float


@dataclass(frozen=True)
class ActiveJob:
    """The job holding a route's run slot (``skip_if_running`` and ``queue_latest``).

    ``lease_until`` is set while the slot is only *reserved*: the create has been decided but
    not answered yet, so the backend may not know the job. ``others`` are runs of the route that
    were started although the slot was no longer theirs (their reservation had expired and was
    taken over): they are tracked until they end. ``revision`` changes with every write of the
    slot and makes compare-and-set exact.
    """

    route: str
    job_id: str
    job_name: str
    started_at: float
    lease_until: float | None = None
    others: tuple[str, ...] = ()
    revision: int = 0

    @property
    def reserved(self) -> bool:
        """Reserved, its create not answered yet."""
        return self.lease_until is not None

    def reservation_valid(self, now: float) -> bool:
        return self.lease_until is not None and now < self.lease_until


# --------------------------------------------------------------------------- pauses


@dataclass(frozen=True)
class Pause:
    """A route an operator paused: its events are recorded ``skipped`` ("route paused") and
    ``/flush`` leaves its windows and queued run alone until it is resumed."""

    route: str
    reason: str
    by: str
    paused_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "reason": self.reason,
            "by": self.by,
            "paused_at": self.paused_at,
        }


# --------------------------------------------------------------------------- end pauses


@runtime_checkable
class StateStore(Protocol):
    """Windows, concurrency leases and decision history; SQLite locally, Firestore in production.

    Every read-modify-write is one transaction, so two instances racing each other stay correct.
    Failures to reach the store raise :class:`~retrain_trigger.errors.StoreError` (retryable).
    """

    # -- batch windows -------------------------------------------------------------------------

    def add_to_window(self, route: str, item: WindowItem, now: float) -> WindowInfo:
        """Adds the item to the route's OPEN window, creating one if there is none.

        Atomic. An item already recorded for the route (same ``gs://bucket/object#generation``, in
        any window) is not added again: ``added`` is False and the window is left untouched.
        The cost does not depend on how many items the window holds: the info returned has no
        ``count`` (see :class:`WindowInfo`), and nothing every addition writes is shared.
        """
        ...

    def due_windows(
        self, route: str | None, now: float, quiet_seconds: float, max_wait_seconds: float
    ) -> list[WindowInfo]:
        """OPEN windows due to close (quiet, or open too long), and CLOSING windows whose lease
        expired (a flush that crashed). Oldest first."""
        ...

    def claim_window(
        self, window_id: str, owner: str, now: float, lease_seconds: float
    ) -> Window | None:
        """OPEN -> CLOSING for ``owner`` until ``now + lease_seconds``; atomic.

        Also succeeds on a CLOSING window whose lease expired, or that ``owner`` holds already
        (a renewal). Returns None when another owner holds it or it is CLOSED. Events arriving
        after the claim go to a new window.
        """
        ...

    def window_items(self, window_id: str) -> list[WindowItem]:
        """The window's items in the order they were added."""
        ...

    def iter_window_items(
        self, window_id: str, page_size: int = DEFAULT_ITEM_PAGE
    ) -> Iterator[WindowItem]:
        """The window's items in the order they were added, read lazily: the store holds at most
        ``page_size`` of them at a time (Firestore: one document of a streamed query), so memory
        stays bounded whatever the window's size (the manifest of a large window streams them).
        ``page_size`` below 1 raises ``ValueError``."""
        ...

    def set_window_manifest(
        self, window_id: str, manifest_uri: str, run_key: str, job_id: str
    ) -> Window:
        """Records, before the submit, what the CLOSING window is about to start.

        The first recorded run key wins: when one is recorded already (an earlier, crashed or
        slower flush), nothing changes and the stored values are returned for reuse. Raises
        ``LookupError`` for an unknown window and ``ValueError`` for an OPEN one.
        """
        ...

    def close_window(
        self, window_id: str, owner: str, job_name: str, now: float | None = None
    ) -> bool:
        """CLOSING -> CLOSED, only by the lease owner. True also when ``owner`` closed it already.

        The window and its items expire ``retention_seconds`` after the close time.
        """
        ...

    def get_window(self, window_id: str) -> Window | None: ...

    def list_windows(self, route: str, state: WindowState | str | None = None) -> list[Window]:
        """The route's windows, oldest first."""
        ...

    # -- concurrency ---------------------------------------------------------------------------

    def set_pending(
        self, route: str, request_json: str, run_key: str, now: float
    ) -> Pending | None:
        """Makes this the route's one waiting run; returns the one it replaced, if any."""
        ...

    def take_pending(self, route: str, run_key: str = "") -> Pending | None:
        """Removes and returns the route's waiting run; atomic, so only one taker gets it.

        With ``run_key``, only when the waiting run is that one: a newer change that replaced
        it meanwhile stays queued.
        """
        ...

    def get_pending(self, route: str) -> Pending | None: ...

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
        """Records the job holding the route's run slot; keeps the record's ``others``.

        With ``expect_job_id`` the write happens only when the current holder's job id equals it
        (``""``: no record); with ``expect_revision`` only when the record's revision equals it
        (``0``: no record). That makes "start only if nothing runs" atomic. ``lease_seconds``
        writes a reservation valid until ``now + lease_seconds``; without it the record names a
        created job. Returns whether the record was written.
        """
        ...

    def get_active(self, route: str) -> ActiveJob | None: ...

    def track_active(self, route: str, job_id: str, job_name: str, now: float) -> None:
        """Keeps a started run tracked: as the holder when the route has no record, else in the
        record's ``others`` (unless it is the holder already)."""
        ...

    def clear_active(self, route: str, job_id: str) -> bool:
        """Stops tracking ``job_id``: removes it from ``others``, or, when it holds the slot,
        removes the record (the first of ``others``, if any, then holds the slot).
        Returns whether anything was removed."""
        ...

    # -- decision history ----------------------------------------------------------------------

    def record_decision(self, entry: Mapping[str, Any], ttl_seconds: float) -> str:
        """Stores one decision until ``entry["time"] + ttl_seconds``; returns its id.

        ``entry`` holds time, outcome, reason, route, run_key, job_id, job, trigger (kind,
        bucket, object, generation, event_id ...) and window_id; see
        :func:`retrain_trigger.decisions.decision_entry`.
        ``time`` may be seconds since the epoch, an RFC 3339 string or a datetime.
        """
        ...

    def decisions_for_object(
        self, gs_uri: str, limit: int = DEFAULT_OBJECT_LIMIT
    ) -> list[dict[str, Any]]:
        """Unexpired decisions about ``gs://bucket/object`` (any generation), newest first."""
        ...

    def list_decisions(
        self,
        since: float,
        until: float | None = None,
        route: str | None = None,
        outcome: str | None = None,
        limit: int = DEFAULT_DECISION_LIMIT,
    ) -> list[dict[str, Any]]:
        """Unexpired decisions with ``since <= time < until``, newest first."""
        ...

    # -- decision paging (the status page) -----------------------------------------------------

    def page_decisions(
        self,
        route: str | None = None,
        outcome: str | None = None,
        object_contains: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        page_token: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of unexpired decisions, newest first, and the token of the next page.

        ``route`` and ``outcome`` are exact; ``object_contains`` keeps the decisions about an
        object whose ``gs://bucket/object`` contains it (case-sensitive, as object names are).
        ``page_token`` is the token a previous page returned (``None``: the first page). The
        returned token is ``None`` when nothing follows; a page may hold fewer than ``limit``
        decisions and still have a next one (a store that filters after reading stops after a
        bounded number of reads). Raises ``ValueError`` for a malformed token or a ``limit``
        outside 1..:data:`MAX_PAGE_SIZE`.
        """
        ...

    def purge_expired(self, now: float, limit: int = DEFAULT_PURGE_LIMIT) -> int:
        """Deletes decisions, closed windows and window items whose ``expire_at`` is at or
        before ``now``, at most ``limit`` records; returns how many."""
        ...

    # -- pauses --

    def set_pause(self, route: str, reason: str, by: str, now: float) -> Pause:
        """Pauses ``route`` (again: the reason and time are replaced); returns the pause."""
        ...

    def clear_pause(self, route: str) -> bool:
        """Resumes ``route``; False when it was not paused."""
        ...

    def get_pause(self, route: str) -> Pause | None: ...

    def paused_routes(self) -> dict[str, Pause]: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- shared helpers


def check_route(route: str) -> str:
    """Route names become parts of keys and document ids: no '/', nothing exotic."""
    if not isinstance(route, str) or not _ROUTE.match(route):
        raise ValueError(f"invalid route name for the state store: {route!r}")
    return route


def new_window_id(route: str, now: float) -> str:
    """``<route>__<yyyymmdd-hhmmss>-<random>``: readable, sortable within a route, no '/'."""
    stamp = _time.strftime("%Y%m%d-%H%M%S", _time.gmtime(now))
    return f"{route}__{stamp}-{secrets.token_hex(3)}"


def digest(text: str, length: int = 40) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def item_doc_id(route: str, item_key: str) -> str:
    """The id of an item's record: unique per route and ``gs://bucket/object#generation``."""
    return f"{route}__{digest(item_key)}"


def object_key(gs_uri: str) -> str:
    """The indexed form of ``gs://bucket/object`` in the decision history."""
    return digest(gs_uri, 32)


# -- decision ids (the window path at scale) ----------------------------------------------------
#
# Decision ids spread writes: a key that grows (or shrinks) with time sends every write of the
# moment to one end of the key range, a hotspot (Firestore's best practices: "avoid monotonically
# increasing document ids"). The id starts with 16 random hex digits; the time it also carries
# comes after them, for a reader of the id only. Listing newest first orders on the ``time``
# field, never on the id.


def decision_id(moment: float) -> str:
    """``<16 random hex digits>-<milliseconds since the epoch, 13 digits>``: no two writes of one
    moment are neighbours in key order."""
    millis = min(max(int(moment * 1000), 0), _MAX_MILLIS)
    return f"{secrets.token_hex(8)}-{millis:013d}"


def entry_time(value: Any, default: float) -> float:
    """Seconds since the epoch from a number, an RFC 3339 string or a datetime."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise ValueError(f"decision time must be a time, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.timestamp()
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"decision time is not RFC 3339: {value!r}") from None
        return entry_time(moment, default)
    raise ValueError(f"decision time must be a time, got {value!r}")


def entry_object_uri(entry: Mapping[str, Any]) -> str:
    """``gs://bucket/object`` of a data decision, else ``""``."""
    trigger = entry.get("trigger") or {}
    if isinstance(trigger, Mapping) and trigger.get("bucket") and trigger.get("object"):
        return f"gs://{trigger['bucket']}/{trigger['object']}"
    uri = entry.get("gs_uri") or ""
    return str(uri) if str(uri).startswith("gs://") else ""


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class DecisionRecord:
    """A decision entry prepared for storage: the JSON text and the fields queries use."""

    id: str
    time: float
    expire_at: float
    route: str
    outcome: str
    object_key: str
    run_key: str
    job_id: str
    window_id: str
    entry_json: str

    @classmethod
    def prepare(cls, entry: Mapping[str, Any], ttl_seconds: float, now: float) -> DecisionRecord:
        if not ttl_seconds or ttl_seconds <= 0:
            raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds!r}")
        data = dict(entry)
        moment = entry_time(data.get("time"), now)
        if data.get("time") in (None, ""):
            data["time"] = moment
        uri = entry_object_uri(data)
        return cls(
            id=decision_id(moment),
            time=moment,
            expire_at=moment + float(ttl_seconds),
            route=str(data.get("route") or ""),
            outcome=str(data.get("outcome") or ""),
            object_key=object_key(uri) if uri else "",
            run_key=str(data.get("run_key") or ""),
            job_id=str(data.get("job_id") or ""),
            window_id=str(data.get("window_id") or ""),
            entry_json=dumps(data),
        )

    @staticmethod
    def output(record_id: str, entry_json: str, expire_at: float) -> dict[str, Any]:
        """What queries answer: the entry as recorded, plus its id and expiry."""
        out = json.loads(entry_json)
        out["id"] = record_id
        out["expire_at"] = rfc3339(expire_at)
        return out


# --------------------------------------------------------------------------- run outcomes
# (run records and champion changes: what became of each submitted run, and the champion
# pointer's moves; written by the outcome path, read by ``why``, ``runs`` and the status page)

RUN_STATES = ("PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")
RUN_FINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
DEFAULT_RUN_LIMIT = 50
DEFAULT_CHAMPION_LIMIT = 100
# A run record's error is kept to this many characters (a stack trace is in the job's logs).
MAX_RUN_ERROR = 2000


@dataclass(frozen=True)
class RunRecord:
    """One submitted run and, once it ended, how: ``state`` is PENDING until the end arrives.

    ``reporter`` says who reported the end (``exit-handler``, ``local-worker``, ``reconcile``),
    ``check_after`` when the flush next asks the backend about a run still not ended.
    """

    route: str
    job_id: str
    job_name: str
    state: str
    submitted_at: float
    ended_at: float | None
    duration_s: float | None
    error: str | None
    failed_task: str | None
    parameters: dict[str, Any]
    object_uri: str | None
    trace: str | None
    reporter: str = ""
    check_after: float | None = None
    expire_at: float | None = None
    notified: bool = False

    @property
    def ended(self) -> bool:
        return self.state in RUN_FINAL_STATES

    def to_dict(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "job_id": self.job_id,
            "job_name": self.job_name,
            "state": self.state,
            "submitted_at": self.submitted_at,
            "ended_at": self.ended_at,
            "duration_s": self.duration_s,
            "error": self.error,
            "failed_task": self.failed_task,
            "parameters": dict(self.parameters),
            "object_uri": self.object_uri,
            "trace": self.trace,
            "reporter": self.reporter,
            "check_after": self.check_after,
            "expire_at": self.expire_at,
            "notified": self.notified,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunRecord:
        def number(name: str) -> float | None:
            value = data.get(name)
            return None if value is None else float(value)

        return cls(
            route=str(data.get("route") or ""),
            job_id=str(data.get("job_id") or ""),
            job_name=str(data.get("job_name") or ""),
            state=str(data.get("state") or "PENDING"),
            submitted_at=float(data.get("submitted_at") or 0.0),
            ended_at=number("ended_at"),
            duration_s=number("duration_s"),
            error=data.get("error"),
            failed_task=data.get("failed_task"),
            parameters=dict(data.get("parameters") or {}),
            object_uri=data.get("object_uri"),
            trace=data.get("trace"),
            reporter=str(data.get("reporter") or ""),
            check_after=number("check_after"),
            expire_at=number("expire_at"),
            notified=bool(data.get("notified")),
        )


@dataclass(frozen=True)
class RunEnd:
    """What ended a run: given to :meth:`RunOutcomeStore.end_run`."""

    job_id: str
    state: str
    ended_at: float
    error: str | None = None
    failed_task: str | None = None
    reporter: str = ""
    job_name: str = ""
    route: str = ""


@dataclass(frozen=True)
class ChampionChange:
    """A register step moved a route's champion to this model version."""

    route: str
    job_id: str
    metric_name: str
    metric_value: float
    model_uri: str
    version: str
    commit: str | None
    changed_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "job_id": self.job_id,
            "metric_name": self.metric_name,
            "metric_value": self.metric_value,
            "model_uri": self.model_uri,
            "version": self.version,
            "commit": self.commit,
            "changed_at": self.changed_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChampionChange:
        return cls(
            route=str(data.get("route") or ""),
            job_id=str(data.get("job_id") or ""),
            metric_name=str(data.get("metric_name") or ""),
            metric_value=float(data.get("metric_value") or 0.0),
            model_uri=str(data.get("model_uri") or ""),
            version=str(data.get("version") or ""),
            commit=data.get("commit"),
            changed_at=float(data.get("changed_at") or 0.0),
        )


class RunOutcomeStore(Protocol):
    """The run-outcome part of the state store (implemented by both stores).

    - :meth:`record_run` keeps a submitted run (PENDING), once per job id: a second call for the
      same job changes nothing and returns the stored record.
    - :meth:`end_run` records the end **once**: it returns ``(record, True)`` only for the call
      that moved the run to a final state; redeliveries of the same end, and ends reported after
      another one, return ``(the stored record, False)``. A job with no record yet (submitted
      before history was on, or by hand) gets one, ended.
    - :meth:`runs_to_check` lists runs not ended whose ``check_after`` has come (the flush's
      reconciliation); :meth:`defer_check` moves a run's ``check_after``;
      :meth:`mark_notified` records that the run-ended notification went out.
    - :meth:`list_runs` pages a route's (or every route's) runs newest first;
      :meth:`champion_history` gives a route's champion changes oldest first; a champion change
      is recorded once per (route, job, version).
    """

    def record_run(self, record: RunRecord, ttl_seconds: float) -> RunRecord: ...

    def get_run(self, job_id: str) -> RunRecord | None: ...

    def end_run(self, end: RunEnd, ttl_seconds: float) -> tuple[RunRecord, bool]: ...

    def runs_to_check(self, now: float, limit: int = 100) -> list[RunRecord]: ...

    def defer_check(self, job_id: str, check_after: float) -> None: ...

    def mark_notified(self, job_id: str) -> None:
        """The run's end was published to the notification topic."""
        ...

    def list_runs(
        self, route: str | None, limit: int = DEFAULT_RUN_LIMIT, page_token: str | None = None
    ) -> tuple[list[RunRecord], str | None]: ...

    def record_champion(self, change: ChampionChange, ttl_seconds: float) -> bool: ...

    def champion_history(
        self, route: str, limit: int = DEFAULT_CHAMPION_LIMIT
    ) -> list[ChampionChange]: ...


def check_run_state(state: str) -> str:
    if state not in RUN_STATES:
        raise ValueError(f"run state must be one of {', '.join(RUN_STATES)}, got {state!r}")
    return state


def ended_record(record: RunRecord, end: RunEnd, expire_at: float) -> RunRecord:
    """``record`` ended by ``end``: its duration from submission to the end."""
    import dataclasses

    check_run_state(end.state)
    duration = None
    if record.submitted_at and end.ended_at >= record.submitted_at:
        duration = round(end.ended_at - record.submitted_at, 3)
    error = (end.error or None) and str(end.error)[:MAX_RUN_ERROR]
    return dataclasses.replace(
        record,
        state=end.state,
        ended_at=end.ended_at,
        duration_s=duration,
        error=error,
        failed_task=end.failed_task or None,
        reporter=end.reporter,
        job_name=record.job_name or end.job_name,
        check_after=None,
        expire_at=expire_at,
    )


def unknown_run(end: RunEnd) -> RunRecord:
    """The record of a run that ended without the store knowing its submission."""
    return RunRecord(
        route=end.route,
        job_id=end.job_id,
        job_name=end.job_name,
        state="PENDING",
        submitted_at=0.0,
        ended_at=None,
        duration_s=None,
        error=None,
        failed_task=None,
        parameters={},
        object_uri=None,
        trace=None,
    )


def run_page_key(record: RunRecord) -> str:
    """The order of ``list_runs``: newest submission first, then job id (a page token)."""
    moment = record.submitted_at or record.ended_at or 0.0
    millis = min(max(int(moment * 1000), 0), _MAX_MILLIS)
    return f"{_MAX_MILLIS - millis:013d}|{record.job_id}"


def champion_id(change: ChampionChange) -> str:
    return f"{change.route}__{digest(change.job_id + '|' + change.version, 24)}"


_RUN_PAGE_TOKEN = re.compile(r"^\d{13}\|[a-z][-a-z0-9]{0,127}$")


def check_run_page_token(token: str) -> str:
    """A ``list_runs`` page token as the store handed it out; anything else is refused."""
    if not isinstance(token, str) or not _RUN_PAGE_TOKEN.match(token):
        raise ValueError(f"not a page token of list_runs: {str(token)[:80]!r}")
    return token


def positive_ttl(ttl_seconds: float) -> float:
    if not ttl_seconds or ttl_seconds <= 0:
        raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds!r}")
    return float(ttl_seconds)


# --------------------------------------------------------------------------- decision paging

# A page token is where the last page ended: the ``time`` of its last decision (as Python writes
# a float, so it reads back to the same number) and that decision's id, for the order both stores
# page in (newest time first, then id descending; ids are random, so time orders and the id only
# breaks ties).
_PAGE_TOKEN = re.compile(r"^([0-9]{1,12}(?:\.[0-9]{1,20})?)~([0-9a-f]{16}-[0-9]{13})$")
# The longest object substring a page filters by (an object name is at most 1024 bytes).
MAX_OBJECT_FILTER = 1024


def page_token_of(moment: Any, record_id: str) -> str:
    """The token of a page that ends at the decision made at ``moment`` with id ``record_id``."""
    return f"{float(moment)!r}~{record_id}"


def check_page_token(token: str | None) -> tuple[float, str] | None:
    """``None`` for the first page, else the (time, id) the previous page ended at."""
    if token is None or token == "":
        return None
    match = _PAGE_TOKEN.fullmatch(token) if isinstance(token, str) else None
    if match is None:
        raise ValueError(f"invalid page token: {str(token)[:80]!r}")
    return float(match.group(1)), match.group(2)


def check_page_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"page size must be 1 to {MAX_PAGE_SIZE}, got {limit!r}")
    return limit


def check_object_filter(text: str | None) -> str | None:
    if text is None or text == "":
        return None
    if not isinstance(text, str) or len(text.encode("utf-8")) > MAX_OBJECT_FILTER:
        raise ValueError(f"object filter must be text of at most {MAX_OBJECT_FILTER} bytes")
    return text


def entry_matches_object(entry: Mapping[str, Any], needle: str) -> bool:
    """Whether the decision is about an object whose ``gs://bucket/object`` contains ``needle``."""
    uri = entry_object_uri(entry)
    return bool(uri) and needle in uri
