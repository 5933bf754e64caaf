"""Run outcomes on the local stack, end to end: a run fails on purpose, the worker reports its end
the way a pipeline's exit task does (to the outcome topic, pushed to function_gcs at the topic's
path), the failure shows in ``retrain-trigger why``, and the route's queued run (``queue_latest``)
starts at once, with no flush in between (the stack's flush ticker is slowed to an hour)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from retrain_trigger import gcs
from retrain_trigger_dev import sampledata
from retrain_trigger_dev.localstack import objects
from retrain_trigger_dev.localstack.demo import post_json
from retrain_trigger_dev.localstack.stack import MARKER, Stack
from tests.e2e.test_local_stack import (
    CODE_CHANGE,
    NO_EMULATOR,
    NO_EMULATOR_REASON,
    REPO,
    Decisions,
    wait_run,
)

pytestmark = [pytest.mark.slow, pytest.mark.emulator]


def cli(stack: Stack, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRAIN_")}
    env.update(stack.client_env())
    done = subprocess.run(
        [sys.executable, "-m", "retrain_trigger_dev.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize(
    "pubsub",
    [
        pytest.param(True, marks=pytest.mark.skipif(NO_EMULATOR, reason=NO_EMULATOR_REASON)),
        False,
    ],
    ids=["pubsub", "push"],
)
def test_a_failed_run_is_in_why_and_the_queued_run_starts_at_once(
    tmp_path: Path, pubsub: bool
) -> None:
    with Stack(
        tmp_path / "stack",
        pubsub=pubsub,
        poll_interval=0.2,
        flush_interval=3600.0,  # no flush starts the queued run: only the outcome can
        worker=False,  # started below, once the queued run is waiting
        concurrency="queue_latest",
    ) as stack:
        events = Decisions(stack)
        # A window holding a shard the pipeline's validation rejects.
        folder = f"gs://{stack.bucket}/data/2026-12-01/"
        uris = sampledata.write_shards(folder, shards=1, broken=True)
        gcs.write_bytes(folder + MARKER, b"", content_type="text/plain", if_generation_match=0)
        broken = next(u for u in uris if u.endswith(sampledata.BROKEN_SHARD))
        name = gcs.split_uri(broken)[1]
        [resource] = [r for r in objects.iter_objects(stack.bucket, name) if r["name"] == name]
        key = f"{broken}#{resource['generation']}"
        events.wait(lambda e: e.get("run_key") == key and "window_id" in e, timeout=90)
        [failing] = stack.service().flush(force=True)
        assert failing.outcome == "submitted", failing

        # A code change while that run holds the route: queued.
        status, answer = post_json(stack.function_http_url + "/", CODE_CHANGE)
        assert (status, answer["decision"]) == (200, "skipped"), answer
        assert "queued behind" in answer["reason"]
        queued_job = answer["job_id"]
        assert stack.ledger().get(queued_job) is None

        worker = subprocess.Popen(
            stack.worker_command(),
            env=stack.worker_env(),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=open(stack.log_path("test-worker"), "wb"),  # noqa: SIM115
            start_new_session=True,
        )
        try:
            ended = wait_run(stack, failing.job_id)
            assert ended.state == "FAILED", ended
            # The outcome reaches function_gcs, which starts the queued run at once.
            started = events.wait(
                lambda e: e.get("job_id") == queued_job and e["decision"] == "submitted",
                timeout=60,
            )
            assert started["trigger"]["source"] == "queue"
            record = stack.service().store.get_run(failing.job_id)
            assert record is not None and record.state == "FAILED"
            assert record.reporter == "local-worker"
            assert record.failed_task, record

            why = cli(stack, "why", broken)
            print(why)
            assert f"run {failing.job_id}: FAILED at " in why
            assert "reported by local-worker" in why
            assert f"failing task {record.failed_task}" in why
            assert "run FAILED" in cli(stack, "decisions", "--since", "1h")
            # The queued code run reads the same data folder (broken shard included): whatever
            # its end, it is recorded from the worker's report too.
            queued_end = wait_run(stack, queued_job)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                done = stack.service().store.get_run(queued_job)
                if done is not None and done.ended:
                    break
                time.sleep(0.2)
            assert done is not None and done.state == queued_end.state
        finally:
            worker.terminate()
            worker.wait(timeout=30)
