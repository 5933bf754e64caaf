"""``retrain-trigger up`` as a child process for the end-to-end tests: started with the
arguments a user types, its output read line by line, stopped as a user stops it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import pytest

from retrain_trigger_dev.processes import descendants, same_process_alive

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "retrain_trigger_dev.cli"]


def env() -> dict[str, str]:
    """This environment without emulator hosts or RETRAIN_ settings: up sets its own."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("_EMULATOR_HOST") and not k.startswith("RETRAIN_")
    }


class Up:
    """``retrain-trigger up`` as a child process, its output read line by line."""

    def __init__(self, *args: str, stack_dir: Path) -> None:
        self.stack_dir = stack_dir
        self.process = subprocess.Popen(
            [*CLI, "up", *args, "--dir", str(stack_dir)],
            cwd=REPO,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []

    @property
    def stdout(self) -> IO[str]:
        assert self.process.stdout is not None
        return self.process.stdout

    def wait_for(self, text: str, timeout: float) -> str:
        """Reads lines until one contains ``text``; fails with the output so far."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if text in line:
                return line
        pytest.fail(f"{text!r} not printed in {timeout:.0f} s:\n{''.join(self.lines)}")

    def stop(self, signum: int = signal.SIGINT) -> str:
        """Stops ``up`` (Ctrl-C by default) and checks that nothing it started is left."""
        tree = descendants(self.process.pid)
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            rest, _ = self.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            rest, _ = self.process.communicate()
        left = [pid for pid, start in tree if same_process_alive(pid, start)]
        assert left == [], f"left running: {left}"
        return rest
