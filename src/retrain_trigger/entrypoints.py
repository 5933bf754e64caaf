"""What the two Cloud Functions do with a request: decode, call the core, answer.

``function_http/main.py`` and ``function_gcs/main.py`` are one-line wrappers around
:func:`answer_http` and :func:`answer_event`, so the deployable sources stay trivially thin.

- HTTP answers each Decision with the status in DESIGN.md's table, always as JSON. Until the
  caller is authenticated, failures are answered in general words (the details, which name
  files and settings, go to the log only).
- Events return (acknowledge) for submitted, duplicate, skipped and rejected; a failed
  submission raises :class:`EventNotProcessed`, so Eventarc or Pub/Sub redelivers the event
  with backoff and finally dead-letters it: nothing is lost.
- :func:`screen_event_request` runs ahead of functions-framework's own parsing in the event
  function (``function_gcs/main.py`` installs it with :func:`install_event_screen`): envelopes
  that would crash the framework or the CloudEvents SDK before our code (deep nesting, invalid
  ``data_base64``, a JSON list, a push message without ``data``) become logged, acknowledged
  rejections, and raw Pub/Sub push bodies are decoded here rather than by the framework.
- Messages of the outcome topic (``RETRAIN_OUTCOME_TOPIC``) go to :mod:`retrain_trigger.outcomes`.

(Above ~400 lines on purpose: everything between a request and the core, for both functions, in
one place a reviewer reads top to bottom: what is answered before authentication, what is
acknowledged and what is redelivered must be seen together to be checked.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from retrain_trigger import events, outcomes
from retrain_trigger.decisions import decision_dict, setup_logging, trace_from_headers
from retrain_trigger.errors import (
    ConfigError,
    EventNotProcessed,
    InvalidEvent,
    PayloadTooLarge,
    RejectedError,
    SubmitError,
)
from retrain_trigger.model import Decision, Outcome
from retrain_trigger.service import Service, get_service

if TYPE_CHECKING:
    import flask

log = logging.getLogger(__name__)

JSON_TYPES = ("application/json", "text/json", "application/cloudevents+json")
SIGNATURE_TIMESTAMP_HEADER = "x-retrain-timestamp"

# What a caller learns of a failure before it is authenticated; the details go to the log.
_UNAUTHENTICATED_FAILURE = {
    502: "the service is misconfigured; its operator must look at its logs",
    503: "credentials cannot be checked right now; retry later",
}


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
        # Nothing is authenticated yet (the auth settings are part of the configuration): the
        # caller gets no file path or setting, the log gets everything.
        setup_logging()
        log.error("configuration error: %s", exc)
        body = {
            "decision": "failed",
            "job": None,
            "job_id": None,
            "run_key": None,
            "reason": _UNAUTHENTICATED_FAILURE[502],
            "error": "config_error",
            "retryable": False,
        }
        return None, _json(body, 502)


def _unauthenticated_failure(decision: Decision) -> dict[str, Any]:
    body = decision_dict(decision)
    body["reason"] = _UNAUTHENTICATED_FAILURE.get(decision.status, _UNAUTHENTICATED_FAILURE[502])
    return body


def _read_body(request: flask.Request, limit: int) -> bytes:
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    body = request.stream.read(limit + 1)
    if len(body) > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    return body


def _read_cached_body(request: flask.Request, limit: int) -> bytes:
    """The body, kept in the request for functions-framework, which reads it again."""
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    body = request.get_data(cache=True)
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

        caller = authenticate(
            config.auth, headers=headers, body=body, url=request.url, environ=None
        )
    except RejectedError as exc:
        decision = service.reject(exc, trace=trace, started=started)
        return _json(decision_dict(decision), decision.status)
    except (SubmitError, ConfigError) as exc:  # certificates unreachable, an auth setting wrong
        decision = service.fail(exc, trace=trace, started=started)
        return _json(_unauthenticated_failure(decision), decision.status)
    try:
        if path == "/flush":
            return _flush(service, trace)
        if path != "/":
            raise RejectedError(
                f"no such path {path[:80]!r}; POST to /", status=404, code="not_found"
            )
        content_type = (request.mimetype or "").lower()
        if content_type not in JSON_TYPES:
            # Never guess JSON: a browser's form or text/plain POST is a "simple request" that
            # needs no CORS preflight, and must not be able to start a run on a local stack.
            raise InvalidEvent(
                f"Content-Type must be application/json, got {content_type[:60] or 'none'!r}",
                status=415,
                code="unsupported_media_type",
            )
        payload = events.parse_json(body, what="request body", max_bytes=config.max_body_bytes)
        if isinstance(payload, dict) and "message" in payload and "subscription" in payload:
            # A Pub/Sub push to this function: the caller is authenticated, so any message kind.
            trigger = events.decode_pubsub_push(
                payload,
                max_bytes=config.max_body_bytes,
                trusted=True,
                cloud_build_topic=config.cloud_build_topic,
            )
        else:
            trigger = events.decode_trigger_body(
                payload,
                source="http",
                event_id=headers.get("x-request-id") or headers.get("ce-id") or "",
                delivery_nonce=_signed_request_nonce(caller.mode, headers, body),
            )
    except RejectedError as exc:
        decision = service.reject(exc, trace=trace, started=started)
        return _json(decision_dict(decision), decision.status)
    except (SubmitError, ConfigError) as exc:
        decision = service.fail(exc, trace=trace, started=started)
        return _json(decision_dict(decision), decision.status)
    decision = service.handle(trigger, trace=trace)
    return _json(_http_body(decision), decision.status)


def _signed_request_nonce(mode: str, headers: Mapping[str, str], body: bytes) -> str:
    """The ``force`` nonce of an HMAC request signed with a timestamp: the signed time and the
    body identify the request, so a replay inside the signature's five minutes is the same run.

    Only after authentication succeeded: ``auth`` then verified the signature over
    ``<timestamp>.<body>``. ID tokens are reused for up to an hour and body-only HMAC signatures
    forever, so neither identifies one request: those callers send ``nonce`` themselves.
    """
    timestamp = (headers.get(SIGNATURE_TIMESTAMP_HEADER) or "").strip()
    if mode != "hmac" or not timestamp:
        return ""
    digest = hashlib.sha256(body).hexdigest()[:16]
    return events.delivery_nonce("hmac", f"{timestamp}-{digest}")


def _http_body(decision: Decision) -> dict[str, Any]:
    body = decision_dict(decision)
    if decision.trigger is not None and decision.trigger.dry_run:
        body["dry_run"] = True
        if decision.request is not None:
            body["request"] = decision.request.to_dict()
    return body


def _flush(service: Service, trace: dict[str, str]) -> flask.Response:
    results = service.flush()
    status = 503 if any(d.outcome is Outcome.FAILED and d.retryable for d in results) else 200
    return _json({"flushed": [decision_dict(d) for d in results]}, status)


def answer_event(event: Any) -> Any:
    """Handles one CloudEvent. Returns the Decision (or, for a message of the outcome topic, the
    :class:`~retrain_trigger.outcomes.OutcomeResult`), or raises EventNotProcessed to be
    retried."""
    started = time.perf_counter()
    service = _event_service()
    trace = _event_trace(event, service.config.project)
    topic = outcomes.pubsub_topic(event)
    if topic and service.config.outcome_topic and topic == service.config.outcome_topic:
        message = event.data.get("message") if isinstance(event.data, dict) else None
        return _answer_outcome(service, message, trace, started)
    try:
        trigger = events.decode_cloud_event(
            event,
            max_bytes=service.config.max_body_bytes,
            cloud_build_topic=service.config.cloud_build_topic,
        )
    except RejectedError as exc:
        # Input that can never succeed: logged at ERROR and acknowledged, never retried forever.
        # The line names the object the event was about, as far as the event says.
        return service.reject(exc, trace=trace, started=started, subject=_event_subject(event))
    return _handle_event(service, trigger, trace)


def _event_subject(event: Any) -> str:
    """``gs://bucket/object`` (or the CloudEvent's subject) of an event that was refused, for
    its log line: printable, at most 300 characters; ``""`` when the event names nothing."""
    import re as _re

    data: Any = None
    subject = ""
    bucket = ""
    try:
        data = event.get_data() if hasattr(event, "get_data") else None
        subject = str(event.get("subject") or "") if hasattr(event, "get") else ""
        source = str(event.get("source") or "") if hasattr(event, "get") else ""
        bucket = source.rpartition("/buckets/")[2] if "/buckets/" in source else ""
    except Exception:  # a refused event may be malformed anywhere: name what can be named
        pass
    if isinstance(data, dict) and isinstance(data.get("name"), str):
        named = data.get("bucket") if isinstance(data.get("bucket"), str) else bucket
        text = f"gs://{named}/{data['name']}" if named else data["name"]
    elif subject.startswith("objects/") and bucket:
        text = f"gs://{bucket}/{subject.removeprefix('objects/')}"
    else:
        text = subject
    text = _re.sub(r"[\x00-\x1f\x7f-\x9f]", "?", text)
    return text if len(text) <= 300 else text[:297] + "..."


def _event_service() -> Service:
    try:
        return get_service()
    except ConfigError as exc:
        setup_logging()
        log.error("configuration error: %s", exc)
        # The message is what functions-framework answers: no file paths in it.
        raise EventNotProcessed("configuration error (details in the log)") from None


def _handle_event(service: Service, trigger: Any, trace: dict[str, str]) -> Decision:
    decision = service.handle(trigger, trace=trace)
    if decision.outcome is Outcome.FAILED:
        raise EventNotProcessed(f"{decision.code}: {decision.reason}")
    return decision


# --------------------------------------------------------------------------- event screen


def install_event_screen() -> None:
    """Registers :func:`screen_event_request` on the functions-framework app being created.

    functions-framework executes the function's ``main.py`` inside the new app's context
    (``create_app``: "Execute the module, within the application context"), so ``main.py``
    calls this at import. Imported any other way (no app context), it does nothing.
    """
    import flask

    if not flask.has_app_context():
        return
    app = flask.current_app
    hooks = app.before_request_funcs.setdefault(None, [])
    if screen_event_request not in hooks:
        hooks.append(screen_event_request)


def screen_event_request() -> flask.Response | None:
    """Runs before functions-framework parses a request to the event function.

    - A CloudEvent (binary: ``ce-specversion`` header; structured: a JSON object with
      ``specversion``) is parsed once with the CloudEvents SDK here; anything the SDK would raise
      on (invalid ``data_base64``, deep nesting, missing attributes) is answered as a logged,
      acknowledged rejection. Well-formed ones go on to the framework and ``retrain_event``.
    - A raw Pub/Sub push body (``{"message", "subscription"}``) is decoded here: the framework
      answers 400 for a message without ``data`` and 500 for some malformed ones before any user
      code runs. The topic is the one the push URL names (``/projects/<p>/topics/<t>``), as in
      the framework's own conversion.
    - Anything else (a JSON list, a legacy background event, not JSON) is rejected.

    Returns a response to answer the request here, or None to let the framework go on.
    """
    import flask

    request = flask.request
    if request.method != "POST" or request.url_rule is None:
        return None  # routing errors (405, 404): the framework answers them
    started = time.perf_counter()
    try:
        service = get_service()
    except ConfigError:
        return None  # answer_event raises for a broken configuration: redelivered later
    config = service.config
    headers = {k.lower(): v for k, v in request.headers.items()}
    trace = trace_from_headers(headers, config.project)
    try:
        body = _read_cached_body(request, config.max_body_bytes)
        if "ce-specversion" in headers:
            _check_cloud_event(request.headers, body)
            return None
        payload = events.parse_json(body, what="event body", max_bytes=config.max_body_bytes)
        if isinstance(payload, dict) and "specversion" in payload:
            _check_cloud_event(request.headers, body)
            return None
        if not (isinstance(payload, dict) and "message" in payload and "subscription" in payload):
            raise InvalidEvent(
                "event body is neither a CloudEvent (binary or structured) nor a Pub/Sub push "
                f"body, got {_shape(payload)}",
                code="not_an_event",
            )
        topic = events.topic_of(request.path)
        if not trace:
            trace = outcomes.message_trace(payload.get("message"), config.project)
        if topic and config.outcome_topic and topic == config.outcome_topic:
            _answer_outcome(service, payload.get("message"), trace, started)
            return _acknowledged()
        trigger = events.decode_pubsub_push(
            payload,
            max_bytes=config.max_body_bytes,
            topic=topic,
            cloud_build_topic=config.cloud_build_topic,
        )
    except RejectedError as exc:
        service.reject(exc, trace=trace, started=started)
        return _acknowledged()
    _handle_event(service, trigger, trace)
    return _acknowledged()


def _check_cloud_event(headers: Any, body: bytes) -> None:
    """Parses the request as the CloudEvents SDK will; what it cannot parse is rejected."""
    text = body.decode("utf-8", "replace")
    if events.nesting_depth(text) > events.MAX_JSON_DEPTH:
        raise InvalidEvent(
            f"event body is nested deeper than {events.MAX_JSON_DEPTH} levels", code="too_deep"
        )
    from cloudevents.http import from_http

    try:
        from_http(headers, body)
    except Exception as exc:  # whatever the SDK raises here, the framework would raise too
        raise InvalidEvent(
            f"not a valid CloudEvent: {type(exc).__name__}: {str(exc)[:160]}",
            code="invalid_cloud_event",
        ) from None


def _shape(value: Any) -> str:
    if isinstance(value, dict):
        return "an object with " + (", ".join(sorted(str(k)[:20] for k in value)[:6]) or "no keys")
    return f"a JSON {type(value).__name__}"


def _acknowledged() -> flask.Response:
    import flask

    return flask.Response("OK", status=200, mimetype="text/plain")


def _event_trace(event: Any, project: str) -> dict[str, str]:
    """The trace of a CloudEvent: its ``traceparent`` extension, else the ``traceparent`` (or
    ``googclient_traceparent``) attribute of the Pub/Sub message it carries."""
    try:
        parent = event.get("traceparent") if hasattr(event, "get") else None
    except Exception:
        parent = None
    if isinstance(parent, str):
        found = trace_from_headers({"traceparent": parent}, project)
        if found:
            return found
    data = getattr(event, "data", None)
    return outcomes.message_trace(data.get("message") if isinstance(data, dict) else None, project)


# --------------------------------------------------------------------------- run outcomes


def _answer_outcome(service: Service, message: Any, trace: dict[str, str], started: float) -> Any:
    """A message of the outcome topic: recorded, or rejected (logged and acknowledged) when it
    is not a valid report; raises EventNotProcessed (redelivered) when the store or the
    notification topic cannot be reached."""
    try:
        report, parent = outcomes.decode_message(message)
        if parent and not trace:
            trace = trace_from_headers({"traceparent": parent}, service.config.project)
        return service.handle_report(report, trace=trace)
    except RejectedError as exc:
        return service.reject(exc, trace=trace, started=started)
    except SubmitError as exc:
        log.warning("run outcome not processed, to be redelivered: %s", exc)
        raise EventNotProcessed(f"outcome_not_processed: {exc}") from None
