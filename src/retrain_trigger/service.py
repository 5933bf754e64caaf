"""The submitter core: Trigger -> (rules) -> RunRequest -> (backend) -> Decision.

One :class:`Service` per process, created lazily by :func:`get_service` on the first event. It
holds the configuration, the template cache and the backend; the backend (and with it the Vertex
client) is created only when the first run is submitted, so skipped events never import it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from retrain_trigger import rules
from retrain_trigger.config import Config, Route, load_config
from retrain_trigger.constants import KIND_LABEL
from retrain_trigger.decisions import log_decision, setup_logging
from retrain_trigger.errors import (
    ConfigError,
    RejectedError,
    SubmitError,
    TemplateError,
)
from retrain_trigger.model import Decision, Outcome, RunRequest, Trigger
from retrain_trigger.spec import PipelineTemplate, TemplateCache

if TYPE_CHECKING:
    from retrain_trigger.store import ActiveJob

log = logging.getLogger(__name__)

# Compare-and-set attempts to reserve a route's run slot before giving up (retryable).
RESERVE_ATTEMPTS = 8


def lease_seconds(config: Config) -> float:
    """How long a claim (a batch window's flush, a route's run-slot reservation) holds.

    It covers what happens before the claim is answered: reading the template and creating the
    run, each bounded by ``submit_deadline_seconds``, plus the store's writes; at least a minute.
    """
    return max(60.0, 3.0 * config.submit_deadline_seconds)


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
        base_dir = os.path.dirname(os.path.abspath(config.source)) if config.source else ""
        self.templates = templates or TemplateCache(
            base_dir=base_dir, deadline=config.submit_deadline_seconds
        )
        self._backend = backend
        self._backend_lock = threading.Lock()
        self._checked: set[tuple[str, str]] = set()
        self._clock = clock
        self._now = wall_clock
        self._store = store
        self._store_lock = threading.Lock()
        self.recorder: Callable[[Decision], None] | None = (
            self._record_history if config.history else None
        )

    @classmethod
    def from_config(cls, config: Config, *, check_remote: bool = False, **kwargs: Any) -> Service:
        """Creates the service and checks every route's parameters against its template.

        Local templates are always checked here (start-up, not 3 a.m.). ``gs://`` and ``https://``
        templates are checked on first use, unless ``check_remote`` (the CLI's ``check``).
        """
        service = cls(config, **kwargs)
        for route in config.routes:
            if check_remote or "://" not in route.template:
                service.check_route(route)
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

    def template(self, uri: str) -> PipelineTemplate:
        return self.templates.get(uri)

    def check_route(self, route: Route, template_uri: str = "") -> PipelineTemplate:
        """Parameter names and fixed values against ``root.inputDefinitions``; once per pair."""
        uri = template_uri or route.template
        try:
            template = self.template(uri)
        except TemplateError as exc:
            raise ConfigError(
                str(exc), source=self.config.source, field=f"routes({route.name}).template"
            ) from None
        key = (route.name, uri)
        if key in self._checked:
            return template
        where = f"routes({route.name}).parameters"
        try:
            template.check_names(set(route.parameters), where=where)
        except ConfigError as exc:
            raise ConfigError(
                str(exc).split(": ", 1)[-1], source=self.config.source, field=where
            ) from None
        fixed = {k: v for k, v in route.parameters.items() if not (isinstance(v, str) and "{" in v)}
        try:
            template.coerce(fixed, complete=False)
        except RejectedError as exc:
            raise ConfigError(str(exc), source=self.config.source, field=where) from None
        self._checked.add(key)
        return template

    # ----------------------------------------------------------------- the core

    def plan(self, trigger: Trigger) -> RunRequest | rules.Skip | rules.Batch:
        """What the trigger would start, parameters typed against the template."""
        planned = rules.plan(self.config, trigger)
        if isinstance(planned, rules.Skip | rules.Batch):
            return planned
        return self.typed(planned)

    def typed(self, request: RunRequest) -> RunRequest:
        """The request with its parameter values converted to the template's declared types."""
        route = self.config.route(request.route)
        assert route is not None
        try:
            template = self.check_route(route, request.template)
        except ConfigError as exc:
            raise TemplateError(str(exc)) from None
        values = template.coerce(request.parameter_values)
        return dataclasses.replace(request, parameter_values=values)

    def handle(
        self,
        trigger: Trigger,
        *,
        trace: Mapping[str, str] | None = None,
        request: RunRequest | None = None,
        window_id: str = "",
    ) -> Decision:
        """Decides and acts on one trigger; never raises. Logs exactly one line.

        ``request`` skips the rules: a batch window's flush has built it already.
        """
        started = self._clock()
        decision = self._decide(trigger, request)
        decision = dataclasses.replace(
            decision,
            trigger=trigger,
            latency_ms=(self._clock() - started) * 1000,
            window_id=decision.window_id or window_id,
        )
        self.record(decision, trace=trace)
        return decision

    def reject(
        self,
        exc: RejectedError,
        *,
        trace: Mapping[str, str] | None = None,
        started: float | None = None,
    ) -> Decision:
        """A Decision for input that failed before it became a Trigger (decode, auth, size)."""
        decision = Decision(
            outcome=Outcome.REJECTED, reason=str(exc), status=exc.status, code=exc.code
        )
        if started is not None:
            decision = dataclasses.replace(decision, latency_ms=(self._clock() - started) * 1000)
        self.record(decision, trace=trace)
        return decision

    def fail(
        self,
        exc: SubmitError | ConfigError,
        *,
        trace: Mapping[str, str] | None = None,
        started: float | None = None,
    ) -> Decision:
        """A Decision for a failure before the event became a Trigger (auth certificates, config)."""
        decision = _failure(exc)
        if started is not None:
            decision = dataclasses.replace(decision, latency_ms=(self._clock() - started) * 1000)
        self.record(decision, trace=trace)
        return decision

    def record(self, decision: Decision, *, trace: Mapping[str, str] | None = None) -> None:
        log_decision(decision, trace=trace)
        if self.recorder is not None:
            try:
                self.recorder(decision)
            except Exception:  # history is best effort; the decision stands
                log.exception("could not record the decision in the history store")

    def _decide(self, trigger: Trigger, prepared: RunRequest | None = None) -> Decision:
        request: RunRequest | None = None
        try:
            planned = self.typed(prepared) if prepared is not None else self.plan(trigger)
            if isinstance(planned, rules.Batch):
                return self._batch(trigger, planned)
            if isinstance(planned, rules.Skip):
                return Decision(
                    outcome=Outcome.SKIPPED,
                    reason=planned.reason,
                    route=planned.route,
                    run_key=planned.run_key,
                )
            request = planned
            if trigger.dry_run:
                return self._dry_run(request)
            return self.submit(request)
        except RejectedError as exc:
            return _with_request(
                Decision(
                    outcome=Outcome.REJECTED, reason=str(exc), status=exc.status, code=exc.code
                ),
                request,
            )
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

    def submit(self, request: RunRequest) -> Decision:
        """Submits under the route's concurrency policy."""
        route = self.config.route(request.route)
        if route is None or route.concurrency == "allow":
            return self._submit(request)
        return self._submit_exclusive(route, request)

    def _submit_exclusive(self, route: Route, request: RunRequest) -> Decision:
        """``skip_if_running`` / ``queue_latest``: one run per route at a time.

        The slot is *reserved* by compare-and-set (on the record's revision) before the create
        is sent, with a lease of :func:`lease_seconds`: until the create has been answered, or
        the lease has expired, the reservation blocks every other change (the backend may not
        know the job yet: its 404 means "still starting"). The answered create replaces the
        reservation by compare-and-set; if that fails, the slot was taken over after the lease
        expired: the decision says so, a warning is logged, and the run stays tracked.
        """
        from retrain_trigger.store import StoreError

        store = self.store
        for _ in range(RESERVE_ATTEMPTS):
            now = self._now()
            active = store.get_active(route.name)
            if active is not None:
                blocking, state = self._blocking(route, active, request.job_id, now)
                if blocking:
                    return self._hold(route, request, blocking, state, now)
            if store.set_active(
                route.name,
                request.job_id,
                "",
                now,
                expect_revision=active.revision if active else 0,
                lease_seconds=lease_seconds(self.config),
            ):
                break
            log.info(
                "route %s: its run slot changed while reserving it; reading it again", route.name
            )
        else:
            raise StoreError(f"route {route.name}: could not reserve its run slot (contended)")
        try:
            decision = self._submit(request)
        except SubmitError as exc:
            if exc.retryable and not isinstance(exc, TemplateError):
                # The create may have started the run although its answer was lost: the
                # reservation holds until its lease expires (a redelivery of this very change
                # goes ahead; others wait, then Vertex is asked).
                log.warning(
                    "route %s: the create of %s failed (%s); its reservation holds until it "
                    "expires in %.0fs",
                    route.name,
                    request.job_id,
                    exc,
                    lease_seconds(self.config),
                )
            else:
                store.clear_active(route.name, request.job_id)
            raise
        except BaseException:
            store.clear_active(route.name, request.job_id)
            raise
        if store.set_active(
            route.name, request.job_id, decision.job_name, self._now(), expect_job_id=request.job_id
        ):
            return decision
        return self._slot_lost(route, request, decision)

    def _slot_lost(self, route: Route, request: RunRequest, decision: Decision) -> Decision:
        """The run was submitted, but its reservation had expired and another run took the
        slot: keep tracking it next to that one, and say so."""
        store = self.store
        holder = store.get_active(route.name)
        store.track_active(route.name, request.job_id, decision.job_name, self._now())
        taken_by = holder.job_id if holder is not None and holder.job_id else "nobody"
        log.warning(
            "route %s: run slot taken over by %s while %s was being created (its reservation "
            "lease of %.0fs expired); %s was %s and stays tracked next to it",
            route.name,
            taken_by,
            request.job_id,
            lease_seconds(self.config),
            request.job_id,
            decision.outcome,
        )
        reason = (
            f"the route's run slot was taken over by {taken_by} while this run was being "
            "created (its reservation lease expired); both runs are tracked"
        )
        return dataclasses.replace(
            decision,
            reason=f"{decision.reason}; {reason}" if decision.reason else reason,
            code="slot_taken_over",
        )

    def _blocking(
        self, route: Route, active: ActiveJob, job_id: str, now: float
    ) -> tuple[str, str]:
        """The job that keeps ``job_id`` from starting now and whether it is ``starting`` or
        ``running``; ``("", "")`` when nothing does.

        A reservation within its lease blocks whatever the backend says. Other runs block while
        the backend reports them active; tracked runs that ended are forgotten.
        """
        if active.job_id and active.job_id != job_id:
            if active.reservation_valid(now):
                return active.job_id, "starting"  # its create has not been answered yet
            if self._job_active(active.job_id):
                return active.job_id, "running"
        for other in active.others:
            if other == job_id:
                continue
            if self._job_active(other):
                return other, "running"
            self.store.clear_active(route.name, other)
        return "", ""

    def _job_active(self, job_id: str) -> bool:
        """Whether the backend reports the job active; a job it does not know is not."""
        try:
            return bool(self.backend.get(job_id).active)
        except KeyError:
            return False

    def _hold(
        self, route: Route, request: RunRequest, active_job: str, state: str, now: float
    ) -> Decision:
        """Not now: skipped (``skip_if_running``) or queued (``queue_latest``) behind the run
        ``active_job``, which is ``running`` or ``starting``."""
        if route.concurrency == "skip_if_running":
            reason = f"route {route.name} is {state} {active_job} (concurrency skip_if_running)"
        else:
            import json

            previous = self.store.set_pending(
                route.name, json.dumps(request.to_dict(), default=str), request.run_key, now
            )
            reason = f"queued behind {active_job}, {state} (concurrency queue_latest)"
            if previous is not None and previous.run_key != request.run_key:
                reason += f"; replaces the queued {previous.run_key}"
        return Decision(
            outcome=Outcome.SKIPPED,
            reason=reason,
            route=request.route,
            run_key=request.run_key,
            job_id=request.job_id,
            request=request,
            code="held",
        )

    def drain_queue(self, route: Route) -> Decision | None:
        """Starts the route's queued run once its active run has ended (``queue_latest``)."""
        import json

        store = self.store
        active = store.get_active(route.name)
        if active is not None and self._blocking(route, active, "", self._now())[0]:
            return None
        pending = store.take_pending(route.name)
        if pending is None:
            return None
        request = RunRequest.from_dict(json.loads(pending.request_json))
        from retrain_trigger.model import Kind

        trigger = Trigger(kind=Kind(str(request.labels.get(KIND_LABEL, "data"))), source="queue")
        return self.handle(trigger, request=request)

    def _batch(self, trigger: Trigger, batch: rules.Batch) -> Decision:
        from retrain_trigger.store import WindowItem

        info = self.store.add_to_window(batch.route, WindowItem.from_trigger(trigger), self._now())
        if not info.added:
            window = self.store.get_window(info.window_id)
            return Decision(
                outcome=Outcome.DUPLICATE,
                reason=f"already in batch window {info.window_id} ({info.state})",
                route=batch.route,
                run_key=batch.run_key,
                job_id=window.job_id if window else "",
                job_name=window.job_name if window else "",
                window_id=info.window_id,
            )
        return Decision(
            outcome=Outcome.SKIPPED,
            reason=(
                f"batched into window {info.window_id} ({info.count} object"
                f"{'s' if info.count != 1 else ''}); one run starts when it closes"
            ),
            route=batch.route,
            run_key=batch.run_key,
            window_id=info.window_id,
            code="batched",
        )

    def _record_history(self, decision: Decision) -> None:
        from retrain_trigger.store import decision_entry

        entry = decision_entry(decision, time=self._now(), window_id=decision.window_id)
        self.store.record_decision(entry, ttl_seconds=self.config.history_ttl_days * 86400)

    def _submit(self, request: RunRequest) -> Decision:
        template = self.template(request.template)
        handle = self.backend.submit(request, template)
        outcome = Outcome.SUBMITTED if handle.created else Outcome.DUPLICATE
        reason = "" if handle.created else "a run with this run key already exists"
        return Decision(
            outcome=outcome,
            reason=reason,
            route=request.route,
            run_key=request.run_key,
            job_id=handle.job_id,
            job_name=handle.job_name,
            request=request,
        )

    def _dry_run(self, request: RunRequest) -> Decision:
        return Decision(
            outcome=Outcome.SKIPPED,
            reason="dry run: nothing submitted",
            route=request.route,
            run_key=request.run_key,
            job_id=request.job_id,
            request=request,
        )


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
        job_id=request.job_id,
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
