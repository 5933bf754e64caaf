"""Both functions under functions-framework, with real CloudEvents, the real aiplatform_v1 client
and the fake Vertex REST server. Mocks: none."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import functions_framework
import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent

from tests.conftest import REPO

SECRET = "s3cret-s3cret-s3cret"
OBJECT = {
    "bucket": "ct-bucket",
    "name": "data/2026-11-27/part-0001.csv",
    "generation": "1764259200000001",
    "size": "4096",
    "contentType": "text/csv",
}


@pytest.fixture
def env(monkeypatch, write_config, config_text, fake_vertex):
    monkeypatch.setenv("RETRAIN_CONFIG", str(write_config(config_text)))
    monkeypatch.setenv("RETRAIN_VERTEX_ENDPOINT", fake_vertex.endpoint)
    monkeypatch.setenv("RETRAIN_AUTH", "hmac")
    monkeypatch.setenv("RETRAIN_HMAC_SECRET", SECRET)
    monkeypatch.setenv("RETRAIN_SUBMIT_DEADLINE", "4")
    return fake_vertex


@pytest.fixture
def gcs_client(env):
    app = functions_framework.create_app(
        "retrain_event", str(REPO / "function_gcs" / "main.py"), "cloudevent"
    )
    return app.test_client()


@pytest.fixture
def http_client(env):
    app = functions_framework.create_app(
        "retrain_http", str(REPO / "function_http" / "main.py"), "http"
    )
    return app.test_client()


def storage_event(data=None, event_id="evt-1"):
    return CloudEvent(
        {
            "type": "google.cloud.storage.object.v1.finalized",
            "source": "//storage.googleapis.com/projects/_/buckets/ct-bucket",
            "id": event_id,
            "subject": "objects/" + OBJECT["name"],
        },
        OBJECT if data is None else data,
    )


def send(client, event, mode="binary"):
    headers, body = (to_binary if mode == "binary" else to_structured)(event)
    return client.post("/", headers=headers, data=body)


def push_body(resource=OBJECT, message_id="m-1", event_type="OBJECT_FINALIZE"):
    attributes = {
        "bucketId": resource["bucket"],
        "objectId": resource["name"],
        "objectGeneration": resource["generation"],
        "eventType": event_type,
        "payloadFormat": "JSON_API_V1",
    }
    return {
        "message": {
            "data": base64.b64encode(json.dumps(resource).encode()).decode(),
            "attributes": attributes,
            "messageId": message_id,
            "publishTime": "2026-11-27T16:00:00Z",
        },
        "subscription": "projects/test-project/subscriptions/gcs-push",
    }


def signed(body: dict | bytes):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    signature = hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
    return raw, {"X-Retrain-Signature": f"sha256={signature}", "Content-Type": "application/json"}


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_eventarc_finalize_submits_one_job(gcs_client, env, mode):
    response = send(gcs_client, storage_event(), mode)
    assert response.status_code == 200
    assert len(env.jobs) == 1
    job = next(iter(env.jobs.values()))
    assert job["name"].startswith(
        "projects/test-project/locations/us-central1/pipelineJobs/mnist-data-part-0001-csv-"
    )
    values = job["runtimeConfig"]["parameterValues"]
    assert values["data_uri"] == "gs://ct-bucket/data/2026-11-27/part-0001.csv"
    assert values["model_registry_uri"] == "gs://ct-bucket/models"
    assert job["runtimeConfig"]["gcsOutputDirectory"] == "gs://ct-bucket/pipeline-root"
    assert job["serviceAccount"] == "trainer@test-project.iam.gserviceaccount.com"
    assert job["labels"]["retrain-route"] == "mnist"


def test_redelivery_and_replay_create_once(gcs_client, env):
    assert send(gcs_client, storage_event(event_id="a")).status_code == 200
    assert send(gcs_client, storage_event(event_id="b")).status_code == 200
    push = gcs_client.post("/projects/test-project/topics/gcs-events", json=push_body())
    assert push.status_code == 200
    assert len(env.jobs) == 1
    assert len(env.requests_for("create")) == 1  # the instance remembers the job it created


def test_raw_pubsub_push_is_converted(gcs_client, env):
    response = gcs_client.post("/projects/test-project/topics/gcs-events", json=push_body())
    assert response.status_code == 200
    assert len(env.jobs) == 1


@pytest.mark.parametrize(
    "data",
    [
        {**OBJECT, "name": "data/folder/"},
        {**OBJECT, "size": "0"},
        {**OBJECT, "name": "pipeline-root/run/model.joblib"},
        {**OBJECT, "name": "elsewhere/x.csv"},
    ],
)
def test_skipped_events_are_acknowledged_without_vertex(gcs_client, env, data):
    assert send(gcs_client, storage_event(data)).status_code == 200
    assert env.creates == 0
    assert env.requests == []


@pytest.mark.parametrize(
    "data",
    [
        {**OBJECT, "generation": "minus one"},
        {**OBJECT, "name": "a\r\nb"},
        {"bucket": "ct-bucket"},
        ["not", "an", "object"],
    ],
)
def test_malformed_events_are_acknowledged(gcs_client, env, data, capsys):
    response = send(gcs_client, storage_event(data))
    assert response.status_code == 200
    assert env.creates == 0
    lines = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")
    ]
    assert lines[-1]["decision"] == "rejected" and lines[-1]["severity"] == "ERROR"


def test_failed_submission_raises_for_redelivery(gcs_client, env):
    env.inject("create", status=503, times=100)
    response = send(gcs_client, storage_event())
    assert response.status_code == 500
    env.clear_faults()
    assert send(gcs_client, storage_event()).status_code == 200
    assert len(env.jobs) == 1


def test_one_structured_log_line_per_event(gcs_client, env, capsys):
    send(gcs_client, storage_event())
    lines = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")
    ]
    decisions = [line for line in lines if "decision" in line]
    assert len(decisions) == 1
    entry = decisions[0]
    assert entry["decision"] == "submitted"
    assert entry["severity"] == "NOTICE"
    assert entry["run_key"] == "gs://ct-bucket/data/2026-11-27/part-0001.csv#1764259200000001"
    assert entry["job"].startswith("projects/test-project/locations/us-central1/pipelineJobs/")
    assert entry["logging.googleapis.com/labels"]["retrain-decision"] == "submitted"
    assert entry["latency_ms"] > 0


# ----------------------------------------------------------------------------- HTTP


def test_code_change_submits_then_duplicate(http_client, env):
    body, headers = signed(
        {
            "kind": "code",
            "commit_sha": "0123456789abcdef",
            "image_uri": "us-docker.pkg.dev/p/r/train@sha256:" + "c" * 64,
            "build_id": "b-1",
        }
    )
    first = http_client.post(
        "/",
        data=body,
        headers={**headers, "X-Cloud-Trace-Context": "0af7651916cd43dd8448eb211c80319c/1;o=1"},
    )
    assert first.status_code == 200, first.get_json()
    answer = first.get_json()
    assert answer["decision"] == "submitted"
    assert answer["job"].startswith(
        "projects/test-project/locations/us-central1/pipelineJobs/mnist-code-01234567-"
    )
    assert (
        answer["run_key"] == "code:0123456789abcdef:us-docker.pkg.dev/p/r/train@sha256:" + "c" * 64
    )
    second = http_client.post("/", data=body, headers=headers)
    assert second.status_code == 200
    assert second.get_json()["decision"] == "duplicate"
    assert second.get_json()["job"] == answer["job"]
    assert len(env.jobs) == 1
    values = next(iter(env.jobs.values()))["runtimeConfig"]["parameterValues"]
    assert values["data_uri"] == "gs://ct-bucket/data/"
    assert values["commit_sha"] == "0123456789abcdef"


def test_model_change(http_client, env):
    body, headers = signed({"kind": "model", "model_uri": "gs://base-models/mnist/v3/"})
    response = http_client.post("/", data=body, headers=headers)
    assert response.get_json()["decision"] == "submitted"


def test_dry_run_submits_nothing(http_client, env):
    body, headers = signed({"kind": "code", "commit_sha": "abcdef12", "dry_run": True})
    answer = http_client.post("/", data=body, headers=headers).get_json()
    assert answer["decision"] == "skipped" and answer["dry_run"] is True
    assert answer["request"]["parameter_values"]["commit_sha"] == "abcdef12"
    assert answer["job_id"].startswith("mnist-code-abcdef12-")
    assert env.creates == 0


@pytest.mark.parametrize(
    ("status", "decision", "http"),
    [
        (503, "failed", 503),
        (429, "failed", 503),
        (500, "failed", 503),
        (403, "failed", 502),
        (400, "failed", 502),
    ],
)
def test_backend_failures_answer_5xx(http_client, env, status, decision, http):
    env.inject("create", status=status, times=100)
    body, headers = signed({"kind": "code", "commit_sha": "abcdef12"})
    response = http_client.post("/", data=body, headers=headers)
    assert response.status_code == http
    assert response.get_json()["decision"] == decision


BAD_HTTP = [
    (b"{not json", {}, 400, "request body is not valid JSON"),
    (b'{"kind": "code"}', {}, 400, "a code trigger needs commit_sha or image_uri"),
    (
        b'{"kind": "code", "commit_sha": "abcdef12", "route": "nope"}',
        {},
        422,
        "unknown route 'nope'",
    ),
    (
        b'{"kind": "code", "commit_sha": "abcdef12", "template": "gs://evil/x.yaml"}',
        {},
        403,
        "not under an allowed prefix",
    ),
    (b'{"kind": "code", "commit_sha": 5}', {}, 400, "commit_sha must be a string, got int"),
    (b"[" * 5000 + b"]" * 5000, {}, 400, "nested deeper than 32 levels"),
    ('{"kind": "model", "model_uri": "gs://m/\u00e9\u202e"}'.encode(), {}, 200, None),
    (
        b'{"kind": "code", "commit_sha": "abcdef12"}',
        {"Content-Type": "text/plain"},
        415,
        "Content-Type must be application/json",
    ),
]


@pytest.mark.parametrize(("raw", "extra", "status", "reason"), BAD_HTTP)
def test_bad_http_input(http_client, env, raw, extra, status, reason):
    body, headers = signed(raw)
    response = http_client.post("/", data=body, headers={**headers, **extra})
    assert response.status_code == status, response.get_json()
    answer = response.get_json()
    if reason:
        assert reason in answer["reason"]
        assert answer["decision"] == "rejected"


def test_ten_mebibyte_body_is_refused(http_client, env):
    body, headers = signed(
        b'{"kind": "code", "commit_sha": "abcdef12", "branch": "' + b"a" * (10 << 20) + b'"}'
    )
    response = http_client.post("/", data=body, headers=headers)
    assert response.status_code == 413
    assert response.get_json()["decision"] == "rejected"
    assert env.creates == 0


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"X-Retrain-Signature": "sha256=" + "0" * 64}, 401),
        ({"X-Retrain-Signature": "md5=abc"}, 401),
    ],
)
def test_unauthenticated_requests_submit_nothing(http_client, env, headers, status):
    response = http_client.post(
        "/", json={"kind": "code", "commit_sha": "abcdef12"}, headers=headers
    )
    assert response.status_code == status
    assert response.get_json()["decision"] == "rejected"
    assert env.creates == 0


def test_get_is_not_allowed(http_client, env):
    response = http_client.get("/")
    assert response.status_code == 405 and response.headers["Allow"] == "POST"


def test_unknown_path(http_client, env):
    body, headers = signed({"kind": "code", "commit_sha": "abcdef12"})
    assert http_client.post("/admin", data=body, headers=headers).status_code == 404


def test_broken_config_answers_502_without_details(monkeypatch, write_config, http_client, capsys):
    path = write_config("project: [", "broken.yaml")
    monkeypatch.setenv("RETRAIN_CONFIG", str(path))
    response = http_client.post("/", json={})  # unauthenticated: no credentials at all
    assert response.status_code == 502
    answer = response.get_json()
    assert answer["error"] == "config_error" and answer["decision"] == "failed"
    text = response.get_data(as_text=True)
    assert str(path.parent) not in text and "broken.yaml" not in text and "YAML" not in text
    assert "broken.yaml: not valid YAML" in capsys.readouterr().out  # the operator's log has it


def test_auth_setting_errors_answer_without_details(monkeypatch, http_client, capsys):
    monkeypatch.setenv("RETRAIN_AUTH", "iam")
    monkeypatch.setenv("RETRAIN_ID_TOKEN_CERTS_URL", "http://certs.internal.example/x")
    response = http_client.post(
        "/", json={"kind": "code"}, headers={"Authorization": "Bearer aaa.bbb.ccc"}
    )
    assert response.status_code == 502
    assert "certs.internal.example" not in response.get_data(as_text=True)
    assert response.get_json()["reason"].startswith("the service is misconfigured")
    assert "certs.internal.example" in capsys.readouterr().out


# ----------------------------------------------------------------------------- trust boundaries


def decision_lines(capsys) -> list[dict]:
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    return [line for line in lines if "decision" in line]


def message_of(body: dict | bytes, attributes: dict | None = None, message_id: str = "m-9"):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    message = {"data": base64.b64encode(raw).decode(), "messageId": message_id}
    if attributes:
        message["attributes"] = attributes
    return message


def push_of(message: dict) -> dict:
    return {"message": message, "subscription": "projects/test-project/subscriptions/s"}


def published(message: dict, topic: str) -> CloudEvent:
    """What Eventarc delivers for a message published to ``topic``."""
    return CloudEvent(
        {
            "type": "google.cloud.pubsub.topic.v1.messagePublished",
            "source": f"//pubsub.googleapis.com/projects/test-project/topics/{topic}",
            "id": message["messageId"],
        },
        {"message": message, "subscription": "projects/test-project/subscriptions/eventarc"},
    )


BUILD = {
    "id": "b6f1c2d3-0000-4000-8000-000000000001",
    "status": "SUCCESS",
    "substitutions": {"COMMIT_SHA": "0123456789abcdef0123456789abcdef01234567"},
    "results": {
        "images": [{"name": "us-docker.pkg.dev/p/r/train", "digest": "sha256:" + "d" * 64}]
    },
}
BUILD_MESSAGE = message_of(BUILD, {"buildId": BUILD["id"], "status": "SUCCESS"}, "b-1")
MODEL_MESSAGE = message_of({"kind": "model", "model_uri": "gs://base-models/mnist/v9/"})


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (MODEL_MESSAGE, "the event function takes data events only"),
        (BUILD_MESSAGE, "Cloud Build status message from topic projects/test-project/topics/"),
    ],
)
def test_event_function_refuses_triggers_on_the_data_topic(
    gcs_client, env, capsys, message, reason
):
    """A model trigger or a forged Cloud Build SUCCESS published to the data topic: no run."""
    capsys.readouterr()
    eventarc = send(gcs_client, published(message, "gcs-events"))
    push = gcs_client.post("/projects/test-project/topics/gcs-events", json=push_of(message))
    push_to_root = gcs_client.post("/", json=push_of(message))
    assert [r.status_code for r in (eventarc, push, push_to_root)] == [200, 200, 200]
    lines = decision_lines(capsys)
    assert [(x["decision"], x["severity"], x["error"]) for x in lines] == [
        ("rejected", "ERROR", "untrusted_source")
    ] * 3
    assert all(reason in x["reason"] or "names no topic" in x["reason"] for x in lines)
    assert env.creates == 0


def test_cloud_build_message_from_its_topic_starts_a_code_run(gcs_client, env):
    assert send(gcs_client, published(BUILD_MESSAGE, "cloud-builds")).status_code == 200
    push = gcs_client.post(
        "/projects/test-project/topics/cloud-builds", json=push_of(BUILD_MESSAGE)
    )
    assert push.status_code == 200
    assert len(env.jobs) == 1
    job = next(iter(env.jobs.values()))
    assert job["labels"]["retrain-kind"] == "code"


# ----------------------------------------------------------------------------- force and nonce


def test_forced_pubsub_message_delivered_three_times_starts_one_run(http_client, env):
    """Pushed to the HTTP function (authenticated); the message id is the nonce."""
    message = message_of(
        {"kind": "model", "model_uri": "gs://base-models/mnist/v9/", "force": True}
    )
    body, headers = signed(push_of(message))
    answers = [http_client.post("/", data=body, headers=headers).get_json() for _ in range(3)]
    assert [a["decision"] for a in answers] == ["submitted", "duplicate", "duplicate"]
    assert {a["run_key"] for a in answers} == {"model:gs://base-models/mnist/v9/#force=pubsub-m-9"}
    assert len(env.jobs) == 1


def test_forced_message_to_the_event_function_starts_nothing(gcs_client, env):
    message = message_of(
        {"kind": "model", "model_uri": "gs://base-models/mnist/v9/", "force": True}
    )
    for _ in range(3):
        assert send(gcs_client, published(message, "gcs-events")).status_code == 200
    assert env.creates == 0


def signed_at(body: dict, timestamp: int) -> tuple[bytes, dict]:
    raw = json.dumps(body).encode()
    mac = hmac.new(SECRET.encode(), str(timestamp).encode() + b"." + raw, hashlib.sha256)
    return raw, {
        "X-Retrain-Signature": f"sha256={mac.hexdigest()}",
        "X-Retrain-Timestamp": str(timestamp),
        "Content-Type": "application/json",
    }


def test_replayed_hmac_request_with_force_starts_one_run(http_client, env):
    """Replays inside the signature's window carry the same signed time: the same nonce."""
    import time

    request = {"kind": "code", "commit_sha": "abcdef12", "force": True}
    signed_time = int(time.time())
    body, headers = signed_at(request, signed_time)
    answers = [http_client.post("/", data=body, headers=headers).get_json() for _ in range(3)]
    assert [a["decision"] for a in answers] == ["submitted", "duplicate", "duplicate"], answers
    assert answers[0]["run_key"].startswith(f"code:abcdef12:#force=hmac-{signed_time}-")
    assert len(env.jobs) == 1
    # Signed again (a new request, another time): a new forced run.
    body, headers = signed_at(request, signed_time - 1)
    assert http_client.post("/", data=body, headers=headers).get_json()["decision"] == "submitted"
    assert len(env.jobs) == 2


def test_force_without_nonce_or_signed_time_is_refused(http_client, env):
    body, headers = signed({"kind": "code", "commit_sha": "abcdef12", "force": True})
    response = http_client.post("/", data=body, headers=headers)
    assert response.status_code == 422
    answer = response.get_json()
    assert answer["error"] == "nonce_required" and 'send "nonce"' in answer["reason"]
    body, headers = signed({"kind": "code", "commit_sha": "abcdef12", "force": True, "nonce": "r2"})
    assert http_client.post("/", data=body, headers=headers).get_json()["decision"] == "submitted"
    assert env.creates == 1


# ----------------------------------------------------------------------------- legal input


LEGAL = [
    {**OBJECT, "metadata": {f"k{i}": "v" for i in range(65)}},
    {**OBJECT, "metadata": {"notes": "n" * 4096, "more": "m" * 3000}},
    {**OBJECT, "contentType": "application/x-" + "c" * 2000},
    {**OBJECT, "name": "data/2026-11-27/part\t0001.csv"},
]


@pytest.mark.parametrize("resource", LEGAL)
def test_objects_gcs_accepts_start_runs_by_every_path(gcs_client, env, resource):
    assert send(gcs_client, storage_event(resource, event_id="a"), "binary").status_code == 200
    assert send(gcs_client, storage_event(resource, event_id="b"), "structured").status_code == 200
    push = gcs_client.post("/projects/test-project/topics/gcs-events", json=push_body(resource))
    assert push.status_code == 200
    assert len(env.jobs) == 1
    job_id, job = next(iter(env.jobs.items()))
    assert job_id.startswith("mnist-data-part") and "\t" not in job["displayName"]
    data_uri = job["runtimeConfig"]["parameterValues"]["data_uri"]
    assert data_uri == f"gs://ct-bucket/{resource['name']}"


def test_an_odd_request_id_never_refuses_a_trigger(http_client, env):
    body, headers = signed({"kind": "code", "commit_sha": "abcdef12"})
    response = http_client.post(
        "/", data=body, headers={**headers, "X-Request-Id": "req 42 from\tsomewhere é"}
    )
    assert response.status_code == 200 and response.get_json()["decision"] == "submitted"


def test_post_without_content_type_is_not_taken_as_json(http_client, env):
    body, headers = signed({"kind": "code", "commit_sha": "abcdef12"})
    del headers["Content-Type"]
    response = http_client.post("/", data=body, headers=headers)
    assert response.status_code == 415
    assert response.get_json()["error"] == "unsupported_media_type"
    assert "got 'none'" in response.get_json()["reason"]
    assert env.creates == 0


# ----------------------------------------------------------------------------- envelopes


def _nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


ENVELOPES = [
    pytest.param(
        {**to_binary(storage_event())[0]},
        _nested(5000).encode(),
        "nested deeper than 32 levels",
        id="binary-deep",
    ),
    pytest.param(
        {"Content-Type": "application/cloudevents+json"},
        (
            '{"specversion": "1.0", "type": "t", "source": "s", "id": "1", "data": '
            + _nested(5000)
            + "}"
        ).encode(),
        "nested deeper than 32 levels",
        id="structured-deep",
    ),
    pytest.param(
        {"Content-Type": "application/cloudevents+json"},
        json.dumps(
            {
                "specversion": "1.0",
                "type": "google.cloud.storage.object.v1.finalized",
                "source": "//storage.googleapis.com/projects/_/buckets/ct-bucket",
                "id": "1",
                "data_base64": "!!! not base64 !!!",
            }
        ).encode(),
        "not a valid CloudEvent",
        id="structured-invalid-data_base64",
    ),
    pytest.param(
        {"Content-Type": "application/json"},
        json.dumps([push_body()]).encode(),
        "neither a CloudEvent (binary or structured) nor a Pub/Sub push body, got a JSON list",
        id="push-body-list",
    ),
    pytest.param(
        {"Content-Type": "application/json"},
        json.dumps({"context": {"eventId": "1"}, "data": {}}).encode(),
        "neither a CloudEvent",
        id="legacy-background-event",
    ),
    pytest.param(
        {"Content-Type": "application/json"},
        b"[" * 100000,
        "nested deeper than 32 levels",
        id="push-deep",
    ),
    pytest.param({"Content-Type": "text/plain"}, b"\xff\xfe", "not UTF-8", id="not-text"),
    pytest.param(
        {"ce-specversion": "1.0", "ce-type": "t", "Content-Type": "application/json"},
        b"{}",
        "not a valid CloudEvent",
        id="binary-missing-id-and-source",
    ),
    pytest.param(
        {"Content-Type": "application/json"},
        json.dumps(
            push_of(
                {
                    "attributes": {
                        "bucketId": "ct-bucket",
                        "objectId": OBJECT["name"],
                        "objectGeneration": OBJECT["generation"],
                        "eventType": "OBJECT_FINALIZE",
                        "payloadFormat": "NONE",
                    },
                    "messageId": "n-1",
                }
            )
        ).encode(),
        "payloadFormat NONE carries no object resource",
        id="push-payload-format-none",
    ),
    pytest.param(
        {"Content-Type": "application/json"},
        json.dumps(push_of({**push_body()["message"], "data": "%%%"})).encode(),
        "Pub/Sub data is not valid base64",
        id="push-invalid-base64",
    ),
]


@pytest.mark.parametrize(("headers", "body", "reason"), ENVELOPES)
def test_malformed_envelopes_are_logged_rejections(gcs_client, env, capsys, headers, body, reason):
    """Envelopes that functions-framework or the CloudEvents SDK would answer 400 or 500 (and
    Pub/Sub redeliver for days) reach our screen first: one logged rejection, acknowledged."""
    capsys.readouterr()
    response = gcs_client.post(
        "/projects/test-project/topics/gcs-events", headers=headers, data=body
    )
    assert response.status_code == 200, response.get_data()[:300]
    lines = decision_lines(capsys)
    assert len(lines) == 1, lines
    assert lines[0]["decision"] == "rejected" and lines[0]["severity"] == "ERROR"
    assert reason in lines[0]["reason"]
    assert env.creates == 0


def test_wrong_method_and_paths_are_still_the_frameworks(gcs_client, env):
    assert gcs_client.get("/").status_code == 405
