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
    retrain_active/{route}                 the route's active job
    retrain_decisions/{13-digit countdown of ms}-{rnd}
                                           time, expire_at (Timestamp), route, outcome,
                                           object_key (sha256 of gs://bucket/object), run_key,
                                           job_id, window_id, entry (the entry as JSON text)

Transactions (``@firestore.transactional``) guard every read-modify-write. Adding an item reads
the route document and the item's document and writes the window with ``Increment`` and
``Maximum`` transforms without reading it, so concurrent additions to one window do not conflict;
they conflict only with a claim, which moves the route's ``open_window`` pointer, so an event is
either in the claimed window or in the next one.

**No composite index is needed.** Every query is equality filters on single fields (merged from the
automatic single-field indexes), optionally with a range on the document id: the decision ids
count milliseconds down, so ascending id order (the default order, and the only key order that
needs no custom index) is newest first. Ranges on other fields are applied to the results.

**Time-to-live.** ``expire_at`` is a Timestamp; enable a TTL policy on it, e.g.
``gcloud firestore fields ttls update expire_at --collection-group=retrain_decisions
--enable-ttl``. TTL deletion lags (typically within a day), so reads skip expired entries;
``purge_expired`` deletes them at once and needs the automatic single-field index of ``expire_at``.
The ``entry`` field is never queried: exempting it from indexing saves index writes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from retrain_trigger.store.base import (
    DEFAULT_DECISION_LIMIT,
    DEFAULT_OBJECT_LIMIT,
    ActiveJob,
    DecisionRecord,
    Pending,
    StoreError,
    Window,
    WindowInfo,
    WindowItem,
    WindowState,
    check_route,
    decision_id_bound,
    item_doc_id,
    new_window_id,
    object_key,
)

DEFAULT_PREFIX = "retrain_"
DEFAULT_MAX_ATTEMPTS = 10
_PAGE = 200
_DELETE_BATCH = 400


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
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
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
        self._max_attempts = max_attempts
        self._routes = client.collection(f"{prefix}routes")
        self._windows = client.collection(f"{prefix}windows")
        self._items = client.collection(f"{prefix}window_items")
        self._pending = client.collection(f"{prefix}pending")
        self._active = client.collection(f"{prefix}active")
        self._decisions = client.collection(f"{prefix}decisions")

    def __repr__(self) -> str:
        return (
            f"FirestoreStore(project={self._client.project!r}, database={self._client._database!r})"
        )

    def close(self) -> None:
        self._client.close()

    # -- plumbing ----------------------------------------------------------------------------

    def _transact(self, body: Callable[..., Any], *args: Any) -> Any:
        """Runs ``body(transaction, *args)`` in a read-write transaction, retried on contention."""
        run = self._fs.transactional(body)
        last: Exception | None = None
        for _ in range(3):
            try:
                return run(self._client.transaction(max_attempts=self._max_attempts), *args)
            except self._errors.Aborted as exc:  # contention while reading: start again
                last = exc
            except self._errors.AlreadyExists as exc:  # a racing transaction created it first
                last = exc
            except ValueError as exc:
                if not isinstance(exc.__cause__, self._errors.Aborted):
                    raise
                raise StoreError(f"Firestore transaction kept conflicting: {exc}") from exc
            except self._errors.GoogleAPICallError as exc:
                raise self._error(exc) from exc
        raise StoreError(f"Firestore transaction kept conflicting: {last}") from last

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
        check_route(route)
        route_ref = self._routes.document(route)
        item_ref = self._items.document(item_doc_id(route, item.key))
        fs = self._fs

        def body(tx: Any) -> tuple[str, bool]:
            refs = [route_ref, item_ref]
            snaps = {s.reference.path: s for s in self._client.get_all(refs, transaction=tx)}
            held = snaps.get(item_ref.path)
            if held is not None and held.exists:
                return held.to_dict()["window_id"], False
            route_snap = snaps.get(route_ref.path)
            open_id = ""
            if route_snap is not None and route_snap.exists:
                open_id = (route_snap.to_dict() or {}).get("open_window") or ""
            if open_id:
                tx.update(
                    self._windows.document(open_id),
                    {"count": fs.Increment(1), "last_event_at": fs.Maximum(now)},
                )
            else:
                open_id = new_window_id(route, now)
                tx.create(
                    self._windows.document(open_id),
                    {
                        "route": route,
                        "state": str(WindowState.OPEN),
                        "opened_at": now,
                        "last_event_at": now,
                        "count": 1,
                        "owner": "",
                        "lease_until": None,
                        "claims": 0,
                    },
                )
                tx.set(route_ref, {"route": route, "open_window": open_id, "updated_at": now})
            data = item.to_dict()
            data.update(route=route, window_id=open_id, key=item.key, added_at=now)
            tx.create(item_ref, data)
            return open_id, True

        window_id, added = self._transact(body)
        window = self.get_window(window_id)
        if window is None:  # pragma: no cover - windows are never deleted
            raise StoreError(f"window {window_id!r} vanished")
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
        if not owner:
            raise ValueError("a window claim needs an owner")
        ref = self._windows.document(window_id)

        def body(tx: Any) -> Window | None:
            snap = ref.get(transaction=tx)
            if not snap.exists:
                return None
            window = _window(snap.id, snap.to_dict())
            route_ref = self._routes.document(window.route)
            route_snap = route_ref.get(transaction=tx)
            if window.state is WindowState.CLOSED:
                return None
            if window.state is WindowState.CLOSING and not (
                window.owner == owner or window.lease_expired(now)
            ):
                return None
            changes = {
                "state": str(WindowState.CLOSING),
                "owner": owner,
                "lease_until": now + lease_seconds,
                "claimed_at": now,
                "claims": window.claims + 1,
            }
            tx.update(ref, changes)
            if route_snap.exists and (route_snap.to_dict() or {}).get("open_window") == window_id:
                tx.update(route_ref, {"open_window": "", "updated_at": now})
            return _window(snap.id, {**snap.to_dict(), **changes})

        result: Window | None = self._transact(body)
        return result

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

        def body(tx: Any) -> Window:
            snap = ref.get(transaction=tx)
            if not snap.exists:
                raise LookupError(f"no window {window_id!r}")
            window = _window(snap.id, snap.to_dict())
            if window.state is WindowState.OPEN:
                raise ValueError(f"window {window_id!r} is OPEN: claim it first")
            if window.run_key or window.state is not WindowState.CLOSING:
                return window
            changes = {"manifest_uri": manifest_uri, "run_key": run_key, "job_id": job_id}
            tx.update(ref, changes)
            return _window(snap.id, {**snap.to_dict(), **changes})

        result: Window = self._transact(body)
        return result

    def close_window(
        self, window_id: str, owner: str, job_name: str, now: float | None = None
    ) -> bool:
        closed_at = self._clock() if now is None else now
        ref = self._windows.document(window_id)

        def body(tx: Any) -> bool:
            snap = ref.get(transaction=tx)
            if not snap.exists:
                return False
            window = _window(snap.id, snap.to_dict())
            if window.owner != owner:
                return False
            if window.state is WindowState.CLOSED:
                return True
            if window.state is not WindowState.CLOSING:
                return False
            tx.update(
                ref,
                {
                    "state": str(WindowState.CLOSED),
                    "job_name": job_name,
                    "closed_at": closed_at,
                    "lease_until": None,
                },
            )
            return True

        result: bool = self._transact(body)
        return result

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

        def body(tx: Any) -> Pending | None:
            snap = ref.get(transaction=tx)
            previous = _pending(snap.to_dict()) if snap.exists else None
            tx.set(
                ref,
                {
                    "route": route,
                    "run_key": run_key,
                    "request_json": request_json,
                    "queued_at": now,
                },
            )
            return previous

        result: Pending | None = self._transact(body)
        return result

    def take_pending(self, route: str) -> Pending | None:
        ref = self._pending.document(check_route(route))

        def body(tx: Any) -> Pending | None:
            snap = ref.get(transaction=tx)
            if not snap.exists:
                return None
            tx.delete(ref)
            return _pending(snap.to_dict())

        result: Pending | None = self._transact(body)
        return result

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
    ) -> bool:
        ref = self._active.document(check_route(route))
        record = {"route": route, "job_id": job_id, "job_name": job_name, "started_at": now}

        def body(tx: Any) -> bool:
            if expect_job_id is not None:
                snap = ref.get(transaction=tx)
                current = (snap.to_dict() or {}).get("job_id", "") if snap.exists else ""
                if current != expect_job_id:
                    return False
            tx.set(ref, record)
            return True

        result: bool = self._transact(body)
        return result

    def get_active(self, route: str) -> ActiveJob | None:
        snap = self._call(self._active.document(check_route(route)).get)
        if not snap.exists:
            return None
        data = snap.to_dict()
        return ActiveJob(
            route=data["route"],
            job_id=data.get("job_id", ""),
            job_name=data.get("job_name", ""),
            started_at=float(data.get("started_at") or 0.0),
        )

    def clear_active(self, route: str, job_id: str) -> bool:
        ref = self._active.document(check_route(route))

        def body(tx: Any) -> bool:
            snap = ref.get(transaction=tx)
            if not snap.exists or (snap.to_dict() or {}).get("job_id") != job_id:
                return False
            tx.delete(ref)
            return True

        result: bool = self._transact(body)
        return result

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

    def purge_expired(self, now: float) -> int:
        query = self._where(self._decisions, "expire_at", "<=", _timestamp(now))
        deleted = 0
        while True:
            docs = self._call(lambda: list(query.limit(_DELETE_BATCH).stream()))
            if not docs:
                return deleted
            batch = self._client.batch()
            for doc in docs:
                batch.delete(doc.reference)
            self._call(batch.commit)
            deleted += len(docs)
            if len(docs) < _DELETE_BATCH:
                return deleted
