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

    def take_pending(self, route: str) -> Pending | None:
        """Removes and returns the route's waiting run; atomic, so only one taker gets it."""
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

    def purge_expired(self, now: float, limit: int = DEFAULT_PURGE_LIMIT) -> int:
        """Deletes decisions, closed windows and window items whose ``expire_at`` is at or
        before ``now``, at most ``limit`` records; returns how many."""
        ...

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
