"""The state store in Firestore (native mode): the production store.

``google.cloud.firestore`` is imported in the constructor, never at package import, so functions
that keep their state in SQLite (or skip an event) never pay for it.

Documents (``retrain_`` is the default ``prefix``; ids never contain '/')::

    retrain_routes/{route}                 open_window: the id of the route's OPEN window, or ""
    retrain_windows/{route}__{stamp}-{rnd} the window: route, state, opened_at, last_event_at,
                                           count, owner, lease_until, claimed_at, claims,
                                           manifest_uri, run_key, job_id, job_name, closed_at
    retrain_window_items/{route}__{sha256(gs://bucket/object#generation)[:40]}
                                           one item: window_id, key, bucket, object, generation,
                                           size, event_id, event_time, added_at
    retrain_pending/{route}                the route's one waiting run
    retrain_active/{route}                 the job holding the route's run slot: job_id,
                                           job_name, started_at, lease_until (while reserved),
                                           others (runs still tracked), revision
    retrain_decisions/{13-digit countdown of ms}-{rnd}
                                           time, expire_at (Timestamp), route, outcome,
                                           object_key (sha256 of gs://bucket/object), run_key,
                                           job_id, window_id, entry (the entry as JSON text)

Windows and window items also carry ``expire_at`` (Timestamp): null while the window is open or
closing, set when it closes (close time plus ``retention_seconds``); the items first, then the
window, so no closed window has an item that never expires.

Every read-modify-write is atomic. Adding an item to an open window is a transaction
(``@firestore.transactional``): it reads the route document and the item's document and writes
the window with ``Increment`` and ``Maximum`` transforms without reading it, so concurrent
additions to one window do not conflict; they conflict only with a claim, which moves the route's
``open_window`` pointer, so an event is either in the claimed window or in the next one. Opening
a window, claiming one, and the changes of one document (the route's run slot, its pending run,
a window's manifest and close), are conditional writes: read, then create the document on the precondition that it does not
exist, or update or delete it on the precondition that its update time is the one read; a racing
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

**No composite index is needed.** Every query is equality filters on single fields (merged from the
automatic single-field indexes), optionally with a range on the document id: the decision ids
count milliseconds down, so ascending id order (the default order, and the only key order that
needs no custom index) is newest first. Ranges on other fields are applied to the results.

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
    DEFAULT_OBJECT_LIMIT,
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
    check_page_token,
    check_route,
    check_run_state,
    decision_id_bound,
    ended_record,
    item_doc_id,
    new_window_id,
    object_key,
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
_WRITE_BATCH = 400


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value)


def _timestamp(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def _window(doc_id: str, data: Mapping[str, Any]) -> Window:
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
        """Joins the route's open window in a transaction. When the route has none, the
        transaction writes nothing and a conditional write opens one: the window and the item
        are created, and the route's pointer written on the precondition that the route is as
        the transaction read it. Of instances racing to open a window, one wins at once and the
        others join it; none holds a lock on the route while the others wait for it."""
        check_route(route)
        route_ref = self._routes.document(route)
        item_ref = self._items.document(item_doc_id(route, item.key))
        fs = self._fs

        def record(window_id: str) -> dict[str, Any]:
            data = item.to_dict()
            data.update(
                route=route, window_id=window_id, key=item.key, added_at=now, expire_at=None
            )
            return data

        def new_window() -> dict[str, Any]:
            return {
                "route": route,
                "state": str(WindowState.OPEN),
                "opened_at": now,
                "last_event_at": now,
                "count": 1,
                "owner": "",
                "lease_until": None,
                "claims": 0,
                "expire_at": None,
            }

        def body(tx: Any) -> tuple[str, bool, Any]:
            """(window id, added, None), or ("", False, the route's snapshot) when the route has
            no open window: then nothing is written here (see ``attempt``)."""
            refs = [route_ref, item_ref]
            snaps = {s.reference.path: s for s in self._client.get_all(refs, transaction=tx)}
            held = snaps[item_ref.path]
            if held.exists:
                return str(held.to_dict()["window_id"]), False, None
            route_snap = snaps[route_ref.path]
            open_id = (route_snap.to_dict() or {}).get("open_window") if route_snap.exists else ""
            if not open_id:
                return "", False, route_snap
            tx.update(
                self._windows.document(open_id),
                {"count": fs.Increment(1), "last_event_at": fs.Maximum(now)},
            )
            tx.create(item_ref, record(open_id))
            return str(open_id), True, None

        def attempt() -> tuple[str, bool]:
            window_id, added, route_snap = self._in_transaction(body)
            if route_snap is None:
                return window_id, added
            open_id = new_window_id(route, now)
            pointer = {"route": route, "open_window": open_id, "updated_at": now}
            batch = self._client.batch()
            batch.create(self._windows.document(open_id), new_window())
            batch.create(item_ref, record(open_id))
            if route_snap.exists:
                unchanged = self._client.write_option(last_update_time=route_snap.update_time)
                batch.update(route_ref, pointer, option=unchanged)
            else:
                batch.create(route_ref, pointer)
            batch.commit()
            return open_id, True

        errors = self._errors
        window_id, added = self._retrying(
            attempt,
            "window add",
            conflicts=(errors.FailedPrecondition, errors.AlreadyExists, errors.NotFound),
        )
        window = self.get_window(window_id)
        if window is None:  # its items expired with it; TTL deleted the window first
            return WindowInfo(window_id, route, WindowState.CLOSED, 0, 0.0, 0.0, added=False)
        return window.info(added=added)

    def due_windows(
        self, route: str | None, now: float, quiet_seconds: float, max_wait_seconds: float
    ) -> list[WindowInfo]:
        windows: list[Window] = []
        for state in (WindowState.OPEN, WindowState.CLOSING):
            query = self._where(self._windows, "state", "==", str(state))
            if route is not None:
                query = self._where(query, "route", "==", check_route(route))
            windows.extend(_window(d.id, d.to_dict()) for d in self._scan(query))
        windows.sort(key=lambda w: (w.opened_at, w.window_id))
        return [w.info() for w in windows if w.due(now, quiet_seconds, max_wait_seconds)]

    def claim_window(
        self, window_id: str, owner: str, now: float, lease_seconds: float
    ) -> Window | None:
        """A conditional write. An OPEN window is claimed together with its route's pointer,
        on the precondition that the route is unchanged: every claim of an OPEN window moves
        that pointer, additions never do, so a racing claim fails it while additions (which
        write the window) do not hold the claim up. A CLOSING window (its lease expired, or a
        renewal) is claimed on the precondition that the window itself is unchanged."""
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
        return self.get_window(window_id) if claimed else None

    def window_items(self, window_id: str) -> list[WindowItem]:
        query = self._where(self._items, "window_id", "==", window_id)
        data = [d.to_dict() for d in self._scan(query, page=500)]
        data.sort(key=lambda d: (d.get("added_at") or 0.0, d.get("key") or ""))
        return [WindowItem.from_dict(d) for d in data]

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
        query = self._where(self._items, "window_id", "==", window_id).select([])
        refs = [doc.reference for doc in self._scan(query, page=500)]
        for start in range(0, len(refs), _WRITE_BATCH):
            batch = self._client.batch()
            for item_ref in refs[start : start + _WRITE_BATCH]:
                batch.update(item_ref, {"expire_at": expire_at})
            self._call(batch.commit)

    def get_window(self, window_id: str) -> Window | None:
        snap = self._call(self._windows.document(window_id).get)
        return _window(snap.id, snap.to_dict()) if snap.exists else None

    def list_windows(self, route: str, state: WindowState | str | None = None) -> list[Window]:
        query = self._where(self._windows, "route", "==", check_route(route))
        if state is not None:
            query = self._where(query, "state", "==", str(WindowState(state)))
        windows = [_window(d.id, d.to_dict()) for d in self._scan(query)]
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

    def take_pending(self, route: str) -> Pending | None:
        ref = self._pending.document(check_route(route))

        def decide(data: dict[str, Any] | None) -> tuple[Change | None, Pending | None]:
            if data is None:
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

    def _decisions_of(
        self,
        query: Any,
        limit: int,
        since: float | None = None,
        until: float | None = None,
    ) -> list[dict[str, Any]]:
        now = self._clock()
        out: list[dict[str, Any]] = []
        if limit <= 0:
            return out
        for doc in self._scan(query, page=max(min(limit * 2, _PAGE), 10)):
            data = doc.to_dict()
            moment = float(data.get("time") or 0.0)
            if since is not None and moment < since:
                continue  # only in the millisecond of ``since``: the id bound excludes older
            if until is not None and moment >= until:
                continue
            expire_at = _seconds(data.get("expire_at")) or 0.0
            if expire_at <= now:
                continue
            out.append(DecisionRecord.output(doc.id, data.get("entry") or "{}", expire_at))
            if len(out) >= limit:
                break
        return out

    def decisions_for_object(
        self, gs_uri: str, limit: int = DEFAULT_OBJECT_LIMIT
    ) -> list[dict[str, Any]]:
        query = self._where(self._decisions, "object_key", "==", object_key(gs_uri))
        return self._decisions_of(query, int(limit))

    def list_decisions(
        self,
        since: float,
        until: float | None = None,
        route: str | None = None,
        outcome: str | None = None,
        limit: int = DEFAULT_DECISION_LIMIT,
    ) -> list[dict[str, Any]]:
        query: Any = self._decisions
        if route is not None:
            query = self._where(query, "route", "==", route)
        if outcome is not None:
            query = self._where(query, "outcome", "==", str(outcome))
        document_id = self._document_id
        # Ids count milliseconds down: "older than until" is a lower bound on the id, "not
        # older than since" an upper one. The exact comparison is made on ``time``.
        if until is not None:
            query = self._where(
                query, document_id, ">=", self._decisions.document(decision_id_bound(until))
            )
        query = self._where(
            query, document_id, "<", self._decisions.document(decision_id_bound(since) + ".")
        )
        return self._decisions_of(query, int(limit), since=since, until=until)

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
            start = self._runs.document(check_page_token(page_token))
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
