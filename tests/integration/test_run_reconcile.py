"""The flush reconciles runs whose outcome never came: after ``run_check_after_seconds`` it reads
the job from the backend (the fake Vertex server, through the real aiplatform_v1 client) and ends
it through the same path as a reported outcome (reporter ``reconcile``); a running job is checked
again later."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from retrain_trigger.config import parse_config
from retrain_trigger.model import Kind, Outcome, Trigger
from retrain_trigger.service import Service
from tests.conftest import MNIST_TEMPLATE

CONFIG = """
project: test-project
region: us-central1
backend: vertex
vertex_endpoint: {endpoint}
history: {{enabled: true}}
local: {{state_dir: {state}}}
run_check_after_seconds: 600
routes:
  - name: mnist
    template: {template}
    pipeline_root: gs://ct-bucket/root
    parameters:
      data_uri: gs://ct-bucket/data
      model_registry_uri: gs://ct-bucket/models
      commit_sha: "{{commit_sha}}"
    code: true
    concurrency: queue_latest
"""


class Clock:
    """The service's wall clock, from the real time the test starts (the fake Vertex stamps
    its jobs with the real time)."""

    def __init__(self) -> None:
        self.start = self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def service(fake_vertex, tmp_path) -> tuple[Service, Clock]:
    text = CONFIG.format(
        endpoint=fake_vertex.endpoint, state=tmp_path / "state", template=MNIST_TEMPLATE
    )
    clock = Clock()
    return Service.from_config(parse_config(text, env={}), wall_clock=clock), clock


def code(sha: str) -> Trigger:
    return Trigger(kind=Kind.CODE, source="http", commit_sha=sha, route="mnist")


def outcome_lines(caplog: Any) -> list[dict[str, Any]]:
    return [
        r.entry for r in caplog.records if getattr(r, "entry", {}).get("event") == "run_outcome"
    ]


def test_a_run_whose_outcome_never_came_is_ended_by_the_flush(
    service: tuple[Service, Clock], fake_vertex: Any, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger="retrain_trigger")
    svc, clock = service
    T0 = clock.start
    first = svc.handle(code("a" * 40))
    assert first.outcome is Outcome.SUBMITTED
    queued = svc.handle(code("b" * 40))
    assert queued.outcome is Outcome.SKIPPED and queued.code == "held"
    fake_vertex.set_state(first.job_id, "FAILED", error="The failed tasks are: [train].")

    clock.now = T0 + 60  # not due yet: the flush leaves the run alone (the slot too)
    assert svc.store.get_run(first.job_id).state == "PENDING"
    svc.reconcile_runs(clock.now)
    assert svc.store.get_run(first.job_id).state == "PENDING"

    clock.now = T0 + 601
    decisions = svc.flush(now=clock.now)
    record = svc.store.get_run(first.job_id)
    assert (record.state, record.reporter, record.failed_task) == ("FAILED", "reconcile", "train")
    assert [line["reporter"] for line in outcome_lines(caplog)] == ["reconcile"]
    # The queued run started, once.
    started = [d for d in decisions if d.outcome is Outcome.SUBMITTED]
    assert [d.job_id for d in started] == [queued.job_id]
    assert svc.store.get_active("mnist").job_id == queued.job_id
    assert len(fake_vertex.jobs) == 2

    # Flushed again: nothing more.
    clock.now = T0 + 1300
    svc.flush(now=clock.now)
    assert len(outcome_lines(caplog)) == 1


def test_a_running_job_is_checked_again_later(
    service: tuple[Service, Clock], fake_vertex: Any
) -> None:
    svc, clock = service
    T0 = clock.start
    run = svc.handle(code("c" * 40))
    fake_vertex.set_state(run.job_id, "RUNNING")
    clock.now = T0 + 601
    svc.reconcile_runs(clock.now)
    record = svc.store.get_run(run.job_id)
    assert record.state == "PENDING" and record.check_after == T0 + 601 + 600
    assert svc.store.runs_to_check(T0 + 700) == []
    fake_vertex.set_state(run.job_id, "SUCCEEDED")
    svc.reconcile_runs(T0 + 1202)
    record = svc.store.get_run(run.job_id)
    assert record.state == "SUCCEEDED" and record.error is None


def test_a_job_unknown_to_the_backend_is_checked_again_later(
    service: tuple[Service, Clock], fake_vertex: Any
) -> None:
    svc, clock = service
    T0 = clock.start
    run = svc.handle(code("d" * 40))
    clock.now = T0 + 601
    fake_vertex.jobs.pop(run.job_id)
    svc.reconcile_runs(T0 + 601)
    assert svc.store.get_run(run.job_id).check_after == T0 + 1201
