"""The concurrency gate: ``skip_if_running`` and ``queue_latest``, one run per route at a time.

Before a run of such a route is created, :func:`admit` *reserves* the route's run slot in the
state store by compare-and-set (on the record's revision), with a lease of :func:`lease_seconds`.
Until the create has been answered, or the lease has expired, the reservation blocks every other
change: the backend may not know the job yet (its 404 means "still starting"). Another run that
holds the slot makes the change wait: ``skip_if_running`` answers it skipped, ``queue_latest``
keeps it as the route's one queued run (replacing an older one), which :func:`start_queued`
starts once the slot is free.

After the create, :func:`settle` turns the reservation into the route's active run; if that fails,
the slot was taken over after the lease expired: the decision says so, a warning is logged, and
the run stays tracked next to the new holder. :func:`release` decides what a failed create leaves:
a create refused for good frees the slot at once; one whose outcome is unknown (it may have
started the run) keeps it until the lease expires.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from retrain_trigger.constants import KIND_LABEL
from retrain_trigger.errors import StoreError, SubmitError, TemplateError
from retrain_trigger.model import Decision, Kind, Outcome, RunRequest, Trigger

if TYPE_CHECKING:
    from retrain_trigger.config import Config, Route
    from retrain_trigger.store import ActiveJob, StateStore

log = logging.getLogger(__name__)

# Compare-and-set attempts to reserve a route's run slot before giving up (retryable).
RESERVE_ATTEMPTS = 8

Clock = Callable[[], float]


def lease_seconds(config: Config) -> float:
    """How long a claim (a batch window's flush, a route's run-slot reservation) holds.

    It covers what happens before the claim is answered: reading the template and creating the
    run, each bounded by ``submit_deadline_seconds``, plus the store's writes; at least a minute.
    """
    return max(60.0, 3.0 * config.submit_deadline_seconds)


def admit(
    route: Route,
    request: RunRequest,
    *,
    store: StateStore,
    backend: Any,
    clock: Clock,
    lease: float,
) -> Decision | None:
    """Reserves the route's run slot for ``request``: None when it may be submitted now, else
    the Decision that holds it back (skipped, or queued behind the run holding the slot)."""
    for _ in range(RESERVE_ATTEMPTS):
        now = clock()
        active = store.get_active(route.name)
        if active is not None:
            blocking, state = _blocking(route, active, request.job_id, now, store, backend)
            if blocking:
                return _hold(route, request, blocking, state, now, store)
        if store.set_active(
            route.name,
            request.job_id,
            "",
            now,
            expect_revision=active.revision if active else 0,
            lease_seconds=lease,
        ):
            return None
        log.info("route %s: its run slot changed while reserving it; reading it again", route.name)
    raise StoreError(f"route {route.name}: could not reserve its run slot (contended)")


def release(
    route: Route, request: RunRequest, error: BaseException, *, store: StateStore, lease: float
) -> None:
    """After a create that raised ``error``: free the reservation, unless the run may exist."""
    if isinstance(error, SubmitError) and error.retryable and not isinstance(error, TemplateError):
        # The create may have started the run although its answer was lost: the reservation
        # holds until its lease expires (a redelivery of this very change goes ahead; others
        # wait, then the backend is asked).
        log.warning(
            "route %s: the create of %s failed (%s); its reservation holds until it expires "
            "in %.0fs",
            route.name,
            request.job_id,
            error,
            lease,
        )
        return
    store.clear_active(route.name, request.job_id)


def settle(
    route: Route,
    request: RunRequest,
    decision: Decision,
    *,
    store: StateStore,
    clock: Clock,
    lease: float,
) -> Decision:
    """The answered create becomes the route's active run; a slot lost meanwhile is said."""
    if store.set_active(
        route.name, request.job_id, decision.job_name, clock(), expect_job_id=request.job_id
    ):
        return decision
    # The reservation had expired and another run took the slot: keep tracking this run next
    # to that one, and say so.
    holder = store.get_active(route.name)
    store.track_active(route.name, request.job_id, decision.job_name, clock())
    taken_by = holder.job_id if holder is not None and holder.job_id else "nobody"
    log.warning(
        "route %s: run slot taken over by %s while %s was being created (its reservation "
        "lease of %.0fs expired); %s was %s and stays tracked next to it",
        route.name,
        taken_by,
        request.job_id,
        lease,
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


def start_queued(
    route: Route,
    *,
    store: StateStore,
    backend: Any,
    clock: Clock,
    run: Callable[[RunRequest, Trigger], Decision],
) -> Decision | None:
    """Starts the route's queued run (``queue_latest``) with ``run`` (``Service.run``) once no
    other run holds the slot; None while one does, or when nothing is queued.

    The queued run leaves the queue only once its start has been answered (submitted, a
    duplicate, or refused for good), and only if no newer change replaced it meanwhile. A start
    that failed for a reason a retry can fix (Vertex unavailable) leaves it queued for the next
    flush, which retries it as a redelivery of the same change (its own reservation does not
    hold it back); one held back again (another run took the slot) was queued again by the hold.
    """
    pending = store.get_pending(route.name)
    if pending is None:
        return None
    try:
        data = json.loads(pending.request_json)
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}, not an object")
        request = RunRequest.from_dict(data)
        trigger = Trigger(kind=Kind(str(request.labels.get(KIND_LABEL, "data"))), source="queue")
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        log.error(
            "route %s: the queued run %s cannot be read (%s); it is dropped",
            route.name,
            pending.run_key,
            exc,
        )
        store.take_pending(route.name, run_key=pending.run_key)
        return None
    active = store.get_active(route.name)
    if active is not None and _blocking(route, active, request.job_id, clock(), store, backend)[0]:
        return None
    decision = run(request, trigger)
    if decision.code == "held":
        return decision
    if decision.outcome is Outcome.FAILED and decision.retryable:
        log.warning(
            "route %s: the queued run %s did not start (%s); it stays queued for the next flush",
            route.name,
            request.job_id,
            decision.reason,
        )
        return decision
    store.take_pending(route.name, run_key=pending.run_key)
    return decision


def _blocking(
    route: Route, active: ActiveJob, job_id: str, now: float, store: StateStore, backend: Any
) -> tuple[str, str]:
    """The job that keeps ``job_id`` from starting now and whether it is ``starting`` or
    ``running``; ``("", "")`` when nothing does.

    A reservation within its lease blocks whatever the backend says. Other runs block while
    the backend reports them active; tracked runs that ended are forgotten.
    """
    if active.job_id and active.job_id != job_id:
        if active.reservation_valid(now):
            return active.job_id, "starting"  # its create has not been answered yet
        if _job_active(backend, active.job_id):
            return active.job_id, "running"
    for other in active.others:
        if other == job_id:
            continue
        if _job_active(backend, other):
            return other, "running"
        store.clear_active(route.name, other)
    return "", ""


def _job_active(backend: Any, job_id: str) -> bool:
    """Whether the backend reports the job active; a job it does not know is not."""
    try:
        return bool(backend.get(job_id).active)
    except KeyError:
        return False


def _hold(
    route: Route,
    request: RunRequest,
    active_job: str,
    state: str,
    now: float,
    store: StateStore,
) -> Decision:
    """Not now: skipped (``skip_if_running``) or queued (``queue_latest``) behind the run
    ``active_job``, which is ``running`` or ``starting``."""
    if route.concurrency == "skip_if_running":
        reason = f"route {route.name} is {state} {active_job} (concurrency skip_if_running)"
    else:
        previous = store.set_pending(
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
