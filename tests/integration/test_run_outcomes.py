"""Run outcomes through the event function as production delivers them: a Pub/Sub push from the
outcome topic's subscription to ``/projects/<p>/topics/<outcome topic>`` (raw push body, and the
CloudEvent functions-framework makes of it), with the fake Vertex server behind the function and
the SQLite store. Notifications go to a recording publisher (the Pub/Sub boundary)."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import functions_framework
import pytest
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

from retrain_trigger.constants import rfc3339
from retrain_trigger.service import get_service
from tests.conftest import MNIST_TEMPLATE, REPO

PROJECT = "test-project"
OUTCOME_TOPIC = f"projects/{PROJECT}/topics/retrain-run-outcomes"
NOTIFY_TOPIC = f"projects/{PROJECT}/topics/retrain-notifications"
PUSH_PATH = "/" + OUTCOME_TOPIC
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"

CONFIG = f"""
project: {PROJECT}
region: us-central1
backend: vertex
routes:
  - name: mnist
    template: {MNIST_TEMPLATE}
    pipeline_root: gs://ct-bucket/pipeline-root
    parameters:
      data_uri: "{{data_uri}}"
      model_registry_uri: gs://ct-bucket/models
      commit_sha: "{{commit_sha}}"
      image_uri: "{{image_uri}}"
    data:
      bucket: ct-bucket
      include: ["data/**"]
      mode: object
    concurrency: queue_latest
"""


class Recorder:
    """The notification topic: what was published, or a failure while ``failing``."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        self.failing = False

    def __call__(self, topic: str, data: bytes, attributes: Mapping[str, str]) -> None:
        if self.failing:
            raise ConnectionError("notification topic unreachable")
        self.messages.append((topic, json.loads(data), dict(attributes)))


@pytest.fixture
def env(monkeypatch, tmp_path, write_config, fake_vertex):
    monkeypatch.setenv("RETRAIN_CONFIG", str(write_config(CONFIG)))
    monkeypatch.setenv("RETRAIN_VERTEX_ENDPOINT", fake_vertex.endpoint)
    monkeypatch.setenv("RETRAIN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RETRAIN_HISTORY", "true")
    monkeypatch.setenv("RETRAIN_OUTCOME_TOPIC", OUTCOME_TOPIC)
    monkeypatch.setenv("RETRAIN_NOTIFICATION_TOPIC", NOTIFY_TOPIC)
    monkeypatch.setenv("RETRAIN_SUBMIT_DEADLINE", "30")
    return fake_vertex


@pytest.fixture
def client(env):
    app = functions_framework.create_app(
        "retrain_event", str(REPO / "function_gcs" / "main.py"), "cloudevent"
    )
    return app.test_client()


@pytest.fixture
def notes(client) -> Recorder:
    recorder = Recorder()
    get_service().publish = recorder
    return recorder


def upload(client, name: str, generation: str = "1", traceparent: str = ""):
    data = {
        "bucket": "ct-bucket",
        "name": f"data/{name}",
        "generation": generation,
        "size": "100",
        "timeCreated": "2026-11-27T16:00:00Z",
    }
    attributes = {
        "type": "google.cloud.storage.object.v1.finalized",
        "source": "//storage.googleapis.com/projects/_/buckets/ct-bucket",
        "id": f"evt-{name}-{generation}",
        "time": "2026-11-27T16:00:00Z",
    }
    if traceparent:
        attributes["traceparent"] = traceparent
    headers, body = to_binary(CloudEvent(attributes, data))
    response = client.post("/", headers=headers, data=body)
    assert response.status_code == 200
    return data


def outcome(job_id: str, state: str = "FAILED", message: str = "", **fields: Any) -> dict:
    if state == "FAILED" and not message:
        message = "The DAG failed because some tasks failed. The failed tasks are: [train]."
    body = {
        "kind": "retrain-trigger.run-outcome/v1",
        "job_id": job_id,
        "job": f"projects/{PROJECT}/locations/us-central1/pipelineJobs/{job_id}",
        "state": state,
        "error": {"code": 9 if state != "SUCCEEDED" else 0, "message": message},
        "reported_at": rfc3339(time.time()),
        "reporter": "exit-handler",
    }
    body.update(fields)
    return body


def push(client, report: Any, *, raw: bytes | None = None, attributes=None, message_id="m-1"):
    data = raw if raw is not None else json.dumps(report).encode()
    message = {
        "data": base64.b64encode(data).decode(),
        "attributes": attributes or {"retrain-message": "run-outcome"},
        "messageId": message_id,
        "publishTime": "2026-11-27T16:30:01Z",
    }
    body = {"message": message, "subscription": f"projects/{PROJECT}/subscriptions/outcomes-push"}
    return client.post(PUSH_PATH, json=body)


def only_job(env) -> str:
    assert len(env.jobs) == 1, list(env.jobs)
    return next(iter(env.jobs))


def log_entries(caplog, event: str) -> list[dict[str, Any]]:
    return [r.entry for r in caplog.records if getattr(r, "entry", {}).get("event") == event]


def test_a_failed_run_is_recorded_once_frees_its_slot_and_starts_the_queued_run(
    client, env, notes, caplog
):
    caplog.set_level(logging.INFO, logger="retrain_trigger")
    upload(client, "a.csv")
    first = only_job(env)
    upload(client, "b.csv")  # queued behind the first (queue_latest)
    assert len(env.jobs) == 1

    response = push(client, outcome(first))
    assert response.status_code == 200
    record = get_service().store.get_run(first)
    assert (record.state, record.failed_task, record.reporter) == (
        "FAILED",
        "train",
        "exit-handler",
    )
    assert "The failed tasks are: [train]" in record.error
    assert record.object_uri == "gs://ct-bucket/data/a.csv"
    # The queued run started at once, without a flush.
    assert len(env.jobs) == 2
    second = next(job for job in env.jobs if job != first)
    assert get_service().store.get_active("mnist").job_id == second
    # One run_outcome line with the fields monitoring.tf reads, one notification.
    [line] = log_entries(caplog, "run_outcome")
    assert line["run_state"] == "FAILED" and line["route"] == "mnist"
    assert line["severity"] == "ERROR" and line["job_id"] == first
    assert isinstance(line["duration_seconds"], float)
    [(topic, note, attributes)] = notes.messages
    assert topic == NOTIFY_TOPIC
    assert attributes == {"retrain-notification": "run_ended", "route": "mnist"}
    assert (note["type"], note["state"], note["job_id"], note["failed_task"]) == (
        "run_ended",
        "FAILED",
        first,
        "train",
    )

    # Redelivered: acknowledged, nothing changes, nothing published again.
    assert push(client, outcome(first), message_id="m-2").status_code == 200
    assert push(client, outcome(first, "SUCCEEDED"), message_id="m-3").status_code == 200
    assert get_service().store.get_run(first) == record
    assert len(env.jobs) == 2 and len(notes.messages) == 1
    assert len(log_entries(caplog, "run_outcome")) == 1


def test_the_cloud_event_form_naming_the_outcome_topic_is_an_outcome(client, env, notes):
    upload(client, "a.csv")
    job = only_job(env)
    report = outcome(job, "SUCCEEDED")
    event = CloudEvent(
        {
            "type": "google.cloud.pubsub.topic.v1.messagePublished",
            "source": f"//pubsub.googleapis.com/{OUTCOME_TOPIC}",
            "id": "m-9",
        },
        {
            "message": {
                "data": base64.b64encode(json.dumps(report).encode()).decode(),
                "attributes": {"retrain-message": "run-outcome"},
                "messageId": "m-9",
            },
            "subscription": f"projects/{PROJECT}/subscriptions/outcomes-push",
        },
    )
    headers, body = to_binary(event)
    assert client.post("/", headers=headers, data=body).status_code == 200
    record = get_service().store.get_run(job)
    assert record.state == "SUCCEEDED" and record.error is None and record.failed_task is None


def test_the_same_message_from_another_topic_is_not_an_outcome(client, env, notes, caplog):
    caplog.set_level(logging.INFO, logger="retrain_trigger")
    upload(client, "a.csv")
    job = only_job(env)
    body = {
        "message": {
            "data": base64.b64encode(json.dumps(outcome(job)).encode()).decode(),
            "messageId": "x",
        },
        "subscription": f"projects/{PROJECT}/subscriptions/other",
    }
    response = client.post(f"/projects/{PROJECT}/topics/gcs-events", json=body)
    assert response.status_code == 200  # rejected, acknowledged
    assert get_service().store.get_run(job).state == "PENDING"
    assert notes.messages == []


HOSTILE = {
    "not json": b"{nope",
    "a list": b"[1, 2]",
    "unknown kind": json.dumps({"kind": "retrain-trigger.other/v1"}).encode(),
    "extra field": json.dumps(outcome("mnist-data-x", extra=1)).encode(),
    "bad state": json.dumps(outcome("mnist-data-x", state="DONE")).encode(),
    "bad job id": json.dumps(outcome("../../etc/passwd")).encode(),
    "long job id": json.dumps(outcome("m" * 200)).encode(),
    "bad time": json.dumps(outcome("mnist-data-x", reported_at="yesterday")).encode(),
    "bad reporter": json.dumps(outcome("mnist-data-x", reporter="me")).encode(),
    "succeeded with an error": json.dumps(
        outcome("mnist-data-x", "SUCCEEDED", error={"code": 3, "message": "x"})
    ).encode(),
    "no job at all": json.dumps(outcome("", job="")).encode(),
    "deep nesting": b'{"kind": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    "oversized": json.dumps(outcome("mnist-data-x", message="x" * 200_000)).encode(),
    "not utf-8": b"\xff\xfe\x00",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_malformed_outcome_is_a_logged_rejection_and_acknowledged(
    client, env, notes, caplog, name
):
    caplog.set_level(logging.INFO, logger="retrain_trigger")
    response = push(client, None, raw=HOSTILE[name])
    assert response.status_code == 200
    rejected = [e for e in log_entries(caplog, "decision") if e["decision"] == "rejected"]
    assert len(rejected) == 1, name
    assert rejected[0]["severity"] == "ERROR"
    assert get_service().store.list_runs(None)[0] == []
    assert notes.messages == []


def test_a_message_that_is_not_base64_is_rejected(client, env, notes):
    body = {
        "message": {"data": "***", "messageId": "x"},
        "subscription": f"projects/{PROJECT}/subscriptions/outcomes-push",
    }
    assert client.post(PUSH_PATH, json=body).status_code == 200
    assert notes.messages == []


def test_a_notification_that_cannot_be_published_is_retried_and_the_end_never_lost(
    client, env, notes
):
    upload(client, "a.csv")
    job = only_job(env)
    notes.failing = True
    response = push(client, outcome(job))
    assert response.status_code == 500  # not acknowledged: Pub/Sub redelivers
    record = get_service().store.get_run(job)
    assert record.state == "FAILED" and not record.notified
    notes.failing = False
    assert push(client, outcome(job), message_id="m-2").status_code == 200
    assert [n["state"] for _, n, _ in notes.messages] == ["FAILED"]
    assert get_service().store.get_run(job).notified
    assert push(client, outcome(job), message_id="m-3").status_code == 200
    assert len(notes.messages) == 1


def champion(job_id: str, version: str = "7") -> dict[str, Any]:
    return {
        "kind": "retrain-trigger.champion/v1",
        "job_id": job_id,
        "job": "",
        "model_uri": f"gs://ct-bucket/models/{version}/",
        "version": version,
        "metric": {"name": "accuracy", "value": 0.97},
        "previous": {"version": "6", "metric": {"name": "accuracy", "value": 0.95}},
        "commit_sha": "abc123",
        "image_uri": "",
        "registered_at": "2026-11-27T16:29:00Z",
    }


def test_a_champion_change_is_recorded_logged_and_published(client, env, notes, caplog):
    caplog.set_level(logging.INFO, logger="retrain_trigger")
    upload(client, "a.csv")
    job = only_job(env)
    attributes = {"retrain-message": "champion"}
    assert push(client, champion(job), attributes=attributes).status_code == 200
    assert push(client, champion(job), attributes=attributes, message_id="m-2").status_code == 200
    [change] = get_service().store.champion_history("mnist")
    assert (change.job_id, change.version, change.metric_value, change.commit) == (
        job,
        "7",
        0.97,
        "abc123",
    )
    assert len(log_entries(caplog, "champion_changed")) == 1
    assert notes.messages[0][1]["type"] == "champion_changed"
    assert notes.messages[0][1]["previous"] == {"version": "6", "value": 0.95}


def test_a_champion_of_no_route_is_rejected(client, env, notes):
    assert push(client, champion("other-data-x")).status_code == 200
    assert notes.messages == []


def test_the_trace_of_an_upload_reaches_the_job_labels_and_the_outcome_line(
    client, env, notes, caplog
):
    caplog.set_level(logging.INFO, logger="retrain_trigger")
    upload(client, "a.csv", traceparent=f"00-{TRACE}-00f067aa0ba902b7-01")
    job = only_job(env)
    assert env.jobs[job]["labels"]["retrain-trace"] == TRACE
    [decision] = log_entries(caplog, "decision")
    assert decision["logging.googleapis.com/trace"] == f"projects/{PROJECT}/traces/{TRACE}"
    assert decision["event_age_ms"] > 0
    assert push(client, outcome(job, "CANCELLED", "cancelled by a user")).status_code == 200
    [line] = log_entries(caplog, "run_outcome")
    assert line["logging.googleapis.com/trace"] == f"projects/{PROJECT}/traces/{TRACE}"
    assert get_service().store.get_run(job).trace == TRACE


def test_a_googclient_traceparent_attribute_is_the_trace_of_a_pushed_data_event(client, env):
    resource = {"bucket": "ct-bucket", "name": "data/c.csv", "generation": "5", "size": "9"}
    body = {
        "message": {
            "data": base64.b64encode(json.dumps(resource).encode()).decode(),
            "attributes": {
                "bucketId": "ct-bucket",
                "objectId": "data/c.csv",
                "objectGeneration": "5",
                "eventType": "OBJECT_FINALIZE",
                "payloadFormat": "JSON_API_V1",
                "googclient_traceparent": f"00-{TRACE}-00f067aa0ba902b7-01",
            },
            "messageId": "g-1",
        },
        "subscription": f"projects/{PROJECT}/subscriptions/gcs-push",
    }
    assert client.post(f"/projects/{PROJECT}/topics/gcs-events", json=body).status_code == 200
    assert env.jobs[only_job(env)]["labels"]["retrain-trace"] == TRACE


def test_a_queued_run_whose_start_fails_stays_queued_and_the_next_flush_starts_it(
    client, env, notes
):
    upload(client, "a.csv")
    first = only_job(env)
    upload(client, "b.csv")  # queued behind the first (queue_latest)
    queued = get_service().store.get_pending("mnist")
    assert queued is not None

    env.inject("create", status=503, times=None)  # Vertex unavailable when the first ends
    assert push(client, outcome(first)).status_code == 200
    assert len(env.jobs) == 1
    # The start failed for a reason a retry fixes: the run is still queued, not lost.
    assert get_service().store.get_pending("mnist") == queued

    env.clear_faults()
    [started] = [d for d in get_service().flush() if d.run_key == queued.run_key]
    assert started.outcome.value == "submitted"
    assert len(env.jobs) == 2
    assert get_service().store.get_pending("mnist") is None
    second = next(job for job in env.jobs if job != first)
    assert get_service().store.get_active("mnist").job_id == second
