"""A Decision as data: the one dict form, and the three places it goes.

:func:`decision_dict` is the one dict form of a Decision (``decision``, ``job``, ``job_id``,
``run_key``, ``reason``, ``route``, ``error``/``detail``, ``window_id``, ``retryable``). Each use
is a view of it:

- the HTTP answer is :func:`decision_dict` itself;
- the log line (:func:`log_decision`, one per event, in the shape Cloud Logging parses from
  stdout) adds ``severity`` and ``message`` (Cloud Logging's own fields),
  ``logging.googleapis.com/labels`` and ``logging.googleapis.com/trace`` (lifted into the
  LogEntry), ``latency_ms`` and the ``trigger``; the rest lands in ``jsonPayload``;
- the history entry (:func:`decision_entry`, what the state store records for ``why``) adds
  the time, the status and the trigger's identifying fields, under the names the store indexes.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Mapping
from typing import Any

from retrain_trigger.model import Decision, Outcome

LOGGER_NAME = "retrain_trigger.decision"
_SEVERITY = {
    Outcome.SUBMITTED: "NOTICE",
    Outcome.DUPLICATE: "INFO",
    Outcome.BATCHED: "INFO",
    Outcome.SKIPPED: "INFO",
    Outcome.REJECTED: "ERROR",
    Outcome.FAILED: "ERROR",
}
_LEVEL = {
    "NOTICE": logging.INFO,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
}

_setup_lock = threading.Lock()


class JsonFormatter(logging.Formatter):
    """Formats records as one JSON object; ``record.entry`` (a dict) is merged in."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = getattr(record, "entry", None) or {}
        if not entry:
            entry = {
                "severity": record.levelname,
                "message": record.getMessage(),
            }
            if record.exc_info:
                entry["message"] += "\n" + self.formatException(record.exc_info)
            entry["logger"] = record.name
        return json.dumps(entry, ensure_ascii=False, default=str, separators=(",", ":"))


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is at emit time (Cloud Logging reads stdout)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def setup_logging(stream: Any = None) -> None:
    """Installs the JSON handler on the package's loggers once per process.

    Called when the service is created, never inside a request handler.
    """
    with _setup_lock:
        root = logging.getLogger("retrain_trigger")
        if any(getattr(h, "_retrain_json", False) for h in root.handlers):
            return
        handler: logging.Handler = logging.StreamHandler(stream) if stream else _StdoutHandler()
        handler.setFormatter(JsonFormatter())
        handler._retrain_json = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False


def trace_from_headers(headers: Mapping[str, str], project: str) -> dict[str, str]:
    """Cloud Logging trace fields from ``traceparent`` or ``X-Cloud-Trace-Context``."""
    headers = {k.lower(): v for k, v in headers.items()}
    trace = span = ""
    parent = headers.get("traceparent", "")
    if parent:
        parts = parent.split("-")
        if len(parts) == 4 and len(parts[1]) == 32 and len(parts[2]) == 16:
            trace, span = parts[1], parts[2]
    if not trace:
        context = headers.get("x-cloud-trace-context", "")
        head = context.split(";")[0]
        trace, _, span = head.partition("/")
    if not trace or not all(c in "0123456789abcdefABCDEF" for c in trace) or len(trace) > 32:
        return {}
    out = {"logging.googleapis.com/trace": f"projects/{project or '-'}/traces/{trace.lower()}"}
    if span and span.isalnum() and len(span) <= 20:
        out["logging.googleapis.com/spanId"] = span
    return out


def decision_dict(decision: Decision) -> dict[str, Any]:
    """The one dict form of a Decision; also the JSON body the HTTP entry point answers."""
    body: dict[str, Any] = {
        "decision": str(decision.outcome),
        "job": decision.job_name or None,
        "job_id": decision.job_id or None,
        "run_key": decision.run_key or None,
        "reason": decision.reason or None,
    }
    if decision.route:
        body["route"] = decision.route
    if decision.code:
        body[decision.code_field] = decision.code
    if decision.window_id:
        body["window_id"] = decision.window_id
    if decision.outcome is Outcome.FAILED:
        body["retryable"] = decision.retryable
    return body


# What the history keeps of a trigger: enough for ``why`` and ``decisions``.
_TRIGGER_FIELDS = (
    "kind",
    "source",
    "event_id",
    "event_time",
    "event_type",
    "bucket",
    "object",
    "generation",
    "size",
    "commit_sha",
    "image_uri",
    "build_id",
    "branch",
    "model_uri",
    "force",
    "nonce",
)


def decision_entry(decision: Decision, *, time: float, window_id: str = "") -> dict[str, Any]:
    """The history entry of one Decision (what ``StateStore.record_decision`` expects).

    Stored entries name the outcome ``outcome`` and keep ``""`` for what is empty (the store
    indexes ``outcome``, ``route``, ``run_key``, ``job_id`` and ``window_id``). ``window_id``
    defaults to the decision's own.
    """
    body = decision_dict(decision)
    trigger: dict[str, Any] = {}
    if decision.trigger is not None:
        raw = decision.trigger.to_dict()
        trigger = {name: raw[name] for name in _TRIGGER_FIELDS if name in raw}
    entry: dict[str, Any] = {
        "time": time,
        "outcome": body["decision"],
        "reason": body["reason"] or "",
        "route": body.get("route", ""),
        "run_key": body["run_key"] or "",
        "job_id": body["job_id"] or "",
        "job": body["job"] or "",
        "status": decision.status,
        "trigger": trigger,
        "window_id": window_id or body.get("window_id", ""),
    }
    if decision.code:
        entry["code"] = decision.code
    if decision.retryable:
        entry["retryable"] = True
    return entry


def entry_for(decision: Decision, *, trace: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The log line of one Decision."""
    severity = _SEVERITY.get(decision.outcome, "INFO")
    if decision.outcome is Outcome.FAILED and decision.retryable:
        severity = "WARNING"
    subject = (
        decision.job_id
        or (decision.trigger.gcs_uri if decision.trigger else "")
        or decision.run_key
    )
    message = f"{decision.outcome}"
    if subject:
        message += f" {subject}"
    if decision.reason:
        message += f": {decision.reason}"
    entry: dict[str, Any] = {
        "severity": severity,
        "message": message,
        "event": "decision",  # what monitoring.tf's log-based metrics select on
        **decision_dict(decision),
        # The code again under one name whatever the outcome (the answer names it ``error`` or
        # ``detail``): the rejected-inputs metric's label.
        "code": decision.code or None,
        "latency_ms": round(decision.latency_ms, 2),
        "logging.googleapis.com/labels": {
            "retrain-decision": str(decision.outcome),
            "retrain-route": decision.route or "-",
        },
    }
    if decision.trigger is not None:
        entry["trigger"] = decision.trigger.to_dict()
        age = event_age_ms(decision.trigger.event_time)
        if age is not None:
            entry["event_age_ms"] = age
    if trace:
        entry.update(trace)
    return {k: v for k, v in entry.items() if v is not None}


def event_age_ms(event_time: str, now: float | None = None) -> int | None:
    """Milliseconds from an event's own RFC 3339 time to ``now`` (the decision's time); None
    when the event has no time, or one that cannot be read or lies in the future."""
    import time as _time
    from datetime import datetime

    if not event_time or len(event_time) > 40:
        return None
    try:
        moment = datetime.fromisoformat(event_time.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    age = ((_time.time() if now is None else now) - moment.timestamp()) * 1000
    return int(age) if age >= 0 else None


def log_decision(decision: Decision, *, trace: Mapping[str, str] | None = None) -> dict[str, Any]:
    entry = entry_for(decision, trace=trace)
    logger = logging.getLogger(LOGGER_NAME)
    logger.log(
        _LEVEL.get(entry["severity"], logging.INFO), entry["message"], extra={"entry": entry}
    )
    return entry
