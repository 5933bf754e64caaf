"""Faults at the edges, through the real entry points, the real clients and the fakes.

Each fault must give the Decision and the answer DESIGN.md prescribes ("What each outcome
answers"): HTTP answers 503 (retryable) or 502 (an operator must act) with a JSON body; the event
function raises, so functions-framework answers 500 and the platform redelivers; rejected input is
acknowledged. Retries stay inside ``RETRAIN_SUBMIT_DEADLINE``, and the failed event, delivered
again once the fault is gone, starts exactly one run.
"""

from __future__ import annotations

import gc
import hashlib
import hmac
import json
import shutil
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import functions_framework
import pytest
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

from tests.conftest import BASE_CONFIG, MNIST_TEMPLATE, REPO
from tests.fakes.gcs import FakeGcs
from tests.fakes.vertex import FakeVertex

SECRET = "s3cret-s3cret-s3cret"
DEADLINE = 2.0
# What a request may take beyond the deadline: the last attempt's bookkeeping, not another one.
MARGIN = 1.0
JOBS = "projects/test-project/locations/us-central1/pipelineJobs/"
OBJECT = {
    "bucket": "ct-bucket",
    "name": "data/2026-11-27/part-0001.csv",
    "generation": "1764259200000001",
    "size": "4096",
    "contentType": "text/csv",
}
CODE_CHANGE = {
    "kind": "code",
    "commit_sha": "0123456789abcdef0123456789abcdef01234567",
    "image_uri": "us-docker.pkg.dev/test-project/train/mnist@sha256:" + "c" * 64,
}
TEMPLATE_BUCKET = "fault-templates"
TEMPLATE_URI = f"gs://{TEMPLATE_BUCKET}/mnist/v1.yaml"

# name -> the fault the fake Vertex server answers every create with, until cleared.
TRANSIENT = {
    "429": {"status": 429},
    "500": {"status": 500},
    "503": {"status": 503},
    "connection reset": {"reset": True},
    "hang past the deadline": {"hang": DEADLINE + 1.5},
}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch, write_config: Any, config_text: str, fake_vertex: FakeVertex
) -> FakeVertex:
    monkeypatch.setenv("RETRAIN_CONFIG", str(write_config(config_text)))
    monkeypatch.setenv("RETRAIN_VERTEX_ENDPOINT", fake_vertex.endpoint)
    monkeypatch.setenv("RETRAIN_AUTH", "hmac")
    monkeypatch.setenv("RETRAIN_HMAC_SECRET", SECRET)
    monkeypatch.setenv("RETRAIN_SUBMIT_DEADLINE", str(DEADLINE))
    return fake_vertex


@pytest.fixture
def gcs_client(env: FakeVertex) -> Any:
    app = functions_framework.create_app(
        "retrain_event", str(REPO / "function_gcs" / "main.py"), "cloudevent"
    )
    return app.test_client()


@pytest.fixture
def http_client(env: FakeVertex) -> Any:
    app = functions_framework.create_app(
        "retrain_http", str(REPO / "function_http" / "main.py"), "http"
    )
    return app.test_client()


@pytest.fixture
def own_gcs() -> Iterator[FakeGcs]:
    """A fake-gcs-server of this test's own, which the test may stop and start again."""
    server = FakeGcs().start()
    try:
        yield server
    finally:
        server.stop()


def upload_template(url: str, uri: str = TEMPLATE_URI) -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(
        project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": url}
    )
    bucket_name, _, name = uri.removeprefix("gs://").partition("/")
    bucket = client.bucket(bucket_name)
    if not bucket.exists():
        bucket = client.create_bucket(bucket_name)
    bucket.blob(name).upload_from_filename(str(MNIST_TEMPLATE))


# --------------------------------------------------------------------------- helpers


def storage_event(data: dict[str, Any] | None = None, event_id: str = "evt-1") -> CloudEvent:
    return CloudEvent(
        {
            "type": "google.cloud.storage.object.v1.finalized",
            "source": "//storage.googleapis.com/projects/_/buckets/ct-bucket",
            "id": event_id,
        },
        OBJECT if data is None else data,
    )


def deliver(client: Any, event: CloudEvent) -> tuple[int, float]:
    headers, body = to_binary(event)
    started = time.monotonic()
    response = client.post("/", headers=headers, data=body)
    return response.status_code, time.monotonic() - started


def post(client: Any, body: dict[str, Any] = CODE_CHANGE) -> tuple[int, dict[str, Any], float]:
    raw = json.dumps(body).encode()
    signature = hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
    headers = {"X-Retrain-Signature": f"sha256={signature}", "Content-Type": "application/json"}
    started = time.monotonic()
    response = client.post("/", data=raw, headers=headers)
    elapsed = time.monotonic() - started
    assert response.mimetype == "application/json"
    return response.status_code, response.get_json(), elapsed


def decisions(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    lines = capsys.readouterr().out.splitlines()
    return [json.loads(x) for x in lines if x.startswith("{") and '"decision"' in x]


def settle(fake: FakeVertex, fault: str) -> bool:
    """After a hang: waits for the hanging create, which the fake processes once its hang ends
    (long after the client gave up), as a slow service does. True when there was one."""
    if not fault.startswith("hang"):
        return False
    assert fake.wait_until(lambda f: len(f.jobs) == 1, timeout=10)
    return True


# --------------------------------------------------------------------------- transient faults


@pytest.mark.parametrize("fault", list(TRANSIENT), ids=list(TRANSIENT))
def test_http_transient_fault_answers_503_within_the_deadline_then_submits_once(
    http_client: Any, env: FakeVertex, fault: str, capsys: pytest.CaptureFixture[str]
) -> None:
    env.inject("create", times=None, **TRANSIENT[fault])
    status, answer, elapsed = post(http_client)

    assert status == 503, answer
    assert answer["decision"] == "failed"
    assert answer["retryable"] is True
    assert answer["error"] == "backend_unavailable"
    assert answer["job_id"].startswith("mnist-code-01234567-")
    assert elapsed <= DEADLINE + MARGIN
    attempts = len(env.requests_for("create"))
    assert attempts >= (1 if fault.startswith("hang") else 2)  # retried, within the deadline
    (line,) = decisions(capsys)
    assert line["decision"] == "failed" and line["severity"] == "WARNING"
    assert line["retryable"] is True

    env.clear_faults()
    hung = settle(env, fault)
    status, answer, _ = post(http_client)
    assert status == 200, answer
    assert answer["decision"] == ("duplicate" if hung else "submitted")
    assert answer["job"] == JOBS + answer["job_id"]
    assert len(env.jobs) == 1


@pytest.mark.parametrize("fault", list(TRANSIENT), ids=list(TRANSIENT))
def test_event_transient_fault_raises_for_redelivery_then_submits_once(
    gcs_client: Any, env: FakeVertex, fault: str, capsys: pytest.CaptureFixture[str]
) -> None:
    env.inject("create", times=None, **TRANSIENT[fault])
    status, elapsed = deliver(gcs_client, storage_event(event_id="try-1"))

    assert status == 500  # functions-framework's answer to a raise: the platform redelivers
    assert elapsed <= DEADLINE + MARGIN
    (line,) = decisions(capsys)
    assert line["decision"] == "failed" and line["retryable"] is True
    assert line["run_key"] == "gs://ct-bucket/data/2026-11-27/part-0001.csv#1764259200000001"

    env.clear_faults()
    hung = settle(env, fault)
    status, _ = deliver(gcs_client, storage_event(event_id="try-2"))
    assert status == 200
    (line,) = decisions(capsys)
    assert line["decision"] == ("duplicate" if hung else "submitted")
    assert line["job"] == JOBS + line["job_id"]
    assert len(env.jobs) == 1


def test_lost_answer_of_a_create_reads_as_duplicate_of_the_one_job(
    http_client: Any, env: FakeVertex
) -> None:
    env.inject("create", reset=True, after=True)  # the job is stored, the answer is lost
    status, answer, elapsed = post(http_client)

    assert status == 200, answer
    assert answer["decision"] == "duplicate"
    assert answer["job"] == JOBS + answer["job_id"]
    assert len(env.jobs) == 1
    assert [r.status for r in env.requests_for("create")] == [0, 409]
    assert elapsed <= DEADLINE + MARGIN


def test_conflict_for_an_id_never_created_is_a_duplicate_not_an_error(
    http_client: Any, gcs_client: Any, env: FakeVertex, capsys: pytest.CaptureFixture[str]
) -> None:
    env.inject("create", conflict_unknown=True, times=2)

    status, answer, _ = post(http_client)
    assert status == 200, answer
    assert answer["decision"] == "duplicate"
    assert answer["job"] == JOBS + answer["job_id"]  # named from the request: the GET finds none
    assert [r.status for r in env.requests_for("get")] == [404]

    assert deliver(gcs_client, storage_event())[0] == 200  # acknowledged, not redelivered
    lines = decisions(capsys)
    assert [line["decision"] for line in lines] == ["duplicate", "duplicate"]
    assert env.jobs == {}


def test_malformed_event_is_acknowledged_while_vertex_is_down(
    gcs_client: Any, env: FakeVertex, capsys: pytest.CaptureFixture[str]
) -> None:
    env.inject("*", status=503, times=None)
    status, elapsed = deliver(gcs_client, storage_event({**OBJECT, "generation": "-1"}))
    assert status == 200
    assert elapsed < DEADLINE
    assert env.requests == []
    (line,) = decisions(capsys)
    assert line["decision"] == "rejected" and line["severity"] == "ERROR"


# --------------------------------------------------------------------------- templates


def test_gcs_down_while_the_template_is_read(
    monkeypatch: pytest.MonkeyPatch,
    write_config: Any,
    env: FakeVertex,
    own_gcs: FakeGcs,
    capsys: pytest.CaptureFixture[str],
) -> None:
    upload_template(own_gcs.url)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", own_gcs.url)
    monkeypatch.setenv(
        "RETRAIN_CONFIG", str(write_config(BASE_CONFIG.format(template=TEMPLATE_URI)))
    )
    http = functions_framework.create_app(
        "retrain_http", str(REPO / "function_http" / "main.py"), "http"
    ).test_client()
    events = functions_framework.create_app(
        "retrain_event", str(REPO / "function_gcs" / "main.py"), "cloudevent"
    ).test_client()
    own_gcs.stop()

    status, answer, elapsed = post(http)
    assert status == 503, answer
    assert answer["decision"] == "failed" and answer["retryable"] is True
    assert TEMPLATE_URI in answer["reason"]
    assert elapsed <= DEADLINE + MARGIN
    status, elapsed = deliver(events, storage_event())
    assert status == 500
    assert elapsed <= DEADLINE + MARGIN
    assert env.requests == []

    own_gcs.start()  # same port, empty again: the operator restores the template
    upload_template(own_gcs.url)
    capsys.readouterr()
    assert post(http)[1]["decision"] == "submitted"
    assert deliver(events, storage_event())[0] == 200
    assert [line["decision"] for line in decisions(capsys)] == ["submitted", "submitted"]
    assert len(env.jobs) == 2  # the code change's run and the data change's run, once each


def test_gcs_template_missing_answers_502_until_it_is_uploaded(
    monkeypatch: pytest.MonkeyPatch,
    write_config: Any,
    env: FakeVertex,
    fake_gcs: FakeGcs,
    capsys: pytest.CaptureFixture[str],
) -> None:
    uri = f"gs://{TEMPLATE_BUCKET}-missing/mnist/v1.yaml"
    fake_gcs.create_bucket(f"{TEMPLATE_BUCKET}-missing")
    monkeypatch.setenv("RETRAIN_CONFIG", str(write_config(BASE_CONFIG.format(template=uri))))
    http = functions_framework.create_app(
        "retrain_http", str(REPO / "function_http" / "main.py"), "http"
    ).test_client()
    events = functions_framework.create_app(
        "retrain_event", str(REPO / "function_gcs" / "main.py"), "cloudevent"
    ).test_client()

    status, answer, elapsed = post(http)
    assert status == 502, answer  # an operator must act: not retryable
    assert answer["decision"] == "failed" and answer["retryable"] is False
    assert "not found" in answer["reason"] and uri in answer["reason"]
    assert elapsed <= DEADLINE + MARGIN
    assert deliver(events, storage_event())[0] == 500  # raised: kept for redelivery
    lines = decisions(capsys)
    assert [(x["decision"], x["retryable"]) for x in lines] == [("failed", False)] * 2
    assert env.requests == []

    upload_template(fake_gcs.url, uri)
    assert post(http)[1]["decision"] == "submitted"
    assert deliver(events, storage_event())[0] == 200
    assert len(env.jobs) == 2


def test_local_template_missing_is_a_config_error_until_it_exists(
    monkeypatch: pytest.MonkeyPatch,
    write_config: Any,
    tmp_path: Path,
    env: FakeVertex,
    capsys: pytest.CaptureFixture[str],
) -> None:
    template = tmp_path / "templates" / "mnist.yaml"
    monkeypatch.setenv("RETRAIN_CONFIG", str(write_config(BASE_CONFIG.format(template=template))))
    http = functions_framework.create_app(
        "retrain_http", str(REPO / "function_http" / "main.py"), "http"
    ).test_client()
    events = functions_framework.create_app(
        "retrain_event", str(REPO / "function_gcs" / "main.py"), "cloudevent"
    ).test_client()

    status, answer, _ = post(http)
    assert status == 502, answer
    assert answer["decision"] == "failed" and answer["error"] == "config_error"
    # Nothing is authenticated before the configuration loads: the path goes to the log only.
    assert str(tmp_path) not in json.dumps(answer) and "misconfigured" in answer["reason"]
    response = events.post("/", headers=to_binary(storage_event())[0], data=b"{}")
    assert response.status_code == 500 and str(tmp_path) not in response.get_data(as_text=True)
    logged = capsys.readouterr().out
    assert str(template) in logged and "not found" in logged
    assert deliver(events, storage_event())[0] == 500
    assert env.requests == []

    template.parent.mkdir()
    shutil.copy(MNIST_TEMPLATE, template)
    capsys.readouterr()
    assert post(http)[1]["decision"] == "submitted"
    assert deliver(events, storage_event())[0] == 200
    assert [line["decision"] for line in decisions(capsys)] == ["submitted", "submitted"]
    assert len(env.jobs) == 2


# --------------------------------------------------------------------------- memory


def test_a_duplicate_leaves_no_frame_holding_its_request(http_client: Any, env: FakeVertex) -> None:
    """The 409 of a duplicate delivery must not keep the request's frames in a garbage cycle."""
    assert post(http_client)[1]["decision"] == "submitted"
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(5):
            assert post(http_client)[1]["decision"] == "duplicate"
        gc.collect()
        frames = [o for o in gc.garbage if isinstance(o, types.FrameType)]
        holding = [
            f.f_code.co_qualname
            for f in frames
            if any(isinstance(v, str | bytes) and len(v) > 20_000 for v in f.f_locals.values())
        ]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert holding == []
