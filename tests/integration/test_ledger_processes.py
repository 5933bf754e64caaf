"""The local run ledger and the local backend's queueing, without Kubeflow.

Runs are executed by a stand-in run process (``FAKE_RUN``) that sleeps, then records its result in
the ledger the way ``retrain_trigger_dev.local.runner`` does, so that queueing, concurrency,
duplicate ids, restarts and races are tested in well under a second each.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from retrain_trigger.spec import parse_template
from retrain_trigger_dev.local.backend import LocalBackend, Worker
from retrain_trigger_dev.local.ledger import (
    CANCELLED,
    FAILED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    WORKER_GONE,
    Ledger,
)
from retrain_trigger_dev.processes import pid_alive, process_alive
from tests.ledgerkit import TEMPLATE_YAML, insert, make_request

# Stands in for ``python -m retrain_trigger_dev.local.runner STATE_DIR JOB_ID``.
FAKE_RUN = r"""
import os, sys, time
from retrain_trigger_dev.local.ledger import Ledger
state_dir, job_id = sys.argv[1], sys.argv[2]
ledger = Ledger.for_state_dir(state_dir)
params = ledger.get(job_id).parameters
mode = params.get("mode", "ok")
time.sleep(float(params.get("sleep", 0)))
if mode == "crash":
    print("Traceback (most recent call last):", file=sys.stderr)
    print('  File "train.py", line 1, in <module>', file=sys.stderr)
    print("OSError: disk on fire", file=sys.stderr)
    sys.exit(3)
if mode == "hang":
    time.sleep(60)
ledger.finish(
    job_id,
    "SUCCEEDED" if mode == "ok" else "FAILED",
    outputs={"accuracy": 0.75, "started": time.time()},
    error="" if mode == "ok" else "ValueError: bad shard",
)
"""


def fake_command(state_dir: str, job_id: str, claim_token: str) -> list[str]:
    return [sys.executable, "-c", FAKE_RUN, state_dir, job_id]


@pytest.fixture
def template():
    return parse_template(TEMPLATE_YAML, "tiny.yaml")


@pytest.fixture
def state_dir(tmp_path: Path) -> str:
    return str(tmp_path / "state")


@pytest.fixture
def ledger(state_dir: str) -> Ledger:
    return Ledger.for_state_dir(state_dir)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


# -- the database ------------------------------------------------------------------------------


# -- claims, concurrency and recovery ------------------------------------------------------------


def test_recovery_fails_runs_whose_processes_are_gone(ledger: Ledger):
    now = time.time()
    names = [
        "dead-run",
        "dead-run-cancelling",
        "reused-pid",
        "alive",
        "remote-fresh",
        "remote-stale",
    ]
    for index, name in enumerate(names):
        insert(ledger, f"churn-data-{name}", now=float(index))
    here = socket.gethostname()
    gone = dead_pid()
    # A live process running this job: its command line names it (as the worker's does).
    alive = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)", "churn-data-alive"]
    )
    pids = {"dead-run": gone, "dead-run-cancelling": gone, "reused-pid": os.getpid()}
    pids["alive"] = alive.pid
    try:
        for name in names[:4]:
            record = ledger.claim(9)
            ledger.set_run_pid(record.job_id, record.claim_token, pids[name])
        ledger.heartbeat("churn-data-alive", now=now - 600)  # e.g. the machine was suspended
        ledger.cancel("churn-data-dead-run-cancelling")
        for beat in (now - 5, now - 600):
            record = ledger.claim(9, host="elsewhere", pid=1, now=beat)
            ledger.set_run_pid(record.job_id, record.claim_token, 1)
            ledger.heartbeat(record.job_id, now=beat)

        recovered = ledger.recover(stale_after=60, host=here)

        assert recovered == {
            "churn-data-dead-run": FAILED,
            "churn-data-dead-run-cancelling": CANCELLED,
            "churn-data-reused-pid": FAILED,
            "churn-data-remote-stale": FAILED,
        }
        dead = ledger.get("churn-data-dead-run")
        assert dead.error == WORKER_GONE and dead.end_time
        assert ledger.get("churn-data-remote-stale").error.startswith(
            f"{WORKER_GONE} (no heartbeat for"
        )
        assert ledger.get("churn-data-alive").state == RUNNING
        assert ledger.get("churn-data-remote-fresh").state == RUNNING
        assert ledger.recover(stale_after=60, host=here) == {}
    finally:
        alive.kill()
        alive.wait()


def test_a_run_whose_worker_died_before_starting_it_goes_back_to_the_queue(ledger: Ledger):
    insert(ledger, "churn-data-q-1", now=1.0)
    insert(ledger, "churn-data-q-2", now=2.0)
    lost = ledger.claim(1, pid=dead_pid())  # the worker died between claim and start
    assert ledger.recover(stale_after=60) == {"churn-data-q-1": PENDING}
    requeued = ledger.get("churn-data-q-1")
    assert requeued.state == PENDING and requeued.start_time is None and not requeued.claim_token
    again = ledger.claim(1)
    assert again.job_id == "churn-data-q-1", "it keeps its place in the queue"
    assert again.claim_token != lost.claim_token
    assert not ledger.set_run_pid(lost.job_id, lost.claim_token, os.getpid()), "stale claim"
    assert ledger.set_run_pid(again.job_id, again.claim_token, os.getpid())


def test_pid_alive():
    assert pid_alive(os.getpid())
    assert not pid_alive(dead_pid())
    assert not pid_alive(None) and not pid_alive(0)
    assert process_alive(os.getpid())
    assert not process_alive(os.getpid(), "churn-data-not-this-process")


def _claim_until_empty(path: str, limit: int, results, barrier) -> None:
    """Run in other processes: claim, check the bound, finish; report what was claimed."""
    ledger = Ledger(path, busy_timeout=30)
    barrier.wait(30)
    claimed, worst = [], 0
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < 0.5:
        record = ledger.claim(limit)
        if record is None:
            if not ledger.has_pending() and ledger.counts().get(RUNNING, 0) == 0:
                break
            time.sleep(0.002)
            continue
        idle_since = time.monotonic()
        worst = max(worst, ledger.counts().get(RUNNING, 0))
        claimed.append(record.job_id)
        time.sleep(0.003)
        assert ledger.finish(record.job_id, SUCCEEDED, outputs={"by": os.getpid()})
    results.put((os.getpid(), claimed, worst))


def test_workers_in_several_processes_never_claim_the_same_run(ledger: Ledger):
    jobs = [f"churn-data-race-{i}" for i in range(40)]
    for job_id in jobs:
        insert(ledger, job_id)
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    barrier = context.Barrier(4)
    procs = [
        context.Process(target=_claim_until_empty, args=(ledger.path, 3, results, barrier))
        for _ in range(4)
    ]
    for proc in procs:
        proc.start()
    reports = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    claimed = [job_id for _, ids, _ in reports for job_id in ids]
    assert sorted(claimed) == sorted(jobs), "every run claimed exactly once"
    assert sum(1 for _, ids, _ in reports if ids) >= 2, "the processes did race"
    assert max(worst for _, _, worst in reports) <= 3
    finished_by = {record.job_id: record.outputs["by"] for record in ledger.list(limit=100)}
    by_report = {job_id: pid for pid, ids, _ in reports for job_id in ids}
    assert finished_by == by_report
    assert ledger.counts() == {SUCCEEDED: 40}


def test_threads_racing_over_one_ledger_keep_one_run_at_a_time(ledger: Ledger):
    for index in range(30):
        insert(ledger, f"churn-data-t-{index}", now=float(index))
    order: list[str] = []
    overlaps: list[int] = []
    lock = threading.Lock()

    def claimer() -> None:
        while True:
            record = ledger.claim(1)
            if record is None:
                if not ledger.has_pending():
                    return
                time.sleep(0.001)
                continue
            running = ledger.counts().get(RUNNING, 0)
            with lock:
                order.append(record.job_id)
                overlaps.append(running)
            ledger.finish(record.job_id, SUCCEEDED)

    threads = [threading.Thread(target=claimer) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert order == [f"churn-data-t-{index}" for index in range(30)], "oldest first, once each"
    assert set(overlaps) == {1}


# -- the backend and its worker --------------------------------------------------------------


def test_runs_are_queued_and_run_one_at_a_time(state_dir, template):
    with LocalBackend(
        state_dir, concurrency=1, command=fake_command, poll_interval=0.05
    ) as backend:
        for index in range(3):
            backend.submit(make_request(f"churn-data-q-{index}", sleep=0.3), template)
        wait_for(lambda: backend.get("churn-data-q-0").state == RUNNING)
        assert [backend.get(f"churn-data-q-{i}").state for i in (1, 2)] == [PENDING, PENDING]
        final = [backend.wait(f"churn-data-q-{i}", timeout=20) for i in range(3)]
    assert [s.state for s in final] == [SUCCEEDED] * 3
    assert all(s.outputs["accuracy"] == 0.75 for s in final)
    spans = [(s.start_time, s.end_time) for s in final]
    assert spans == sorted(spans), "oldest first"
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start, "never two at once"


def test_concurrency_two_runs_two_at_once(state_dir, template):
    with LocalBackend(
        state_dir, concurrency=2, command=fake_command, poll_interval=0.05
    ) as backend:
        for index in range(3):
            backend.submit(make_request(f"churn-data-p-{index}", sleep=0.4), template)
        wait_for(lambda: backend.ledger.counts().get(RUNNING, 0) == 2)
        assert backend.get("churn-data-p-2").state == PENDING
        final = [backend.wait(f"churn-data-p-{i}", timeout=20) for i in range(3)]
    assert [s.state for s in final] == [SUCCEEDED] * 3


def test_a_run_process_exiting_between_reap_and_recovery_keeps_its_error(
    state_dir, template, monkeypatch
):
    """The flake once seen in the test below, made to happen every time: the run's process
    exits after the worker's pass reaped its children and before that pass's recovery ran.
    Recovery then recorded the run as gone (``worker exited before the run finished``) and the
    real error was lost; now the worker's own children are left to its reaping."""
    LocalBackend(state_dir, start_worker=False).submit(
        make_request("churn-data-k-2", mode="crash"), template
    )
    worker = Worker(state_dir, command=fake_command)
    [started] = worker.step()
    real_reap = worker._reap

    def reap_then_let_the_child_exit() -> None:
        real_reap()
        for proc in worker._children.values():
            proc.wait(20)  # exits now, between this pass's reap and its recovery

    monkeypatch.setattr(worker, "_reap", reap_then_let_the_child_exit)
    worker.step()
    monkeypatch.undo()
    assert worker.ledger.get(started).state == RUNNING, "not recorded as gone by recovery"
    worker.step()
    record = worker.ledger.get(started)
    assert record.state == FAILED
    assert record.error == (
        "run process exited with code 3 before recording a result: OSError: disk on fire"
    )


def test_a_run_process_that_dies_without_a_result_is_failed(state_dir, template):
    with LocalBackend(state_dir, command=fake_command, poll_interval=0.05) as backend:
        backend.submit(make_request("churn-data-k-1", mode="crash"), template)
        status = backend.wait("churn-data-k-1", timeout=20)
    assert status.state == FAILED
    assert status.error == (
        "run process exited with code 3 before recording a result: OSError: disk on fire"
    )


def test_stopping_the_worker_fails_its_runs_and_stops_their_processes(state_dir, template):
    backend = LocalBackend(state_dir, command=fake_command, poll_interval=0.05, stop_grace=2)
    backend.submit(make_request("churn-data-s-1", mode="hang"), template)
    record = wait_for(lambda: (r := backend.ledger.get("churn-data-s-1")).run_pid and r)
    started = time.monotonic()
    backend.close()
    assert time.monotonic() - started < 5
    status = backend.get("churn-data-s-1")
    assert status.state == FAILED and status.error == "worker stopped before the run finished"
    assert not pid_alive(record.run_pid)


def test_a_restart_fails_the_runs_of_a_killed_worker_and_runs_the_pending_ones(state_dir, template):
    script = (
        "import sys, threading\n"
        "from retrain_trigger_dev.local.backend import Worker\n"
        f"sys.path.insert(0, {os.path.dirname(__file__)!r})\n"
        "from test_ledger_processes import fake_command\n"
        "Worker(sys.argv[1], command=fake_command, poll_interval=0.05).run(threading.Event())\n"
    )
    submitter = LocalBackend(state_dir, start_worker=False)
    submitter.submit(make_request("churn-data-r-1", mode="hang"), template)
    submitter.submit(make_request("churn-data-r-2"), template)
    worker = subprocess.Popen([sys.executable, "-c", script, state_dir])
    try:
        record = wait_for(lambda: (r := submitter.ledger.get("churn-data-r-1")).run_pid and r, 20)
    finally:
        worker.kill()
        worker.wait()
    os.killpg(record.run_pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(record.run_pid))
    assert submitter.get("churn-data-r-1").state == RUNNING
    assert submitter.get("churn-data-r-2").state == PENDING

    restarted = Worker(state_dir, command=fake_command, poll_interval=0.05)
    assert restarted.step() == ["churn-data-r-2"]
    lost = submitter.get("churn-data-r-1")
    assert lost.state == FAILED and lost.error == WORKER_GONE and lost.end_time
    wait_for(lambda: submitter.get("churn-data-r-2").terminal)
    restarted.shutdown()
    assert submitter.get("churn-data-r-2").state == SUCCEEDED


def test_an_orphaned_run_process_still_records_its_result(state_dir, template):
    """A worker killed while its run goes on: the run is not failed, and its result is kept."""
    submitter = LocalBackend(state_dir, start_worker=False)
    submitter.submit(make_request("churn-data-o-1", sleep=1.0), template)
    worker = Worker(state_dir, command=fake_command)
    worker.step()
    record = submitter.ledger.get("churn-data-o-1")
    # As if this worker had died: another one passes while the run process is still going.
    assert Worker(state_dir, command=fake_command).step() == []
    assert submitter.get("churn-data-o-1").state == RUNNING
    assert pid_alive(record.run_pid)
    assert submitter.wait("churn-data-o-1", timeout=20).state == SUCCEEDED
    worker.shutdown()


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
