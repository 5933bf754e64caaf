"""Concurrency policies across instances: two Services (two function instances) sharing one state
store (one SQLite file, or one Firestore project on the emulator), the fake Vertex server behind
both, and creates made slow on purpose.

``skip_if_running`` and ``queue_latest`` must never have two runs of a route start: a route's
reservation holds until its create has been answered (or its lease expired), a 404 for a reserved
job that is not created yet means "still starting", and a reservation lost to a takeover is said
in the decision and logged, with the run still tracked.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest

from retrain_trigger.config import parse_config
from retrain_trigger.gates.concurrency import lease_seconds
from retrain_trigger.model import Decision, Kind, Outcome, Trigger
from retrain_trigger.service import Service
from tests.clock import T0, Clock
from tests.conftest import MNIST_TEMPLATE

pytestmark = pytest.mark.emulator

CONFIG = """
project: test-project
region: us-central1
backend: vertex
vertex_endpoint: {endpoint}
limits: {{submit_deadline_seconds: {deadline}}}
routes:
  - name: exclusive
    template: {template}
    pipeline_root: gs://conc-bucket/root
    parameters:
      data_uri: gs://conc-bucket/data
      model_registry_uri: gs://conc-bucket/models
      commit_sha: "{{commit_sha}}"
    code: true
    concurrency: {concurrency}
"""

SLOW_CREATE = 1.5  # seconds the first create hangs in the fake before it is processed


def code(sha: str) -> Trigger:
    return Trigger(kind=Kind.CODE, source="http", commit_sha=sha, route="exclusive")


@pytest.fixture
def make_service(fake_vertex: Any, store_backing: Any) -> Callable[..., Service]:
    """``make(policy, clock)``: one function instance, with a store object of its own."""

    def make(concurrency: str, clock: Clock | None = None, deadline: int = 5) -> Service:
        text = CONFIG.format(
            endpoint=fake_vertex.endpoint,
            template=MNIST_TEMPLATE,
            concurrency=concurrency,
            deadline=deadline,
        )
        config = parse_config(text, source="retrain.yaml", env={})
        return Service.from_config(config, store=store_backing.open(), wall_clock=clock or Clock())

    return make


def in_threads(*calls: Callable[[], Decision]) -> list[Decision]:
    """Runs the calls in threads released together; their decisions in call order."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # surfaced below
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


@pytest.mark.parametrize("policy", ["skip_if_running", "queue_latest"])
def test_two_instances_two_changes_at_once_start_one_run(
    policy: str, make_service: Callable[..., Service], fake_vertex: Any
) -> None:
    first, second = make_service(policy), make_service(policy)
    fake_vertex.inject("create", hang=SLOW_CREATE)  # whichever create comes first is slow

    decisions = in_threads(
        lambda: first.handle(code("aaaaaaa1")), lambda: second.handle(code("aaaaaaa2"))
    )

    outcomes = sorted(str(d.outcome) for d in decisions)
    assert outcomes == ["skipped", "submitted"], decisions
    assert len(fake_vertex.jobs) == 1
    started = next(d for d in decisions if d.outcome is Outcome.SUBMITTED)
    held = next(d for d in decisions if d.outcome is Outcome.SKIPPED)
    assert held.code == "held" and started.job_id in held.reason
    active = first.store.get_active("exclusive")
    assert active is not None
    assert (active.job_id, active.job_name, active.lease_until) == (
        started.job_id,
        started.job_name,
        None,
    )
    if policy == "queue_latest":
        assert second.flush() == []  # the first run is still running
        fake_vertex.set_state(started.job_id, "SUCCEEDED")
        [drained] = second.flush()
        assert drained.outcome is Outcome.SUBMITTED and drained.job_id == held.job_id
        assert len(fake_vertex.jobs) == 2


@pytest.mark.parametrize("policy", ["skip_if_running", "queue_latest"])
def test_a_reserved_job_that_vertex_does_not_know_yet_is_still_starting(
    policy: str, make_service: Callable[..., Service], fake_vertex: Any
) -> None:
    """The second instance asks Vertex about the first's job while its create is in flight:
    the 404 means "still starting", never "not running"."""
    first, second = make_service(policy), make_service(policy)
    fake_vertex.inject("create", hang=SLOW_CREATE)
    results: list[Decision] = []
    thread = threading.Thread(target=lambda: results.append(first.handle(code("bbbbbbb1"))))
    thread.start()
    try:
        assert fake_vertex.wait_until(lambda f: bool(f.requests_for("create")), timeout=30)
        assert not fake_vertex.jobs  # the create is in flight: Vertex answers 404 for it
        during = second.handle(code("bbbbbbb2"))
    finally:
        thread.join(timeout=60)

    [created] = results
    assert created.outcome is Outcome.SUBMITTED
    assert during.outcome is Outcome.SKIPPED and during.code == "held", during
    assert created.job_id in during.reason
    assert len(fake_vertex.jobs) == 1


def test_a_takeover_after_the_lease_expired_is_said_and_both_runs_stay_tracked(
    make_service: Callable[..., Service],
    fake_vertex: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The first instance stalls past its reservation's lease; the second takes the slot over.
    The first's compare-and-set then fails: its decision says so, a warning is logged, and its
    run is still tracked, so a third change waits for both runs to end."""
    stalled_clock, later_clock = Clock(T0), Clock(T0)
    stalled = make_service("skip_if_running", stalled_clock)
    later = make_service("skip_if_running", later_clock)
    later_clock.now = T0 + lease_seconds(later.config) + 1
    fake_vertex.inject("create", hang=SLOW_CREATE)
    results: list[Decision] = []
    caplog.set_level(logging.WARNING, logger="retrain_trigger.gates.concurrency")
    thread = threading.Thread(target=lambda: results.append(stalled.handle(code("ccccccc1"))))
    thread.start()
    try:
        assert fake_vertex.wait_until(lambda f: bool(f.requests_for("create")), timeout=30)
        taken = later.handle(code("ccccccc2"))
    finally:
        thread.join(timeout=60)

    [first] = results
    assert taken.outcome is Outcome.SUBMITTED
    assert first.outcome is Outcome.SUBMITTED  # the run exists: never reported otherwise
    assert first.code == "slot_taken_over"
    assert f"taken over by {taken.job_id}" in first.reason
    assert len(fake_vertex.jobs) == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("taken over" in m and first.job_id in m for m in warnings), warnings
    active = later.store.get_active("exclusive")
    assert active is not None
    assert active.job_id == taken.job_id and active.others == (first.job_id,)

    third = later.handle(code("ccccccc3"))
    assert third.outcome is Outcome.SKIPPED and taken.job_id in third.reason
    fake_vertex.set_state(taken.job_id, "SUCCEEDED")
    fourth = later.handle(code("ccccccc4"))
    assert fourth.outcome is Outcome.SKIPPED and first.job_id in fourth.reason
    fake_vertex.set_state(first.job_id, "FAILED")
    fifth = later.handle(code("ccccccc5"))
    assert fifth.outcome is Outcome.SUBMITTED
    active = later.store.get_active("exclusive")
    assert active is not None and (active.job_id, active.others) == (fifth.job_id, ())


def test_an_unanswered_create_keeps_its_reservation_until_the_lease_expires(
    make_service: Callable[..., Service], fake_vertex: Any
) -> None:
    """A create that failed with an unknown outcome (timeouts, 503s after retries) may still have
    started the run: the slot stays reserved, except for a redelivery of the same change; once
    the lease has expired and Vertex has no such job, the next change starts."""
    clock = Clock(T0)
    service = make_service("skip_if_running", clock, deadline=1)
    fake_vertex.inject("create", status=503, times=None)
    failed = service.handle(code("ddddddd1"))
    assert failed.outcome is Outcome.FAILED and failed.retryable
    fake_vertex.clear_faults()

    held = service.handle(code("ddddddd2"))
    assert held.outcome is Outcome.SKIPPED and failed.job_id in held.reason
    clock.now += lease_seconds(service.config) - 1
    assert service.handle(code("ddddddd2")).outcome is Outcome.SKIPPED
    clock.now += 1
    later = service.handle(code("ddddddd2"))
    assert later.outcome is Outcome.SUBMITTED
    assert len(fake_vertex.jobs) == 1


def test_the_redelivery_of_a_failed_change_reuses_its_reservation(
    make_service: Callable[..., Service], fake_vertex: Any
) -> None:
    service = make_service("skip_if_running", deadline=1)
    fake_vertex.inject("create", status=503, times=None)
    failed = service.handle(code("fffffff1"))
    assert failed.outcome is Outcome.FAILED and failed.retryable
    fake_vertex.clear_faults()

    again = service.handle(code("fffffff1"))
    assert again.outcome is Outcome.SUBMITTED and again.job_id == failed.job_id
    active = service.store.get_active("exclusive")
    assert active is not None and (active.job_id, active.lease_until) == (again.job_id, None)


def test_a_refused_create_releases_its_reservation_at_once(
    make_service: Callable[..., Service], fake_vertex: Any
) -> None:
    service = make_service("skip_if_running")
    fake_vertex.inject("create", status=403)
    refused = service.handle(code("eeeeeee1"))
    assert refused.outcome is Outcome.FAILED and not refused.retryable
    assert service.store.get_active("exclusive") is None
    assert service.handle(code("eeeeeee2")).outcome is Outcome.SUBMITTED
