"""Run outcomes: how the end of a run comes back to the trigger, and what the trigger does with it.

A pipeline's exit task (``pipeline_specs/reporting.py``, under ``dsl.ExitHandler``) publishes a
``run-outcome`` message (``schemas/run-outcome.schema.json``) when the run ends, and a register
step a ``champion`` message (``schemas/champion.schema.json``) when it moved the champion. Both go
to the outcome topic, whose push subscription delivers them to the event function at the URL
path ``/projects/<p>/topics/<outcome topic>``, so the CloudEvent's source (or the push URL) names
the topic: messages of ``outcome_topic`` (``RETRAIN_OUTCOME_TOPIC``) come here, nothing else does.
The local stack's worker posts the same messages the same way, and the flush makes one itself
(reporter ``reconcile``) for a run whose message never came, by reading the job.

:func:`decode_message` validates a message against its schema (the schemas' rules, as msgspec
Structs; a test holds both to the same examples). :class:`OutcomeHandler` then:

1. records the run's end in the state store **once** per job (``end_run``): a redelivery, or a
   later report of the same run, changes nothing;
2. writes one ``run_outcome`` log line (the fields ``deploy/terraform/monitoring.tf`` reads);
3. frees the route's run slot and, for ``queue_latest``, starts the queued run at once;
4. publishes a ``run_ended`` notification (``schemas/notification.schema.json``) to
   ``notification_topic``; until that publish has succeeded the message is not acknowledged, so
   Pub/Sub redelivers it, and a redelivery publishes again (the end stays recorded once).

Champion messages are recorded (route, metric, run, commit, version) once per run and version,
logged as ``champion_changed`` and published as ``champion_changed`` notifications.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from msgspec import Meta

from retrain_trigger import events
from retrain_trigger.decisions import trace_from_headers
from retrain_trigger.errors import InvalidEvent, PayloadTooLarge

if TYPE_CHECKING:
    from retrain_trigger.config import Config

log = logging.getLogger(__name__)
LOGGER_NAME = "retrain_trigger.outcome"

OUTCOME_KIND = "retrain-trigger.run-outcome/v1"
CHAMPION_KIND = "retrain-trigger.champion/v1"
MESSAGE_ATTRIBUTE = "retrain-message"
# The largest outcome or champion message taken (they are a few hundred bytes).
MAX_MESSAGE_BYTES = 64 * 1024

_RFC3339 = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$"
_JOB_ID = r"^([a-z][a-z0-9-]*)?$"
_FAILED_TASKS = re.compile(r"failed tasks are: \[([^\]]{1,200})\]")
_TASK_FAILED = re.compile(r"\btask '?([A-Za-z0-9_.-]{1,100})'? failed")

JobId = Annotated[str, Meta(max_length=128, pattern=_JOB_ID)]
Moment = Annotated[str, Meta(pattern=_RFC3339)]


class _Base(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class _Error(_Base):
    code: Annotated[int, Meta(ge=0)]
    message: str


class _OutcomeMessage(_Base):
    kind: Literal["retrain-trigger.run-outcome/v1"]
    job_id: JobId
    job: Annotated[str, Meta(max_length=1024)]
    state: Literal["SUCCEEDED", "FAILED", "CANCELLED"]
    error: _Error
    reported_at: Moment
    reporter: Literal["exit-handler", "local-worker", "reconcile"]


class _Metric(_Base):
    name: Annotated[str, Meta(min_length=1)]
    value: float


class _PreviousMetric(_Base):
    name: Annotated[str, Meta(min_length=1)]
    value: float | None


class _Previous(_Base):
    version: Annotated[str, Meta(min_length=1)]
    metric: _PreviousMetric


class _ChampionMessage(_Base):
    kind: Literal["retrain-trigger.champion/v1"]
    job_id: JobId
    job: Annotated[str, Meta(max_length=1024)]
    model_uri: Annotated[str, Meta(min_length=2, pattern="/$")]
    version: Annotated[str, Meta(min_length=1, max_length=128)]
    metric: _Metric
    previous: _Previous | None
    commit_sha: str
    image_uri: str
    registered_at: Moment


@dataclass(frozen=True)
class OutcomeReport:
    """A run-outcome message, validated."""

    job_id: str
    job: str
    state: str
    error_code: int
    error_message: str
    reported_at: float
    reporter: str

    @property
    def failed_task(self) -> str | None:
        return failed_task(self.error_message)

    @property
    def job_key(self) -> str:
        """The job id: the message's, else the last part of the job's resource name."""
        return self.job_id or self.job.rsplit("/", 1)[-1]

    def to_message(self) -> dict[str, Any]:
        from retrain_trigger.constants import rfc3339

        return {
            "kind": OUTCOME_KIND,
            "job_id": self.job_id,
            "job": self.job,
            "state": self.state,
            "error": {"code": self.error_code, "message": self.error_message},
            "reported_at": rfc3339(self.reported_at),
            "reporter": self.reporter,
        }


@dataclass(frozen=True)
class ChampionReport:
    """A champion message, validated."""

    job_id: str
    job: str
    model_uri: str
    version: str
    metric_name: str
    metric_value: float
    previous_version: str | None
    previous_value: float | None
    commit_sha: str
    image_uri: str
    registered_at: float

    @property
    def job_key(self) -> str:
        return self.job_id or self.job.rsplit("/", 1)[-1]


Report = OutcomeReport | ChampionReport


def failed_task(message: str) -> str | None:
    """The failing task a final status' error names (``... failed tasks are: [train].``)."""
    match = _FAILED_TASKS.search(message or "") or _TASK_FAILED.search(message or "")
    if not match:
        return None
    return match.group(1).split(",")[0].strip().strip("'\"") or None


def _seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _problem(exc: msgspec.ValidationError | msgspec.DecodeError, what: str) -> InvalidEvent:
    detail = str(exc).splitlines()[0][:200]
    return InvalidEvent(f"{what} does not match its schema: {detail}", code="invalid_outcome")


def decode_report(data: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> Report:
    """A run-outcome or champion message's data (UTF-8 JSON), validated against its schema."""
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"outcome message is larger than {max_bytes} bytes")
    try:
        head = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise InvalidEvent(
            f"outcome message is not JSON: {str(exc)[:120]}", code="invalid_outcome"
        ) from None
    except RecursionError:
        raise InvalidEvent("outcome message is nested too deeply", code="invalid_outcome") from None
    kind = head.get("kind") if isinstance(head, dict) else None
    if kind == OUTCOME_KIND:
        try:
            outcome = msgspec.convert(head, _OutcomeMessage)
        except msgspec.ValidationError as exc:
            raise _problem(exc, "run-outcome message") from None
        if outcome.state == "SUCCEEDED" and (outcome.error.code or outcome.error.message):
            raise InvalidEvent(
                "run-outcome message: a SUCCEEDED run has error code 0 and an empty message",
                code="invalid_outcome",
            )
        if not outcome.job_id and not outcome.job.rsplit("/", 1)[-1]:
            raise InvalidEvent(
                "run-outcome message names no job (job_id and job are empty)",
                code="invalid_outcome",
            )
        return OutcomeReport(
            job_id=outcome.job_id,
            job=outcome.job,
            state=outcome.state,
            error_code=outcome.error.code,
            error_message=outcome.error.message,
            reported_at=_seconds(outcome.reported_at),
            reporter=outcome.reporter,
        )
    if kind == CHAMPION_KIND:
        try:
            champion = msgspec.convert(head, _ChampionMessage)
        except msgspec.ValidationError as exc:
            raise _problem(exc, "champion message") from None
        previous = champion.previous
        return ChampionReport(
            job_id=champion.job_id,
            job=champion.job,
            model_uri=champion.model_uri,
            version=champion.version,
            metric_name=champion.metric.name,
            metric_value=champion.metric.value,
            previous_version=previous.version if previous else None,
            previous_value=previous.metric.value if previous else None,
            commit_sha=champion.commit_sha,
            image_uri=champion.image_uri,
            registered_at=_seconds(champion.registered_at),
        )
    shown = json.dumps(kind)[:60] if kind is not None else "none"
    raise InvalidEvent(
        f"message of the outcome topic is neither a run outcome nor a champion report "
        f"(kind {shown})",
        code="invalid_outcome",
    )


def decode_message(message: Any, *, max_bytes: int = MAX_MESSAGE_BYTES) -> tuple[Report, str]:
    """One Pub/Sub message of the outcome topic: the report and the message's ``traceparent``
    attribute (``""`` when it has none)."""
    if not isinstance(message, Mapping):
        raise InvalidEvent("Pub/Sub message must be an object", code="invalid_outcome")
    attributes = message.get("attributes") or {}
    if not isinstance(attributes, Mapping):
        raise InvalidEvent("Pub/Sub attributes must be an object", code="invalid_outcome")
    encoded = message.get("data") or ""
    if not isinstance(encoded, str):
        raise InvalidEvent("Pub/Sub data must be a base64 string", code="invalid_outcome")
    if len(encoded) > max_bytes * 4 // 3 + 4:
        raise PayloadTooLarge(f"outcome message is larger than {max_bytes} bytes")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidEvent("Pub/Sub data is not valid base64", code="invalid_outcome") from None
    parent = attributes.get("traceparent") or attributes.get("googclient_traceparent") or ""
    return decode_report(data, max_bytes=max_bytes), parent if isinstance(parent, str) else ""


def message_trace(message: Any, project: str) -> dict[str, str]:
    attributes = message.get("attributes") if isinstance(message, dict) else None
    if not isinstance(attributes, dict):
        return {}
    for name in ("traceparent", "googclient_traceparent"):
        parent = attributes.get(name)
        if isinstance(parent, str) and len(parent) <= 128:
            found = trace_from_headers({"traceparent": parent}, project)
            if found:
                return found
    return {}


def pubsub_topic(event: Any) -> str:
    """The topic a ``messagePublished`` CloudEvent's source names, or ``""``."""
    try:
        if str(event["type"]) != events.PUBSUB_PUBLISHED:
            return ""
        return events.topic_of(str(event["source"]))
    except (KeyError, TypeError):
        return ""


def is_outcome_topic(topic: str, config: Config) -> bool:
    return bool(topic) and bool(config.outcome_topic) and topic == config.outcome_topic


def route_of_job(config: Config, job_id: str) -> str:
    """The route whose job ids start ``<route>-`` (the longest such route name), or ``""``."""
    names = [r.name for r in config.routes if job_id.startswith(r.name + "-")]
    return max(names, key=len) if names else ""
