"""The local stack end to end, with the real pieces: fake-gcs-server, the Pub/Sub emulator, both
functions under functions-framework, the flush ticker, the local backend's worker and the mnist
pipeline.

    fake-gcs-server ─OBJECT_FINALIZE→ Pub/Sub emulator ─push→ function_gcs → batch window
    ticker ─POST /flush→ function_http → manifest + one run → ledger → worker → pipeline
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from retrain_trigger import gcs
from retrain_trigger_dev import replay, sampledata
from retrain_trigger_dev.localstack import objects
from retrain_trigger_dev.localstack.demo import decisions, post_json
from retrain_trigger_dev.localstack.poller import post_cloud_event
from retrain_trigger_dev.localstack.stack import MARKER, Stack, pubsub_emulator_command
from retrain_trigger_dev.localstack.supervisor import (
    LogFollower,
    port_open,
)
from retrain_trigger_dev.processes import descendants, same_process_alive

pytestmark = [pytest.mark.slow, pytest.mark.emulator]

REPO = Path(__file__).resolve().parents[2]
NO_EMULATOR = pubsub_emulator_command() is None
NO_EMULATOR_REASON = (
    "gcloud's Pub/Sub emulator (component pubsub-emulator, with Java) is not installed here; "
    "the Pub/Sub delivery path is not exercised (the poller-mode tests still run)"
)
RUN_TIMEOUT = 120.0
CODE_CHANGE = {
    "kind": "code",
    "commit_sha": "0123456789abcdef0123456789abcdef01234567",
    "image_uri": "localhost:5000/mnist-trainer:0123456789ab",
}


def write_folder(stack: Stack, day: str, shards: int = 2) -> list[str]:
    """Digit shards plus an empty marker file; returns the shards' run keys."""
    folder = f"gs://{stack.bucket}/data/{day}/"
    keys = []
    for uri in sampledata.write_shards(folder, shards=shards):
        name = gcs.split_uri(uri)[1]
        [resource] = [r for r in objects.iter_objects(stack.bucket, name) if r["name"] == name]
        keys.append(f"{uri}#{resource['generation']}")
    gcs.write_bytes(folder + MARKER, b"", content_type="text/plain", if_generation_match=0)
    return keys


class Decisions:
    """A function's decision lines, read as they are written."""

    def __init__(self, stack: Stack, function: str = "function-gcs") -> None:
        self.follower = LogFollower(stack.log_path(function), from_start=True)
        self.seen: list[dict[str, Any]] = []

    def read(self) -> list[dict[str, Any]]:
        self.seen.extend(decisions(self.follower.lines()))
        return self.seen

    def wait(
        self, predicate: Callable[[dict[str, Any]], bool], *, after: int = 0, timeout: float = 60
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in self.read()[after:]:
                if predicate(entry):
                    return entry
            time.sleep(0.1)
        raise AssertionError(
            f"no such decision after {timeout} s; seen: {json.dumps(self.seen, indent=1)[-3000:]}"
        )


def wait_run(stack: Stack, job_id: str, timeout: float = RUN_TIMEOUT) -> Any:
    ledger = stack.ledger()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.check()
        record = ledger.get(job_id)
        if record is not None and record.terminal:
            return record
        time.sleep(0.2)
    raise AssertionError(f"run {job_id} not finished after {timeout} s: {ledger.get(job_id)}")


def window_run(stack: Stack, events: Decisions, flushes: Decisions, keys: list[str]) -> dict:
    """Every key batched into one window, and the flush's decision for that window."""
    batched = [events.wait(lambda e, k=k: e.get("run_key") == k and "window_id" in e) for k in keys]
    windows = {e["window_id"] for e in batched}
    assert len(windows) == 1, windows
    [window_id] = windows
    assert {e["decision"] for e in batched} == {"batched"}
    return flushes.wait(
        lambda e: e.get("window_id") == window_id and e["decision"] == "submitted", timeout=90
    )


def manifest_of(record: Any) -> dict:
    return json.loads(gcs.read_bytes(record.parameters["data_uri"], max_bytes=16 << 20))


def run_count(stack: Stack) -> int:
    return len(stack.ledger().list(limit=1000))


def assert_succeeded(record: Any) -> None:
    assert record.state == "SUCCEEDED", (
        f"{record.job_id} {record.state}: {record.error}\nlog: {record.log_path}"
    )


@pytest.mark.skipif(NO_EMULATOR, reason=NO_EMULATOR_REASON)
def test_pubsub_path_runs_each_change_once(tmp_path: Path) -> None:
    with Stack(tmp_path / "stack", pubsub=True) as stack:
        assert stack.mode == "pubsub"
        started = dt.datetime.now(dt.UTC)
        seen = Decisions(stack)

        # A data change: each shard's notification travels fake-gcs-server → emulator → push →
        # function_gcs, which batches it; the ticker's flush closes the quiet window: one run.
        keys = write_folder(stack, "2026-11-27")
        flushes = Decisions(stack, "function-http")
        submitted = window_run(stack, seen, flushes, keys)
        shard_event = next(e for e in seen.read() if e.get("run_key") == keys[0])
        assert shard_event["trigger"]["source"] == "pubsub:gcs-notifications"
        assert shard_event["trigger"]["event_type"] == "OBJECT_FINALIZE"
        data_run = wait_run(stack, submitted["job_id"])
        assert_succeeded(data_run)
        assert data_run.outputs["registered"] is True
        manifest = manifest_of(data_run)
        assert sorted(f"{o['uri']}#{o['generation']}" for o in manifest["objects"]) == sorted(keys)
        champion = json.loads(
            gcs.read_bytes(f"{stack.registry_uri}/champion.json", max_bytes=1 << 20)
        )
        assert champion["version"] == data_run.outputs["version"]
        assert gcs.read_bytes(champion["model_uri"], max_bytes=64 << 20)

        # The same object's notification again: one run still.
        name = keys[0].split("#")[0].removeprefix(f"gs://{stack.bucket}/")
        resource = next(objects.iter_objects(stack.bucket, name))
        after = len(seen.read())
        replay.publish(stack.topic, replay.backfill_messages([resource]))
        again = seen.wait(lambda e: e.get("run_key") == keys[0], after=after)
        assert again["decision"] == "duplicate"
        assert again["job_id"] == submitted["job_id"]
        assert run_count(stack) == 1

        # A code change over HTTP: a second run.
        status, answer = post_json(stack.function_http_url + "/", CODE_CHANGE)
        assert (status, answer["decision"]) == (200, "submitted"), answer
        assert_succeeded(wait_run(stack, answer["job_id"]))
        assert run_count(stack) == 2
        status, repeat = post_json(stack.function_http_url + "/", CODE_CHANGE)
        assert (status, repeat["decision"], repeat["job_id"]) == (
            200,
            "duplicate",
            answer["job_id"],
        )

        # Seek the subscription back to the start: every message again, no new run.
        delivered = len({e["trigger"]["event_id"] for e in seen.read() if "trigger" in e})
        after = len(seen.read())
        replay.seek(stack.subscription, started - dt.timedelta(seconds=1))
        deadline = time.monotonic() + 60
        while len(seen.read()) - after < delivered and time.monotonic() < deadline:
            time.sleep(0.2)
        replayed = seen.read()[after:]
        assert len(replayed) >= delivered
        assert {e["decision"] for e in replayed} <= {"duplicate", "skipped"}
        assert run_count(stack) == 2


def test_poller_path_delivers_eventarc_events(tmp_path: Path) -> None:
    with Stack(tmp_path / "stack", pubsub=False, poll_interval=0.2) as stack:
        assert stack.mode == "poller"
        seen = Decisions(stack)

        keys = write_folder(stack, "2026-11-28", shards=1)
        submitted = window_run(stack, seen, Decisions(stack, "function-http"), keys)
        shard_event = next(e for e in seen.read() if e.get("run_key") == keys[0])
        assert shard_event["trigger"]["source"] == "eventarc"
        assert shard_event["trigger"]["event_type"] == "google.cloud.storage.object.v1.finalized"
        assert_succeeded(wait_run(stack, submitted["job_id"]))

        name = keys[0].split("#")[0].removeprefix(f"gs://{stack.bucket}/")
        resource = next(objects.iter_objects(stack.bucket, name))
        after = len(seen.read())
        assert (
            post_cloud_event(stack.function_gcs_url, objects.storage_cloud_event(resource)) == 200
        )
        assert (
            seen.wait(lambda e: e.get("run_key") == keys[0], after=after)["decision"] == "duplicate"
        )
        assert run_count(stack) == 1


@pytest.mark.skipif(NO_EMULATOR, reason=NO_EMULATOR_REASON)
def test_two_hundred_objects_in_one_window_make_one_run(tmp_path: Path) -> None:
    # A long quiet period, so that a slow push delivery cannot split the batch; the window is
    # then closed explicitly once every object is in it (retrain-trigger flush --now).
    with Stack(tmp_path / "stack", window_quiet_seconds=600, window_max_wait_seconds=3600) as stack:
        seen = Decisions(stack)
        started = time.monotonic()
        keys = write_folder(stack, "2026-11-30", shards=200)
        batched = [
            seen.wait(lambda e, k=k: e.get("run_key") == k and "window_id" in e, timeout=120)
            for k in keys
        ]
        assert len({e["window_id"] for e in batched}) == 1
        [decision] = stack.service().flush(force=True)
        assert decision.outcome == "submitted", decision
        record = wait_run(stack, decision.job_id, timeout=240)
        assert_succeeded(record)
        manifest = manifest_of(record)
        assert manifest["count"] == 200
        assert sorted(f"{o['uri']}#{o['generation']}" for o in manifest["objects"]) == sorted(keys)
        assert run_count(stack) == 1
        print(f"200 objects -> 1 run SUCCEEDED in {time.monotonic() - started:.1f} s")


def test_demo_passes_and_reports_json(tmp_path: Path) -> None:
    from retrain_trigger_dev.localstack.demo import run_demo

    narration, summary = io.StringIO(), io.StringIO()
    result = run_demo(
        narration, json_out=summary, pubsub=False, timeout=240, root=str(tmp_path / "demo")
    )

    report = json.loads(summary.getvalue())
    assert report["ok"], narration.getvalue()
    assert [s["name"] for s in report["steps"]] == [
        "stack", "data", "data_run", "champion", "why", "code_run", "redelivery", "replay", "teardown",
    ]  # fmt: skip
    assert all(s["ok"] for s in report["steps"])
    assert [r["state"] for r in report["runs"]] == ["SUCCEEDED", "SUCCEEDED"]
    assert report["champion"]["accuracy"] >= 0.9
    assert result.wall_seconds == pytest.approx(report["wall_seconds"], abs=0.01)


@pytest.mark.parametrize(
    ("signum", "reason"),
    [(signal.SIGTERM, "received SIGTERM"), (signal.SIGINT, "interrupted")],
    ids=["SIGTERM", "Ctrl-C"],
)
def test_stopping_up_leaves_no_process_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signum: int, reason: str
) -> None:
    stack_dir = tmp_path / "up"
    env = {k: v for k, v in os.environ.items() if not k.endswith("_EMULATOR_HOST")}
    up = subprocess.Popen(
        [sys.executable, "-m", "retrain_trigger_dev.cli", "up", "--dir", str(stack_dir)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Started as a script's background job is: with SIGINT ignored, which Python inherits.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = up.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            lines.append(line)
            if line.startswith("Decisions and runs"):
                break
        output = "".join(lines)
        assert "Decisions and runs" in output, output
        exported = dict(
            line.strip().removeprefix("export ").split("=", 1)
            for line in lines
            if line.strip().startswith("export ")
        )
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", exported["STORAGE_EMULATOR_HOST"])
        http_port = int(exported["RETRAIN_URL"].rsplit(":", 1)[1])

        # Start a run, so that pipeline processes are part of what must be stopped.
        folder = "gs://retrain-local/data/2026-11-29/"
        sampledata.write_shards(folder, shards=1)
        gcs.write_bytes(folder + MARKER, b"", if_generation_match=0)
        from retrain_trigger_dev.local.ledger import Ledger

        ledger = Ledger.for_state_dir(stack_dir / "state")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not ledger.list(state="RUNNING"):
            time.sleep(0.1)
        assert ledger.list(state="RUNNING"), "no run started"
        time.sleep(1.0)  # let the run's own processes start
        tree = descendants(up.pid)
        assert len(tree) >= 5, tree

        up.send_signal(signum)
        rest, _ = up.communicate(timeout=60)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()

    assert up.returncode == 0, rest
    assert f"Stopping the local stack ({reason})" in rest
    assert rest.rstrip().endswith("Stopped.")
    left = [pid for pid, start in tree if same_process_alive(pid, start)]
    assert left == [], f"left running: {left}"
    assert not port_open("127.0.0.1", http_port)
