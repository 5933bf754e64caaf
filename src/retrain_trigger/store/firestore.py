"""The state store in Firestore (native mode): the production store.

``google.cloud.firestore`` is imported in the constructor, never at package import, so functions
that keep their state in SQLite (or skip an event) never pay for it.

Documents (``retrain_`` is the default ``prefix``; ids never contain '/')::

    retrain_routes/{route}                 open_window: the id of the route's OPEN window, or "";
                                           opened_at: when it opened
    retrain_windows/{route}__{stamp}-{rnd} the window: route, state, opened_at, owner,
                                           lease_until, claimed_at, claims, manifest_uri, run_key,
                                           job_id, job_name, closed_at; from its claim on, its
                                           tally: count, size_bytes, last_event_at, counted
    retrain_window_items/{route}__{sha256(gs://bucket/object#generation)[:40]}
                                           one item: window_id, key, bucket, object, generation,
                                           size, event_id, event_time, added_at
    retrain_pending/{route}                the route's one waiting run
    retrain_active/{route}                 the job holding the route's run slot: job_id,
                                           job_name, started_at, lease_until (while reserved),
                                           others (runs still tracked), revision
    retrain_decisions/{16 random hex}-{ms} time, expire_at (Timestamp), route, outcome,
                                           object_key (sha256 of gs://bucket/object), run_key,
                                           job_id, window_id, entry (the entry as JSON text)

Windows and window items also carry ``expire_at`` (Timestamp): null while the window is open or
closing, set when it closes (close time plus ``retention_seconds``); the items first, then the
window, so no closed window has an item that never expires.

**Windows at scale** (a bulk upload: thousands of objects a minute into one window). Adding an
object writes its item's document and nothing else: no window, route or counter document that
every other addition writes too (a single document sustains about one write per second:
https://cloud.google.com/firestore/docs/best-practices#high_read_write_and_delete_rates_to_a_narrow_document_range).
The addition is a transaction that *reads* the route's ``open_window`` pointer and the item's
document and *creates* the item in the window the pointer names. Reads in a server-SDK
transaction take shared locks (https://cloud.google.com/firestore/docs/transaction-data-contention),
so additions do not conflict with one another; a claim moves the pointer, a write that is
ordered after every addition holding the lock and before every later one, which then finds no
open window and opens the next. So every object is in exactly one window, and a claimed window
takes no more items. A redelivery finds the item's document (its id is the digest of route and
``gs://bucket/object#generation``) and adds nothing. An open window's count, bytes and last event
time are read from its items: a ``count``/``sum`` aggregation query and the newest item (an
ordered limit-1 query); its claim records them on the window once, as its items are final then.
The manifest streams the items (:meth:`FirestoreStore.iter_window_items`: queries of up to
10,000 read one document at a time).

Every other read-modify-write is atomic too. Opening a window, claiming one, and the changes of
one document (the route's run slot, its pending run, a window's manifest and close), are
conditional writes: read, then create the document on the precondition that it does not exist,
or update or delete it on the precondition that its update time is the one read; a racing
writer fails its precondition at once and reads again, and no lock is held in between.

**Contention.** Firestore resolves two transactions on one document by delaying or aborting one
(``ABORTED``), and the client library retries a commit at once
(https://cloud.google.com/firestore/docs/transaction-data-contention). The emulator instead lets
both hold their read locks and fails one or both after its lock wait (``ABORTED: Transaction lock
timeout``, about 2 s; https://github.com/firebase/firebase-tools/issues/6758): retried at once,
two racing transactions meet again, and ten immediate attempts can all fail. So each attempt here
is one library attempt; contention (``ABORTED``; a racing create's ``ALREADY_EXISTS``; a failed
precondition) and transient unavailability are retried with full-jitter exponential backoff until
``deadline`` seconds (the submit deadline) have passed; only then is it a (retryable)
``StoreError``.

**Indexes.** Decision ids start with random digits (no hotspot at one end of the key range), so
listing decisions newest first orders on their ``time`` field; that and the window items' order
by ``added_at`` need the composite indexes in :data:`COMPOSITE_INDEXES`, declared in
deploy/terraform/windows.tf (a test keeps the two equal). The other queries are equality filters
merged from the automatic single-field indexes.

**Time-to-live.** ``expire_at`` is a Timestamp in ``retrain_decisions``, ``retrain_windows`` and
``retrain_window_items`` (the collections that grow); a TTL policy on it in each deletes expired
documents, e.g. ``gcloud firestore fields ttls update expire_at
--collection-group=retrain_decisions --enable-ttl``; documents whose ``expire_at`` is null never
expire (https://cloud.google.com/firestore/docs/ttl). TTL deletion lags (typically within a day),
so reads skip expired decisions; ``purge_expired`` (called by the flush) deletes expired
documents at once, a bounded number per call, and needs the automatic single-field index of
``expire_at``. Windows closed by a version without ``expire_at`` have no such field and are not
swept. The ``entry`` field is never queried: exempting it from indexing saves index writes.

(Above ~400 lines on purpose: one implementation of the whole store protocol, with the contention
handling every operation shares.)
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

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
    entry_matches_object,
    item_doc_id,
    new_window_id,
    object_key,
    page_token_of,
    positive_ttl,
    run_page_key,
    unknown_run,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
# A conditional write's change: ("put", every field), ("update", some fields), ("delete", {}).
Change = tuple[Literal["put", "update", "delete"], dict[str, Any]]

DEFAULT_PREFIX = "retrain_"
# How long a contended transaction is retried (the default submit deadline).
DEFAULT_DEADLINE = 30.0
# Backoff between attempts of a contended transaction: full jitter, doubling up to the maximum.
INITIAL_BACKOFF = 0.5
MAXIMUM_BACKOFF = 5.0
_PAGE = 200
# The most decision documents one page of ``page_decisions`` reads when it filters by object
# (Firestore cannot match a substring): a page stops there and hands on a token to go on from.
PAGE_SCAN_BUDGET = 2000
_WRITE_BATCH = 400
# The most window items one streamed query reads (iter_window_items).
ITEM_STREAM_PAGE = 10_000

# The composite indexes the queries below need: (collection without prefix, ((field, order), ...)).
# deploy/terraform/windows.tf declares each (google_firestore_index); a test keeps them equal.
COMPOSITE_INDEXES: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    # iter_window_items: a window's items in the order they were added
    ("window_items", (("window_id", "ASCENDING"), ("added_at", "ASCENDING"))),
    # _tally: a window's newest item (its last event time)
    ("window_items", (("window_id", "ASCENDING"), ("added_at", "DESCENDING"))),
    # decisions_for_object, list_decisions by route, by outcome, by both: newest first
    ("decisions", (("object_key", "ASCENDING"), ("time", "DESCENDING"))),
    ("decisions", (("route", "ASCENDING"), ("time", "DESCENDING"))),
    ("decisions", (("outcome", "ASCENDING"), ("time", "DESCENDING"))),
    ("decisions", (("route", "ASCENDING"), ("outcome", "ASCENDING"), ("time", "DESCENDING"))),
)


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value)


def _timestamp(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def _window(doc_id: str, data: Mapping[str, Any]) -> Window:
    """The window as stored; ``count``, ``last_event_at`` and ``size_bytes`` are in ``data``
    only once tallied (see :meth:`FirestoreStore._read_window`)."""
    return Window(
        window_id=doc_id,
        route=data.get("route", ""),
        state=WindowState(data.get("state", WindowState.OPEN)),
        opened_at=float(data.get("opened_at") or 0.0),
        last_event_at=float(data.get("last_event_at") or 0.0),
        count=int(data.get("count") or 0),
        owner=data.get("owner") or "",
        lease_until=_seconds(data.get("lease_until")),
        claimed_at=_seconds(data.get("claimed_at")),
        claims=int(data.get("claims") or 0),
        manifest_uri=data.get("manifest_uri") or "",
        run_key=data.get("run_key") or "",
        job_id=data.get("job_id") or "",
        job_name=data.get("job_name") or "",
        closed_at=_seconds(data.get("closed_at")),
        expire_at=_seconds(data.get("expire_at")),
        size_bytes=int(data.get("size_bytes") or 0),
    )


def _active(data: Mapping[str, Any] | None) -> ActiveJob | None:
    if not data:
        return None
    return ActiveJob(
        route=data["route"],
        job_id=data.get("job_id", ""),
        job_name=data.get("job_name", ""),
        started_at=float(data.get("started_at") or 0.0),
        lease_until=_seconds(data.get("lease_until")),
        others=tuple(data.get("others") or ()),
        revision=int(data.get("revision") or 0),
    )


def _pending(data: Mapping[str, Any] | None) -> Pending | None:
    if not data:
        return None
    return Pending(
        route=data["route"],
        run_key=data.get("run_key", ""),
        request_json=data.get("request_json", ""),
        queued_at=float(data.get("queued_at") or 0.0),
    )


class FirestoreStore:
    """The :class:`~retrain_trigger.store.base.StateStore` in one Firestore database.

    ``FIRESTORE_EMULATOR_HOST`` points the client at the emulator (anonymous credentials).
    """

    def __init__(
        self,
        *,
        project: str | None = None,
        database: str = "(default)",
        client: Any = None,
        prefix: str = DEFAULT_PREFIX,
        clock: Callable[[], float] = time.time,
        retention_seconds: float = DEFAULT_RETENTION_SECONDS,
        deadline: float = DEFAULT_DEADLINE,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if retention_seconds <= 0:
            raise ValueError(f"retention_seconds must be positive, got {retention_seconds!r}")
        from google.api_core import exceptions as api_exceptions
        from google.cloud import firestore
        from google.cloud.firestore_v1.field_path import FieldPath

        self._fs = firestore
        self._document_id = FieldPath.document_id()
        self._errors = api_exceptions
        if client is None:
            try:
                client = firestore.Client(project=project or None, database=database or None)
            except Exception as exc:  # no credentials or project: an operator must act
                raise StoreError(
                    f"cannot create the Firestore client: {exc}", retryable=False
                ) from exc
        self._client = client
        self._clock = clock
        self.retention_seconds = float(retention_seconds)
        self.deadline = float(deadline)
        self._sleep = sleep
        self._jitter = jitter
        self._monotonic = monotonic
        self._routes = client.collection(f"{prefix}routes")
        self._windows = client.collection(f"{prefix}windows")
        self._items = client.collection(f"{prefix}window_items")
        self._pending = client.collection(f"{prefix}pending")
        self._active = client.collection(f"{prefix}active")
        self._decisions = client.collection(f"{prefix}decisions")
        self._pauses = client.collection(f"{prefix}pauses")

        self._runs = client.collection(f"{prefix}runs")
        self._run_ends = client.collection(f"{prefix}run_ends")
        self._champions = client.collection(f"{prefix}champions")

    def __repr__(self) -> str:
        return (
            f"FirestoreStore(project={self._client.project!r}, database={self._client._database!r})"
        )

    def close(self) -> None:
        self._client.close()

    # -- plumbing ----------------------------------------------------------------------------

    def _in_transaction(self, body: Callable[..., T], *args: Any) -> T:
        """``body(transaction, *args)`` in a read-write transaction: one library attempt, so
        that contention comes back to :meth:`_retrying` and its backoff."""
        run = self._fs.transactional(body)
        result: T = run(self._client.transaction(max_attempts=1), *args)
        return result

    def _conditional(
        self, ref: Any, decide: Callable[[dict[str, Any] | None], tuple[Change | None, T]]
    ) -> T:
        """A read-modify-write of one document without a transaction: read it, let ``decide``
        turn its data (``None``: no document) into a change and a result, and write the change
        only if the document is as it was read: created if it did not exist, otherwise updated or
        deleted on the precondition that its update time is the one read
        (https://cloud.google.com/firestore/docs/reference/rest/v1/Precondition). Two writers
        racing hold no locks: one succeeds, the other's precondition fails at once and it reads
        again (under :meth:`_retrying`). Anything ``decide`` raises passes through.
        """

        def attempt() -> T:
            snap = ref.get()
            change, result = decide(snap.to_dict() if snap.exists else None)
            if change is None:
                return result
            kind, fields = change
            if not snap.exists:
                if kind != "put":
                    raise LookupError(f"no document {ref.path} to {kind}")
                ref.create(fields)
                return result
            unchanged = self._client.write_option(last_update_time=snap.update_time)
            if kind == "delete":
                ref.delete(option=unchanged)
            else:  # "put" writes every field of the document, "update" the fields given
                ref.update(fields, option=unchanged)
            return result

        errors = self._errors
        return self._retrying(
            attempt,
            "conditional write",
            conflicts=(errors.FailedPrecondition, errors.AlreadyExists, errors.NotFound),
        )

    def _retrying(
        self, attempt: Callable[[], T], what: str, conflicts: tuple[type[Exception], ...] = ()
    ) -> T:
        """``attempt()`` until it succeeds; contention (``conflicts`` too), and transient errors
        are retried with full-jitter exponential backoff until ``deadline`` seconds have passed
        (see "Contention" above); errors an operator must fix raise :class:`StoreError` at once.
        """
        started = self._monotonic()
        backoff = INITIAL_BACKOFF
        attempts = 0
        while True:
            attempts += 1
            try:
                return attempt()
            except ValueError as exc:  # the library's "Failed to commit transaction in 1 attempts"
                if not isinstance(exc.__cause__, self._errors.Aborted):
                    raise
                last: Exception = exc.__cause__
            except self._errors.GoogleAPICallError as exc:
                if not isinstance(exc, self._retried + conflicts):
                    raise self._error(exc) from exc
                last = exc
            pause = self._jitter() * backoff
            elapsed = self._monotonic() - started
            if elapsed + pause >= self.deadline:
                raise StoreError(
                    f"Firestore {what} failed {attempts} times in {elapsed:.1f}s "
                    f"(contended or unavailable): {last}"
                ) from last
            log.debug("Firestore %s attempt %d: %s; again in %.2fs", what, attempts, last, pause)
            self._sleep(pause)
            backoff = min(backoff * 2, MAXIMUM_BACKOFF)

    @property
    def _retried(self) -> tuple[type[Exception], ...]:
        """Contention (``ABORTED``; ``ALREADY_EXISTS`` when a racing transaction created the
        document first) and transient unavailability."""
        errors = self._errors
        return (
            errors.Aborted,
            errors.AlreadyExists,
            errors.ServiceUnavailable,
            errors.DeadlineExceeded,
            errors.InternalServerError,
            errors.ResourceExhausted,
        )

    def _error(self, exc: Exception) -> StoreError:
        refused = (
            self._errors.PermissionDenied,
            self._errors.Unauthenticated,
            self._errors.NotFound,
            self._errors.InvalidArgument,
            self._errors.FailedPrecondition,
        )
        return StoreError(f"Firestore: {exc}", retryable=not isinstance(exc, refused))

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except self._errors.GoogleAPICallError as exc:
            raise self._error(exc) from exc

    def _where(self, query: Any, field: str, op: str, value: Any) -> Any:
        return query.where(filter=self._fs.FieldFilter(field, op, value))

    def _scan(self, query: Any, page: int = _PAGE) -> Iterator[Any]:
        """Every document of an (equality and document-id filtered) query, in id order."""
        last = None
        while True:
            paged = query.limit(page)
            if last is not None:
                paged = paged.start_after(last)
            docs = self._call(lambda q=paged: list(q.stream()))
            yield from docs
            if len(docs) < page:
                return
            last = docs[-1]

    # -- windows -----------------------------------------------------------------------------

    def add_to_window(self, route: str, item: WindowItem, now: float) -> WindowInfo:
        """Writes the item's document and nothing else (see "Windows at scale" above).

        A transaction reads the route's pointer (a shared lock: adders do not conflict with one
        another) and the item's document (a redelivery finds it), and creates the item in the
        window the pointer names. When the route has none, the transaction writes nothing and
        a conditional write opens one: the window and the item are created, and the route's
        pointer written on the precondition that the route is as the transaction read it. Of
        instances racing to open a window, one wins at once and the others join it."""
        check_route(route)
        route_ref = self._routes.document(route)
        item_ref = self._items.document(item_doc_id(route, item.key))

        def record(window_id: str) -> dict[str, Any]:
            data = item.to_dict()
            data.update(
                route=route, window_id=window_id, key=item.key, added_at=now, expire_at=None
            )
            return data

        def body(tx: Any) -> tuple[WindowInfo | None, Any]:
            """(the info, None), or (None, the route's snapshot) when the route has no open
            window: then nothing is written here (see ``attempt``)."""
            refs = [route_ref, item_ref]
            snaps = {s.reference.path: s for s in self._client.get_all(refs, transaction=tx)}
            held = snaps[item_ref.path]
            if held.exists:
                data = held.to_dict() or {}
                info = WindowInfo(
                    window_id=str(data.get("window_id") or ""),
                    route=route,
                    state=WindowState.CLOSED,  # read below, outside the transaction
                    count=None,
                    opened_at=0.0,
                    last_event_at=float(data.get("added_at") or 0.0),
                    added=False,
                )
                return info, None
            route_snap = snaps[route_ref.path]
            pointer = (route_snap.to_dict() or {}) if route_snap.exists else {}
            open_id = pointer.get("open_window") or ""
            if not open_id:
                return None, route_snap
            tx.create(item_ref, record(open_id))
            info = WindowInfo(
                window_id=str(open_id),
                route=route,
                state=WindowState.OPEN,
                count=None,
                opened_at=float(pointer.get("opened_at") or now),
                last_event_at=now,
            )
            return info, None

        def attempt() -> WindowInfo:
            info, route_snap = self._in_transaction(body)
            if info is not None:
                return info
            open_id = new_window_id(route, now)
            pointer = {"route": route, "open_window": open_id, "opened_at": now, "updated_at": now}
            batch = self._client.batch()
            batch.create(self._windows.document(open_id), self._new_window(route, now))
            batch.create(item_ref, record(open_id))
            if route_snap.exists:
                unchanged = self._client.write_option(last_update_time=route_snap.update_time)
                batch.update(route_ref, pointer, option=unchanged)
            else:
                batch.create(route_ref, pointer)
            batch.commit()
            return WindowInfo(open_id, route, WindowState.OPEN, None, now, now)

        errors = self._errors
        info = self._retrying(
            attempt,
            "window add",
            conflicts=(errors.FailedPrecondition, errors.AlreadyExists, errors.NotFound),
        )
        if info.added:
            return info
        # A redelivery (rare next to the additions): the window's state and opening time.
        snap = self._call(self._windows.document(info.window_id).get)
        if not snap.exists:  # its items expired with it; TTL deleted the window first
            return info
        data = snap.to_dict() or {}
        return WindowInfo(
            window_id=info.window_id,
            route=route,
            state=WindowState(data.get("state", WindowState.OPEN)),
            count=None,
            opened_at=float(data.get("opened_at") or 0.0),
            last_event_at=info.last_event_at,
            added=False,
        )

    @staticmethod
    def _new_window(route: str, now: float) -> dict[str, Any]:
        """An OPEN window: its count, size and last event time are not fields (they would be
        written by every addition); they are read from its items, and recorded by its claim."""
        return {
            "route": route,
            "state": str(WindowState.OPEN),
            "opened_at": now,
            "owner": "",
            "lease_until": None,
            "claims": 0,
            "expire_at": None,
        }

    def _items_of(self, window_id: str) -> Any:
        return self._where(self._items, "window_id", "==", window_id)

    def _tally(self, window_id: str) -> dict[str, Any]:
        """Count, bytes and last event time of a window from its items: an aggregation query
        (count and sum over the single-field index of ``window_id``) and the newest item (an
        ordered limit-1 query over the composite index window_id + added_at descending)."""
        items = self._items_of(window_id)
        aggregation = items.count(alias="count").sum("size", alias="bytes")
        results = self._call(aggregation.get)
        values = {r.alias: r.value for batch in results for r in batch}
        newest = self._call(
            lambda: list(
                items.order_by("added_at", direction=self._fs.Query.DESCENDING).limit(1).stream()
            )
        )
        last = float((newest[0].to_dict() or {}).get("added_at") or 0.0) if newest else 0.0
        return {
            "count": int(values.get("count") or 0),
            "size_bytes": int(values.get("bytes") or 0),
            "last_event_at": last,
        }

    def _read_window(self, doc_id: str, data: Mapping[str, Any]) -> Window:
        """The window; an OPEN one (or one whose claim did not record its tally) is tallied from
        its items."""
        if data.get("counted"):
            return _window(doc_id, data)
        return _window(doc_id, {**data, **self._tally(doc_id)})

    def due_windows(
        self, route: str | None, now: float, quiet_seconds: float, max_wait_seconds: float
    ) -> list[WindowInfo]:
        windows: list[Window] = []
        for state in (WindowState.OPEN, WindowState.CLOSING):
            query = self._where(self._windows, "state", "==", str(state))
            if route is not None:
                query = self._where(query, "route", "==", check_route(route))
            windows.extend(self._read_window(d.id, d.to_dict()) for d in self._scan(query))
        windows.sort(key=lambda w: (w.opened_at, w.window_id))
        return [w.info() for w in windows if w.due(now, quiet_seconds, max_wait_seconds)]

    def claim_window(
        self, window_id: str, owner: str, now: float, lease_seconds: float
    ) -> Window | None:
        """A conditional write. An OPEN window is claimed together with its route's pointer,
        on the precondition that the route is unchanged: every claim of an OPEN window moves
        that pointer, and every addition holds a read lock on it until it commits, so the claim
        is ordered after every addition that joined the window and before any that did not
        (those find no open window and open the next one). A CLOSING window (its lease expired,
        or a renewal) is claimed on the precondition that the window itself is unchanged.

        Once claimed, the window's items can no longer change: their tally is recorded on it."""
        if not owner:
            raise ValueError("a window claim needs an owner")
        ref = self._windows.document(window_id)

        def attempt() -> bool:
            snap = ref.get()
            if not snap.exists:
                return False
            window = _window(snap.id, snap.to_dict())
            if window.state is WindowState.CLOSED:
                return False
            if window.state is WindowState.CLOSING and not (
                window.owner == owner or window.lease_expired(now)
            ):
                return False
            changes = {
                "state": str(WindowState.CLOSING),
                "owner": owner,
                "lease_until": now + lease_seconds,
                "claimed_at": now,
                "claims": window.claims + 1,
            }
            route_ref = self._routes.document(window.route)
            route_snap = route_ref.get()
            points_here = (
                route_snap.exists and (route_snap.to_dict() or {}).get("open_window") == window_id
            )
            if window.state is WindowState.OPEN and points_here:
                batch = self._client.batch()
                batch.update(ref, changes)
                batch.update(
                    route_ref,
                    {"open_window": "", "updated_at": now},
                    option=self._client.write_option(last_update_time=route_snap.update_time),
                )
                batch.commit()
            else:
                ref.update(
                    changes, option=self._client.write_option(last_update_time=snap.update_time)
                )
            return True

        errors = self._errors
        claimed = self._retrying(
            attempt,
            "window claim",
            conflicts=(errors.FailedPrecondition, errors.NotFound),
        )
        if not claimed:
            return None
        snap = self._call(ref.get)
        data = snap.to_dict() or {}
        if not data.get("counted"):
            tally = {**self._tally(window_id), "counted": True}
            self._call(ref.update, tally)  # the items are final: recorded once
            data.update(tally)
        return _window(window_id, data)

    def window_items(self, window_id: str) -> list[WindowItem]:
        return list(self.iter_window_items(window_id))

    def iter_window_items(
        self, window_id: str, page_size: int = DEFAULT_ITEM_PAGE
    ) -> Iterator[WindowItem]:
        """The items ordered by ``added_at`` then document id (the composite index window_id +
        added_at ascending). Each query is a stream read one document at a time (gRPC flow
        control: memory holds about one document, not a page) of up to
        ``max(page_size, ITEM_STREAM_PAGE)`` documents; the next starts after the last one read.
        Few queries matter where a query costs in proportion to the collection (the emulator
        scans it whole: seconds per query at 100,000 items)."""
        if page_size < 1:
            raise ValueError(f"page_size must be at least 1, got {page_size!r}")
        ordered = self._items_of(window_id).order_by("added_at")
        for doc in self._stream(ordered, max(page_size, ITEM_STREAM_PAGE)):
            yield WindowItem.from_dict(doc.to_dict() or {})

    def _stream(self, query: Any, limit: int = ITEM_STREAM_PAGE) -> Iterator[Any]:
        """Every document of ``query``, each query of up to ``limit`` read as a stream one
        document at a time; the next query starts after the last document read."""
        last = None
        while True:
            paged = query.limit(limit)
            if last is not None:
                paged = paged.start_after(last)
            read = 0
            stream = self._call(paged.stream)
            while (doc := self._call(next, stream, None)) is not None:
                read += 1
                last = doc
                yield doc
            if read < limit:
                return

    def set_window_manifest(
        self, window_id: str, manifest_uri: str, run_key: str, job_id: str
    ) -> Window:
        if not run_key or not job_id:
            raise ValueError("a window manifest needs a run key and a job id")
        ref = self._windows.document(window_id)

        def decide(data: dict[str, Any] | None) -> tuple[Change | None, Window]:
            if data is None:
                raise LookupError(f"no window {window_id!r}")
            window = _window(window_id, data)
            if window.state is WindowState.OPEN:
                raise ValueError(f"window {window_id!r} is OPEN: claim it first")
            if window.run_key or window.state is not WindowState.CLOSING:
                return None, window
            changes = {"manifest_uri": manifest_uri, "run_key": run_key, "job_id": job_id}
            return ("update", changes), _window(window_id, {**data, **changes})

        return self._conditional(ref, decide)

    def close_window(
        self, window_id: str, owner: str, job_name: str, now: float | None = None
    ) -> bool:
        closed_at = self._clock() if now is None else now
        ref = self._windows.document(window_id)
        current = self.get_window(window_id)
        if current is None or current.owner != owner:
            return False
        if current.state is WindowState.CLOSED:
            return True
        if current.state is not WindowState.CLOSING:
            return False
        expire_at = _timestamp(closed_at + self.retention_seconds)
        # The items first: a crash in between leaves the window CLOSING (its next flush closes it
        # and stamps them again), never a CLOSED window with items that do not expire.
        self._stamp_items(window_id, expire_at)

        def decide(data: dict[str, Any] | None) -> tuple[Change | None, bool]:
            if data is None:
                return None, False
            window = _window(window_id, data)
            if window.owner != owner:
                return None, False
            if window.state is WindowState.CLOSED:
                return None, True
            if window.state is not WindowState.CLOSING:
                return None, False
            changes = {
                "state": str(WindowState.CLOSED),
                "job_name": job_name,
                "closed_at": closed_at,
                "lease_until": None,
                "expire_at": expire_at,
            }
            return ("update", changes), True

        return self._conditional(ref, decide)

    def _stamp_items(self, window_id: str, expire_at: datetime) -> None:
        """Streamed (bounded memory whatever the window's size), one batch per 400 items."""
        query = self._items_of(window_id).select([])
        batch = self._client.batch()
        pending = 0
        for doc in self._stream(query):
            batch.update(doc.reference, {"expire_at": expire_at})
            pending += 1
            if pending == _WRITE_BATCH:
                self._call(batch.commit)
                batch, pending = self._client.batch(), 0
        if pending:
            self._call(batch.commit)

    def get_window(self, window_id: str) -> Window | None:
        snap = self._call(self._windows.document(window_id).get)
        return self._read_window(snap.id, snap.to_dict()) if snap.exists else None

    def list_windows(self, route: str, state: WindowState | str | None = None) -> list[Window]:
        query = self._where(self._windows, "route", "==", check_route(route))
        if state is not None:
            query = self._where(query, "state", "==", str(WindowState(state)))
        windows = [self._read_window(d.id, d.to_dict()) for d in self._scan(query)]
        windows.sort(key=lambda w: (w.opened_at, w.window_id))
        return windows

    # -- concurrency -------------------------------------------------------------------------

    def set_pending(
        self, route: str, request_json: str, run_key: str, now: float
    ) -> Pending | None:
        ref = self._pending.document(check_route(route))
        record = {
            "route": route,
            "run_key": run_key,
            "request_json": request_json,
            "queued_at": now,
        }

        def decide(data: dict[str, Any] | None) -> tuple[Change, Pending | None]:
            return ("put", record), _pending(data)

        return self._conditional(ref, decide)

    def take_pending(self, route: str, run_key: str = "") -> Pending | None:
        ref = self._pending.document(check_route(route))

        def decide(data: dict[str, Any] | None) -> tuple[Change | None, Pending | None]:
            if data is None or (run_key and data.get("run_key", "") != run_key):
                return None, None
            return ("delete", {}), _pending(data)

        return self._conditional(ref, decide)

    def get_pending(self, route: str) -> Pending | None:
        snap = self._call(self._pending.document(check_route(route)).get)
        return _pending(snap.to_dict()) if snap.exists else None

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
        ref = self._active.document(check_route(route))
        lease_until = None if lease_seconds is None else now + lease_seconds

        def decide(data: dict[str, Any] | None) -> tuple[Change | None, bool]:
            current = _active(data)
            if expect_job_id is not None and (current.job_id if current else "") != expect_job_id:
                return None, False
            if expect_revision is not None and (current.revision if current else 0) != (
                expect_revision
            ):
                return None, False
            record = {
                "route": route,
                "job_id": job_id,
                "job_name": job_name,
                "started_at": now,
                "lease_until": lease_until,
                "others": [j for j in (current.others if current else ()) if j != job_id],
                "revision": (current.revision if current else 0) + 1,
            }
            return ("put", record), True

        return self._conditional(ref, decide)

    def get_active(self, route: str) -> ActiveJob | None:
        snap = self._call(self._active.document(check_route(route)).get)
        return _active(snap.to_dict()) if snap.exists else None

    def track_active(self, route: str, job_id: str, job_name: str, now: float) -> None:
        ref = self._active.document(check_route(route))

        def decide(data: dict[str, Any] | None) -> tuple[Change | None, None]:
            current = _active(data)
            if current is None:
                record = {
                    "route": route,
                    "job_id": job_id,
                    "job_name": job_name,
                    "started_at": now,
                    "lease_until": None,
                    "others": [],
                    "revision": 1,
                }
                return ("put", record), None
            if job_id == current.job_id or job_id in current.others:
                return None, None
            return ("update", {"others": [*current.others, job_id]}), None

        self._conditional(ref, decide)

    def clear_active(self, route: str, job_id: str) -> bool:
        ref = self._active.document(check_route(route))

        def decide(data: dict[str, Any] | None) -> tuple[Change | None, bool]:
            current = _active(data)
            if current is None:
                return None, False
            if job_id in current.others:
                return ("update", {"others": [j for j in current.others if j != job_id]}), True
            if job_id != current.job_id:
                return None, False
            if not current.others:
                return ("delete", {}), True
            promoted = {
                "job_id": current.others[0],
                "job_name": "",
                "lease_until": None,
                "others": list(current.others[1:]),
                "revision": current.revision + 1,
            }
            return ("update", promoted), True

        return self._conditional(ref, decide)

    # -- decision history --------------------------------------------------------------------

    def record_decision(self, entry: Mapping[str, Any], ttl_seconds: float) -> str:
        record = DecisionRecord.prepare(entry, ttl_seconds, self._clock())
        self._call(
            self._decisions.document(record.id).create,
            {
                "time": record.time,
                "expire_at": _timestamp(record.expire_at),
                "route": record.route,
                "outcome": record.outcome,
                "object_key": record.object_key,
                "run_key": record.run_key,
                "job_id": record.job_id,
                "window_id": record.window_id,
                "entry": record.entry_json,
            },
        )
        return record.id

    def _decisions_of(self, query: Any, limit: int) -> list[dict[str, Any]]:
        now = self._clock()
        out: list[dict[str, Any]] = []
        if limit <= 0:
            return out
        for doc in self._scan(query, page=max(min(limit * 2, _PAGE), 10)):
            data = doc.to_dict()
            expire_at = _seconds(data.get("expire_at")) or 0.0
            if expire_at <= now:
                continue
            out.append(DecisionRecord.output(doc.id, data.get("entry") or "{}", expire_at))
            if len(out) >= limit:
                break
        return out

    def _newest_first(self, query: Any) -> Any:
        return query.order_by("time", direction=self._fs.Query.DESCENDING)

    def decisions_for_object(
        self, gs_uri: str, limit: int = DEFAULT_OBJECT_LIMIT
    ) -> list[dict[str, Any]]:
        query = self._where(self._decisions, "object_key", "==", object_key(gs_uri))
        return self._decisions_of(self._newest_first(query), int(limit))

    def list_decisions(
        self,
        since: float,
        until: float | None = None,
        route: str | None = None,
        outcome: str | None = None,
        limit: int = DEFAULT_DECISION_LIMIT,
    ) -> list[dict[str, Any]]:
        """Newest first by ``time`` (ids are random: see store/base.py), over the composite
        indexes declared in deploy/terraform/windows.tf (:data:`COMPOSITE_INDEXES`)."""
        query: Any = self._decisions
        if route is not None:
            query = self._where(query, "route", "==", route)
        if outcome is not None:
            query = self._where(query, "outcome", "==", str(outcome))
        query = self._where(query, "time", ">=", float(since))
        if until is not None:
            query = self._where(query, "time", "<", float(until))
        return self._decisions_of(self._newest_first(query), int(limit))

    # -- pauses ------------------------------------------------------------------------
    # One document per paused route, id the route's name (a single-document write each).

    @staticmethod
    def _pause_of(data: Mapping[str, Any]) -> Pause:
        return Pause(
            route=str(data.get("route", "")),
            reason=str(data.get("reason", "")),
            by=str(data.get("by", "")),
            paused_at=float(_seconds(data.get("paused_at")) or 0.0),
        )

    def set_pause(self, route: str, reason: str, by: str, now: float) -> Pause:
        ref = self._pauses.document(check_route(route))
        self._call(ref.set, {"route": route, "reason": reason, "by": by, "paused_at": now})
        return Pause(route=route, reason=reason, by=by, paused_at=now)

    def clear_pause(self, route: str) -> bool:
        ref = self._pauses.document(check_route(route))

        def decide(data: dict[str, Any] | None) -> tuple[Change | None, bool]:
            return (None, False) if data is None else (("delete", {}), True)

        return self._conditional(ref, decide)

    def get_pause(self, route: str) -> Pause | None:
        snap = self._call(self._pauses.document(check_route(route)).get)
        return self._pause_of(snap.to_dict()) if snap.exists else None

    def paused_routes(self) -> dict[str, Pause]:
        pauses = [self._pause_of(d.to_dict()) for d in self._scan(self._pauses)]
        return {p.route: p for p in sorted(pauses, key=lambda p: p.route)}

    # -- end pauses --------------------------------------------------------------------

    def purge_expired(self, now: float, limit: int = DEFAULT_PURGE_LIMIT) -> int:
        """Decisions, then window items, then windows (a window's items go first)."""
        moment = _timestamp(now)
        budget = max(int(limit), 0)
        deleted = 0
        collections = (
            self._decisions,
            self._items,
            self._windows,
            self._runs,
            self._run_ends,
            self._champions,
        )
        for collection in collections:
            expired = self._where(collection, "expire_at", "<=", moment).select([])
            while deleted < budget:
                wanted = min(_WRITE_BATCH, budget - deleted)
                page = expired.limit(wanted)
                docs = self._call(lambda q=page: list(q.stream()))
                if not docs:
                    break
                batch = self._client.batch()
                for doc in docs:
                    batch.delete(doc.reference)
                self._call(batch.commit)
                deleted += len(docs)
                if len(docs) < wanted:
                    break
        return deleted

    # -- run outcomes ------------------------------------------------------------------------
    # retrain_runs/{page key: 13-digit countdown of the submission's ms}|{job_id}
    #     route, job_id, state, check_after (seconds or null), expire_at, record (JSON text)
    # retrain_run_ends/{job_id}     the run's end was recorded ("ended once"): expire_at
    # retrain_champions/{route}__{sha256(job_id|version)[:24]}
    #     route, changed_at, expire_at, record (JSON text)
    # Ids in page-key order make a route's runs newest first with an equality filter only.

    @staticmethod
    def _run_fields(record: RunRecord) -> dict[str, Any]:
        import json

        return {
            "route": record.route,
            "job_id": record.job_id,
            "state": record.state,
            "check_after": record.check_after,
            "expire_at": _timestamp(record.expire_at or 0.0),
            "record": json.dumps(record.to_dict(), sort_keys=True, default=str),
        }

    @staticmethod
    def _run_of(data: Mapping[str, Any]) -> RunRecord:
        import json

        return RunRecord.from_dict(json.loads(data.get("record") or "{}"))

    def _run_doc(self, job_id: str, transaction: Any = None) -> Any:
        query = self._where(self._runs, "job_id", "==", job_id).limit(1)
        docs = list(query.stream(transaction=transaction))
        return docs[0] if docs else None

    def record_run(self, record: RunRecord, ttl_seconds: float) -> RunRecord:
        import dataclasses

        check_route(record.route)
        check_run_state(record.state)
        stored = dataclasses.replace(
            record, expire_at=record.submitted_at + positive_ttl(ttl_seconds)
        )
        existing = self._call(self._run_doc, record.job_id)
        if existing is not None:  # recorded already (by another submission time)
            return self._run_of(existing.to_dict())
        ref = self._runs.document(run_page_key(stored))

        def decide(data: dict[str, Any] | None) -> tuple[Change | None, RunRecord]:
            if data is not None:
                return None, self._run_of(data)
            return ("put", self._run_fields(stored)), stored

        return self._conditional(ref, decide)

    def get_run(self, job_id: str) -> RunRecord | None:
        doc = self._call(self._run_doc, job_id)
        return self._run_of(doc.to_dict()) if doc is not None else None

    def end_run(self, end: RunEnd, ttl_seconds: float) -> tuple[RunRecord, bool]:
        check_run_state(end.state)
        ttl = positive_ttl(ttl_seconds)
        marker = self._run_ends.document(end.job_id)

        def body(tx: Any) -> tuple[RunRecord, bool]:
            ended_before = marker.get(transaction=tx).exists
            doc = self._run_doc(end.job_id, tx)
            record = self._run_of(doc.to_dict()) if doc is not None else None
            if ended_before or (record is not None and record.ended):
                return (record or unknown_run(end)), False
            ended = ended_record(record or unknown_run(end), end, end.ended_at + ttl)
            ref = doc.reference if doc is not None else self._runs.document(run_page_key(ended))
            tx.set(ref, self._run_fields(ended))
            tx.set(marker, {"expire_at": _timestamp(end.ended_at + ttl)})
            return ended, True

        return self._retrying(lambda: self._in_transaction(body), "run end")

    def runs_to_check(self, now: float, limit: int = 100) -> list[RunRecord]:
        query = self._where(self._runs, "check_after", "<=", now).limit(max(int(limit), 1))
        docs = self._call(lambda: list(query.stream()))
        records = [self._run_of(doc.to_dict()) for doc in docs]
        return [r for r in records if not r.ended][: max(int(limit), 0)]

    def defer_check(self, job_id: str, check_after: float) -> None:
        doc = self._call(self._run_doc, job_id)
        if doc is None:
            return

        def decide(data: dict[str, Any] | None) -> tuple[Change | None, None]:
            import dataclasses

            if data is None:
                return None, None
            record = self._run_of(data)
            if record.ended:
                return None, None
            moved = dataclasses.replace(record, check_after=check_after)
            return ("update", self._run_fields(moved)), None

        self._conditional(doc.reference, decide)

    def mark_notified(self, job_id: str) -> None:
        import dataclasses

        doc = self._call(self._run_doc, job_id)
        if doc is None:
            return

        def decide(data: dict[str, Any] | None) -> tuple[Change | None, None]:
            if data is None:
                return None, None
            record = dataclasses.replace(self._run_of(data), notified=True)
            return ("update", self._run_fields(record)), None

        self._conditional(doc.reference, decide)

    def list_runs(
        self, route: str | None, limit: int = DEFAULT_RUN_LIMIT, page_token: str | None = None
    ) -> tuple[list[RunRecord], str | None]:
        size = max(int(limit), 1)
        query: Any = self._runs
        if route:
            query = self._where(query, "route", "==", check_route(route))
        if page_token:
            start = self._runs.document(check_run_page_token(page_token))
            query = self._where(query, self._document_id, ">", start)
        query = query.limit(size + 1)
        docs = self._call(lambda: list(query.stream()))
        records = [self._run_of(doc.to_dict()) for doc in docs[:size]]
        token = docs[size - 1].id if len(docs) > size else None
        return records, token

    def record_champion(self, change: ChampionChange, ttl_seconds: float) -> bool:
        import json

        check_route(change.route)
        ref = self._champions.document(champion_id(change))
        fields = {
            "route": change.route,
            "changed_at": change.changed_at,
            "expire_at": _timestamp(change.changed_at + positive_ttl(ttl_seconds)),
            "record": json.dumps(change.to_dict(), sort_keys=True),
        }
        try:
            ref.create(fields)
        except self._errors.AlreadyExists:
            return False
        except self._errors.GoogleAPICallError as exc:
            raise self._error(exc) from exc
        return True

    def champion_history(
        self, route: str, limit: int = DEFAULT_CHAMPION_LIMIT
    ) -> list[ChampionChange]:
        import json

        query = self._where(self._champions, "route", "==", check_route(route))
        changes = [
            ChampionChange.from_dict(json.loads(doc.to_dict().get("record") or "{}"))
            for doc in self._scan(query)
        ]
        changes.sort(key=lambda c: (c.changed_at, c.job_id, c.version))
        return changes[-max(int(limit), 1) :]

    # -- decision paging (the status page) ---------------------------------------------------

    def page_decisions(
        self,
        route: str | None = None,
        outcome: str | None = None,
        object_contains: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        page_token: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first by ``time``, then document id (ids are random: see store/base.py), over
        the composite indexes of :data:`COMPOSITE_INDEXES`; a page token is the ``time`` and id
        of the last decision read, the query's cursor. Expired decisions (TTL deletion lags) and,
        for ``object_contains``, decisions about other objects are skipped after reading; at
        most :data:`PAGE_SCAN_BUDGET` documents are read for one page, which then ends early
        with a token to continue from."""
        limit = check_page_limit(limit)
        after = check_page_token(page_token)
        needle = check_object_filter(object_contains)
        query: Any = self._decisions
        if route is not None:
            query = self._where(query, "route", "==", str(route))
        if outcome is not None:
            query = self._where(query, "outcome", "==", str(outcome))
        query = self._newest_first(query).order_by(
            self._document_id, direction=self._fs.Query.DESCENDING
        )
        cursor: dict[str, Any] | None = None
        if after is not None:
            cursor = {"time": after[0], self._document_id: self._decisions.document(after[1])}
        now = self._clock()
        found: list[dict[str, Any]] = []
        times: list[Any] = []  # each found decision's stored ``time``, for the page token
        batch = _PAGE if needle is not None else limit + 1
        read = 0
        while True:
            paged = query.limit(batch)
            if cursor is not None:
                paged = paged.start_after(cursor)
            docs = self._call(lambda q=paged: list(q.stream()))
            for doc in docs:
                read += 1
                data = doc.to_dict()
                cursor = {"time": data.get("time"), self._document_id: doc.reference}
                expire_at = _seconds(data.get("expire_at")) or 0.0
                if expire_at > now:
                    entry = DecisionRecord.output(doc.id, data.get("entry") or "{}", expire_at)
                    if needle is None or entry_matches_object(entry, needle):
                        found.append(entry)
                        times.append(data.get("time"))
                        if len(found) > limit:
                            token = page_token_of(times[limit - 1], found[limit - 1]["id"])
                            return found[:limit], token
                if read >= PAGE_SCAN_BUDGET:
                    return found, page_token_of(data.get("time"), doc.id)
            if len(docs) < batch:
                return found, None
