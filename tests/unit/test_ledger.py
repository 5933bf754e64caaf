"""The local run ledger and the local backend's queueing, without Kubeflow.

Runs are executed by a stand-in run process (``FAKE_RUN``) that sleeps, then records its result in
the ledger the way ``retrain_trigger_dev.local.runner`` does, so that queueing, concurrency,
duplicate ids, restarts and races are tested in well under a second each.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from pathlib import Path

import pytest

from retrain_trigger.backends import JobStatus
from retrain_trigger.errors import BackendRefused, BackendUnavailable, TemplateError
from retrain_trigger.spec import parse_template
from retrain_trigger_dev.local import ledger as ledger_mod
from retrain_trigger_dev.local.backend import LocalBackend
from retrain_trigger_dev.local.ledger import (
    CANCELLED,
    CANCELLING,
    FAILED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    Ledger,
    ledger_path,
)
from retrain_trigger_dev.local.runner import collect_outputs, last_error
from tests.ledgerkit import TEMPLATE_YAML, insert, make_request


@pytest.fixture
def template():
    return parse_template(TEMPLATE_YAML, "tiny.yaml")


@pytest.fixture
def state_dir(tmp_path: Path) -> str:
    return str(tmp_path / "state")


@pytest.fixture
def ledger(state_dir: str) -> Ledger:
    return Ledger.for_state_dir(state_dir)


# -- the database ------------------------------------------------------------------------------


def test_ledger_uses_wal_and_the_busy_timeout(state_dir: str):
    ledger = Ledger.for_state_dir(state_dir, busy_timeout=1.5)
    assert ledger.path == ledger_path(state_dir) == os.path.join(state_dir, "runs.sqlite3")
    conn = ledger.connect()
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 1500
        assert conn.execute("PRAGMA user_version").fetchone()[0] == ledger_mod.SCHEMA_VERSION == 2
    finally:
        conn.close()


def test_a_held_write_lock_makes_submit_retryable_after_the_busy_timeout(state_dir, template):
    backend = LocalBackend(state_dir, start_worker=False, busy_timeout=0.3)
    backend.submit(make_request("churn-data-a-1"), template)
    blocker = sqlite3.connect(backend.ledger.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match="database is locked") as caught:
            backend.submit(make_request("churn-data-a-2"), template)
        waited = time.monotonic() - started
        assert caught.value.retryable
        assert 0.25 <= waited < 3
        # Readers are not blocked by the writer (WAL).
        assert backend.get("churn-data-a-1").state == PENDING
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert backend.submit(make_request("churn-data-a-2"), template).created


def test_parameters_labels_and_outputs_round_trip(ledger: Ledger):
    params = {
        "data_uri": "gs://bucket/data/2026-11-27/part-0001.csv",
        "epochs": 3,
        "learning_rate": 0.05,
        "dry_run": False,
        "columns": ["a", "b"],
        "options": {"depth": 4, "note": "ünïcode"},
    }
    record, created = insert(ledger, "churn-data-rt-1", **params)
    assert created and record.state == PENDING and record.parameters == params
    claimed = ledger.claim(1)
    outputs = {
        "accuracy": 0.91,
        "model_version": "7",
        "loss": float("nan"),
        "artifacts": {"metrics": "/tmp/m"},
    }
    assert ledger.finish(claimed.job_id, SUCCEEDED, outputs=outputs)
    status = ledger.get("churn-data-rt-1").to_status()
    assert isinstance(status, JobStatus)
    assert status.state == SUCCEEDED and status.terminal
    assert status.parameters == params
    assert status.labels == {"route": "churn"}
    assert status.outputs == {**outputs, "loss": "nan"}
    assert status.run_key == "key-churn-data-rt-1" and status.route == "churn"
    for stamp in (status.create_time, status.start_time, status.end_time):
        assert stamp.endswith("Z") and stamp[:4].isdigit() and "T" in stamp
    assert status.create_time <= status.start_time <= status.end_time


def test_an_existing_id_is_never_overwritten(ledger: Ledger):
    first, created = insert(ledger, "churn-data-dup-1", epochs=1)
    again, created_again = insert(ledger, "churn-data-dup-1", epochs=2)
    assert created and not created_again
    assert again.parameters == {"epochs": 1} and again.create_time == first.create_time
    assert len(ledger.list()) == 1


# -- claims, concurrency and recovery ------------------------------------------------------------


def test_claims_take_the_oldest_run_and_respect_the_bound(ledger: Ledger):
    for index, job_id in enumerate(["churn-data-c-1", "churn-data-c-2", "churn-data-c-3"]):
        insert(ledger, job_id, now=1000.0 + index)
    first = ledger.claim(1)
    assert first.job_id == "churn-data-c-1" and first.state == RUNNING
    assert first.worker_pid == os.getpid() and first.worker_host == socket.gethostname()
    assert ledger.claim(1) is None, "a second run must wait while one is running"
    second = ledger.claim(2)
    assert second.job_id == "churn-data-c-2"
    assert ledger.claim(2) is None
    assert ledger.finish(first.job_id, SUCCEEDED)
    assert not ledger.finish(first.job_id, FAILED, error="late"), "an end is recorded once"
    assert ledger.get(first.job_id).state == SUCCEEDED
    assert ledger.claim(2).job_id == "churn-data-c-3"
    assert ledger.claim(5) is None
    assert ledger.counts() == {SUCCEEDED: 1, RUNNING: 2}


def test_cancel(ledger: Ledger):
    insert(ledger, "churn-data-x-1", now=1.0)
    insert(ledger, "churn-data-x-2", now=2.0)
    running = ledger.claim(1)
    assert ledger.cancel("churn-data-x-2").state == CANCELLED
    assert ledger.cancel("churn-data-x-1").state == CANCELLING
    assert ledger.claim(1) is None, "a run being cancelled still holds its slot"
    assert ledger.finish(running.job_id, FAILED, error="stopped")
    assert ledger.get(running.job_id).state == CANCELLED
    assert ledger.cancel("churn-data-x-1").state == CANCELLED
    with pytest.raises(KeyError):
        ledger.cancel("churn-data-nope")


# -- the backend and its worker --------------------------------------------------------------


def test_submit_queues_and_a_second_submit_is_a_duplicate(state_dir, template):
    backend = LocalBackend(state_dir, start_worker=False, project="acme-ml", region="europe-west4")
    started = time.perf_counter()
    handle = backend.submit(make_request("churn-data-d-1", sleep=0.5), template)
    elapsed = time.perf_counter() - started
    assert handle.created and handle.state == PENDING
    assert handle.job_name == "projects/acme-ml/locations/europe-west4/pipelineJobs/churn-data-d-1"
    assert elapsed < 1.0, "submit only records the run"
    again = backend.submit(make_request("churn-data-d-1", sleep=9.0), template)
    assert not again.created
    assert again.job_name == handle.job_name and again.state == PENDING
    status = backend.get("churn-data-d-1")
    assert status.parameters == {"sleep": 0.5}
    assert status.labels == {"route": "churn", "kind": "data"}
    assert backend.ledger.get("churn-data-d-1").request["pipeline_root"] == "gs://bucket/root"
    assert backend.ledger.template(template.digest) == TEMPLATE_YAML


def test_job_names_default_to_the_local_project(state_dir, template):
    backend = LocalBackend(state_dir, start_worker=False)
    handle = backend.submit(make_request("churn-data-n-1"), template)
    assert handle.job_name == "projects/local/locations/us-central1/pipelineJobs/churn-data-n-1"


@pytest.mark.parametrize(
    ("job_id", "params", "error", "match"),
    [
        ("Churn-Data", {}, BackendRefused, "job id 'Churn-Data' is not valid"),
        ("../escape", {}, BackendRefused, "is not valid"),
        ("a" * 129, {}, BackendRefused, "is not valid"),
        ("churn-data-nan", {"sleep": float("nan")}, BackendRefused, "parameters cannot be stored"),
    ],
)
def test_submit_refuses_what_can_never_run(state_dir, template, job_id, params, error, match):
    backend = LocalBackend(state_dir, start_worker=False)
    with pytest.raises(error, match=match) as caught:
        backend.submit(make_request(job_id, **params), template)
    assert not caught.value.retryable


def test_submit_refuses_a_template_without_yaml(state_dir, template):
    from dataclasses import replace

    backend = LocalBackend(state_dir, start_worker=False)
    with pytest.raises(TemplateError, match="has no compiled YAML"):
        backend.submit(make_request("churn-data-e-1"), replace(template, raw=b""))


def test_get_list_and_unknown_ids(state_dir, template):
    backend = LocalBackend(state_dir, start_worker=False)
    with pytest.raises(KeyError):
        backend.get("churn-data-missing")
    with pytest.raises(KeyError):
        backend.log_path("churn-data-missing")
    for index, route in enumerate(["churn", "fraud", "churn"]):
        backend.submit(make_request(f"{route}-data-l-{index}", route=route), template)
    assert [s.job_id for s in backend.list()] == [
        "churn-data-l-2",
        "fraud-data-l-1",
        "churn-data-l-0",
    ]
    assert [s.job_id for s in backend.list(route="churn", limit=1)] == ["churn-data-l-2"]
    assert [s.job_id for s in backend.list(route="fraud")] == ["fraud-data-l-1"]
    assert backend.cancel("fraud-data-l-1").state == CANCELLED
    by_name = backend.get("projects/local/locations/us-central1/pipelineJobs/churn-data-l-0")
    assert by_name.job_id == "churn-data-l-0"
    assert backend.log_path("churn-data-l-0") == os.path.join(
        backend.state_dir, "runs", "churn-data-l-0", "run.log"
    )
    assert [s.job_id for s in backend.list(state=PENDING)] == ["churn-data-l-2", "churn-data-l-0"]


# -- pieces of the run process -------------------------------------------------------------


KFP_LOG = """\
16:22:43.100 - INFO - Executing task \x1b[96m'train'\x1b[0m
    Traceback (most recent call last):
      File "/tmp/tmp.x/ephemeral_component.py", line 9, in train
        raise ValueError("bad shard")
    ValueError: bad shard

16:22:44.170 - ERROR - Task \x1b[96m'train'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m
Traceback (most recent call last):
  File "kfp/local/pipeline_orchestrator.py", line 184, in log_and_maybe_raise_for_failure
RuntimeError: Pipeline \x1b[95m'tiny'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m. Inner task failed: 'train'.
"""


@pytest.mark.parametrize(
    ("log", "fallback", "expected"),
    [
        (KFP_LOG, "", "task 'train' failed: ValueError: bad shard"),
        (
            "Traceback (most recent call last):\n  File x\nKeyError: 'epochs'\n",
            "",
            "KeyError: 'epochs'",
        ),
        (
            "Task 'train' finished with status FAILURE\n",
            "RuntimeError: Pipeline 'tiny' finished with status FAILURE.",
            "RuntimeError: Pipeline 'tiny' finished with status FAILURE.",
        ),
        ("Task 'train' finished with status FAILURE\n", "", "task 'train' failed"),
        ("", "", ""),
    ],
)
def test_last_error(log, fallback, expected):
    assert last_error(log, fallback) == expected


def test_collect_outputs_reads_task_outputs_and_metrics(tmp_path: Path):
    import json

    run = tmp_path / "root" / "tiny-2026-11-27-16-22-42"
    (run / "train").mkdir(parents=True)
    (run / "register").mkdir(parents=True)
    (run / "train" / "executor_output.json").write_text(
        json.dumps(
            {
                "parameterValues": {"accuracy": 0.5, "blob": "x" * 5000},
                "artifacts": {
                    "metrics": {
                        "artifacts": [
                            {"name": "metrics", "uri": "/r/train/metrics", "metadata": {"f1": 0.8}}
                        ]
                    },
                    "model": {
                        "artifacts": [
                            {
                                "name": "model",
                                "uri": "/r/train/model",
                                "metadata": {"framework": "sk"},
                            }
                        ]
                    },
                },
            }
        )
    )
    (run / "register" / "executor_output.json").write_text(
        json.dumps({"parameterValues": {"Output": "7"}})
    )
    os.utime(run / "train" / "executor_output.json", (1, 1))

    class Metrics:
        uri = "/r/train/metrics"
        metadata = {"f1": 0.8}

    outputs = collect_outputs({"accuracy": 0.9, "metrics": Metrics()}, tmp_path / "root")
    assert outputs["accuracy"] == 0.9, "the pipeline's own outputs win"
    assert outputs["f1"] == 0.8
    assert outputs["register"] == "7"
    assert outputs["blob"].endswith("...") and len(outputs["blob"]) < 1100
    assert "framework" not in outputs
    assert outputs["artifacts"] == {"train/model": "/r/train/model", "metrics": "/r/train/metrics"}
    assert collect_outputs(None, tmp_path / "missing") == {}


# -- run outcomes: the worker reports each end once ----------------------------------------------


def test_each_ended_run_is_reported_once_and_a_failed_delivery_is_retried(ledger: Ledger):
    from retrain_trigger.outcomes import decode_report
    from retrain_trigger_dev.local.outcomes import OutcomeReporter

    for job_id in ("churn-a", "churn-b", "churn-c"):
        insert(ledger, job_id)
    for _ in range(2):
        ledger.claim(5, host="h", pid=1)
    ledger.finish("churn-a", "FAILED", error="task 'train' failed: ValueError: x", now=100.0)
    ledger.finish("churn-b", "SUCCEEDED", now=101.0)
    delivered: list[dict] = []
    down = True

    def deliver(report: dict) -> None:
        if down:
            raise OSError("connection refused")
        delivered.append(report)

    reporter = OutcomeReporter(ledger, deliver)
    assert reporter.report() == []  # the trigger is unreachable: kept for the next pass
    down = False
    assert reporter.report() == ["churn-a", "churn-b"]
    assert reporter.report() == []
    first = decode_report(json.dumps(delivered[0]).encode())  # a valid run-outcome message
    assert (first.job_id, first.state, first.reporter, first.failed_task) == (
        "churn-a",
        "FAILED",
        "local-worker",
        "train",
    )
    assert delivered[1]["state"] == "SUCCEEDED" and delivered[1]["error"] == {
        "code": 0,
        "message": "",
    }
