"""The local stack's pure parts: event building, the bucket poller, replay, supervision."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from retrain_trigger_dev.localstack import objects
from retrain_trigger_dev.localstack.poller import BucketPoller, post_cloud_event
from retrain_trigger_dev.localstack.supervisor import (
    ServiceSpec,
    StackError,
    Supervisor,
    Terminated,
    terminate_on_signals,
)
from retrain_trigger_dev.processes import descendants, same_process_alive
from tests import localkit
from tests.localkit import FakeBucket, FakeSender, resource


@pytest.fixture
def stack_config() -> Any:
    return localkit.stack_config()


@pytest.fixture
def marker_config() -> Any:
    return localkit.stack_config("marker")


# --------------------------------------------------------------------------- event building


def _binary(event: Any) -> tuple[dict[str, str], bytes]:
    from cloudevents.conversion import to_binary

    headers, body = to_binary(event)
    return dict(headers), body


@pytest.mark.emulator
def test_iter_objects_lists_real_resources(fake_gcs: Any) -> None:
    from retrain_trigger import gcs

    client = gcs.client()
    client.create_bucket("localstack-unit")
    gcs.write_bytes("gs://localstack-unit/data/a.csv", b"label\n1\n", content_type="text/csv")
    gcs.write_bytes("gs://localstack-unit/other/b.csv", b"x")

    listed = list(objects.iter_objects("localstack-unit", "data/"))

    assert [r["name"] for r in listed] == ["data/a.csv"]
    assert listed[0]["size"] == "8"
    assert int(listed[0]["generation"]) > 0


# --------------------------------------------------------------------------- the poller


@pytest.fixture
def bucket() -> FakeBucket:
    return FakeBucket()


@pytest.fixture
def sender() -> FakeSender:
    return FakeSender()


def test_poller_thread_survives_listing_errors(sender: FakeSender) -> None:
    calls = {"n": 0}

    def flaky(bucket: str, prefix: str) -> list[dict[str, Any]]:
        calls["n"] += 1
        if calls["n"] in (2, 3):
            raise ConnectionError("bucket restarting")
        return [resource("data/a.csv", "9")] if calls["n"] > 3 else []

    poller = BucketPoller(
        "ct-bucket", "http://fn", lister=flaky, sender=sender, interval=0.01
    ).start()
    deadline = time.monotonic() + 5
    while not sender.sent and time.monotonic() < deadline:
        time.sleep(0.01)
    poller.stop()

    assert sender.sent == [("objects/data/a.csv", "9")]
    assert poller.errors >= 2


@pytest.fixture
def capture_server() -> Iterator[tuple[str, list[tuple[str, dict[str, str], bytes]]]]:
    received: list[tuple[str, dict[str, str], bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204 if len(received) == 1 else 503)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


def test_post_cloud_event_uses_http_binary_mode(capture_server: Any) -> None:
    url, received = capture_server
    event = objects.storage_cloud_event(resource("data/a.csv"))

    assert post_cloud_event(url + "/", event) == 204
    assert post_cloud_event(url + "/", event) == 503

    path, headers, body = received[0]
    assert path == "/"
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-type"] == "google.cloud.storage.object.v1.finalized"
    assert headers["ce-subject"] == "objects/data/a.csv"
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["name"] == "data/a.csv"


# --------------------------------------------------------------------------- replay


NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


BACKFILL = [
    resource("data/d/a.csv", "3"),
    resource("data/d/_SUCCESS", "4", size="0"),
    resource("models/champion.json", "5"),
]


class FakeFuture:
    def __init__(self, value: str | Exception) -> None:
        self.value = value

    def result(self, timeout: float | None = None) -> str:
        if isinstance(self.value, Exception):
            raise self.value
        return self.value


# --------------------------------------------------------------------------- stack configuration


# --------------------------------------------------------------------------- supervision

PY = sys.executable


def test_supervisor_stops_a_child_that_ignores_sigterm(tmp_path: Path) -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    with Supervisor(tmp_path) as sup:
        child = sup.start(
            ServiceSpec(
                "stubborn",
                [PY, "-c", code],
                ready=lambda: "ready" in (tmp_path / "stubborn.log").read_text().splitlines(),
                stop_timeout=0.5,
            )
        )
        sup.wait_ready(child, timeout=10)
        started = time.monotonic()
        sup.stop(child)

    assert child.process.returncode == -signal.SIGKILL
    assert time.monotonic() - started < 5


def test_supervisor_stops_descendants_that_left_the_group(tmp_path: Path) -> None:
    code = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True)\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    log = tmp_path / "parent.log"
    sup = Supervisor(tmp_path)
    child = sup.start(
        ServiceSpec(
            "parent", [PY, "-c", code], ready=lambda: log.read_text().splitlines()[-1].isdigit()
        )
    )
    sup.wait_ready(child, timeout=10)
    grandchild = int(log.read_text().splitlines()[-1])
    tree = descendants(child.pid)
    assert grandchild in [pid for pid, _ in tree]

    sup.stop_all(timeout=2)

    assert not [pid for pid, start in tree if same_process_alive(pid, start)]
    assert sup.children == []


def test_wait_ready_reports_an_early_exit_with_the_log_tail(tmp_path: Path) -> None:
    with Supervisor(tmp_path) as sup:
        child = sup.start(
            ServiceSpec(
                "broken",
                [PY, "-c", "import sys; print('bad flag -x'); sys.exit(3)"],
                ready=lambda: False,
            )
        )
        with pytest.raises(
            StackError, match=r"(?s)broken exited with status 3 while starting.*bad flag -x"
        ):
            sup.wait_ready(child, timeout=10)


def test_wait_ready_times_out(tmp_path: Path) -> None:
    with Supervisor(tmp_path) as sup:
        child = sup.start(
            ServiceSpec("slow", [PY, "-c", "import time; time.sleep(30)"], ready=lambda: False)
        )
        with pytest.raises(StackError, match="slow was not ready after 0 s"):
            sup.wait_ready(child, timeout=0.3)


def test_start_reports_a_missing_program(tmp_path: Path) -> None:
    with (
        Supervisor(tmp_path) as sup,
        pytest.raises(StackError, match="missing: cannot start /nonexistent/x"),
    ):
        sup.start(ServiceSpec("missing", ["/nonexistent/x"]))


def test_terminate_on_signals_turns_sigterm_into_an_interrupt() -> None:
    with pytest.raises(Terminated, match="SIGTERM"), terminate_on_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(
        signal.getsignal(signal.SIGTERM)
    )


def test_terminate_on_signals_makes_ctrl_c_interrupt_where_sigint_was_ignored() -> None:
    """A script's background job starts with SIGINT ignored; inside the block it interrupts."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with pytest.raises(KeyboardInterrupt), terminate_on_signals():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # restored after the block
    finally:
        signal.signal(signal.SIGINT, previous)


# --------------------------------------------------------------------------- commands
