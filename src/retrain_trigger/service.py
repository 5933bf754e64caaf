"""The core's one straight path: plan -> gate -> submit -> record.

:meth:`Service.handle` takes one Trigger:

1. **plan**: ``rules.plan`` turns it into a typed RunRequest, a Skip or a Batch;
2. **gate**: a Batch joins its route's batch window (``gates.windows.add``); a RunRequest of a
   route with a concurrency policy reserves the route's run slot, or is held
   (``gates.concurrency``);
3. **submit**: the backend creates the run (``Backend.submit``);
4. **record**: exactly one Decision, one log line, and the history entry when history is on.

:meth:`Service.flush` (``POST /flush``) closes the due batch windows and starts queued runs
through the same gates. The Service itself only wires: the configuration, the template cache,
the backend and the state store (both created on first use, so skipped events never import the
Vertex or Firestore clients; the gates are imported when a route needs one), a clock, and the
per-process singleton (:func:`get_service`).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from retrain_trigger import rules
from retrain_trigger.config import Config, load_config
from retrain_trigger.decisions import decision_entry, log_decision, setup_logging
from retrain_trigger.errors import ConfigError, RejectedError, SubmitError
from retrain_trigger.model import Decision, Outcome, RunRequest, Trigger
from retrain_trigger.spec import TemplateCache

log = logging.getLogger(__name__)

T = TypeVar("T")


class Service:
    def __init__(
        self,
        config: Config,
        *,
        backend: Any = None,
        templates: TemplateCache | None = None,
        store: Any = None,
        clock: Callable[[], float] = time.perf_counter,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.templates = templates or TemplateCache.for_config(config)
        self._backend = backend
        self._backend_lock = threading.Lock()
        self._store = store
        self._store_lock = threading.Lock()
        self._clock = clock
        self.now = wall_clock

    @classmethod
    def from_config(cls, config: Config, *, check_remote: bool = False, **kwargs: Any) -> Service:
        """Creates the service and checks every route's parameters against its template.

        Local templates are always checked here (start-up, not 3 a.m.). ``gs://`` and ``https://``
        templates are checked on first use, unless ``check_remote`` (the CLI's ``check``).
        """
        service = cls(config, **kwargs)
        for route in config.routes:
            if check_remote or "://" not in route.template:
                service.templates.check(route)
        return service

    # ----------------------------------------------------------------- collaborators

    @property
    def backend(self) -> Any:
        if self._backend is None:
            with self._backend_lock:
                if self._backend is None:
                    from retrain_trigger.backends import create_backend

                    self._backend = create_backend(self.config)
        return self._backend

    @property
    def store(self) -> Any:
        """The state store (windows, queues, history), opened on first use."""
        if self._store is None:
            with self._store_lock:
                if self._store is None:
                    from retrain_trigger.store import open_store

                    self._store = open_store(self.config)
        return self._store

    # ----------------------------------------------------------------- the path of one event

    def handle(self, trigger: Trigger, *, trace: Mapping[str, str] | None = None) -> Decision:
        """plan -> gate -> submit -> record, for one trigger; never raises."""
        started = self._clock()
        planned = self._guarded(trigger, lambda: rules.plan(self.config, trigger, self.templates))
        paused = (
            None
            if isinstance(planned, Decision | rules.Skip)
            else self._guarded(trigger, lambda: self._paused(planned))
        )
        if isinstance(planned, Decision):  # refused while planning
            decision = planned
        elif paused is not None and not isinstance(planned, rules.Batch):
            decision = paused
        elif isinstance(planned, rules.Skip):
            decision = Decision(
                outcome=Outcome.SKIPPED,
                reason=planned.reason,
                route=planned.route,
                run_key=planned.run_key,
            )
        elif isinstance(planned, rules.Batch):
            from retrain_trigger.gates import windows

            batch = planned
            decision = self._guarded(
                trigger, lambda: windows.add(batch, trigger, store=self.store, clock=self.now)
            )
            if paused is not None and decision.outcome is Outcome.BATCHED:
                decision = dataclasses.replace(
                    decision, reason=f"{decision.reason}; {paused.reason}"
                )
        elif trigger.dry_run:
            decision = _with_request(
                Decision(outcome=Outcome.SKIPPED, reason="dry run: nothing submitted"), planned
            )
        else:
            from retrain_trigger.runs import with_trace

            request = with_trace(planned, trace)
            decision = self._guarded(trigger, lambda: self.submit(request), request)
        return self._record(dataclasses.replace(decision, trigger=trigger), started, trace)

    def submit(self, request: RunRequest) -> Decision:
        """gate -> submit: the route's concurrency policy, then the backend."""
        route = self.config.route(request.route)
        if route is None or route.concurrency == "allow":
            return self._submit(request)
        from retrain_trigger.gates import concurrency

        lease = concurrency.lease_seconds(self.config)
        held = concurrency.admit(
            route, request, store=self.store, backend=self.backend, clock=self.now, lease=lease
        )
        if held is not None:
            return held
        try:
            decision = self._submit(request)
        except BaseException as exc:
            concurrency.release(route, request, exc, store=self.store, lease=lease)
            raise
        return concurrency.settle(
            route, request, decision, store=self.store, clock=self.now, lease=lease
        )

    def _submit(self, request: RunRequest) -> Decision:
        route = self.config.route(request.route)
        template = (
            self.templates.for_route(route, request.template)
            if route is not None
            else self.templates.get(request.template)
        )
        handle = self.backend.submit(request, template)
        return _with_request(
            Decision(
                outcome=Outcome.SUBMITTED if handle.created else Outcome.DUPLICATE,
                reason="" if handle.created else duplicate_reason(handle.state),
                job_id=handle.job_id,
                job_name=handle.job_name,
            ),
            request,
        )

    def run(self, request: RunRequest, trigger: Trigger, window_id: str = "") -> Decision:
        """gate -> submit -> record for a RunRequest built elsewhere (a batch window's flush, a
        queued run); never raises."""
        started = self._clock()
        decision = self._guarded(trigger, lambda: self.submit(request), request)
        decision = dataclasses.replace(
            decision, trigger=trigger, window_id=decision.window_id or window_id
        )
        return self._record(decision, started, None)

    def flush(
        self, *, route: str = "", force: bool = False, now: float | None = None, owner: str = ""
    ) -> list[Decision]:
        """``POST /flush``: per route, close the due batch windows (``force``: every open one)
        and start the queued run whose turn came; then sweep expired records."""
        from retrain_trigger.gates import concurrency, windows

        moment = self.now() if now is None else now
        lease = concurrency.lease_seconds(self.config)
        owner = owner or windows.default_owner()
        decisions: list[Decision] = []
        paused = self.paused_routes()
        for candidate in self.config.routes:
            if (route and candidate.name != route) or candidate.name in paused:
                continue  # a paused route's windows and queued run wait for its resume
            decisions += windows.close_due(
                self.config,
                candidate,
                store=self.store,
                templates=self.templates,
                now=moment,
                lease=lease,
                run=self.run,
                fail=self.fail,
                clock=self.now,
                owner=owner,
                force=force,
            )
            if candidate.concurrency == "queue_latest":
                queued = concurrency.start_queued(
                    candidate, store=self.store, backend=self.backend, clock=self.now, run=self.run
                )
                decisions += [queued] if queued is not None else []
        decisions += self.reconcile_runs(moment, route=route)  # run outcomes that never came
        windows.sweep(self.store, self.now() if now is None else now)
        return decisions

    # ----------------------------------------------------------------- pauses

    def pauses_shared(self) -> bool:
        """Pauses live in the state store; they are read where the store is one every process
        shares (Firestore, or the local stack's SQLite file), so that a store-less deployment
        pays nothing for them."""
        return self.config.store == "firestore" or self.config.backend == "local"

    def paused_routes(self) -> dict[str, Any]:
        return self.store.paused_routes() if self.pauses_shared() else {}

    def _paused(self, planned: Any) -> Decision | None:
        """The Decision of an event for a paused route: ``skipped`` ("route paused"). An object
        for a window route still joins its window (``batched``): the window closes after the
        resume, so nothing uploaded during the pause needs a replay."""
        route = getattr(planned, "route", "")
        if not route or not self.pauses_shared():
            return None
        pause = self.store.get_pause(route)
        if pause is None:
            return None
        return Decision(
            outcome=Outcome.SKIPPED,
            reason=f"route paused: {pause.reason or 'no reason given'} (by {pause.by or '?'})"
            + ("; its window closes after the resume" if isinstance(planned, rules.Batch) else ""),
            route=route,
            run_key=getattr(planned, "run_key", ""),
            code="paused",
        )

    # ----------------------------------------------------------------- end pauses

    # ----------------------------------------------------------------- failures and records

    def reject(
        self,
        exc: RejectedError,
        *,
        trace: Mapping[str, str] | None = None,
        started: float | None = None,
        subject: str = "",
    ) -> Decision:
        """A Decision for input that failed before it became a Trigger (decode, auth, size);
        ``subject``: the object the refused event named, for its log line."""
        decision = _rejection(exc)
        if subject:
            decision = dataclasses.replace(decision, reason=f"{decision.reason} (object {subject})")
        return self._record(decision, self._clock() if started is None else started, trace)

    def fail(
        self,
        exc: SubmitError | ConfigError,
        *,
        trace: Mapping[str, str] | None = None,
        started: float | None = None,
    ) -> Decision:
        """A Decision for a failure before anything was submitted (auth certificates, config, a
        window's manifest)."""
        return self._record(_failure(exc), self._clock() if started is None else started, trace)

    def _guarded(
        self, trigger: Trigger, step: Callable[[], T], request: RunRequest | None = None
    ) -> T | Decision:
        """``step()``, or the Decision its exception means (with the request, when known)."""
        try:
            return step()
        except RejectedError as exc:
            return _with_request(_rejection(exc), request)
        except (SubmitError, ConfigError) as exc:
            return _with_request(_failure(exc), request)
        except Exception as exc:  # a bug: fail loudly but keep the event (retryable)
            log.exception("unexpected error while handling %s", trigger.kind)
            return _with_request(
                Decision(
                    outcome=Outcome.FAILED,
                    reason=f"internal error: {type(exc).__name__}",
                    retryable=True,
                    status=500,
                    code="internal",
                ),
                request,
            )

    def _record(
        self, decision: Decision, started: float, trace: Mapping[str, str] | None
    ) -> Decision:
        """One log line, and the history entry when history is on."""
        decision = dataclasses.replace(decision, latency_ms=(self._clock() - started) * 1000)
        log_decision(decision, trace=trace)
        if self.config.history:
            try:
                entry = decision_entry(decision, time=self.now())
                self.store.record_decision(entry, ttl_seconds=self.config.history_ttl_days * 86400)
            except Exception:  # history is best effort; the decision stands
                log.exception("could not record the decision in the history store")
            if decision.outcome is Outcome.SUBMITTED and decision.job_id:
                from retrain_trigger import runs

                runs.track_run(self, decision, trace)
        return decision

    # ----------------------------------------------------------------- run outcomes
    # (retrain_trigger.runs: what the end of a run does; the store keeps each run's record)

    publish: Any = None  # notifications: (topic, data, attributes) -> None; Pub/Sub by default

    def handle_report(self, report: Any, *, trace: Mapping[str, str] | None = None) -> Any:
        """One run-outcome or champion report: see :func:`retrain_trigger.runs.handle_report`."""
        from retrain_trigger import runs

        return runs.handle_report(self, report, trace=trace)

    def reconcile_runs(self, now: float, *, route: str = "", limit: int = 50) -> list[Decision]:
        """The flush's part: see :func:`retrain_trigger.runs.reconcile`."""
        from retrain_trigger import runs

        return runs.reconcile(self, now, route=route, limit=limit)


def duplicate_reason(state: str) -> str:
    """Why nothing started for a run key that ran before; how to run it again when it failed."""
    state = (state or "").upper().removeprefix("PIPELINE_STATE_")
    if state in ("FAILED", "CANCELLED"):
        return (
            f"a run with this run key already exists and {state}: to run this change again, "
            'resend it with "force": true and a new "nonce" (retrain-trigger submit --force '
            "--nonce N)"
        )
    shown = f" ({state})" if state else ""
    return f"a run with this run key already exists{shown}"


def _rejection(exc: RejectedError) -> Decision:
    return Decision(outcome=Outcome.REJECTED, reason=str(exc), status=exc.status, code=exc.code)


def _failure(exc: SubmitError | ConfigError) -> Decision:
    if isinstance(exc, ConfigError):
        return Decision(
            outcome=Outcome.FAILED,
            reason=str(exc),
            retryable=False,
            status=502,
            code="config_error",
        )
    return Decision(
        outcome=Outcome.FAILED,
        reason=str(exc),
        retryable=exc.retryable,
        status=exc.status,
        code="backend_unavailable" if exc.retryable else "submit_refused",
    )


def _with_request(decision: Decision, request: RunRequest | None) -> Decision:
    if request is None:
        return decision
    return dataclasses.replace(
        decision,
        route=request.route,
        run_key=request.run_key,
        job_id=decision.job_id or request.job_id,
        request=request,
    )


# --------------------------------------------------------------------------- per process

_service: Service | None = None
_service_lock = threading.Lock()


def get_service() -> Service:
    """The process's Service, created on first use from ``$RETRAIN_CONFIG``."""
    global _service
    if _service is None:
        with _service_lock:
            if _service is None:
                setup_logging()
                _service = Service.from_config(load_config())
    return _service


def set_service(service: Service | None) -> None:
    """Replaces the process's Service (tests, the CLI)."""
    global _service
    with _service_lock:
        _service = service
