"""What the end of a run does: recorded once, logged, the route's run slot freed, teams notified.

:func:`handle_report` takes one validated report (:mod:`retrain_trigger.outcomes`):

- a **run outcome** ends the run's record in the state store exactly once per job
  (``end_run``), writes one ``run_outcome`` log line (the fields ``deploy/terraform/monitoring.tf``
  reads; with the trace of the event that started the run), frees the route's run slot (for
  ``queue_latest`` the queued run starts at once) and publishes a ``run_ended`` notification to
  ``notification_topic`` (``schemas/notification.schema.json``). A notification that cannot be
  published raises (retryable): the message is redelivered, the end stays recorded once, and the
  publish is tried again until it is marked sent;
- a **champion report** is published as a ``champion_changed`` notification, then recorded
  (route, metric, run, commit, version) once per run and version and logged as
  ``champion_changed``.

:func:`track_run` keeps every submitted run (PENDING) with the time the flush should first ask
about it; :func:`reconcile` (``POST /flush``) reads those whose outcome never came from the
backend and ends them through the same path (reporter ``reconcile``). :func:`with_trace` puts the
incoming trace id on the run as the job label ``retrain-trace``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from retrain_trigger import notifications, outcomes
from retrain_trigger.constants import TRACE_LABEL
from retrain_trigger.errors import SubmitError
from retrain_trigger.model import Decision, Outcome, RunRequest

if TYPE_CHECKING:
    from retrain_trigger.service import Service
    from retrain_trigger.store.base import ChampionChange, RunRecord

log = logging.getLogger(__name__)
LOGGER_NAME = "retrain_trigger.outcome"


# --------------------------------------------------------------------------- log lines


def outcome_line(record: RunRecord, *, trace: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``run_outcome`` log line (``monitoring.tf``: run outcomes, durations, failed runs)."""
    severity = {"FAILED": "ERROR", "CANCELLED": "WARNING"}.get(record.state, "INFO")
    message = f"run {record.job_id} {record.state}"
    if record.duration_s is not None:
        message += f" after {record.duration_s:.0f} s"
    if record.error:
        message += f": {record.error}"
    entry: dict[str, Any] = {
        "severity": severity,
        "message": message[:2000],
        "event": "run_outcome",
        "route": record.route,
        "job_id": record.job_id,
        "job": record.job_name,
        "run_state": record.state,
        "error": record.error or "",
        "failed_task": record.failed_task or "",
        "reporter": record.reporter,
        "logging.googleapis.com/labels": {
            "retrain-route": record.route or "-",
            "retrain-run-state": record.state,
        },
    }
    if record.duration_s is not None:
        entry["duration_seconds"] = record.duration_s
    if trace:
        entry.update(trace)
    return entry


def champion_line(change: ChampionChange) -> dict[str, Any]:
    return {
        "severity": "NOTICE",
        "message": (
            f"champion of {change.route or '-'} is now version {change.version} "
            f"({change.metric_name} {change.metric_value:g}, run {change.job_id or '-'})"
        ),
        "event": "champion_changed",
        "route": change.route,
        "job_id": change.job_id,
        "version": change.version,
        "model_uri": change.model_uri,
        "metric_name": change.metric_name,
        "metric_value": change.metric_value,
        "commit": change.commit or "",
    }


def emit(entry: dict[str, Any]) -> None:
    level = {"ERROR": logging.ERROR, "WARNING": logging.WARNING}.get(
        entry["severity"], logging.INFO
    )
    logging.getLogger(LOGGER_NAME).log(level, entry["message"], extra={"entry": entry})


def trace_id(trace: Mapping[str, str] | None) -> str | None:
    """The 32-hex trace id of Cloud Logging trace fields, or None."""
    value = (trace or {}).get("logging.googleapis.com/trace", "")
    return value.rsplit("/", 1)[-1] or None if value else None


def trace_fields(trace: str | None, project: str) -> dict[str, str]:
    if not trace:
        return {}
    return {"logging.googleapis.com/trace": f"projects/{project or '-'}/traces/{trace}"}


@dataclass(frozen=True)
class OutcomeResult:
    """What one outcome or champion message did: ``recorded`` is False for a redelivery."""

    kind: str  # run_outcome | champion
    job_id: str
    route: str
    recorded: bool
    state: str = ""
    notified: bool = False
    started: tuple[str, ...] = ()
    decisions: tuple[Any, ...] = ()  # of the queued runs it started


# --------------------------------------------------------------------------- handling


def ttl(service: Service) -> float:
    return service.config.history_ttl_days * 86400.0


def track_run(service: Service, decision: Decision, trace: Mapping[str, str] | None) -> None:
    """Keeps the submitted run (PENDING), to be ended by its outcome or the flush."""
    from retrain_trigger.store.base import RunRecord

    request, trigger = decision.request, decision.trigger
    now = service.now()
    record = RunRecord(
        route=decision.route,
        job_id=decision.job_id,
        job_name=decision.job_name,
        state="PENDING",
        submitted_at=now,
        ended_at=None,
        duration_s=None,
        error=None,
        failed_task=None,
        parameters=dict(request.parameter_values) if request is not None else {},
        object_uri=(trigger.gcs_uri or None) if trigger is not None else None,
        trace=trace_id(trace),
        check_after=now + service.config.run_check_after_seconds,
    )
    try:
        service.store.record_run(record, ttl(service))
    except Exception:  # the flush cannot reconcile it, but its outcome is still recorded
        log.exception("could not record run %s in the state store", decision.job_id)


def handle_report(service: Service, report: Any, *, trace: Mapping[str, str] | None = None) -> Any:
    """One run-outcome or champion report (:mod:`retrain_trigger.outcomes`).

    Raises :class:`~retrain_trigger.errors.SubmitError` (retryable: redeliver) when the store
    or the notification topic cannot be reached; the end, once recorded, stays recorded.
    """
    if isinstance(report, outcomes.ChampionReport):
        return handle_champion(service, report)
    return handle_outcome(service, report, trace)


def handle_outcome(service: Service, report: Any, trace: Mapping[str, str] | None) -> Any:
    from retrain_trigger.store.base import RunEnd

    job_id = report.job_key
    known = service.store.get_run(job_id)
    route = known.route if known is not None and known.route else ""
    end = RunEnd(
        job_id=job_id,
        state=report.state,
        ended_at=now_or(report.reported_at, service.now()),
        error=report.error_message or None,
        failed_task=report.failed_task,
        reporter=report.reporter,
        job_name=report.job if report.job.startswith("projects/") else "",
        route=route or outcomes.route_of_job(service.config, job_id),
    )
    record, recorded = service.store.end_run(end, ttl(service))
    if recorded:
        run_trace = trace_fields(record.trace, service.config.project)
        emit(outcome_line(record, trace=run_trace or trace))
    decisions = free_slot(service, record)
    notified = notify_run(service, record)
    return OutcomeResult(
        kind="run_outcome",
        job_id=job_id,
        route=record.route,
        recorded=recorded,
        state=record.state,
        notified=notified,
        started=tuple(d.job_id for d in decisions if d.outcome is Outcome.SUBMITTED),
        decisions=tuple(decisions),
    )


def free_slot(service: Service, record: Any) -> list[Decision]:
    """The ended run no longer holds its route's run slot; ``queue_latest`` starts the
    queued run now, unless the route is paused (it then waits for the resume, as at a
    flush). Returns the decision of the run started, if any."""
    route = service.config.route(record.route) if record.route else None
    if route is None or route.concurrency == "allow":
        return []
    service.store.clear_active(route.name, record.job_id)
    if route.concurrency != "queue_latest" or route.name in service.paused_routes():
        return []
    from retrain_trigger.gates import concurrency

    queued = concurrency.start_queued(
        route, store=service.store, backend=service.backend, clock=service.now, run=service.run
    )
    return [] if queued is None else [queued]


def publisher(service: Service) -> Any:
    if service.publish is None:
        service.publish = notifications.PubSubPublisher()
    return service.publish


def notify_run(service: Service, record: Any) -> bool:
    """Publishes the run-ended notification once it is recorded; raises (retryable) when
    it cannot, so the outcome message is redelivered and the publish tried again."""
    topic = service.config.notification_topic
    if not topic or record.notified:
        return False
    body = notifications.run_ended_notification(record)
    notifications.publish_notification(publisher(service), topic, body, route=record.route)
    service.store.mark_notified(record.job_id)
    return True


def handle_champion(service: Service, report: Any) -> Any:
    from retrain_trigger.errors import InvalidEvent
    from retrain_trigger.store.base import ChampionChange

    job_id = report.job_key
    known = service.store.get_run(job_id) if job_id else None
    route = (known.route if known is not None else "") or outcomes.route_of_job(
        service.config, job_id
    )
    if not route:
        raise InvalidEvent(
            f"champion report of job {job_id or '(none)'} matches no route of this configuration",
            code="unknown_route",
        )
    change = ChampionChange(
        route=route,
        job_id=job_id,
        metric_name=report.metric_name,
        metric_value=report.metric_value,
        model_uri=report.model_uri,
        version=report.version,
        commit=report.commit_sha or None,
        changed_at=now_or(report.registered_at, service.now()),
    )
    # Published first: a failed publish is redelivered; a redelivery after a publish whose
    # acknowledgement was lost publishes again (notifications are at least once).
    notified = False
    if service.config.notification_topic:
        body = notifications.champion_notification(change, report)
        publish = publisher(service)
        notifications.publish_notification(
            publish, service.config.notification_topic, body, route=route
        )
        notified = True
    recorded = service.store.record_champion(change, ttl(service))
    if recorded:
        emit(champion_line(change))
    return OutcomeResult(
        kind="champion", job_id=job_id, route=route, recorded=recorded, notified=notified
    )


def reconcile(service: Service, now: float, *, route: str = "", limit: int = 50) -> list[Decision]:
    """The flush's part: runs whose outcome has not arrived ``run_check_after_seconds``
    after their submission (or their last check) are read from the backend; an ended one
    takes the outcome path (reporter ``reconcile``), a running one is checked again later.
    Returns the decisions of queued runs this started."""
    if not service.config.history:
        return []

    started: list[Decision] = []
    try:
        due = service.store.runs_to_check(now, limit=limit)
    except SubmitError as exc:
        log.warning("run reconciliation skipped: %s", exc)
        return started
    for record in due:
        if route and record.route != route:
            continue
        later = now + service.config.run_check_after_seconds
        try:
            status = service.backend.get(record.job_id)
        except KeyError:
            log.warning("run %s is unknown to the backend; checked again later", record.job_id)
            service.store.defer_check(record.job_id, later)
            continue
        except SubmitError as exc:
            log.warning("run reconciliation stopped: %s", exc)
            break
        if not status.terminal:
            service.store.defer_check(record.job_id, later)
            continue
        report = outcomes.OutcomeReport(
            job_id=record.job_id,
            job=status.job_name,
            state=str(status.state),
            error_code=0 if status.state == "SUCCEEDED" else 2,
            error_message="" if status.state == "SUCCEEDED" else status.error,
            reported_at=end_time(status.end_time, now),
            reporter="reconcile",
        )
        try:
            result = handle_report(service, report)
        except SubmitError as exc:  # recorded or not, the next flush tries again
            log.warning("run %s: outcome not completed: %s", record.job_id, exc)
            continue
        started += result.decisions
    return started


def with_trace(request: RunRequest, trace: Mapping[str, str] | None) -> RunRequest:
    """The request with the incoming event's trace id as the job label ``retrain-trace`` (32
    lowercase hex digits: a valid label value), so a run can be found from a trace."""
    found = trace_id(trace)
    if not found or len(found) != 32:
        return request
    return dataclasses.replace(request, labels={**request.labels, TRACE_LABEL: found})


def now_or(moment: float, now: float) -> float:
    """A reported time, never in the future of ``now`` (a publisher's clock may run ahead)."""
    return min(moment, now) if moment > 0 else now


def end_time(text: str, default: float) -> float:
    """A backend's RFC 3339 end time in seconds, or ``default``."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else default
    except ValueError:
        return default
