"""The local stack's pure parts: event building, the bucket poller, replay, supervision."""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from cloudevents.http import from_http

from retrain_trigger import events, rules
from retrain_trigger_dev import replay
from retrain_trigger_dev.localstack import objects
from retrain_trigger_dev.localstack.supervisor import (
    LogFollower,
)
from tests import localkit
from tests.localkit import FakeBucket, FakeSender, make_poller, resource


@pytest.fixture
def stack_config() -> Any:
    return localkit.stack_config()


@pytest.fixture
def marker_config() -> Any:
    return localkit.stack_config("marker")


# --------------------------------------------------------------------------- event building


def test_notification_message_has_the_attributes_gcs_sends() -> None:
    data, attributes = objects.notification_message(resource("data/2026-11-27/part-0.csv"))

    assert attributes == {
        "bucketId": "ct-bucket",
        "objectId": "data/2026-11-27/part-0.csv",
        "objectGeneration": "1700000000000001",
        "eventType": "OBJECT_FINALIZE",
        "payloadFormat": "JSON_API_V1",
        "eventTime": "2026-11-27T10:00:00.123Z",
    }
    assert json.loads(data) == resource("data/2026-11-27/part-0.csv")


def test_notification_decodes_to_the_same_trigger_as_the_cloud_event() -> None:
    res = resource("data/2026-11-27/_SUCCESS", size="0")
    data, attributes = objects.notification_message(res)
    from_notification = events.decode_gcs_notification(attributes, data, source="replay")
    headers, body = _binary(objects.storage_cloud_event(res))
    from_event = events.decode_cloud_event(from_http(headers, body))

    for field in ("bucket", "object", "generation", "size"):
        assert getattr(from_notification, field) == getattr(from_event, field)
    assert from_event.event_type == "google.cloud.storage.object.v1.finalized"
    assert from_notification.event_type == "OBJECT_FINALIZE"


def _binary(event: Any) -> tuple[dict[str, str], bytes]:
    from cloudevents.conversion import to_binary

    headers, body = to_binary(event)
    return dict(headers), body


def test_storage_cloud_event_is_eventarc_shaped_and_its_id_is_stable() -> None:
    res = resource("data/a.csv")
    event = objects.storage_cloud_event(res)

    assert event["type"] == "google.cloud.storage.object.v1.finalized"
    assert event["source"] == "//storage.googleapis.com/projects/_/buckets/ct-bucket"
    assert event["subject"] == "objects/data/a.csv"
    assert event["time"] == "2026-11-27T10:00:00.123Z"
    assert event["id"] == objects.storage_cloud_event(dict(res))["id"]
    assert event["id"] != objects.storage_cloud_event(resource("data/a.csv", generation="2"))["id"]
    headers, _ = _binary(event)
    assert headers["content-type"] == "application/json"
    assert headers["ce-type"] == "google.cloud.storage.object.v1.finalized"


def test_blob_resource_uses_json_api_names_and_strings() -> None:
    class Bucket:
        name = "ct-bucket"

    class Blob:
        bucket = Bucket()
        name = "data/x.csv"
        generation = 17
        metageneration = 1
        content_type = "text/csv"
        time_created = dt.datetime(2026, 11, 27, 10, 0, 0, tzinfo=dt.UTC)
        updated = dt.datetime(2026, 11, 27, 10, 0, 1, tzinfo=dt.UTC)
        storage_class = "STANDARD"
        size = 0
        md5_hash = None
        crc32c = "abc="
        etag = "e"
        metadata = {"retrain-trigger-run": "r1"}

    out = objects.blob_resource(Blob())

    assert out["generation"] == "17"
    assert out["size"] == "0"
    assert out["updated"] == "2026-11-27T10:00:01Z"
    assert out["metadata"] == {"retrain-trigger-run": "r1"}
    assert "md5Hash" not in out


# --------------------------------------------------------------------------- the poller


@pytest.fixture
def bucket() -> FakeBucket:
    return FakeBucket()


@pytest.fixture
def sender() -> FakeSender:
    return FakeSender()


def test_poller_delivers_each_new_object_version_once(
    bucket: FakeBucket, sender: FakeSender
) -> None:
    bucket.put("data/old.csv", "1")
    poller = make_poller(bucket, sender)
    poller.prime()
    bucket.put("data/new.csv", "5")
    bucket.put("other/ignored.csv", "6")

    poller.poll_once()
    poller.poll_once()
    bucket.put("data/new.csv", "7")  # overwritten: a new generation
    poller.poll_once()

    assert sender.sent == [("objects/data/new.csv", "5"), ("objects/data/new.csv", "7")]


def test_poller_delivers_existing_objects_when_asked(
    bucket: FakeBucket, sender: FakeSender
) -> None:
    bucket.put("data/old.csv", "1")
    poller = make_poller(bucket, sender, deliver_existing=True)

    poller.poll_once()

    assert sender.sent == [("objects/data/old.csv", "1")]


def test_poller_retries_5xx_and_connection_errors_but_not_4xx(
    bucket: FakeBucket, sender: FakeSender
) -> None:
    poller = make_poller(bucket, sender)
    poller.prime()
    bucket.put("data/a.csv", "1")
    bucket.put("data/b.csv", "2")
    sender.statuses = [500, 400, ConnectionRefusedError("refused"), 200]

    first = poller.poll_once()  # a: 500, b: 400 (final)
    second = poller.poll_once()  # a: connection refused
    third = poller.poll_once()  # a: 200
    poller.poll_once()  # nothing left

    assert [d.status for d in first] == [500, 400]
    assert [d.status for d in second] == [0]
    assert "ConnectionRefusedError" in second[0].error
    assert [d.ok for d in third] == [True]
    assert sender.sent == [
        ("objects/data/a.csv", "1"),
        ("objects/data/b.csv", "2"),
        ("objects/data/a.csv", "1"),
        ("objects/data/a.csv", "1"),
    ]


def test_poller_gives_up_after_max_attempts(bucket: FakeBucket, sender: FakeSender) -> None:
    poller = make_poller(bucket, sender, max_attempts=3)
    poller.prime()
    bucket.put("data/a.csv", "1")
    sender.statuses = [503] * 10

    for _ in range(5):
        poller.poll_once()

    assert len(sender.sent) == 3


def test_poller_skips_folder_placeholders(bucket: FakeBucket, sender: FakeSender) -> None:
    poller = make_poller(bucket, sender)
    poller.prime()
    bucket.put("data/2026-11-27/", "1")

    poller.poll_once()

    assert sender.sent == []


# --------------------------------------------------------------------------- replay


NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-26T00:00Z", dt.datetime(2026, 11, 26, tzinfo=dt.UTC)),
        ("2026-11-26T00:00:00.5Z", dt.datetime(2026, 11, 26, 0, 0, 0, 500000, tzinfo=dt.UTC)),
        ("2026-11-26T01:00+01:00", dt.datetime(2026, 11, 26, tzinfo=dt.UTC)),
        ("2026-11-26", dt.datetime(2026, 11, 26, tzinfo=dt.UTC)),
        ("90s", NOW - dt.timedelta(seconds=90)),
        ("15m", NOW - dt.timedelta(minutes=15)),
        ("2h", NOW - dt.timedelta(hours=2)),
        ("1d", NOW - dt.timedelta(days=1)),
        ("1.5h", NOW - dt.timedelta(minutes=90)),
    ],
)
def test_parse_since(text: str, expected: dt.datetime) -> None:
    assert replay.parse_since(text, now=NOW) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("yesterday", "neither an RFC 3339 time"),
        ("2027-01-01T00:00Z", "is in the future"),
    ],
)
def test_parse_since_rejects(text: str, message: str) -> None:
    with pytest.raises(replay.ReplayError, match=message):
        replay.parse_since(text, now=NOW)


def test_resource_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PUBSUB_PROJECT_ID", raising=False)
    monkeypatch.delenv("GCLOUD_PROJECT", raising=False)
    monkeypatch.delenv("CLOUDSDK_CORE_PROJECT", raising=False)
    assert replay.resource_path("topics", "projects/p1x/topics/t") == "projects/p1x/topics/t"
    assert (
        replay.resource_path("subscriptions", "sub", "my-proj")
        == "projects/my-proj/subscriptions/sub"
    )
    with pytest.raises(replay.ReplayError, match="needs a project"):
        replay.resource_path("topics", "gcs")
    with pytest.raises(replay.ReplayError, match="is not a topic path"):
        replay.resource_path("topics", "projects/p/subscriptions/s")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "env-proj")
    assert replay.resource_path("topics", "gcs") == "projects/env-proj/topics/gcs"


def test_backfill_messages_one_per_object_without_folders() -> None:
    messages = replay.backfill_messages(
        [
            resource("data/d/"),
            resource("data/d/a.csv", "3"),
            resource("data/d/_SUCCESS", "4", size="0"),
        ]
    )

    assert [m.key for m in messages] == [
        "gs://ct-bucket/data/d/a.csv#3",
        "gs://ct-bucket/data/d/_SUCCESS#4",
    ]
    assert all(m.attributes["eventType"] == "OBJECT_FINALIZE" for m in messages)


BACKFILL = [
    resource("data/d/a.csv", "3"),
    resource("data/d/_SUCCESS", "4", size="0"),
    resource("models/champion.json", "5"),
]


def test_plan_backfill_in_window_mode(stack_config: Any) -> None:
    planned = replay.plan_backfill(stack_config, replay.backfill_messages(BACKFILL))

    assert [p.outcome for p in planned] == ["batch", "skip", "skip"]
    assert planned[0].run_key == "gs://ct-bucket/data/d/a.csv#3"
    assert "0 bytes" in planned[1].reason
    # The stack's pipeline writes its registry there (model_registry_uri): the loop guard.
    assert "loop guard" in planned[2].reason and "model_registry_uri" in planned[2].reason


def test_plan_backfill_uses_the_core_rules_and_run_keys(marker_config: Any) -> None:
    planned = replay.plan_backfill(marker_config, replay.backfill_messages(BACKFILL))

    assert [p.outcome for p in planned] == ["skip", "run", "skip"]
    run = planned[1]
    assert run.run_key == "gs://ct-bucket/data/d/_SUCCESS#4"
    assert run.job_id == rules.job_id_for("mnist", "data", "d", run.run_key)
    assert run.parameters["data_uri"] == "gs://ct-bucket/data/d/"
    assert "waits for marker" in planned[0].reason
    assert "loop guard" in planned[2].reason and "model_registry_uri" in planned[2].reason


def test_plan_backfill_reports_undecodable_objects(stack_config: Any) -> None:
    bad = replay.BackfillMessage(
        resource=resource("data/x"),
        data=b"{}",
        attributes={
            "bucketId": "ct-bucket",
            "objectId": "data/x",
            "objectGeneration": "zero",
            "eventType": "OBJECT_FINALIZE",
        },
    )

    [planned] = replay.plan_backfill(stack_config, [bad])

    assert planned.outcome == "reject"
    assert "objectGeneration" in planned.reason


class FakeFuture:
    def __init__(self, value: str | Exception) -> None:
        self.value = value

    def result(self, timeout: float | None = None) -> str:
        if isinstance(self.value, Exception):
            raise self.value
        return self.value


def test_publish_sends_data_and_attributes_and_waits() -> None:
    from google.cloud import pubsub_v1

    client = pytest.importorskip("unittest.mock").create_autospec(
        pubsub_v1.PublisherClient, instance=True
    )
    client.publish.side_effect = [FakeFuture("11"), FakeFuture("12")]
    messages = replay.backfill_messages([resource("data/a.csv", "3"), resource("data/b.csv", "4")])

    ids = replay.publish("projects/p/topics/t", messages, client=client)

    assert ids == ["11", "12"]
    args, kwargs = client.publish.call_args_list[0]
    assert args == ("projects/p/topics/t", messages[0].data)
    assert kwargs["objectId"] == "data/a.csv"
    assert kwargs["payloadFormat"] == "JSON_API_V1"


def test_publish_failure_names_the_topic() -> None:
    from unittest import mock

    from google.cloud import pubsub_v1

    client = mock.create_autospec(pubsub_v1.PublisherClient, instance=True)
    client.publish.side_effect = [FakeFuture("11"), FakeFuture(RuntimeError("boom"))]
    messages = replay.backfill_messages([resource("data/a.csv", "3"), resource("data/b.csv", "4")])

    with pytest.raises(
        replay.ReplayError,
        match=r"publishing to projects/p/topics/t failed after 1 message\(s\): boom",
    ):
        replay.publish("projects/p/topics/t", messages, client=client)


def test_seek_sends_the_time_as_a_timestamp() -> None:
    from unittest import mock

    from google.cloud import pubsub_v1

    client = mock.create_autospec(pubsub_v1.SubscriberClient, instance=True)
    since = dt.datetime(2026, 11, 26, 0, 0, 1, tzinfo=dt.UTC)

    replay.seek("projects/p/subscriptions/s", since, client=client)

    request = client.seek.call_args.kwargs["request"]
    assert request["subscription"] == "projects/p/subscriptions/s"
    assert request["time"].ToDatetime(tzinfo=dt.UTC) == since


# --------------------------------------------------------------------------- stack configuration


def test_local_config_is_valid_and_routes_every_kind(stack_config: Any) -> None:
    route = stack_config.route("mnist")

    assert stack_config.backend == "local"
    assert stack_config.auth.mode == "none"
    assert route.pipeline_root == "gs://ct-bucket/pipeline-root"
    assert route.data.include == ("data/**",)
    assert route.data.mode == "window"
    assert route.data.quiet_seconds == 5
    assert route.code and route.model
    assert route.parameters["model_registry_uri"] == "gs://ct-bucket/models"


# --------------------------------------------------------------------------- supervision

PY = sys.executable


def test_log_follower_returns_only_complete_new_lines(tmp_path: Path) -> None:
    path = tmp_path / "f.log"
    path.write_text("old\n")
    follower = LogFollower(path)
    assert follower.lines() == []
    with open(path, "a") as fh:
        fh.write('{"decision": "submitted"}\npart')
    assert follower.lines() == ['{"decision": "submitted"}']
    with open(path, "a") as fh:
        fh.write("ial\n")
    assert follower.lines() == ["partial"]
    assert LogFollower(path, from_start=True).lines()[0] == "old"


# --------------------------------------------------------------------------- commands


def test_add_commands_registers_the_four_commands() -> None:
    from retrain_trigger_dev.cli import main_group

    def parse(*argv: str) -> dict[str, Any]:
        command = main_group.commands[argv[0]]
        return command.make_context(argv[0], list(argv[1:]), parent=None).params

    assert parse("up", "--no-pubsub", "--port-base", "9000")["no_pubsub"]
    assert parse("up", "--no-pubsub", "--port-base", "9000")["port_base"] == 9000
    assert parse("demo", "--json", "--timeout", "60")["timeout"] == 60.0
    assert parse("runs", "show", "job-1")["job_id"] == "job-1"
    assert parse("runs")["action"] == "list"
    args = parse("replay", "--bucket", "b", "--prefix", "data/", "--dry-run")
    assert args["bucket"] == "b" and args["dry_run"]


def test_monitor_formats_decisions_and_runs() -> None:
    from retrain_trigger_dev.localstack.commands import Monitor
    from retrain_trigger_dev.localstack.demo import decisions

    line = json.dumps(
        {
            "decision": "submitted",
            "job_id": "mnist-data-d-1",
            "run_key": "gs://b/data/d/_SUCCESS#4",
            "severity": "NOTICE",
        }
    )
    skipped = json.dumps(
        {"decision": "skipped", "reason": "waits for marker", "trigger": {"object": "data/d/a.csv"}}
    )

    assert "submitted  mnist-data-d-1  run key gs://b/data/d/_SUCCESS#4" in Monitor.format_log_line(
        "gcs", line
    )
    assert "skipped    data/d/a.csv  (waits for marker)" in Monitor.format_log_line("gcs", skipped)
    assert Monitor.format_log_line("gcs", "GET / 200") == ""
    assert "ERROR" in Monitor.format_log_line(
        "http", json.dumps({"severity": "ERROR", "message": "boom"})
    )
    assert [d["decision"] for d in decisions([line, "noise", skipped, "{not json"])] == [
        "submitted",
        "skipped",
    ]


def test_runs_lists_and_shows_from_the_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from retrain_trigger_dev.local.ledger import SUCCEEDED, Ledger
    from retrain_trigger_dev.localstack.commands import cmd_runs

    monkeypatch.setenv("RETRAIN_CONFIG", str(tmp_path / "missing.yaml"))
    monkeypatch.setenv("RETRAIN_STATE_DIR", str(tmp_path))
    ledger = Ledger.for_state_dir(tmp_path)
    ledger.insert(
        job_id="mnist-data-d-1",
        job_name="projects/local/locations/us-central1/pipelineJobs/mnist-data-d-1",
        template_raw=b"{}",
        template_digest="d1",
        run_key="gs://b/data/d/_SUCCESS#4",
        route="mnist",
        parameters={"data_uri": "gs://b/data/d/"},
        labels={"retrain-kind": "data"},
        now=1_800_000_000.0,
    )
    ledger.claim(1, now=1_800_000_001.0)
    ledger.finish(
        "mnist-data-d-1",
        SUCCEEDED,
        outputs={"accuracy": 0.97, "registered": True, "version": "v1"},
        now=1_800_000_006.5,
    )

    out = io.StringIO()
    assert (
        cmd_runs(
            argparse.Namespace(
                action="list", job_id=None, json=False, limit=20, route="", state=""
            ),
            out,
        )
        == 0
    )
    assert (
        "mnist-data-d-1" in out.getvalue()
        and "SUCCEEDED" in out.getvalue()
        and "0.9700" in out.getvalue()
    )

    out = io.StringIO()
    assert (
        cmd_runs(
            argparse.Namespace(
                action="show", job_id="mnist-data-d-1", json=True, limit=20, route="", state=""
            ),
            out,
        )
        == 0
    )
    shown = json.loads(out.getvalue())
    assert shown["duration_seconds"] == 5.5
    assert shown["metrics"] == {"accuracy": 0.97}
    assert shown["version"] == "v1"
    assert shown["parameters"] == {"data_uri": "gs://b/data/d/"}

    out = io.StringIO()
    assert (
        cmd_runs(
            argparse.Namespace(
                action="show", job_id="nope", json=False, limit=20, route="", state=""
            ),
            out,
        )
        == 3  # not found
    )
