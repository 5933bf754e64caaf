"""The local worker reports each run's end to the trigger, the way a pipeline's exit task does.

On Vertex AI a run's ``report-run-outcome`` exit task publishes a ``run-outcome`` message
(``schemas/run-outcome.schema.json``) to the outcome topic, whose push subscription delivers it to
the event function. Locally the worker sees every run end (it records them in the ledger), so it
makes the same message (reporter ``local-worker``) and delivers it on the same path:

- :class:`PubSubDelivery`: published to the outcome topic of the Pub/Sub emulator, whose push
  subscription (created by the local stack) delivers it to ``function_gcs`` at
  ``/projects/<p>/topics/<outcome topic>``, exactly as in production;
- :class:`PushDelivery`: without the emulator, the same push body POSTed to that URL.

:class:`OutcomeReporter` reports each ended run once it has been delivered (the ledger keeps
which); a delivery that fails is tried again on the worker's next pass, so an event function that
is down or restarting loses nothing. Duplicates are harmless: the trigger records an end once.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

from retrain_trigger.constants import rfc3339
from retrain_trigger.outcomes import MESSAGE_ATTRIBUTE, OUTCOME_KIND
from retrain_trigger_dev.local.ledger import SUCCEEDED, Ledger, RunRecord

log = logging.getLogger(__name__)

Deliver = Callable[[dict[str, Any]], None]


def outcome_report(record: RunRecord) -> dict[str, Any]:
    """The run-outcome message of an ended run of the ledger."""
    succeeded = record.state == SUCCEEDED
    return {
        "kind": OUTCOME_KIND,
        "job_id": record.job_id,
        "job": record.job_name,
        "state": record.state,
        "error": {
            "code": 0 if succeeded else 2,  # google.rpc.Code UNKNOWN: the local runner's error
            "message": "" if succeeded else (record.error or f"run {record.state}"),
        },
        "reported_at": rfc3339(record.end_time or time.time()),
        "reporter": "local-worker",
    }


class PushDelivery:
    """POSTs a Pub/Sub push body to ``<function URL>/<topic>``, as a push subscription would."""

    def __init__(self, function_url: str, topic: str, *, timeout: float = 30.0) -> None:
        self.url = f"{function_url.rstrip('/')}/{topic}"
        self.subscription = topic.replace("/topics/", "/subscriptions/") + "-local-push"
        self.timeout = timeout

    def __call__(self, report: dict[str, Any]) -> None:
        data = json.dumps(report, sort_keys=True, separators=(",", ":")).encode()
        body = {
            "message": {
                "data": base64.b64encode(data).decode(),
                "attributes": {MESSAGE_ATTRIBUTE: "run-outcome"},
                "messageId": uuid.uuid4().hex,
                "publishTime": rfc3339(time.time()),
            },
            "subscription": self.subscription,
        }
        request = urllib.request.Request(
            self.url,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            if response.status >= 300:  # pragma: no cover - urllib raises for 4xx/5xx
                raise OSError(f"{self.url} answered {response.status}")


class PubSubDelivery:
    """Publishes to the outcome topic (the emulator when ``PUBSUB_EMULATOR_HOST`` is set)."""

    def __init__(self, topic: str, *, timeout: float = 30.0) -> None:
        self.topic = topic
        self.timeout = timeout
        self._client: Any = None

    def __call__(self, report: dict[str, Any]) -> None:
        from google.cloud import pubsub_v1  # type: ignore[attr-defined]

        if self._client is None:
            self._client = pubsub_v1.PublisherClient()
        data = json.dumps(report, sort_keys=True, separators=(",", ":")).encode()
        future = self._client.publish(self.topic, data, **{MESSAGE_ATTRIBUTE: "run-outcome"})
        future.result(timeout=self.timeout)


class OutcomeReporter:
    """Delivers the outcome of every ended run of ``ledger`` once; see the module."""

    def __init__(self, ledger: Ledger, deliver: Deliver) -> None:
        self.ledger = ledger
        self.deliver = deliver

    def report(self, limit: int = 20) -> list[str]:
        """One pass: returns the job ids whose outcome was delivered."""
        done: list[str] = []
        for record in self.ledger.unreported_ends(limit):
            try:
                self.deliver(outcome_report(record))
            except (OSError, urllib.error.URLError, TimeoutError, RuntimeError) as exc:
                log.warning("run %s: outcome not delivered yet (%s)", record.job_id, exc)
                break  # the trigger is unreachable: the next pass tries again
            except Exception as exc:  # the publisher's own errors
                log.warning("run %s: outcome not delivered yet (%s)", record.job_id, exc)
                break
            self.ledger.mark_reported(record.job_id)
            log.info("run %s: outcome %s reported", record.job_id, record.state)
            done.append(record.job_id)
        return done
