"""Batch windows, concurrency policies and decision history through the real core, the SQLite
store, fake-gcs-server (manifests) and the fake Vertex server (runs)."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading

import pytest

from retrain_trigger import gcs
from retrain_trigger.config import parse_config
from retrain_trigger.gates import windows as windows_gate
from retrain_trigger.model import Kind, Outcome, Trigger
from retrain_trigger.service import Service
from retrain_trigger_dev.history import explain
from tests.clock import Clock
from tests.conftest import MNIST_TEMPLATE

CONFIG = """
project: test-project
region: us-central1
backend: vertex
vertex_endpoint: {endpoint}
local: {{state_dir: "{state_dir}"}}
history: {{enabled: true, ttl_days: 7}}
limits: {{submit_deadline_seconds: 20}}
routes:
  - name: batch
    template: {template}
    pipeline_root: gs://win-bucket/pipeline-root
    parameters:
      data_uri: "{{data_uri}}"
      model_registry_uri: gs://win-bucket/models
    data:
      bucket: win-bucket
      include: ["daily/**"]
      exclude: ["**/*.md"]
      mode: window
      quiet_seconds: 60
      max_wait_seconds: 600
    concurrency: {concurrency}
  - name: exclusive
    template: {template}
    pipeline_root: gs://win-bucket/exclusive-root
    parameters:
      data_uri: "{{data_uri}}"
      model_registry_uri: gs://win-bucket/models
    data: {{bucket: win-bucket, include: ["single/**"]}}
    code: true
    concurrency: {concurrency}
"""


@pytest.fixture
def make_service(tmp_path, fake_vertex, fake_gcs):
    fake_gcs.create_bucket("win-bucket")

    def make(concurrency="allow", clock=None, env=None):
        text = CONFIG.format(
            endpoint=fake_vertex.endpoint,
            state_dir=tmp_path / "state",
            template=MNIST_TEMPLATE,
            concurrency=concurrency,
        )
        config = parse_config(text, source=str(tmp_path / "retrain.yaml"), env=env or {})
        kwargs = {"wall_clock": clock} if clock else {}
        return Service.from_config(config, **kwargs)

    return make


def obj(name, generation="1", size=100, bucket="win-bucket"):
    return Trigger(
        kind=Kind.DATA,
        source="test",
        event_type="OBJECT_FINALIZE",
        bucket=bucket,
        object=name,
        generation=generation,
        size=size,
        event_id=f"e-{name}-{generation}",
    )


def test_two_hundred_objects_make_one_run_with_a_manifest(make_service, fake_vertex):
    clock = Clock()
    service = make_service(clock=clock)
    for i in range(200):
        decision = service.handle(
            obj(f"daily/2026-11-27/part-{i:04d}.csv", generation=str(1000 + i))
        )
        assert decision.outcome is Outcome.BATCHED and "batched into window" in decision.reason
        clock.now += 0.5
    again = service.handle(obj("daily/2026-11-27/part-0007.csv", generation="1007"))
    assert again.outcome is Outcome.DUPLICATE and "already in batch window" in again.reason
    assert service.flush() == []  # still open: not quiet yet
    clock.now += 61
    [decision] = service.flush()
    assert decision.outcome is Outcome.SUBMITTED, decision
    assert len(fake_vertex.jobs) == 1
    job = next(iter(fake_vertex.jobs.values()))
    manifest_uri = job["runtimeConfig"]["parameterValues"]["data_uri"]
    assert manifest_uri.startswith("gs://win-bucket/pipeline-root/manifests/batch/")
    manifest = json.loads(gcs.read_bytes(manifest_uri, max_bytes=1 << 20))
    assert manifest["count"] == 200
    assert {o["generation"] for o in manifest["objects"]} == {str(1000 + i) for i in range(200)}
    assert service.flush() == []  # closed: nothing more
    # an object arriving after the close opens a new window
    late = service.handle(obj("daily/2026-11-28/part-0000.csv", generation="5"))
    assert late.window_id and late.window_id != decision.window_id


def test_window_closes_at_max_wait_even_if_busy(make_service, fake_vertex):
    clock = Clock()
    service = make_service(clock=clock)
    for i in range(25):
        service.handle(obj(f"daily/x/part-{i}.csv", generation=str(i + 1)))
        clock.now += 30  # never quiet for 60 s
    [decision] = service.flush()
    assert decision.outcome is Outcome.SUBMITTED
    assert len(fake_vertex.jobs) == 1


def test_two_concurrent_flushes_submit_one_run(make_service, fake_vertex):
    clock = Clock()
    first, second = make_service(clock=clock), make_service(clock=clock)
    for i in range(20):
        first.handle(obj(f"daily/c/part-{i}.csv", generation=str(i + 1)))
    clock.now += 120
    fake_vertex.inject("create", hang=0.3)  # widen the race
    results: list = []
    barrier = threading.Barrier(2)

    def run(service):
        barrier.wait()
        results.extend(service.flush())

    threads = [threading.Thread(target=run, args=(s,)) for s in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(fake_vertex.jobs) == 1
    assert [d.outcome for d in results] == [Outcome.SUBMITTED]


def test_crash_between_manifest_and_submit_is_recovered(make_service, fake_vertex):
    clock = Clock()
    # A short deadline: the failing create below is retried until it is spent.
    service = make_service(clock=clock, env={"RETRAIN_SUBMIT_DEADLINE": "2"})
    for i in range(3):
        service.handle(obj(f"daily/r/part-{i}.csv", generation=str(i + 1)))
    clock.now += 120
    fake_vertex.inject("create", status=503, times=None)
    [failed] = service.flush()
    assert failed.outcome is Outcome.FAILED and failed.retryable
    assert service.flush() == []  # still leased by the failed flush
    fake_vertex.clear_faults()
    clock.now += 3600  # the lease expires
    [recovered] = service.flush()
    assert recovered.outcome is Outcome.SUBMITTED
    assert recovered.run_key == failed.run_key
    assert len(fake_vertex.jobs) == 1


def _code(sha):
    return Trigger(kind=Kind.CODE, source="http", commit_sha=sha, route="exclusive")


def test_skip_if_running(make_service, fake_vertex):
    service = make_service("skip_if_running")
    first = service.handle(_code("aaaaaaa1"))
    assert first.outcome is Outcome.SUBMITTED
    second = service.handle(_code("aaaaaaa2"))
    assert second.outcome is Outcome.SKIPPED
    assert f"is running {first.job_id}" in second.reason
    fake_vertex.set_state(first.job_id, "SUCCEEDED")
    third = service.handle(_code("aaaaaaa3"))
    assert third.outcome is Outcome.SUBMITTED
    assert len(fake_vertex.jobs) == 2


def test_queue_latest_keeps_only_the_newest(make_service, fake_vertex):
    service = make_service("queue_latest")
    first = service.handle(_code("bbbbbbb1"))
    assert first.outcome is Outcome.SUBMITTED
    queued = service.handle(_code("bbbbbbb2"))
    assert queued.outcome is Outcome.SKIPPED and "queued behind" in queued.reason
    newer = service.handle(_code("bbbbbbb3"))
    assert "replaces the queued code:bbbbbbb2" in newer.reason
    assert service.flush() == []  # the first run is still running
    fake_vertex.set_state(first.job_id, "SUCCEEDED")
    [started] = service.flush()
    assert started.outcome is Outcome.SUBMITTED
    assert started.run_key == "code:bbbbbbb3:"
    assert len(fake_vertex.jobs) == 2
    assert service.flush() == []


def test_why_explains_filtered_batched_and_submitted(make_service, fake_vertex):
    clock = Clock()
    service = make_service(clock=clock)
    service.handle(obj("daily/notes.md", generation="9"))
    service.handle(obj("single/a.csv", generation="3"))
    service.handle(obj("daily/b.csv", generation="4"))

    filtered = explain(service, "gs://win-bucket/daily/notes.md")["decisions"]
    assert filtered[0]["decision"] == "skipped"
    assert "no route's data rule matches" in filtered[0]["reason"]

    submitted = explain(service, "gs://win-bucket/single/a.csv")["decisions"]
    assert submitted[0]["decision"] == "submitted"
    assert submitted[0]["run_state"] == "PENDING"

    batched = explain(service, "gs://win-bucket/daily/b.csv")["decisions"]
    assert batched[0]["decision"] == "batched"
    assert batched[0]["window"]["state"] == "OPEN"
    clock.now += 120
    service.flush()
    batched = explain(service, "gs://win-bucket/daily/b.csv")["decisions"]
    assert batched[0]["window"]["state"] == "CLOSED"
    assert batched[0]["job_id"].startswith("batch-data-window-")
    assert batched[0]["run_state"] == "PENDING"


def test_flush_over_http(make_service, fake_vertex):
    import functions_framework

    from retrain_trigger.service import set_service
    from tests.conftest import REPO

    clock = Clock()
    service = make_service(clock=clock, env={"RETRAIN_AUTH": "none"})
    service.handle(obj("daily/h/part-0.csv", generation="1"))
    set_service(service)  # the HTTP function's Service: this configuration, this clock
    app = functions_framework.create_app(
        "retrain_http", str(REPO / "function_http" / "main.py"), "http"
    )
    client = app.test_client()
    assert client.post("/flush", json={}).get_json() == {"flushed": []}  # not quiet yet
    clock.now += 61  # the window is quiet for quiet_seconds (60)
    answer = client.post("/flush", json={}).get_json()
    assert [d["decision"] for d in answer["flushed"]] == ["submitted"]
    assert len(fake_vertex.jobs) == 1


def test_forced_flush_closes_an_open_window_now(make_service, fake_vertex):
    clock = Clock()
    service = make_service(clock=clock)
    service.handle(obj("daily/f/part-0.csv", generation="1"))
    assert service.flush() == []  # not quiet yet
    [decision] = service.flush(force=True)
    assert decision.outcome is Outcome.SUBMITTED
    assert len(fake_vertex.jobs) == 1


DAY = 86400.0


def test_flush_sweeps_windows_and_decisions_after_their_retention(make_service, fake_vertex):
    clock = Clock()
    service = make_service(clock=clock)  # history.ttl_days: 7
    store = service.store
    service.handle(obj("daily/s/part-0.csv", generation="1"))
    clock.now += 120
    [decision] = service.flush()
    closed_at = clock.now
    window = store.get_window(decision.window_id)
    assert window is not None and window.expire_at == closed_at + 7 * DAY
    assert len(store.list_decisions(since=0)) == 2  # batched, then submitted

    clock.now = closed_at + 7 * DAY - 1
    assert service.flush() == []
    assert store.get_window(decision.window_id) is not None
    clock.now += 1
    assert service.flush() == []
    assert store.get_window(decision.window_id) is None
    assert store.window_items(decision.window_id) == []
    assert store.list_decisions(since=0) == []


def test_a_failing_sweep_does_not_fail_the_flush(make_service, fake_vertex, monkeypatch, caplog):
    from retrain_trigger.store import StoreError

    clock = Clock()
    service = make_service(clock=clock)
    service.handle(obj("daily/t/part-0.csv", generation="1"))
    clock.now += 120

    def unavailable(now, limit):
        raise StoreError("state store busy")

    monkeypatch.setattr(service.store, "purge_expired", unavailable)
    [decision] = service.flush()
    assert decision.outcome is Outcome.SUBMITTED
    assert "state store sweep failed: state store busy" in caplog.text


# --------------------------------------------------------------------------- streamed manifests


def test_a_streamed_object_appears_whole_or_not_at_all(fake_gcs):
    """gcs.write_stream: pieces sent as one resumable upload in chunks; a failure while making
    the pieces cancels the upload, and no object (not even a partial one) appears."""
    fake_gcs.create_bucket("stream-bucket")
    piece = b"x" * 300_000
    gcs.write_stream("gs://stream-bucket/whole.json", iter([piece] * 8), chunk_size=256 * 1024)
    assert gcs.read_bytes("gs://stream-bucket/whole.json", max_bytes=10**7) == piece * 8

    def broken():
        yield piece
        yield piece
        raise RuntimeError("the store went away")

    with pytest.raises(RuntimeError, match="the store went away"):
        gcs.write_stream("gs://stream-bucket/broken.json", broken(), chunk_size=256 * 1024)
    names = [o["name"] for o in gcs.list_objects("stream-bucket")]
    assert names == ["whole.json"]


def test_a_flush_whose_items_changed_since_the_claim_writes_no_manifest(make_service, fake_vertex):
    """The manifest's count is the claim's; items that differ from it (which the store's claim
    makes impossible) fail the flush before anything is submitted, and the window stays CLOSING
    for the next flush."""
    clock = Clock()
    service = make_service(clock=clock)
    for i in range(3):
        service.handle(obj(f"daily/2026-11-27/c-{i}.csv"))
    [info] = service.store.due_windows("batch", clock.now + 10**6, 60, 600)
    window = service.store.claim_window(info.window_id, "flush-a", clock.now, 60)
    assert window is not None and window.count == 3
    changed = windows_gate.close(
        service.config,
        service.config.route("batch"),
        dataclasses.replace(window, count=4),
        "flush-a",
        store=service.store,
        templates=service.templates,
        run=service.run,
        fail=service.fail,
        clock=clock,
    )
    assert changed.outcome is Outcome.FAILED and "3 items read, 4 counted" in changed.reason
    assert fake_vertex.jobs == {} and fake_vertex.creates == 0
    manifest = windows_gate.manifest_uri_for(service.config.route("batch"), info.window_id)
    _, name = gcs.split_uri(manifest)
    assert gcs.list_objects("win-bucket", prefix=name) == []
    stored = service.store.get_window(info.window_id)
    assert stored is not None and str(stored.state) == "CLOSING" and not stored.manifest_uri


def _overdue_lines(caplog: pytest.LogCaptureFixture) -> list[dict]:
    return [
        r.entry for r in caplog.records if getattr(r, "entry", {}).get("event") == "window_overdue"
    ]


def test_a_window_the_flush_cannot_close_past_max_wait_is_logged_overdue(
    make_service, fake_vertex, caplog
):
    clock = Clock()
    service = make_service(clock=clock)
    service.handle(obj("daily/o/part-0.csv"))
    clock.now += 600 + 120 + 30  # past max_wait_seconds and the grace of two flush periods
    fake_vertex.inject("create", status=400, message="template refused", times=None)

    with caplog.at_level(logging.WARNING, logger="retrain_trigger"):
        [decision] = service.flush()

    assert decision.outcome is Outcome.FAILED
    [line] = _overdue_lines(caplog)
    assert line["route"] == "batch" and line["window_id"] == decision.window_id
    assert line["age_seconds"] == 750.0 and line["severity"] == "WARNING"
    assert line["logging.googleapis.com/labels"] == {"retrain-route": "batch"}


def test_a_window_closed_late_or_failing_within_the_grace_is_not_overdue(
    make_service, fake_vertex, caplog
):
    clock = Clock()
    service = make_service(clock=clock)
    service.handle(obj("daily/p/part-0.csv"))
    clock.now += 600 + 60  # due, within the grace
    fake_vertex.inject("create", status=400, message="template refused", times=1)
    with caplog.at_level(logging.WARNING, logger="retrain_trigger"):
        [failed] = service.flush()
        clock.now += 3600  # long overdue, and now it closes
        [closed] = service.flush()

    assert failed.outcome is Outcome.FAILED and closed.outcome is Outcome.SUBMITTED
    assert _overdue_lines(caplog) == []
