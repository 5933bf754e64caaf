"""``retrain-trigger up`` serves the status page over the stack's store and prints its URL."""

from __future__ import annotations

import signal
import socket
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.upkit import Up

pytestmark = [pytest.mark.slow, pytest.mark.emulator]


def test_up_prints_the_status_page_and_serves_it(tmp_path: Path) -> None:
    up = Up("--no-pubsub", stack_dir=tmp_path)
    try:
        up.wait_for("Decisions and runs", timeout=90)
        output = "".join(up.lines)
        [page] = [line.split()[-1] for line in up.lines if line.strip().startswith("status page")]
        assert page.startswith("http://127.0.0.1:"), output
        with urllib.request.urlopen(page + "routes/mnist", timeout=30) as response:
            body = response.read().decode()
        assert response.status == 200 and 'Route <span id="route-name">mnist</span>' in body
        rest = up.stop(signal.SIGTERM)
    finally:
        if up.process.poll() is None:
            up.process.kill()
            up.process.wait()
    assert up.process.returncode == 0, rest
    port = int(page.rstrip("/").rsplit(":", 1)[1])
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0
