"""``retrain-trigger ui`` as a process: it binds 127.0.0.1 (any free port with ``--port 0``, and
says which), serves read-only pages with their security headers, warns when bound elsewhere,
refuses a port in use with a clear message, and stops on SIGTERM (Cloud Run's stop signal)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from retrain_trigger.store import SQLiteStore
from retrain_trigger_dev.ui.app import CSP
from tests.conftest import MNIST_TEMPLATE

CONFIG = """\
backend: local
store: sqlite
local:
  state_dir: {state_dir}
routes:
  - name: mnist
    template: {template}
    pipeline_root: gs://ct-bucket/pipeline-root
    parameters:
      data_uri: "{{data_uri}}"
      model_registry_uri: gs://ct-bucket/models
      commit_sha: "{{commit_sha}}"
      image_uri: "{{image_uri}}"
    data:
      bucket: ct-bucket
      include: ["data/**"]
      mode: window
    code: true
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    state_dir = tmp_path / "state"
    path = tmp_path / "retrain.yaml"
    path.write_text(CONFIG.format(state_dir=state_dir, template=MNIST_TEMPLATE))
    store = SQLiteStore.for_state_dir(state_dir)
    store.record_decision(
        {
            "time": time.time() - 10,
            "outcome": "skipped",
            "reason": "object is 0 bytes",
            "route": "mnist",
            "trigger": {"kind": "data", "bucket": "ct-bucket", "object": "data/<i>x</i>.csv"},
        },
        86400.0,
    )
    return path


def start(config: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRAIN_")}
    return subprocess.Popen(
        [sys.executable, "-m", "retrain_trigger_dev.cli", "--config", str(config), "ui", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.fixture
def served(config: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    process = start(config, "--port", "0")
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("Status page: http://127.0.0.1:"), line
        yield process, line.split()[2]
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def get(url: str) -> tuple[int, dict[str, str], str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def test_it_serves_on_loopback_and_stops_on_sigterm(
    served: tuple[subprocess.Popen[str], str],
) -> None:
    process, url = served
    status, headers, body = get(url)
    assert status == 200 and "Overview" in body
    assert headers["Content-Security-Policy"] == CSP
    assert "data/&lt;i&gt;x&lt;/i&gt;.csv" in body and "<i>x</i>" not in body
    assert get(url + "routes/mnist")[0] == 200
    assert get(url + "healthz")[2] == "ok\n"
    request = urllib.request.Request(url + "routes/mnist", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 405

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0


def test_a_port_in_use_is_a_clear_error(config: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        process = start(config, "--port", str(port))
        _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert f"cannot serve on 127.0.0.1:{port}: Address already in use" in err


def test_binding_beyond_loopback_warns(config: Path) -> None:
    process = start(config, "--host", "0.0.0.0", "--port", "0")
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("Status page: http://0.0.0.0:"), line
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    assert "the page has no sign-in of its own; keep it behind IAP or IAM" in err


def test_a_configuration_that_cannot_be_read_stops_it(tmp_path: Path) -> None:
    process = start(tmp_path / "missing.yaml", "--port", "0")
    out, err = process.communicate(timeout=60)
    assert process.returncode == 2 and out == ""
    assert "configuration file not found" in err
