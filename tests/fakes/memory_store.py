"""A state store in memory, for pure unit tests of what reads a store (the status page).

It implements what the status page reads of the store contract in ``retrain_trigger.store.base``
(windows, the queue, active jobs, decisions and their pages, run records, champion history and
pauses), with the records defined there. One thread, no persistence; the SQLite and Firestore
stores are held to the contract by tests/integration.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from retrain_trigger.store.base import (
    DEFAULT_DECISION_LIMIT,
    DEFAULT_OBJECT_LIMIT,
    DEFAULT_PAGE_SIZE,
    DEFAULT_PURGE_LIMIT,
    DEFAULT_RETENTION_SECONDS,
    ActiveJob,
    ChampionChange,
    DecisionRecord,
    Pause,
    Pending,
    RunRecord,
    Window,
    WindowInfo,
    WindowItem,
    WindowState,
    check_object_filter,
    check_page_limit,
    check_page_token,
    check_route,
    entry_matches_object,
    new_window_id,
    object_key,
    page_token_of,
)


class MemoryStore:
    def __init__(
        self,
        clock: Callable[[], float],
        retention_seconds: float = DEFAULT_RETENTION_SECONDS,
    ) -> None:
        self._clock = clock
        self.retention_seconds = retention_seconds
        self.windows: dict[str, Window] = {}
        self.items: dict[tuple[str, str], tuple[str, WindowItem]] = {}
        self.pendings: dict[str, Pending] = {}
        self.actives: dict[str, ActiveJob] = {}
        self.decisions: dict[str, DecisionRecord] = {}
        self.runs: list[RunRecord] = []
        self.champions: list[ChampionChange] = []
        self.pauses: dict[str, Pause] = {}
        self.reads: list[str] = []  # the names of the reads made, for tests of what a page reads

    # -- windows -------------------------------------------------------------------------------

    def add_to_window(self, route: str, item: WindowItem, now: float) -> WindowInfo:
        check_route(route)
        held = self.items.get((route, item.key))
        if held is not None:
            return self.windows[held[0]].info(added=False)
        window = next(
            (w for w in self.windows.values() if w.route == route and w.state is WindowState.OPEN),
            None,
        )
        if window is None:
            window = Window(new_window_id(route, now), route, WindowState.OPEN, now, now)
        window = dataclasses.replace(
            window, count=window.count + 1, last_event_at=max(window.last_event_at, now)
        )
        self.windows[window.window_id] = window
        self.items[(route, item.key)] = (window.window_id, dataclasses.replace(item, added_at=now))
        return window.info(added=True)

    def due_windows(
        self, route: str | None, now: float, quiet_seconds: float, max_wait_seconds: float
    ) -> list[WindowInfo]:
        found = [
            w
            for w in self.windows.values()
            if (route is None or w.route == route) and w.due(now, quiet_seconds, max_wait_seconds)
        ]
        return [w.info() for w in sorted(found, key=lambda w: (w.opened_at, w.window_id))]

    def claim_window(
        self, window_id: str, owner: str, now: float, lease_seconds: float
    ) -> Window | None:
        window = self.windows.get(window_id)
        if window is None or window.state is WindowState.CLOSED:
            return None
        if window.state is WindowState.CLOSING and not (
            window.owner == owner or window.lease_expired(now)
        ):
            return None
        window = dataclasses.replace(
            window,
            state=WindowState.CLOSING,
            owner=owner,
            lease_until=now + lease_seconds,
            claimed_at=now,
            claims=window.claims + 1,
        )
        self.windows[window_id] = window
        return window

    def window_items(self, window_id: str) -> list[WindowItem]:
        self.reads.append("window_items")
        return [item for wid, item in self.items.values() if wid == window_id]

    def set_window_manifest(
        self, window_id: str, manifest_uri: str, run_key: str, job_id: str
    ) -> Window:
        window = self.windows.get(window_id)
        if window is None:
            raise LookupError(f"no window {window_id!r}")
        if window.state is WindowState.OPEN:
            raise ValueError(f"window {window_id!r} is OPEN: claim it first")
        if not window.run_key and window.state is WindowState.CLOSING:
            window = dataclasses.replace(
                window, manifest_uri=manifest_uri, run_key=run_key, job_id=job_id
            )
            self.windows[window_id] = window
        return window

    def close_window(
        self, window_id: str, owner: str, job_name: str, now: float | None = None
    ) -> bool:
        window = self.windows.get(window_id)
        if window is None or window.owner != owner:
            return False
        if window.state is WindowState.CLOSED:
            return True
        if window.state is not WindowState.CLOSING:
            return False
        closed_at = self._clock() if now is None else now
        self.windows[window_id] = dataclasses.replace(
            window,
            state=WindowState.CLOSED,
            job_name=job_name,
            closed_at=closed_at,
            lease_until=None,
            expire_at=closed_at + self.retention_seconds,
        )
        return True

    def get_window(self, window_id: str) -> Window | None:
        return self.windows.get(window_id)

    def list_windows(self, route: str, state: WindowState | str | None = None) -> list[Window]:
        self.reads.append("list_windows")
        found = [
            w
            for w in self.windows.values()
            if w.route == route and (state is None or w.state is WindowState(state))
        ]
        return sorted(found, key=lambda w: (w.opened_at, w.window_id))

    # -- concurrency ---------------------------------------------------------------------------

    def set_pending(
        self, route: str, request_json: str, run_key: str, now: float
    ) -> Pending | None:
        replaced = self.pendings.get(route)
        self.pendings[route] = Pending(route, run_key, request_json, now)
        return replaced

    def take_pending(self, route: str, run_key: str = "") -> Pending | None:
        pending = self.pendings.get(route)
        if pending is None or (run_key and pending.run_key != run_key):
            return None
        return self.pendings.pop(route)

    def get_pending(self, route: str) -> Pending | None:
        self.reads.append("get_pending")
        return self.pendings.get(route)

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
        current = self.actives.get(route)
        if expect_job_id is not None and (current.job_id if current else "") != expect_job_id:
            return False
        if expect_revision is not None and (current.revision if current else 0) != expect_revision:
            return False
        self.actives[route] = ActiveJob(
            route=route,
            job_id=job_id,
            job_name=job_name,
            started_at=now,
            lease_until=None if lease_seconds is None else now + lease_seconds,
            others=tuple(j for j in (current.others if current else ()) if j != job_id),
            revision=(current.revision if current else 0) + 1,
        )
        return True

    def get_active(self, route: str) -> ActiveJob | None:
        return self.actives.get(route)

    def track_active(self, route: str, job_id: str, job_name: str, now: float) -> None:
        current = self.actives.get(route)
        if current is None:
            self.actives[route] = ActiveJob(route, job_id, job_name, now, revision=1)
        elif job_id != current.job_id and job_id not in current.others:
            self.actives[route] = dataclasses.replace(current, others=(*current.others, job_id))

    def clear_active(self, route: str, job_id: str) -> bool:
        current = self.actives.get(route)
        if current is None:
            return False
        if job_id in current.others:
            others = tuple(j for j in current.others if j != job_id)
            self.actives[route] = dataclasses.replace(current, others=others)
            return True
        if job_id != current.job_id:
            return False
        if not current.others:
            del self.actives[route]
            return True
        self.actives[route] = dataclasses.replace(
            current,
            job_id=current.others[0],
            job_name="",
            lease_until=None,
            others=current.others[1:],
            revision=current.revision + 1,
        )
        return True

    # -- decisions -----------------------------------------------------------------------------

    def record_decision(self, entry: Mapping[str, Any], ttl_seconds: float) -> str:
        record = DecisionRecord.prepare(entry, ttl_seconds, self._clock())
        self.decisions[record.id] = record
        return record.id

    def _live(self) -> list[DecisionRecord]:
        now = self._clock()
        live = (r for r in self.decisions.values() if r.expire_at > now)
        return sorted(live, key=lambda r: (r.time, r.id), reverse=True)  # newest first

    @staticmethod
    def _out(record: DecisionRecord) -> dict[str, Any]:
        return DecisionRecord.output(record.id, record.entry_json, record.expire_at)

    def decisions_for_object(
        self, gs_uri: str, limit: int = DEFAULT_OBJECT_LIMIT
    ) -> list[dict[str, Any]]:
        key = object_key(gs_uri)
        return [self._out(r) for r in self._live() if r.object_key == key][: max(limit, 0)]

    def list_decisions(
        self,
        since: float,
        until: float | None = None,
        route: str | None = None,
        outcome: str | None = None,
        limit: int = DEFAULT_DECISION_LIMIT,
    ) -> list[dict[str, Any]]:
        found = [
            r
            for r in self._live()
            if r.time >= since
            and (until is None or r.time < until)
            and (route is None or r.route == route)
            and (outcome is None or r.outcome == str(outcome))
        ]
        found.sort(key=lambda r: (-r.time, r.id))
        return [self._out(r) for r in found[: max(limit, 0)]]

    def page_decisions(
        self,
        route: str | None = None,
        outcome: str | None = None,
        object_contains: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        page_token: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        self.reads.append("page_decisions")
        limit = check_page_limit(limit)
        after = check_page_token(page_token)
        needle = check_object_filter(object_contains)
        found = []
        times = []
        for record in self._live():
            if after is not None and (record.time, record.id) >= after:
                continue
            if route is not None and record.route != route:
                continue
            if outcome is not None and record.outcome != outcome:
                continue
            out = self._out(record)
            if needle is not None and not entry_matches_object(out, needle):
                continue
            found.append(out)
            times.append(record.time)
            if len(found) > limit:
                return found[:limit], page_token_of(times[limit - 1], found[limit - 1]["id"])
        return found, None

    def purge_expired(self, now: float, limit: int = DEFAULT_PURGE_LIMIT) -> int:
        gone = [i for i, r in self.decisions.items() if r.expire_at <= now][:limit]
        for record_id in gone:
            del self.decisions[record_id]
        return len(gone)

    def close(self) -> None:
        pass

    # -- run outcomes, the champion, pauses ----------------------------------------------------

    def list_runs(
        self, route: str | None, limit: int = 50, page_token: str | None = None
    ) -> tuple[list[RunRecord], str | None]:
        self.reads.append("list_runs")
        runs = sorted(
            (r for r in self.runs if route is None or r.route == route),
            key=lambda r: (-r.submitted_at, r.job_id),
        )
        if page_token and not page_token.isdigit():
            raise ValueError(f"invalid page token: {page_token[:80]!r}")
        start = int(page_token) if page_token else 0
        page = runs[start : start + limit]
        return page, (str(start + limit) if start + limit < len(runs) else None)

    def champion_history(self, route: str, limit: int = 100) -> list[ChampionChange]:
        self.reads.append("champion_history")
        found = sorted((c for c in self.champions if c.route == route), key=lambda c: c.changed_at)
        return found[-limit:]

    def paused_routes(self) -> dict[str, Pause]:
        self.reads.append("paused_routes")
        return dict(self.pauses)
