from __future__ import annotations

import base64
import json
import re

import pytest
from cloudevents.http import CloudEvent

from retrain_trigger import events
from retrain_trigger.errors import Forbidden, InvalidEvent, PayloadTooLarge
from retrain_trigger.model import Kind

OBJECT = {
    "bucket": "ct-bucket",
    "name": "data/2026-11-27/part-0001.csv",
    "generation": "1764259200000001",
    "metageneration": "1",
    "size": "4096",
    "contentType": "text/csv",
    "timeCreated": "2026-11-27T16:00:00.000Z",
}


def storage_event(data=None, type_=events.STORAGE_FINALIZED):
    return CloudEvent(
        {
            "type": type_,
            "source": "//storage.googleapis.com/projects/_/buckets/ct-bucket",
            "id": "evt-1",
            "time": "2026-11-27T16:00:00.5Z",
            "subject": "objects/data/2026-11-27/part-0001.csv",
        },
        OBJECT if data is None else data,
    )


def notification(resource=None, **attributes):
    resource = OBJECT if resource is None else resource
    attrs = {
        "bucketId": "ct-bucket",
        "objectId": OBJECT["name"],
        "objectGeneration": OBJECT["generation"],
        "eventType": "OBJECT_FINALIZE",
        "payloadFormat": "JSON_API_V1",
        "notificationConfig": "projects/_/buckets/ct-bucket/notificationConfigs/1",
    }
    attrs.update(attributes)
    return {
        "data": base64.b64encode(json.dumps(resource).encode()).decode(),
        "attributes": {k: v for k, v in attrs.items() if v is not None},
        "messageId": "1234567890",
        "publishTime": "2026-11-27T16:00:01.123Z",
    }


def pubsub_event(message, source="//pubsub.googleapis.com/projects/p/topics/gcs-events"):
    return CloudEvent(
        {"type": events.PUBSUB_PUBLISHED, "source": source, "id": message.get("messageId", "m")},
        {"message": message, "subscription": "projects/p/subscriptions/s"},
    )


def test_eventarc_finalize():
    trigger = events.decode_cloud_event(storage_event())
    assert trigger.kind is Kind.DATA
    assert (trigger.bucket, trigger.object, trigger.generation, trigger.size) == (
        "ct-bucket",
        OBJECT["name"],
        OBJECT["generation"],
        4096,
    )
    assert trigger.source == "eventarc"
    assert trigger.event_type == events.STORAGE_FINALIZED
    assert trigger.gcs_uri == "gs://ct-bucket/data/2026-11-27/part-0001.csv"


def test_eventarc_structured_bytes_data():
    event = storage_event(json.dumps(OBJECT).encode())
    assert events.decode_cloud_event(event).generation == OBJECT["generation"]


def test_pubsub_notification_cloud_event():
    trigger = events.decode_cloud_event(pubsub_event(notification()))
    assert trigger.source == "pubsub:gcs-events"
    assert trigger.event_type == "OBJECT_FINALIZE"
    assert trigger.event_id == "1234567890"
    assert trigger.content_type == "text/csv"


def test_pubsub_notification_without_payload_is_refused_naming_the_fix():
    message = notification(payloadFormat="NONE")
    del message["data"]  # Pub/Sub leaves out an empty data field
    with pytest.raises(InvalidEvent, match="payloadFormat NONE carries no object resource") as exc:
        events.decode_cloud_event(pubsub_event(message, source="//pubsub.googleapis.com/"))
    assert "JSON_API_V1" in str(exc.value) and exc.value.code == "payload_format_none"


def test_raw_push_body():
    body = {"message": notification(), "subscription": "projects/p/subscriptions/gcs-push"}
    trigger = events.decode_pubsub_push(body)
    assert trigger.source == "pubsub-push:projects/p/subscriptions/gcs-push"
    assert trigger.generation == OBJECT["generation"]


def test_delete_notification_decodes_with_its_type():
    trigger = events.decode_cloud_event(pubsub_event(notification(eventType="OBJECT_DELETE")))
    assert trigger.event_type == "OBJECT_DELETE"


BUILD = {
    "id": "b6f1c2d3-0000-4000-8000-000000000001",
    "status": "SUCCESS",
    "substitutions": {
        "COMMIT_SHA": "0123456789abcdef0123456789abcdef01234567",
        "BRANCH_NAME": "main",
    },
    "results": {
        "images": [
            {
                "name": "us-central1-docker.pkg.dev/p/train/mnist:0123456",
                "digest": "sha256:" + "a" * 64,
            }
        ]
    },
    "finishTime": "2026-11-27T16:10:00Z",
}


def build_message(build=BUILD, status="SUCCESS"):
    return {
        "data": base64.b64encode(json.dumps(build).encode()).decode(),
        "attributes": {"buildId": build["id"], "status": status},
        "messageId": "99",
    }


def test_cloud_build_success():
    trigger = events.decode_cloud_event(pubsub_event(build_message(), CLOUD_BUILDS_SOURCE))
    assert trigger.kind is Kind.CODE
    assert trigger.event_type == "SUCCESS"
    assert trigger.commit_sha == BUILD["substitutions"]["COMMIT_SHA"]
    assert trigger.image_uri == "us-central1-docker.pkg.dev/p/train/mnist@sha256:" + "a" * 64
    assert trigger.branch == "main"


def test_cloud_build_working_keeps_status():
    build = dict(BUILD, status="WORKING")
    trigger = events.decode_cloud_event(
        pubsub_event(build_message(build, "WORKING"), CLOUD_BUILDS_SOURCE)
    )
    assert trigger.event_type == "WORKING"


CLOUD_BUILDS_SOURCE = "//pubsub.googleapis.com/projects/p/topics/cloud-builds"
DATA_SOURCE = "//pubsub.googleapis.com/projects/p/topics/gcs-events"


def trigger_message(body):
    return {"data": base64.b64encode(json.dumps(body).encode()).decode(), "messageId": "7"}


@pytest.mark.parametrize(
    ("message", "source", "error"),
    [
        # A JSON trigger body published to the data topic: never a code or model run.
        (
            trigger_message({"kind": "model", "model_uri": "gs://m/v9/"}),
            DATA_SOURCE,
            "the event function takes data events only",
        ),
        (
            trigger_message({"kind": "code", "commit_sha": "abcdef12", "force": True}),
            CLOUD_BUILDS_SOURCE,
            "the event function takes data events only",
        ),
        # A forged Cloud Build SUCCESS on the data topic, or on a push naming no topic.
        (build_message(), DATA_SOURCE, "from topic projects/p/topics/gcs-events refused"),
        (build_message(), "//pubsub.googleapis.com/", "from a push whose URL names no topic"),
        (
            build_message(),
            "//pubsub.googleapis.com/projects/p/topics/cloud-builds-evil",
            "only from the Cloud Build topic \\(cloud-builds\\)",
        ),
    ],
)
def test_event_path_refuses_triggers_and_cloud_build_from_other_topics(message, source, error):
    with pytest.raises(Forbidden, match=error) as exc:
        events.decode_cloud_event(pubsub_event(message, source))
    assert exc.value.code == "untrusted_source"


def test_cloud_build_topic_setting_may_name_the_project():
    event = pubsub_event(build_message(), CLOUD_BUILDS_SOURCE)
    full = "projects/p/topics/cloud-builds"
    assert events.decode_cloud_event(event, cloud_build_topic=full).kind is Kind.CODE
    with pytest.raises(Forbidden):
        events.decode_cloud_event(event, cloud_build_topic="projects/other/topics/cloud-builds")
    other = pubsub_event(build_message(), "//pubsub.googleapis.com/projects/p/topics/builds")
    assert events.decode_cloud_event(other, cloud_build_topic="builds").kind is Kind.CODE


def test_push_topic_comes_from_the_url_and_trusted_push_takes_any_message():
    push = {"message": build_message(), "subscription": "projects/p/subscriptions/s"}
    with pytest.raises(Forbidden):
        events.decode_pubsub_push(push, topic="projects/p/topics/gcs-events")
    trigger = events.decode_pubsub_push(push, topic="projects/p/topics/cloud-builds")
    assert trigger.kind is Kind.CODE and trigger.source == "pubsub:cloud-builds"
    body = {"message": trigger_message({"kind": "model", "model_uri": "gs://m/v9/"}), **push}
    body["message"] = trigger_message({"kind": "model", "model_uri": "gs://m/v9/"})
    assert events.decode_pubsub_push(body, trusted=True).kind is Kind.MODEL


def test_forced_trigger_in_a_message_gets_the_message_id_as_nonce():
    body = {"kind": "model", "model_uri": "gs://m/v9/", "force": True}
    push = {"message": trigger_message(body), "subscription": "projects/p/subscriptions/s"}
    first = events.decode_pubsub_push(push, trusted=True)
    again = events.decode_pubsub_push(push, trusted=True)
    assert first.nonce == again.nonce == "pubsub-7"
    push["message"]["data"] = trigger_message({**body, "nonce": "mine"})["data"]
    assert events.decode_pubsub_push(push, trusted=True).nonce == "mine"


@pytest.mark.parametrize(
    ("identity", "expected"),
    [
        ("1234567890", "pubsub-1234567890"),
        ("", ""),
        ("id with spaces", None),
        ("x" * 80, None),
    ],
)
def test_delivery_nonce(identity, expected):
    nonce = events.delivery_nonce("pubsub", identity)
    if expected is not None:
        assert nonce == expected
    else:
        assert re.fullmatch(r"pubsub-[0-9a-f]{32}", nonce)
        assert nonce == events.delivery_nonce("pubsub", identity)


def test_http_body_code():
    trigger = events.decode_trigger_body(
        {
            "kind": "code",
            "commit_sha": "ABCDEF1",
            "image_uri": "gcr.io/p/img:v1",
            "build_id": "b-1",
            "branch": "release/1.2",
        },
        source="http",
    )
    assert (
        trigger.kind is Kind.CODE
        and trigger.commit_sha == "abcdef1"
        and trigger.branch == "release/1.2"
    )


def test_http_body_kind_inferred():
    assert events.decode_trigger_body({"model_uri": "gs://m/v2/"}, source="http").kind is Kind.MODEL
    assert events.decode_trigger_body({"commit_sha": "abcdef12"}, source="http").kind is Kind.CODE


HOSTILE_BODIES = [
    ([], "request body must be a JSON object, got list"),
    ("code", "request body must be a JSON object, got str"),
    ({}, "kind is missing"),
    ({"kind": "data"}, "kind must be code or model"),
    ({"kind": "code"}, "a code trigger needs commit_sha or image_uri"),
    ({"kind": "model"}, "a model trigger needs model_uri"),
    ({"kind": "code", "commit_sha": 123456789}, "commit_sha must be a string, got int"),
    ({"kind": "code", "commit_sha": ["a"]}, "commit_sha must be a string, got list"),
    ({"kind": "code", "commit_sha": "xyz"}, "commit_sha is not a hex commit sha"),
    ({"kind": "code", "image_uri": "not an image"}, "image_uri is not an image reference"),
    (
        {"kind": "code", "image_uri": "gcr.io/p/i:v1; rm -rf /"},
        "image_uri is not an image reference",
    ),
    ({"kind": "code", "commit_sha": "abcdef1", "branch": "a\nb"}, "branch is not a branch name"),
    ({"kind": "code", "commit_sha": "abcdef1", "route": "../etc"}, "route is not a route name"),
    ({"kind": "code", "commit_sha": "abcdef1", "force": "yes"}, "force must be true or false"),
    (
        {"kind": "code", "commit_sha": "abcdef1", "template": "file:///etc/passwd"},
        "template is not a gs:// or https:// URI",
    ),
    (
        {
            "kind": "code",
            "commit_sha": "abcdef1",
            "template": "gs://ct-templates/mnist/../../evil.yaml",
        },
        "template must not contain empty, '.' or '..' path segments",
    ),
    (
        {"kind": "code", "commit_sha": "abcdef1", "template": "gs://ct-templates/mnist/%2e%2e/x"},
        "template must not contain percent-encoding",
    ),
    (
        {"kind": "code", "commit_sha": "abcdef1", "template": "gs://ct-templates/mnist//x.yaml"},
        "template must not contain empty",
    ),
    (
        {"kind": "code", "commit_sha": "abcdef1", "template": "gs://ct-templates/mnist/./x.yaml"},
        "template must not contain empty, '.'",
    ),
    (
        {"kind": "code", "commit_sha": "abcdef1", "template": "https://x@evil.example/m/t"},
        "template must name a lower-case host",
    ),
    (
        {"kind": "code", "commit_sha": "abcdef1", "template": "https://EVIL.pkg.dev/p/r/t/v"},
        "template must name a lower-case host",
    ),
    (
        {"kind": "code", "commit_sha": "abcdef1", "template": "gs://ct-templates/mnist/t?x=1"},
        "template must not contain a query",
    ),
    (
        {"kind": "code", "commit_sha": "abcdef1", "template": "gs://ct-templates/mnist\\..\\x"},
        "template must not contain a backslash",
    ),
    (
        {"kind": "model", "model_uri": "gs://m/v1/../../other/"},
        "model_uri must not contain '..' path segments",
    ),
    (
        {"kind": "model", "model_uri": "gs://m/\u0000x"},
        "model_uri is not a gs://, https:// or projects/ URI",
    ),
    ({"kind": "code", "commit_sha": "abcdef1", "extra": 1}, r"unknown field\(s\): extra"),
    ({"kind": "code", "commit_sha": "a" * 5000}, "commit_sha is longer than 64 characters"),
    ({"kind": "code", "commit_sha": "abcdef1", "nonce": "a b"}, "nonce is not 1-64 characters"),
]


@pytest.mark.parametrize(("body", "message"), HOSTILE_BODIES)
def test_http_body_rejected(body, message):
    with pytest.raises(InvalidEvent, match=message):
        events.decode_trigger_body(body, source="http")


BAD_OBJECTS = [
    ({**OBJECT, "bucket": "Bad Bucket"}, "bucket is not a valid bucket name"),
    ({**OBJECT, "bucket": None}, "bucket is missing"),
    ({**OBJECT, "name": ""}, "object name is missing"),
    ({**OBJECT, "name": "a\nb"}, "object name contains a carriage return or line feed"),
    ({**OBJECT, "name": "a\rb"}, "object name contains a carriage return or line feed"),
    ({**OBJECT, "name": ".."}, "object name '..' is not allowed by Cloud Storage"),
    ({**OBJECT, "name": "é" * 600}, "object name is longer than 1024 bytes"),
    ({**OBJECT, "name": "\ud800"}, "object name is not valid UTF-8"),
    ({**OBJECT, "generation": "-1"}, "generation must be a positive whole number"),
    ({**OBJECT, "generation": "1e9"}, "generation must be a positive whole number"),
    ({**OBJECT, "generation": None}, "generation is missing"),
    ({**OBJECT, "size": "big"}, "size must be a whole number"),
    ({**OBJECT, "metadata": ["x"]}, "metadata must be an object"),
    ([1, 2], "storage event data must be a JSON object"),
]


@pytest.mark.parametrize(("data", "message"), BAD_OBJECTS)
def test_storage_event_rejected(data, message):
    with pytest.raises(InvalidEvent, match=message):
        events.decode_cloud_event(storage_event(data))


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (notification(eventType=None), "eventType is missing"),
        (notification(bucketId="other-bucket"), "notification payload names another object"),
        (notification(objectGeneration="42"), "notification payload generation differs"),
        (notification(payloadFormat="PROTO"), "unsupported payloadFormat"),
        (notification(objectGeneration=None), "objectGeneration is missing"),
        ({**notification(), "data": "!!!not base64"}, "Pub/Sub data is not valid base64"),
        ({**notification(), "data": 12}, "Pub/Sub data must be a base64 string"),
        ({**notification(), "attributes": ["x"]}, "Pub/Sub attributes must be an object"),
    ],
)
def test_pubsub_rejected(message, error):
    with pytest.raises(InvalidEvent, match=error):
        events.decode_cloud_event(pubsub_event(message))


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\xff\xfe", "Pub/Sub message data is not UTF-8 text"),
        (b"{", "Pub/Sub message data is not valid JSON"),
    ],
)
def test_trusted_pubsub_trigger_body_rejected(data, error):
    message = {"data": base64.b64encode(data).decode(), "messageId": "1"}
    with pytest.raises(InvalidEvent, match=error):
        events.decode_pubsub_message(message, source="http", trusted=True)


# --------------------------------------------------------------------------- legal input


# Objects Cloud Storage accepts (https://cloud.google.com/storage/docs/naming-objects: 1-1024
# bytes of UTF-8 without CR or LF; custom metadata: 8 KiB in all, values up to 4 KiB, any count).
LEGAL_OBJECTS = [
    {**OBJECT, "metadata": {f"k{i}": "v" for i in range(65)}},
    {**OBJECT, "metadata": {"notes": "x" * 4096}},
    {**OBJECT, "metadata": {f"key-{i}": "y" * 60 for i in range(120)}},
    {**OBJECT, "metadata": {"count": 3, "flag": True, "nested": {"a": [1]}}},
    {**OBJECT, "contentType": "application/vnd." + "x" * 3000 + "; charset=utf-8"},
    {**OBJECT, "contentType": 12},
    {**OBJECT, "name": "data/2026-11-27/part\t0001.csv"},
    {**OBJECT, "name": "data/\x01\x1f\x7f\u0085 odd name.csv"},
    {**OBJECT, "name": "data/" + "é" * 509},
]


@pytest.mark.parametrize("resource", LEGAL_OBJECTS)
def test_objects_gcs_accepts_are_accepted(resource):
    trigger = events.decode_cloud_event(storage_event(resource))
    assert trigger.object == resource["name"]
    attrs = {"objectId": resource["name"]}
    pushed = events.decode_cloud_event(pubsub_event(notification(resource, **attrs)))
    assert pushed.object == resource["name"] and pushed.generation == OBJECT["generation"]


def test_unprintable_event_ids_and_bad_times_never_refuse_an_event():
    event = CloudEvent(
        {
            "type": events.STORAGE_FINALIZED,
            "source": "//storage.googleapis.com/projects/_/buckets/ct-bucket",
            "id": "id with spaces é",
            "time": "yesterday",
        },
        OBJECT,
    )
    trigger = events.decode_cloud_event(event)
    assert trigger.event_id == "id_with_spaces__" and trigger.event_time == ""
    body = events.decode_trigger_body(
        {"kind": "code", "commit_sha": "abcdef12"}, source="http", event_id="req 1\t2"
    )
    assert body.event_id == "req_1_2"


def test_unknown_notification_type_is_kept_for_the_rules_to_skip():
    trigger = events.decode_cloud_event(pubsub_event(notification(eventType="OBJECT_RESTORE")))
    assert trigger.event_type == "OBJECT_RESTORE"


@pytest.mark.parametrize(
    ("branch", "kept"),
    [("feature/#12-ü", "feature/#12-ü"), ("main", "main"), ("has space", ""), ("a..~b", "")],
)
def test_cloud_build_branch_never_refuses_the_build(branch, kept):
    build = {**BUILD, "substitutions": {**BUILD["substitutions"], "BRANCH_NAME": branch}}
    trigger = events.decode_cloud_event(pubsub_event(build_message(build), CLOUD_BUILDS_SOURCE))
    assert trigger.branch == kept and trigger.commit_sha


def test_unknown_cloud_event_type():
    event = CloudEvent({"type": "com.example.thing", "source": "x", "id": "1"}, {})
    with pytest.raises(InvalidEvent, match="unsupported CloudEvent type"):
        events.decode_cloud_event(event)


def test_pubsub_message_missing():
    event = CloudEvent({"type": events.PUBSUB_PUBLISHED, "source": "x", "id": "1"}, {"nope": 1})
    with pytest.raises(InvalidEvent, match="Pub/Sub message must be a JSON object, got NoneType"):
        events.decode_cloud_event(event)


def test_oversized_and_deep_json():
    with pytest.raises(PayloadTooLarge, match="request body is larger than 1024 bytes"):
        events.parse_json(b"x" * 1025, what="request body", max_bytes=1024)
    with pytest.raises(InvalidEvent, match="nested deeper than 32 levels"):
        events.parse_json(b"[" * 100000 + b"]" * 100000, what="request body", max_bytes=1 << 20)
    deep_string = json.dumps({"a": "[" * 1000})
    assert events.parse_json(deep_string, what="body", max_bytes=1 << 20) == {"a": "[" * 1000}
    with pytest.raises(InvalidEvent, match="not valid JSON"):
        events.parse_json(b'{"n": ' + b"9" * 5000 + b"}", what="body", max_bytes=1 << 20)


def test_oversized_event_data():
    event = storage_event({**OBJECT, "metadata": {f"k{i}": "v" * 2000 for i in range(60)}})
    with pytest.raises(PayloadTooLarge, match="event data is larger than 65536 bytes"):
        events.decode_cloud_event(event, max_bytes=65536)


def test_a_forged_flood_of_metadata_is_accepted_but_logged_bounded():
    """A real object holds at most 8 KiB of metadata; a forged event may hold far more (up to
    max_body_bytes): it is not refused, and its log line stays bounded."""
    flood = {f"key-{i:05d}": "v" * 100 for i in range(5000)}
    trigger = events.decode_cloud_event(storage_event({**OBJECT, "metadata": flood}))
    assert len(trigger.metadata) == 5000
    logged = trigger.to_dict()["metadata"]
    assert len(json.dumps(logged)) < 10_000
    assert logged["…"] == f"{5000 - (len(logged) - 1)} more entries not shown"
    small = events.decode_cloud_event(storage_event({**OBJECT, "metadata": {"a": "b"}}))
    assert small.to_dict()["metadata"] == {"a": "b"}
