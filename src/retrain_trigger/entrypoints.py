"""What the two Cloud Functions do with a request: decode, call the core, answer.

``function_http/main.py`` and ``function_gcs/main.py`` are one-line wrappers around
:func:`answer_http` and :func:`answer_event`, so the deployable sources stay trivially thin.

- HTTP answers each Decision with the status in DESIGN.md's table, always as JSON.
- Events return (acknowledge) for submitted, duplicate, skipped and rejected; a failed
  submission raises :class:`EventNotProcessed`, so Eventarc or Pub/Sub redelivers the event
  with backoff and finally dead-letters it: nothing is lost.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from retrain_trigger import events
from retrain_trigger.decisions import setup_logging, trace_from_headers
from retrain_trigger.errors import (
    ConfigError,
    InvalidEvent,
    PayloadTooLarge,
    RejectedError,
    RetrainError,
    SubmitError,
)
from retrain_trigger.model import Decision, Outcome
from retrain_trigger.service import Service, get_service

if TYPE_CHECKING:
    import flask

log = logging.getLogger(__name__)

JSON_TYPES = ("application/json", "text/json", "application/cloudevents+json")


class EventNotProcessed(RetrainError):
    """Raised from the event function so the platform retries the delivery."""


def _json(body: dict[str, Any], status: int) -> flask.Response:
    import flask

    return flask.Response(
        json.dumps(body, ensure_ascii=False, default=str) + "\n",
        status=status,
        mimetype="application/json",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


def _service_or_error() -> tuple[Service | None, flask.Response | None]:
    try:
        return get_service(), None
    except ConfigError as exc:
        setup_logging()
        log.error("configuration error: %s", exc)
        body = {
            "decision": "failed",
            "job": None,
            "job_id": None,
            "run_key": None,
            "reason": str(exc),
        }
        body["error"] = "config_error"
        return None, _json(body, 502)


def _read_body(request: flask.Request, limit: int) -> bytes:
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    body = request.stream.read(limit + 1)
    if len(body) > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    return body


def answer_http(request: flask.Request) -> flask.Response:
    """POST / with a JSON trigger body (or a Pub/Sub push body); POST /flush closes windows."""
    started = time.perf_counter()
    service, error = _service_or_error()
    if service is None:
        assert error is not None
        return error
    config = service.config
    headers = {k.lower(): v for k, v in request.headers.items()}
    trace = trace_from_headers(headers, config.project)
    path = request.path.rstrip("/") or "/"
    if request.method != "POST":
        response = _json(
            {"decision": "rejected", "reason": "use POST", "error": "method_not_allowed"}, 405
        )
        response.headers["Allow"] = "POST"
        return response
    try:
        body = _read_body(request, config.max_body_bytes)
        from retrain_trigger.auth import authenticate

        authenticate(config.auth, headers=headers, body=body, url=request.url, environ=None)
        if path == "/flush":
            return _flush(service, trace)
        if path != "/":
            raise RejectedError(
                f"no such path {path[:80]!r}; POST to /", status=404, code="not_found"
            )
        content_type = (request.mimetype or "application/json").lower()
        if content_type not in JSON_TYPES:
            raise InvalidEvent(
                f"Content-Type must be application/json, got {content_type[:60]!r}",
                status=415,
                code="unsupported_media_type",
            )
        payload = events.parse_json(body, what="request body", max_bytes=config.max_body_bytes)
        if isinstance(payload, dict) and "message" in payload and "subscription" in payload:
            trigger = events.decode_pubsub_push(payload, max_bytes=config.max_body_bytes)
        else:
            trigger = events.decode_trigger_body(
                payload,
                source="http",
                event_id=(headers.get("x-request-id") or headers.get("ce-id") or "")[:256],
            )
    except RejectedError as exc:
        decision = service.reject(exc, trace=trace, started=started)
        return _json(decision.answer(), decision.status)
    except SubmitError as exc:  # e.g. the ID-token certificates could not be fetched
        decision = service.fail(exc, trace=trace, started=started)
        return _json(decision.answer(), decision.status)
    except ConfigError as exc:  # e.g. an auth setting only checked when used
        decision = service.fail(exc, trace=trace, started=started)
        return _json(decision.answer(), decision.status)
    decision = service.handle(trigger, trace=trace)
    return _json(_http_body(decision), decision.status)


def _http_body(decision: Decision) -> dict[str, Any]:
    body = decision.answer()
    if decision.trigger is not None and decision.trigger.dry_run:
        body["dry_run"] = True
        if decision.request is not None:
            body["request"] = decision.request.to_dict()
    return body


def _flush(service: Service, trace: dict[str, str]) -> flask.Response:
    from retrain_trigger import windows

    results = windows.flush(service)
    status = 503 if any(d.outcome is Outcome.FAILED and d.retryable for d in results) else 200
    return _json({"flushed": [d.answer() for d in results]}, status)


def answer_event(event: Any) -> Decision:
    """Handles one CloudEvent. Returns the Decision, or raises EventNotProcessed to be retried."""
    started = time.perf_counter()
    try:
        service = get_service()
    except ConfigError as exc:
        setup_logging()
        log.error("configuration error: %s", exc)
        raise EventNotProcessed(f"configuration error: {exc}") from None
    trace = _event_trace(event, service.config.project)
    try:
        trigger = events.decode_cloud_event(event, max_bytes=service.config.max_body_bytes)
    except RejectedError as exc:
        # Input that can never succeed: logged at ERROR and acknowledged, never retried forever.
        return service.reject(exc, trace=trace, started=started)
    decision = service.handle(trigger, trace=trace)
    if decision.outcome is Outcome.FAILED:
        raise EventNotProcessed(f"{decision.code}: {decision.reason}")
    return decision


def _event_trace(event: Any, project: str) -> dict[str, str]:
    try:
        parent = event.get("traceparent") if hasattr(event, "get") else None
    except Exception:
        parent = None
    if not isinstance(parent, str):
        return {}
    return trace_from_headers({"traceparent": parent}, project)
