"""A ``queue_latest`` route's queued run leaves the queue only once its start is answered.

The gate over the in-memory store, with a backend that knows the jobs it is told about; the
stores themselves are held to ``take_pending(route, run_key=...)`` by the contract tests.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import pytest

from retrain_trigger.backends.base import JobStatus
from retrain_trigger.config import Route
from retrain_trigger.gates.concurrency import start_queued
from retrain_trigger.model import Decision, Kind, Outcome, RunRequest, Trigger
from tests.clock import Clock
from tests.fakes.memory_store import MemoryStore

ROUTE = Route(
    name="mnist",
    template="gs://t/mnist.yaml",
    pipeline_root="gs://r/root",
    concurrency="queue_latest",
)


class Backend:
    """The jobs the test says are running; any other job is unknown (404)."""

    def __init__(self, running: tuple[str, ...] = ()) -> None:
        self.running = set(running)

    def get(self, job_id: str) -> JobStatus:
        if job_id not in self.running:
            raise KeyError(job_id)
        return JobStatus(job_id=job_id, job_name=job_id, state="RUNNING")


def request(name: str) -> RunRequest:
    return RunRequest(
        route="mnist",
        run_key=f"gs://b/data/{name}#1",
        job_id=f"mnist-data-{name}",
        display_name="mnist-data",
        template=ROUTE.template,
        pipeline_root=ROUTE.pipeline_root,
        parameter_values={"data_uri": f"gs://b/data/{name}"},
        labels={"retrain-kind": "data"},
    )


def queue(store: MemoryStore, req: RunRequest, now: float) -> None:
    store.set_pending("mnist", json.dumps(req.to_dict()), req.run_key, now)


def answer(
    outcome: Outcome, *, retryable: bool = False, code: str = ""
) -> Callable[[RunRequest, Trigger], Decision]:
    def run(req: RunRequest, trigger: Trigger) -> Decision:
        assert (trigger.kind, trigger.source) == (Kind.DATA, "queue")
        return Decision(
            outcome=outcome,
            route=req.route,
            run_key=req.run_key,
            job_id=req.job_id,
            retryable=retryable,
            code=code,
        )

    return run


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> MemoryStore:
    return MemoryStore(clock)


def start(
    store: MemoryStore, clock: Clock, run: Callable[[RunRequest, Trigger], Decision], backend=None
):
    return start_queued(ROUTE, store=store, backend=backend or Backend(), clock=clock, run=run)


@pytest.mark.parametrize(
    "outcome", [Outcome.SUBMITTED, Outcome.DUPLICATE, Outcome.FAILED], ids=lambda o: o.value
)
def test_an_answered_start_takes_the_run_off_the_queue(store, clock, outcome) -> None:
    queue(store, request("a.csv"), clock())
    decision = start(store, clock, answer(outcome))  # FAILED: refused for good
    assert decision is not None and decision.job_id == "mnist-data-a.csv"
    assert store.get_pending("mnist") is None


def test_a_start_that_a_retry_can_fix_leaves_the_run_queued(store, clock, caplog) -> None:
    queue(store, request("a.csv"), clock())
    queued = store.get_pending("mnist")
    with caplog.at_level(logging.WARNING, logger="retrain_trigger"):
        decision = start(store, clock, answer(Outcome.FAILED, retryable=True))
    assert decision is not None and decision.outcome is Outcome.FAILED
    assert store.get_pending("mnist") == queued
    assert "stays queued for the next flush" in caplog.text


def test_a_newer_change_queued_during_the_start_stays_queued(store, clock) -> None:
    queue(store, request("a.csv"), clock())
    submitted = answer(Outcome.SUBMITTED)

    def run(req: RunRequest, trigger: Trigger) -> Decision:
        queue(store, request("b.csv"), clock() + 1)  # arrives while a.csv is being created
        return submitted(req, trigger)

    decision = start(store, clock, run)
    assert decision is not None and decision.run_key == "gs://b/data/a.csv#1"
    left = store.get_pending("mnist")
    assert left is not None and left.run_key == "gs://b/data/b.csv#1"


def test_a_start_held_back_again_stays_queued(store, clock) -> None:
    queue(store, request("a.csv"), clock())
    decision = start(store, clock, answer(Outcome.SKIPPED, code="held"))
    assert decision is not None and decision.code == "held"
    left = store.get_pending("mnist")
    assert left is not None and left.run_key == "gs://b/data/a.csv#1"


def test_nothing_starts_while_another_run_holds_the_slot(store, clock) -> None:
    queue(store, request("b.csv"), clock())
    assert store.set_active("mnist", "mnist-data-a.csv", "jobs/a", clock(), expect_revision=0)

    def run(req: RunRequest, trigger: Trigger) -> Decision:
        raise AssertionError("started while the slot was held")

    assert start(store, clock, run, Backend(running=("mnist-data-a.csv",))) is None
    assert store.get_pending("mnist") is not None
    # Once that run has ended (the backend no longer reports it active), the queued one starts.
    assert start(store, clock, answer(Outcome.SUBMITTED), Backend()) is not None
    assert store.get_pending("mnist") is None


def test_its_own_reservation_does_not_hold_back_a_retry(store, clock) -> None:
    """A failed create keeps its reservation until the lease expires (the run may exist); the
    next flush retries the same change at once, as a redelivery would."""
    req = request("a.csv")
    queue(store, req, clock())
    assert store.set_active("mnist", req.job_id, "", clock(), expect_revision=0, lease_seconds=90)
    decision = start(store, clock, answer(Outcome.SUBMITTED))
    assert decision is not None and decision.outcome is Outcome.SUBMITTED
    assert store.get_pending("mnist") is None


UNKNOWN_KIND = json.dumps({**request("x.csv").to_dict(), "labels": {"retrain-kind": "bogus"}})


@pytest.mark.parametrize("body", ["", "{", "[]", '{"route": "mnist"}', "null", UNKNOWN_KIND])
def test_a_queued_run_that_cannot_be_read_is_dropped_with_an_error(
    store, clock, caplog, body
) -> None:
    store.set_pending("mnist", body, "gs://b/data/x.csv#1", clock())

    def run(req: RunRequest, trigger: Trigger) -> Decision:
        raise AssertionError("started a run that cannot be read")

    with caplog.at_level(logging.ERROR, logger="retrain_trigger"):
        assert start(store, clock, run) is None
    assert store.get_pending("mnist") is None
    assert "cannot be read" in caplog.text and "gs://b/data/x.csv#1" in caplog.text
