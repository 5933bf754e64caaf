"""The local backend running a real compiled pipeline with Kubeflow's local runner.

The pipeline is compiled here, from the tiny definition below, so the test never depends on the
production pipeline. Its runs take about a second each; the module takes about ten.
"""

# No ``from __future__ import annotations``: Kubeflow reads the components' annotations as types.
import itertools
import multiprocessing
import os
import time
from typing import NamedTuple

import pytest

pytest.importorskip("kfp")

from kfp import compiler, dsl

from retrain_trigger.config import Config
from retrain_trigger.model import RunRequest
from retrain_trigger.spec import parse_template
from retrain_trigger_dev.local.backend import LocalBackend, run_worker
from retrain_trigger_dev.local.ledger import CANCELLED, FAILED, RUNNING, SUCCEEDED
from retrain_trigger_dev.processes import pid_alive

pytestmark = pytest.mark.slow


class TrainOutputs(NamedTuple):
    accuracy: float
    model_version: str


@dsl.component(base_image="python:3.11")
def train(shard: str, sleep_seconds: float, metrics: dsl.Output[dsl.Metrics]) -> NamedTuple(
    "TrainOutputs", [("accuracy", float), ("model_version", str)]
):
    import time
    from collections import namedtuple

    if shard == "bad":
        raise ValueError("bad shard")
    print(f"train {shard}: sleeping {sleep_seconds} s", flush=True)
    time.sleep(sleep_seconds)
    metrics.log_metric("accuracy", 0.91)
    metrics.log_metric("rows", 120)
    return namedtuple("TrainOutputs", ["accuracy", "model_version"])(0.91, f"{shard}-1")


@dsl.pipeline(name="tiny-train")
def tiny_pipeline(shard: str, sleep_seconds: float = 0.0) -> TrainOutputs:
    task = train(shard=shard, sleep_seconds=sleep_seconds)
    return TrainOutputs(
        accuracy=task.outputs["accuracy"], model_version=task.outputs["model_version"]
    )


def make_request(job_id: str, **params) -> RunRequest:
    return RunRequest(
        route="churn",
        run_key=f"gs://bucket/data/{job_id}.csv#1",
        job_id=job_id,
        display_name="churn-data",
        template="tiny.yaml",
        pipeline_root="gs://bucket/root",
        parameter_values=params,
        labels={"route": "churn"},
    )


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    path = tmp_path_factory.mktemp("pipeline") / "tiny.yaml"
    compiler.Compiler().compile(tiny_pipeline, str(path))
    return parse_template(path.read_bytes(), str(path))


@pytest.fixture(scope="module")
def batch(tmp_path_factory, template):
    """Three runs submitted at once, served by a worker in a process of its own (as ``up`` does)."""
    state_dir = str(tmp_path_factory.mktemp("state"))
    config = Config(routes=(), backend="local", state_dir=state_dir, local_concurrency=1)
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    worker = context.Process(target=run_worker, args=(config, stop), kwargs={"poll_interval": 0.1})
    worker.start()
    backend = LocalBackend.from_config(config, start_worker=False)
    handles = {}
    for job_id, shard in (
        ("churn-data-a-1", "a"),
        ("churn-data-bad-1", "bad"),
        ("churn-data-b-1", "b"),
    ):
        handles[job_id] = backend.submit(make_request(job_id, shard=shard), template)
    statuses = {job_id: backend.wait(job_id, timeout=120) for job_id in handles}
    yield backend, handles, statuses
    stop.set()
    worker.join(30)


def test_submit_returns_before_the_run_starts(batch):
    _, handles, _ = batch
    assert all(handle.created and handle.state == "PENDING" for handle in handles.values())


def test_submit_does_not_wait_for_a_worker(tmp_path, template):
    """No worker runs at all: submit records the run and returns."""
    with LocalBackend(tmp_path / "state", start_worker=False) as backend:
        handle = backend.submit(make_request("churn-data-idle-1", shard="idle"), template)
        assert handle.created and handle.state == "PENDING"
        assert backend.get("churn-data-idle-1").state == "PENDING"


def test_a_successful_run_records_its_outputs(batch):
    backend, handles, statuses = batch
    status = statuses["churn-data-a-1"]
    assert status.state == SUCCEEDED, status.error
    assert status.job_name == handles["churn-data-a-1"].job_name
    assert status.job_name == "projects/local/locations/us-central1/pipelineJobs/churn-data-a-1"
    assert status.error == ""
    assert status.parameters == {"shard": "a"}
    assert status.outputs["accuracy"] == 0.91
    assert status.outputs["rows"] == 120
    assert status.outputs["model_version"] == "a-1"
    metrics_uri = status.outputs["artifacts"]["train/metrics"]
    assert metrics_uri.startswith(os.path.join(backend.state_dir, "runs", "churn-data-a-1", "root"))
    record = backend.ledger.get("churn-data-a-1")
    assert os.path.isfile(record.log_path)
    with open(record.log_path, encoding="utf-8") as fh:
        assert "finished with status" in fh.read()
    run_dir = os.path.dirname(record.log_path)
    with open(os.path.join(run_dir, "pipeline.yaml"), "rb") as fh:
        assert fh.read() == backend.ledger.template(record.template_digest)


def test_a_failing_component_fails_the_run_with_its_error(batch):
    _, _, statuses = batch
    status = statuses["churn-data-bad-1"]
    assert status.state == FAILED
    assert status.error == "task 'train' failed: ValueError: bad shard"
    assert status.end_time


def test_a_second_submit_of_the_same_id_is_a_duplicate(batch, template):
    backend, handles, _ = batch
    again = backend.submit(make_request("churn-data-a-1", shard="z"), template)
    assert not again.created
    assert again.job_name == handles["churn-data-a-1"].job_name
    assert again.state == SUCCEEDED
    assert backend.get("churn-data-a-1").parameters == {"shard": "a"}


def test_with_concurrency_one_the_runs_take_turns(batch):
    _, handles, statuses = batch
    spans = [(statuses[job_id].start_time, statuses[job_id].end_time) for job_id in handles]
    assert spans == sorted(spans), "in the order they were submitted"
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start


def wait_for(condition, timeout: float, what: str) -> None:
    """Polls ``condition`` until it holds; fails naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            pytest.fail(f"not {what} after {timeout:g} s")
        time.sleep(0.05)


def _log_text(backend, job_id):
    try:
        with open(backend.log_path(job_id), encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def test_cancel_stops_a_running_pipeline(tmp_path, template):
    with LocalBackend(tmp_path / "state", poll_interval=0.05, heartbeat_interval=0.2) as backend:
        backend.submit(
            make_request("churn-data-slow-1", shard="slow", sleep_seconds=60.0), template
        )
        wait_for(
            lambda: "train slow: sleeping" in _log_text(backend, "churn-data-slow-1"),
            timeout=120,
            what="inside the pipeline's train step",
        )
        assert backend.get("churn-data-slow-1").state == RUNNING
        assert backend.cancel("churn-data-slow-1").state == "CANCELLING"
        # the step would sleep 60 s: a run that ends well before was stopped
        status = backend.wait("churn-data-slow-1", timeout=45)
    assert status.state == CANCELLED
    assert status.error == "cancelled while running"
    assert not pid_alive(backend.ledger.get("churn-data-slow-1").run_pid)
