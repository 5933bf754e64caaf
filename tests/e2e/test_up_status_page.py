"""``retrain-trigger up`` serves the status page over the stack's store and prints its URL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.emulator]

REPO = Path(__file__).resolve().parents[2]


def test_up_prints_the_status_page_and_serves_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_EMULATOR_HOST")}
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "retrain_trigger_dev.cli",
            "up",
            "--no-pubsub",
            "--dir",
            str(tmp_path),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
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
        [page] = [line.split()[-1] for line in lines if line.strip().startswith("status page")]
        assert page.startswith("http://127.0.0.1:"), output
        with urllib.request.urlopen(page + "routes/mnist", timeout=30) as response:
            body = response.read().decode()
        assert response.status == 200 and 'Route <span id="route-name">mnist</span>' in body
        up.send_signal(signal.SIGTERM)
        rest, _ = up.communicate(timeout=60)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    assert up.returncode == 0, rest
    port = int(page.rstrip("/").rsplit(":", 1)[1])
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0
