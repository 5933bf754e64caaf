"""Notifications: what teams subscribe to, published to ``notification_topic``.

Two message types (``schemas/notification.schema.json``), JSON in the message data, with the
attributes ``retrain-notification`` (``run_ended`` or ``champion_changed``) and ``route``, so a
subscription can filter on them
(https://cloud.google.com/pubsub/docs/subscription-message-filter):

- ``run_ended``: a run reached SUCCEEDED, FAILED or CANCELLED (state, duration, error, failing
  task, who reported it, the object that started it and its trace id);
- ``champion_changed``: a register step moved a route's champion (version, model, metric, the one
  it replaced, the commit and image).

Delivery is at least once: a message is published again when the outcome it reports is
redelivered before its publish was recorded. Readers key them by ``job_id`` and ``type``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from retrain_trigger.errors import SubmitError

if TYPE_CHECKING:
    from retrain_trigger.outcomes import ChampionReport
    from retrain_trigger.store.base import ChampionChange, RunRecord

NOTIFICATION_KIND = "retrain-trigger.notification/v1"
NOTIFICATION_ATTRIBUTE = "retrain-notification"
# How long one notification publish is retried before the message is left for redelivery.
PUBLISH_DEADLINE = 30.0


def run_ended_notification(record: RunRecord) -> dict[str, Any]:
    from retrain_trigger.constants import rfc3339

    return {
        "kind": NOTIFICATION_KIND,
        "type": "run_ended",
        "route": record.route,
        "job_id": record.job_id,
        "job": record.job_name,
        "state": record.state,
        "submitted_at": rfc3339(record.submitted_at) if record.submitted_at else None,
        "ended_at": rfc3339(record.ended_at),
        "duration_seconds": record.duration_s,
        "error": record.error or "",
        "failed_task": record.failed_task or "",
        "reporter": record.reporter,
        "object_uri": record.object_uri or "",
        "trace": record.trace or "",
    }


def champion_notification(change: ChampionChange, report: ChampionReport) -> dict[str, Any]:
    from retrain_trigger.constants import rfc3339

    return {
        "kind": NOTIFICATION_KIND,
        "type": "champion_changed",
        "route": change.route,
        "job_id": change.job_id,
        "job": report.job,
        "model_uri": change.model_uri,
        "version": change.version,
        "metric": {"name": change.metric_name, "value": change.metric_value},
        "previous": (
            {"version": report.previous_version, "value": report.previous_value}
            if report.previous_version
            else None
        ),
        "commit_sha": change.commit or "",
        "image_uri": report.image_uri,
        "changed_at": rfc3339(change.changed_at),
    }


Publish = Callable[[str, bytes, Mapping[str, str]], None]


class PubSubPublisher:
    """Publishes to Pub/Sub with google-cloud-pubsub (imported on first use), retried with
    backoff on 429/5xx/timeouts for :data:`PUBLISH_DEADLINE` seconds; ``PUBSUB_EMULATOR_HOST``
    points it at the emulator."""

    def __init__(self, deadline: float = PUBLISH_DEADLINE) -> None:
        self.deadline = deadline
        self._client: Any = None

    def __call__(self, topic: str, data: bytes, attributes: Mapping[str, str]) -> None:
        from google.api_core.retry import Retry
        from google.cloud import pubsub_v1  # type: ignore[attr-defined]

        if self._client is None:
            self._client = pubsub_v1.PublisherClient(
                batch_settings=pubsub_v1.types.BatchSettings(max_messages=1)
            )
        future = self._client.publish(
            topic,
            data,
            retry=Retry(initial=0.25, maximum=4.0, multiplier=2.0, timeout=self.deadline),
            timeout=min(self.deadline, 20.0),
            **dict(attributes),
        )
        future.result(timeout=self.deadline + 10.0)


def publish_notification(publish: Publish, topic: str, body: dict[str, Any], *, route: str) -> None:
    """One notification; raises :class:`SubmitError` (retryable) when it cannot be published."""
    data = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()
    attributes = {NOTIFICATION_ATTRIBUTE: str(body["type"]), "route": route or "-"}
    try:
        publish(topic, data, attributes)
    except Exception as exc:
        raise SubmitError(
            f"{body['type']} notification for {body.get('job_id') or '-'} not published to "
            f"{topic}: {type(exc).__name__}: {str(exc)[:200]}",
            retryable=True,
        ) from exc
