"""Run-outcome and champion messages: the decoder holds exactly the published JSON Schemas
(``schemas/``), checked on the same good and bad examples with ``jsonschema``; what the trigger
publishes matches ``schemas/notification.schema.json``; the outcome log line has the fields
monitoring.tf reads."""

from __future__ import annotations

import copy
import datetime as dt
import json
from typing import Any

import jsonschema
import pytest

from retrain_trigger import notifications, outcomes, runs
from retrain_trigger.errors import InvalidEvent, PayloadTooLarge
from retrain_trigger.store.base import ChampionChange, RunRecord
from tests.conftest import REPO

SCHEMAS = REPO / "schemas"


def schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


OUTCOME: dict[str, Any] = {
    "kind": "retrain-trigger.run-outcome/v1",
    "job_id": "mnist-data-x-0123",
    "job": "projects/p/locations/r/pipelineJobs/mnist-data-x-0123",
    "state": "FAILED",
    "error": {"code": 9, "message": "The failed tasks are: [train]."},
    "reported_at": "2026-12-01T10:00:00.123Z",
    "reporter": "exit-handler",
}
CHAMPION: dict[str, Any] = {
    "kind": "retrain-trigger.champion/v1",
    "job_id": "mnist-data-x-0123",
    "job": "",
    "model_uri": "gs://b/models/3/",
    "version": "3",
    "metric": {"name": "accuracy", "value": 0.97},
    "previous": None,
    "commit_sha": "",
    "image_uri": "",
    "registered_at": "2026-12-01T10:00:00Z",
}


def changed(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(base)
    *parents, last = path.split(".")
    node = out
    for part in parents:
        node = node[part]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return out


CASES = [
    ("run-outcome", OUTCOME, True),
    (
        "run-outcome",
        changed(OUTCOME, "state", "SUCCEEDED") | {"error": {"code": 0, "message": ""}},
        True,
    ),
    ("run-outcome", changed(OUTCOME, "state", "CANCELLED"), True),
    ("run-outcome", changed(OUTCOME, "job_id", ""), True),
    ("run-outcome", changed(OUTCOME, "reporter", "reconcile"), True),
    ("run-outcome", changed(OUTCOME, "reported_at", "2026-12-01T10:00:00+02:00"), True),
    ("run-outcome", changed(OUTCOME, "state", "RUNNING"), False),
    ("run-outcome", changed(OUTCOME, "state", "SUCCEEDED"), False),  # with an error
    ("run-outcome", changed(OUTCOME, "job_id", "Mnist"), False),
    ("run-outcome", changed(OUTCOME, "job_id", "m" * 129), False),
    ("run-outcome", changed(OUTCOME, "job", "x" * 1025), False),
    ("run-outcome", changed(OUTCOME, "error.code", -1), False),
    ("run-outcome", changed(OUTCOME, "error.message", KeyError), False),
    ("run-outcome", changed(OUTCOME, "error.extra", 1), False),
    ("run-outcome", changed(OUTCOME, "reported_at", "2026-12-01 10:00"), False),
    ("run-outcome", changed(OUTCOME, "reporter", "someone"), False),
    ("run-outcome", changed(OUTCOME, "extra", True), False),
    ("run-outcome", changed(OUTCOME, "state", KeyError), False),
    ("champion", CHAMPION, True),
    (
        "champion",
        changed(
            CHAMPION, "previous", {"version": "2", "metric": {"name": "accuracy", "value": None}}
        ),
        True,
    ),
    ("champion", changed(CHAMPION, "model_uri", "gs://b/models/3"), False),
    ("champion", changed(CHAMPION, "version", ""), False),
    ("champion", changed(CHAMPION, "metric.value", "high"), False),
    ("champion", changed(CHAMPION, "metric.name", ""), False),
    ("champion", changed(CHAMPION, "previous", {"version": "2"}), False),
    ("champion", changed(CHAMPION, "registered_at", "now"), False),
    ("champion", changed(CHAMPION, "extra", 1), False),
]


@pytest.mark.parametrize(("name", "message", "valid"), CASES)
def test_the_decoder_and_the_json_schema_agree(name: str, message: dict, valid: bool) -> None:
    errors = list(jsonschema.Draft202012Validator(schema(name)).iter_errors(message))
    assert (not errors) is valid, errors
    data = json.dumps(message).encode()
    if valid:
        report = outcomes.decode_report(data)
        assert report.job_key == "mnist-data-x-0123" or message["job_id"] == ""
    else:
        with pytest.raises(InvalidEvent):
            outcomes.decode_report(data)


def test_a_decoded_outcome_names_its_failing_task_and_time() -> None:
    report = outcomes.decode_report(json.dumps(OUTCOME).encode())
    assert isinstance(report, outcomes.OutcomeReport)
    assert (report.state, report.failed_task, report.error_code) == ("FAILED", "train", 9)
    expected = dt.datetime(2026, 12, 1, 10, 0, 0, 123000, tzinfo=dt.UTC).timestamp()
    assert report.reported_at == pytest.approx(expected)
    assert report.to_message() == OUTCOME


@pytest.mark.parametrize(
    ("message", "task"),
    [
        ("The DAG failed because some tasks failed. The failed tasks are: [train, eval].", "train"),
        ("task 'load-and-validate' failed: ValueError: label 11", "load-and-validate"),
        ("cancelled by a user", None),
        ("", None),
    ],
)
def test_the_failing_task_is_read_from_the_error(message: str, task: str | None) -> None:
    assert outcomes.failed_task(message) == task


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"{", "not JSON"),
        (b"[]", "neither a run outcome nor a champion report"),
        (b'{"kind": 3}', "neither a run outcome"),
        (b"[" * 10000 + b"]" * 10000, "not JSON|nested too deeply"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_hostile_data_is_refused_clearly(data: bytes, match: str) -> None:
    with pytest.raises(InvalidEvent, match=match):
        outcomes.decode_report(data)


def test_oversized_data_is_refused_before_it_is_parsed() -> None:
    with pytest.raises(PayloadTooLarge):
        outcomes.decode_report(b" " * (outcomes.MAX_MESSAGE_BYTES + 1))
    with pytest.raises(PayloadTooLarge):
        outcomes.decode_message({"data": "A" * (outcomes.MAX_MESSAGE_BYTES * 2)})


@pytest.mark.parametrize(
    "message",
    [None, [], {"data": 3}, {"data": "***"}, {"data": "", "attributes": []}],
)
def test_a_malformed_pubsub_message_is_refused(message: Any) -> None:
    with pytest.raises(InvalidEvent):
        outcomes.decode_message(message)


def test_the_message_traceparent_attribute_comes_back() -> None:
    import base64

    data = base64.b64encode(json.dumps(OUTCOME).encode()).decode()
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    _, found = outcomes.decode_message(
        {"data": data, "attributes": {"googclient_traceparent": parent}}
    )
    assert found == parent


def record(**fields: Any) -> RunRecord:
    values: dict[str, Any] = {
        "route": "mnist",
        "job_id": "mnist-data-x-0123",
        "job_name": "projects/p/locations/r/pipelineJobs/mnist-data-x-0123",
        "state": "FAILED",
        "submitted_at": 1_764_583_000.0,
        "ended_at": 1_764_583_200.0,
        "duration_s": 200.0,
        "error": "task 'train' failed",
        "failed_task": "train",
        "parameters": {},
        "object_uri": "gs://b/data/x.csv",
        "trace": "4bf92f3577b34da6a3ce929d0e0e4736",
        "reporter": "exit-handler",
    }
    values.update(fields)
    return RunRecord(**values)


@pytest.mark.parametrize(
    "ended",
    [
        record(),
        record(state="SUCCEEDED", error=None, failed_task=None, reporter="reconcile"),
        record(submitted_at=0.0, duration_s=None, object_uri=None, trace=None, route=""),
    ],
)
def test_run_ended_notifications_match_their_schema(ended: RunRecord) -> None:
    body = notifications.run_ended_notification(ended)
    jsonschema.validate(body, schema("notification"))


def test_champion_notifications_match_their_schema() -> None:
    report = outcomes.decode_report(
        json.dumps(
            changed(
                CHAMPION, "previous", {"version": "2", "metric": {"name": "accuracy", "value": 0.9}}
            )
        ).encode()
    )
    assert isinstance(report, outcomes.ChampionReport)
    change = ChampionChange(
        "mnist", "mnist-data-x-0123", "accuracy", 0.97, "gs://b/models/3/", "3", None, 1.0
    )
    body = notifications.champion_notification(change, report)
    jsonschema.validate(body, schema("notification"))
    assert body["previous"] == {"version": "2", "value": 0.9}


def test_a_publish_failure_is_a_retryable_error() -> None:
    def broken(topic: str, data: bytes, attributes: Any) -> None:
        raise ConnectionError("down")

    with pytest.raises(Exception, match="not published to projects/p/topics/n") as caught:
        notifications.publish_notification(
            broken,
            "projects/p/topics/n",
            notifications.run_ended_notification(record()),
            route="mnist",
        )
    assert getattr(caught.value, "retryable", False)


def test_the_outcome_line_carries_what_monitoring_reads() -> None:
    line = runs.outcome_line(
        record(), trace={"logging.googleapis.com/trace": "projects/p/traces/t"}
    )
    assert line["event"] == "run_outcome" and line["severity"] == "ERROR"
    assert (line["route"], line["run_state"], line["duration_seconds"], line["reporter"]) == (
        "mnist",
        "FAILED",
        200.0,
        "exit-handler",
    )
    assert line["logging.googleapis.com/trace"] == "projects/p/traces/t"
    assert "duration_seconds" not in runs.outcome_line(record(duration_s=None))
