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


def test_broken_config_answers_502(monkeypatch, write_config, http_client):
    monkeypatch.setenv("RETRAIN_CONFIG", str(write_config("project: [", "broken.yaml")))
    response = http_client.post("/", json={})
    assert response.status_code == 502
    assert response.get_json()["error"] == "config_error"
