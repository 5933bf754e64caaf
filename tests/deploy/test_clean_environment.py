"""Each function zip, unpacked into an empty folder and run by functions-framework in a virtual
environment that holds only its own requirements.txt, answers real requests: the same check Cloud
Functions' build makes, minus the cloud.

The environment is created once per requirements file and Python version under
``~/.cache/retrain-trigger/venvs/`` (pip downloads from PyPI the first time), so reruns are fast.
Vertex AI is the protocol-level fake of ``tests/fakes/vertex.py``, reached over HTTP.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import glob
import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from retrain_trigger_dev.packaging import build_function_zips
from tests.fakes.vertex import FakeVertex

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
MINIMAL_PIPELINE = REPO / "tests" / "fakes" / "minimal_pipeline.yaml"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "retrain-trigger" / "venvs"
SECRET = "clean-environment-test-secret-0123456789"
BUCKET = "ct-bucket"
CONFIG = f"""\
project: test-project
region: us-central1
backend: vertex
routes:
  - name: mnist
    template: pipeline.yaml
    pipeline_root: gs://ct-artifacts/pipeline-root
    parameters:
      data_uri: "{{data_uri}}"
      epochs: 2
    data:
      bucket: {BUCKET}
      include: ["data/**"]
    code: true
"""


def _python312() -> str:
    """Python 3.12 (the functions' runtime) when pyenv has one, else this machine's python3."""
    root = ""
    if shutil.which("pyenv"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            root = subprocess.run(
                ["pyenv", "root"], capture_output=True, text=True, timeout=30, check=True
            ).stdout.strip()
    root = root or os.path.expanduser("~/.pyenv")
    candidates = sorted(glob.glob(os.path.join(root, "versions", "3.12.*", "bin", "python")))
    if candidates:
        return candidates[-1]
    return shutil.which("python3.12") or shutil.which("python3") or sys.executable


def _clean_venv(requirements: bytes) -> Path:
    """A virtual environment with exactly these requirements, cached by their hash."""
    python = _python312()
    version = subprocess.run(
        [python, "-c", "import sys; print(sys.version)"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    key = hashlib.sha256(requirements + b"\0" + version.encode()).hexdigest()[:16]
    venv = CACHE / key
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (venv / ".complete").exists():
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120)
        (venv / "requirements.txt").write_bytes(requirements)
        result = subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                str(venv / "requirements.txt"),
            ],
            capture_output=True,
            text=True,
            timeout=1500,
            check=False,
        )
        if result.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            pytest.fail(f"pip install -r requirements.txt failed:\n{result.stderr[-4000:]}")
        (venv / ".complete").write_text(version)
    return venv


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _serve(source: Path, venv: Path, target: str, env: dict[str, str]) -> Iterator[str]:
    port = _free_port()
    base_env = {
        "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(source),
        "LANG": "C.UTF-8",
        "NO_PROXY": "127.0.0.1,localhost",
        "PYTHONDONTWRITEBYTECODE": "1",
        "RETRAIN_CONFIG": "retrain.yaml",
    }
    log = open(source.parent / f"{target}.log", "w+")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            str(venv / "bin" / "functions-framework"),
            "--target",
            target,
            "--source",
            "main.py",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=source,
        env={**base_env, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                log.seek(0)
                pytest.fail(
                    f"functions-framework exited {process.returncode}:\n{log.read()[-4000:]}"
                )
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline:
                pytest.fail("functions-framework did not start within 90 s")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
        log.close()


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _signed(body: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    signature = hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
    return raw, {"Content-Type": "application/json", "X-Retrain-Signature": f"sha256={signature}"}


def _object(name: str, generation: int, size: int) -> dict[str, str]:
    return {
        "kind": "storage#object",
        "id": f"{BUCKET}/{name}/{generation}",
        "name": name,
        "bucket": BUCKET,
        "generation": str(generation),
        "metageneration": "1",
        "contentType": "text/csv",
        "timeCreated": "2026-11-27T10:00:00.000Z",
        "updated": "2026-11-27T10:00:00.000Z",
        "size": str(size),
    }


def _push_body(name: str, generation: int, size: int, message_id: str) -> bytes:
    """What a Pub/Sub push subscription posts for a GCS OBJECT_FINALIZE notification."""
    data = base64.b64encode(json.dumps(_object(name, generation, size)).encode()).decode()
    message = {
        "attributes": {
            "bucketId": BUCKET,
            "objectId": name,
            "objectGeneration": str(generation),
            "eventType": "OBJECT_FINALIZE",
            "eventTime": "2026-11-27T10:00:00.000000Z",
            "notificationConfig": f"projects/_/buckets/{BUCKET}/notificationConfigs/1",
            "payloadFormat": "JSON_API_V1",
        },
        "data": data,
        "messageId": message_id,
        "message_id": message_id,
        "publishTime": "2026-11-27T10:00:01.000Z",
        "publish_time": "2026-11-27T10:00:01.000Z",
    }
    return json.dumps(
        {"message": message, "subscription": "projects/test-project/subscriptions/events-push"}
    ).encode()


@pytest.fixture(scope="module")
def zips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    for folder in ("function_http", "function_gcs"):
        if not (REPO / folder / "main.py").exists():
            pytest.skip(f"{folder}/main.py is not in this tree")
    config_dir = tmp_path_factory.mktemp("config")
    (config_dir / "retrain.yaml").write_text(CONFIG)
    shutil.copy(MINIMAL_PIPELINE, config_dir / "pipeline.yaml")
    return build_function_zips(REPO, tmp_path_factory.mktemp("dist"), config_dir / "retrain.yaml")


def _unpack(zip_path: Path, tmp_path: Path) -> tuple[Path, Path]:
    source = tmp_path / "source"
    source.mkdir()
    assert list(source.iterdir()) == []
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(source)
    venv = _clean_venv((source / "requirements.txt").read_bytes())
    return source, venv


@pytest.fixture
def fake_vertex_server() -> Iterator[FakeVertex]:
    fake = FakeVertex().start()
    try:
        yield fake
    finally:
        fake.stop()


def test_http_function_from_its_zip(
    zips: dict[str, Path], tmp_path: Path, fake_vertex_server: FakeVertex
) -> None:
    source, venv = _unpack(zips["function_http"], tmp_path)
    env = {
        "RETRAIN_AUTH": "hmac",
        "RETRAIN_HMAC_SECRET": SECRET,
        "RETRAIN_VERTEX_ENDPOINT": fake_vertex_server.endpoint,
    }
    trigger = {
        "kind": "code",
        "commit_sha": "0123456789abcdef0123456789abcdef01234567",
        "image_uri": "europe-west1-docker.pkg.dev/p/retrain-images/mnist-training@sha256:"
        + "a" * 64,
        "build_id": "7f3a2c1e-0000-4000-8000-000000000001",
        "branch": "main",
    }
    with _serve(source, venv, "retrain_http", env) as url:
        raw, headers = _signed({**trigger, "dry_run": True})
        status, answer = _post(url, raw, headers)
        assert status == 200, answer
        body = json.loads(answer)
        assert body["dry_run"] is True and body["decision"] == "skipped"
        assert len(fake_vertex_server.jobs) == 0

        status, answer = _post(url, raw, {"Content-Type": "application/json"})
        assert status == 401, answer

        raw, headers = _signed(trigger)
        status, answer = _post(url, raw, headers)
        assert status == 200, answer
        submitted = json.loads(answer)
        assert submitted["decision"] == "submitted", submitted
        assert len(fake_vertex_server.jobs) == 1

        status, answer = _post(url, raw, headers)
        assert status == 200, answer
        again = json.loads(answer)
        assert again["decision"] == "duplicate", again
        assert again["job_id"] == submitted["job_id"]
        assert len(fake_vertex_server.jobs) == 1


def test_event_function_from_its_zip(
    zips: dict[str, Path], tmp_path: Path, fake_vertex_server: FakeVertex
) -> None:
    source, venv = _unpack(zips["function_gcs"], tmp_path)
    env = {"RETRAIN_VERTEX_ENDPOINT": fake_vertex_server.endpoint}
    push_headers = {"Content-Type": "application/json"}
    with _serve(source, venv, "retrain_event", env) as url:
        # A folder placeholder is skipped: acknowledged, nothing submitted.
        status, answer = _post(url, _push_body("data/2026-11-27/", 1, 0, "1"), push_headers)
        assert status == 200, answer
        assert len(fake_vertex_server.jobs) == 0

        # A new object, as the push subscription delivers it, starts one run ...
        body = _push_body("data/2026-11-27/part-0001.csv", 1764237600000001, 2048, "2")
        status, answer = _post(url, body, push_headers)
        assert status == 200, answer
        assert len(fake_vertex_server.jobs) == 1

        # ... and its redelivery none.
        status, answer = _post(url, body, push_headers)
        assert status == 200, answer
        assert len(fake_vertex_server.jobs) == 1

        # Eventarc's direct delivery: a binary-mode CloudEvent.
        obj = _object("data/2026-11-27/part-0002.csv", 1764237600000002, 4096)
        status, answer = _post(
            url,
            json.dumps(obj).encode(),
            {
                "Content-Type": "application/json",
                "ce-specversion": "1.0",
                "ce-id": "eventarc-1",
                "ce-type": "google.cloud.storage.object.v1.finalized",
                "ce-source": f"//storage.googleapis.com/projects/_/buckets/{BUCKET}",
                "ce-subject": f"objects/{obj['name']}",
                "ce-time": "2026-11-27T10:00:02Z",
            },
        )
        assert status == 200, answer
        assert len(fake_vertex_server.jobs) == 2
