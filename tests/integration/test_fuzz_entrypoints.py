"""Property tests of both entry points, through functions-framework, with untrusted input.

The HTTP entry point never answers 5xx to bad input, the event entry point acknowledges it, and
whatever does plan a run gets a job id and labels that Vertex accepts: submissions go to the fake
Vertex server, which validates job ids and labels as the real service does. The strategies are in
tests/fuzzing.py, shared with the decoders' tests in tests/unit/test_fuzz.py.

Examples are derandomized and no example database is kept, so CI runs the same inputs each time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import functions_framework
import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from hypothesis import event as tally
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import REPO
from tests.fakes.vertex import FakeVertex
from tests.fuzzing import (
    JOB_ID,
    LABEL_KEY,
    LABEL_VALUE,
    MAX_BYTES,
    cloud_events,
    fuzz,
    json_values,
    pubsub_messages,
    raw_bodies,
    valid_http_bodies,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# --------------------------------------------------------------------------- decoders


# --------------------------------------------------------------------------- entry points


@pytest.fixture
def apps(
    monkeypatch: pytest.MonkeyPatch, write_config: Any, config_text: str, fake_vertex: FakeVertex
) -> Iterator[tuple[Any, Any, FakeVertex]]:
    monkeypatch.setenv("RETRAIN_CONFIG", str(write_config(config_text)))
    monkeypatch.setenv("RETRAIN_VERTEX_ENDPOINT", fake_vertex.endpoint)
    monkeypatch.setenv("RETRAIN_AUTH", "none")
    monkeypatch.setenv("RETRAIN_MAX_BODY_BYTES", str(MAX_BYTES))
    monkeypatch.setenv("RETRAIN_SUBMIT_DEADLINE", "5")
    http = functions_framework.create_app(
        "retrain_http", str(REPO / "function_http" / "main.py"), "http"
    ).test_client()
    gcs = functions_framework.create_app(
        "retrain_event", str(REPO / "function_gcs" / "main.py"), "cloudevent"
    ).test_client()
    yield http, gcs, fake_vertex


@fuzz(250)
@given(
    raw=raw_bodies(),
    content_type=st.sampled_from(
        ["application/json", "application/json; charset=utf-8", "text/plain", "", "x/\u00e9"]
    ),
    path=st.sampled_from(["/", "/", "/", "//", "/flush/x", "/../", "/%00"]),
)
def test_http_entry_point_never_fails_on_bad_input(
    apps: tuple[Any, Any, FakeVertex], raw: bytes, content_type: str, path: str
) -> None:
    http, _, _ = apps
    headers = {"Content-Type": content_type} if content_type else {}
    response = http.post(path, data=raw, headers=headers)
    assert response.status_code < 500, (response.status_code, response.get_data()[:300])
    if response.status_code == 308:  # werkzeug redirects "//" to "/" before any function runs
        return
    answer = response.get_json()
    tally(f"answer: {response.status_code} {answer['decision']}")
    assert answer["decision"] in ("submitted", "duplicate", "skipped", "rejected"), answer
    if answer["decision"] == "rejected":
        assert response.status_code in (400, 401, 403, 404, 413, 415, 422)
        assert answer["error"]
    if answer.get("job_id"):
        assert JOB_ID.match(answer["job_id"])
    if "request" in answer:  # a dry run shows what it would submit
        request = answer["request"]
        assert JOB_ID.match(request["job_id"])
        for key, value in request["labels"].items():
            assert LABEL_KEY.match(key) and LABEL_VALUE.match(value), (key, value)


@fuzz(150)
@given(body=valid_http_bodies)
def test_http_triggers_that_submit_are_accepted_by_vertex(
    apps: tuple[Any, Any, FakeVertex], body: dict[str, Any]
) -> None:
    http, _, fake = apps
    response = http.post("/", json=body)
    answer = response.get_json()
    tally(f"answer: {answer['decision']}")
    if body.get("force") and not body.get("nonce"):  # nothing identifies this request: refused
        assert (response.status_code, answer["error"]) == (422, "nonce_required"), answer
        return
    # 502 would mean the fake Vertex refused a job id, a label or a parameter we built.
    assert response.status_code == 200, (response.status_code, answer, body)
    if answer["decision"] in ("submitted", "duplicate"):
        job = fake.jobs[answer["job_id"]]
        assert JOB_ID.match(answer["job_id"])
        for key, value in job["labels"].items():
            assert LABEL_KEY.match(key) and LABEL_VALUE.match(value), (key, value)


@fuzz(250)
@given(event=cloud_events(), structured=st.booleans())
def test_event_entry_point_acknowledges_bad_input(
    apps: tuple[Any, Any, FakeVertex], event: CloudEvent, structured: bool
) -> None:
    _, gcs, _ = apps
    try:
        headers, data = (to_structured if structured else to_binary)(event)
    except Exception:  # the SDK cannot encode it (e.g. bytes in structured mode): not our input
        return
    response = gcs.post("/", headers=headers, data=data)
    tally(f"answer: {response.status_code}")
    # Acknowledged: never 400 or 500, which would make the platform redeliver input that can
    # never succeed (Pub/Sub and Eventarc retry every answer but 2xx).
    assert response.status_code == 200, (response.status_code, response.get_data()[:300])


@fuzz(250)
@given(
    raw=st.one_of(
        raw_bodies(),
        pubsub_messages.map(
            lambda m: json.dumps({"message": m, "subscription": "projects/p/subscriptions/s"})
        ).map(str.encode),
        st.lists(json_values, max_size=3).map(json.dumps).map(str.encode),
    ),
    content_type=st.sampled_from(
        ["application/json", "application/cloudevents+json", "text/plain", "", "x/\u00e9"]
    ),
    path=st.sampled_from(["/", "/projects/p/topics/gcs-events", "/projects/p/topics/cloud-builds"]),
)
def test_event_entry_point_acknowledges_any_body(
    apps: tuple[Any, Any, FakeVertex], raw: bytes, content_type: str, path: str
) -> None:
    """Whatever is POSTed (push bodies, lists, deep nesting, bytes), the event function answers
    200: a decision was logged, and the platform does not redeliver it for days."""
    _, gcs, _ = apps
    headers = {"Content-Type": content_type} if content_type else {}
    response = gcs.post(path, data=raw, headers=headers)
    tally(f"answer: {response.status_code}")
    assert response.status_code == 200, (response.status_code, response.get_data()[:300])
