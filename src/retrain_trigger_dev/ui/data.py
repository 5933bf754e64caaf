"""Every read the status page makes, in one place: the state store and the backend, read-only.

The page reads what the CLI reads (``retrain-trigger decisions``, ``why``, ``runs``): the state
store (SQLite or Firestore) for decisions, windows, the ``queue_latest`` queue, run outcomes, the
champion's history and paused routes; the backend (local or Vertex) for runs when the store
records no run outcomes. Nothing here writes.

Three of the store's reads are newer than some stores: ``list_runs`` (run outcomes),
``champion_history`` and ``paused_routes``. When the store lacks one, the page falls back to
what exists: runs from the backend's job listing, no champion history (with a note), no pauses.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from retrain_trigger.store.base import DEFAULT_PAGE_SIZE, WindowState, entry_object_uri

# Decision outcomes, in the order the filter offers them.
OUTCOMES = ("submitted", "duplicate", "batched", "skipped", "rejected", "failed")
# How many of the newest decisions, runs and registrations the overview and route pages show.
RECENT_DECISIONS = 20
RUNS_PER_PAGE = 20
CHAMPION_POINTS = 100
NO_CHAMPION = "no champion reports yet"


def _parse_time(value: Any) -> float | None:
    """Seconds since the epoch from a number or an RFC 3339 text (``""``/None: unknown)."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()
    try:
        moment = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()


# --------------------------------------------------------------------------- what pages show


@dataclass(frozen=True)
class DecisionRow:
    id: str
    time: float
    outcome: str
    reason: str
    route: str
    kind: str
    subject: str
    object_uri: str
    generation: str
    job_id: str
    window_id: str

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> DecisionRow:
        trigger = entry.get("trigger")
        trigger = trigger if isinstance(trigger, Mapping) else {}
        uri = entry_object_uri(entry)
        generation = str(trigger.get("generation") or "")
        if uri:
            subject = f"{uri}#{generation}" if generation else uri
        else:
            subject = str(
                entry.get("run_key")
                or trigger.get("commit_sha")
                or trigger.get("model_uri")
                or entry.get("job_id")
                or trigger.get("kind")
                or ""
            )
        return cls(
            id=str(entry.get("id") or ""),
            time=_parse_time(entry.get("time")) or 0.0,
            outcome=str(entry.get("outcome") or ""),
            reason=str(entry.get("reason") or ""),
            route=str(entry.get("route") or ""),
            kind=str(trigger.get("kind") or ""),
            subject=subject,
            object_uri=uri,
            generation=generation,
            job_id=str(entry.get("job_id") or ""),
            window_id=str(entry.get("window_id") or ""),
        )


@dataclass(frozen=True)
class WindowRow:
    """An open (or closing) batch window and when it will close."""

    window_id: str
    route: str
    state: str
    count: int
    bytes: int
    opened_at: float
    last_event_at: float
    age_seconds: float
    closes_at: float
    closes_by: str  # "quiet" or "max wait"; "flush" for a CLOSING window
    owner: str


@dataclass(frozen=True)
class PendingRow:
    route: str
    run_key: str
    queued_at: float
    job_id: str


@dataclass(frozen=True)
class RunRow:
    job_id: str
    job_name: str
    route: str
    state: str
    submitted_at: float | None
    ended_at: float | None
    duration_seconds: float | None
    error: str
    failed_task: str
    parameters: dict[str, Any]
    object_uri: str


@dataclass(frozen=True)
class RunsView:
    rows: list[RunRow]
    next_token: str | None
    source: str  # "store": the run records of the outcome path
    note: str = ""


@dataclass(frozen=True)
class ChampionPoint:
    job_id: str
    metric_name: str
    metric_value: float
    model_uri: str
    version: str
    commit: str
    changed_at: float


@dataclass(frozen=True)
class ChampionView:
    points: list[ChampionPoint]
    note: str = ""


@dataclass(frozen=True)
class PauseRow:
    route: str
    reason: str
    by: str
    paused_at: float


@dataclass(frozen=True)
class RouteSummary:
    name: str
    triggers: list[str]
    data_mode: str
    quiet_seconds: int | None
    max_wait_seconds: int | None
    concurrency: str
    template: str
    paused: PauseRow | None = None
    open_windows: list[WindowRow] = field(default_factory=list)
    pending: PendingRow | None = None
    last_decision: DecisionRow | None = None


# --------------------------------------------------------------------------- the reads


class StatusData:
    """The status page's reads over one deployment's configuration, store and backend.

    Give the store and backend, or a ``service`` (:class:`~retrain_trigger.service.Service`)
    whose store and backend are opened on first use.
    """

    def __init__(
        self,
        config: Any,
        store: Any = None,
        backend: Any = None,
        *,
        service: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if store is None and service is None:
            raise ValueError("the status page needs a store or a service")
        self.config = config
        self._store = store
        self._backend = backend
        self._service = service
        self.clock = clock

    @classmethod
    def from_service(cls, service: Any, *, clock: Callable[[], float] = time.time) -> StatusData:
        return cls(service.config, service=service, clock=clock)

    # The names history.explain reads (``why``): the store and the backend.
    @property
    def store(self) -> Any:
        return self._store if self._store is not None else self._service.store

    @property
    def backend(self) -> Any:
        if self._backend is not None or self._service is None:
            return self._backend
        return self._service.backend

    # -- the deployment ------------------------------------------------------------------------

    def deployment(self) -> dict[str, str]:
        config = self.config
        return {
            "config": str(getattr(config, "source", "") or ""),
            "project": str(getattr(config, "project", "") or ""),
            "region": str(getattr(config, "region", "") or ""),
            "backend": str(getattr(config, "backend", "") or ""),
            "store": str(getattr(config, "store", "") or ""),
        }

    def route_names(self) -> list[str]:
        return [route.name for route in self.config.routes]

    def route(self, name: str) -> Any:
        for route in self.config.routes:
            if route.name == name:
                return route
        return None

    def summary(self, route: Any, pauses: Mapping[str, PauseRow]) -> RouteSummary:
        data = route.data
        triggers = [kind for kind in ("data", "code", "model") if route.accepts(kind)]
        latest, _ = self.decisions(route=route.name, limit=1)
        return RouteSummary(
            name=route.name,
            triggers=triggers,
            data_mode=data.mode if data is not None else "",
            quiet_seconds=data.quiet_seconds if data is not None else None,
            max_wait_seconds=data.max_wait_seconds if data is not None else None,
            concurrency=route.concurrency,
            template=route.template,
            paused=pauses.get(route.name),
            open_windows=self.windows(route.name),
            pending=self.pending(route.name),
            last_decision=latest[0] if latest else None,
        )

    # -- decisions -----------------------------------------------------------------------------

    def decisions(
        self,
        *,
        route: str | None = None,
        outcome: str | None = None,
        object_contains: str | None = None,
        page_token: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
    ) -> tuple[list[DecisionRow], str | None]:
        """One page of the timeline, newest first (ValueError for a malformed token)."""
        entries, token = self.store.page_decisions(
            route=route or None,
            outcome=outcome or None,
            object_contains=object_contains or None,
            limit=limit,
            page_token=page_token or None,
        )
        return [DecisionRow.from_entry(entry) for entry in entries], token

    def why(self, uri: str, limit: int = 20) -> dict[str, Any]:
        """``retrain-trigger why``'s report (ConfigError for something not gs://bucket/object)."""
        from retrain_trigger_dev import history

        return history.explain(self, uri, limit=limit)

    # -- windows and the queue -----------------------------------------------------------------

    def windows(self, route_name: str) -> list[WindowRow]:
        """The route's OPEN and CLOSING windows, oldest first, with when each will close."""
        route = self.route(route_name)
        data = route.data if route is not None else None
        quiet = float(data.quiet_seconds) if data is not None else 0.0
        max_wait = float(data.max_wait_seconds) if data is not None else 0.0
        now = self.clock()
        rows: list[WindowRow] = []
        store = self.store
        for window in store.list_windows(route_name):
            if window.state is WindowState.CLOSED:
                continue
            size = sum(item.size or 0 for item in store.window_items(window.window_id))
            if window.state is WindowState.OPEN:
                by_quiet = window.last_event_at + quiet
                by_wait = window.opened_at + max_wait
                closes_at, closes_by = (
                    (by_quiet, "quiet") if by_quiet <= by_wait else (by_wait, "max wait")
                )
            else:
                closes_at, closes_by = (window.lease_until or now), "flush"
            rows.append(
                WindowRow(
                    window_id=window.window_id,
                    route=window.route,
                    state=str(window.state),
                    count=window.count,
                    bytes=size,
                    opened_at=window.opened_at,
                    last_event_at=window.last_event_at,
                    age_seconds=max(now - window.opened_at, 0.0),
                    closes_at=closes_at,
                    closes_by=closes_by,
                    owner=window.owner,
                )
            )
        return rows

    def pending(self, route_name: str) -> PendingRow | None:
        """The run ``queue_latest`` holds for the route, if any."""
        import json

        pending = self.store.get_pending(route_name)
        if pending is None:
            return None
        try:
            request = json.loads(pending.request_json or "{}")
        except ValueError:
            request = {}
        job_id = str(request.get("job_id") or "") if isinstance(request, dict) else ""
        return PendingRow(
            route=pending.route, run_key=pending.run_key, queued_at=pending.queued_at, job_id=job_id
        )

    # -- runs, the champion, pauses -------------------------------------------------------------

    def runs(
        self, route: str | None = None, *, page_token: str | None = None, limit: int = RUNS_PER_PAGE
    ) -> RunsView:
        """The run records of the store (each submission, then its end as the run reported it)."""
        records, token = self.store.list_runs(route, limit=limit, page_token=page_token or None)
        return RunsView([_run_from_record(r) for r in records], token, "store")

    def champion(self, route: str) -> ChampionView:
        points = [
            ChampionPoint(
                job_id=str(change.job_id),
                metric_name=str(change.metric_name),
                metric_value=float(change.metric_value),
                model_uri=str(change.model_uri),
                version=str(change.version),
                commit=str(change.commit or ""),
                changed_at=float(change.changed_at),
            )
            for change in self.store.champion_history(route, limit=CHAMPION_POINTS)
        ]
        return ChampionView(points, "" if points else NO_CHAMPION)

    def pauses(self) -> dict[str, PauseRow]:
        return {
            name: PauseRow(
                route=str(pause.route),
                reason=str(pause.reason),
                by=str(pause.by),
                paused_at=float(pause.paused_at),
            )
            for name, pause in sorted(self.store.paused_routes().items())
        }


def _run_from_record(record: Any) -> RunRow:
    """A run outcome the store recorded (``RunRecord``)."""
    return RunRow(
        job_id=str(record.job_id),
        job_name=str(record.job_name or ""),
        route=str(record.route or ""),
        state=str(record.state),
        submitted_at=record.submitted_at,
        ended_at=record.ended_at,
        duration_seconds=record.duration_s,
        error=str(record.error or ""),
        failed_task=str(record.failed_task or ""),
        parameters=dict(record.parameters or {}),
        object_uri=str(record.object_uri or ""),
    )


# --------------------------------------------------------------------------- request input

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_URI_CHARS = 1100


def clean_text(value: str | None, what: str, max_bytes: int) -> str:
    """A query parameter as text: no control characters, at most ``max_bytes`` (ValueError)."""
    text = value or ""
    if len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise ValueError(f"{what} is longer than {max_bytes} bytes")
    if _CONTROL.search(text):
        raise ValueError(f"{what} contains control characters")
    return text
