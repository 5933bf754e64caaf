"""Emulators shared by the integration tests, started once per session."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

FIRESTORE_JAR = Path("platform") / "cloud-firestore-emulator" / "cloud-firestore-emulator.jar"
FIRESTORE_MAIN = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"
FIRESTORE_START_TIMEOUT = 60.0


@dataclass
class FirestoreEmulator:
    """A running Firestore emulator. Point clients at it with ``FIRESTORE_EMULATOR_HOST=host``."""

    host: str
    process: subprocess.Popen[bytes]
    log_path: Path
    start_seconds: float

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def clear(self, project: str, database: str = "(default)") -> None:
        """Deletes every document of one project's database."""
        request = urllib.request.Request(
            f"{self.url}/emulator/v1/projects/{project}/databases/{database}/documents",
            method="DELETE",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()


def _sdk_roots(gcloud: str) -> Iterator[Path]:
    if os.environ.get("CLOUDSDK_ROOT_DIR"):
        yield Path(os.environ["CLOUDSDK_ROOT_DIR"])
    yield Path(gcloud).resolve().parent.parent
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            [gcloud, "info", "--format=value(installation.sdk_root)"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
        if out:
            yield Path(out)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def firestore_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FirestoreEmulator]:
    """gcloud's Firestore emulator on a free port of 127.0.0.1, for the whole session.

    The emulator's jar is run with Java directly (what ``gcloud emulators firestore start`` does,
    without the wrapper processes), so stopping it stops everything. Skipped only when gcloud or
    Java is not installed. Tests keep their data apart with a project id of their own, or clear
    it with :meth:`FirestoreEmulator.clear`.
    """
    java = shutil.which("java")
    gcloud = shutil.which("gcloud")
    if gcloud is None or java is None:
        missing = " and ".join(n for n, p in (("gcloud", gcloud), ("java", java)) if p is None)
        pytest.skip(f"Firestore emulator unavailable: {missing} not installed")
    jar = next(
        (root / FIRESTORE_JAR for root in _sdk_roots(gcloud) if (root / FIRESTORE_JAR).is_file()),
        None,
    )
    if jar is None:
        pytest.fail(
            "gcloud is installed but its Firestore emulator is not: run "
            "`gcloud components install cloud-firestore-emulator` "
            "(or install the google-cloud-cli-firestore-emulator package)"
        )
    log_path = tmp_path_factory.mktemp("firestore-emulator") / "emulator.log"
    started = time.monotonic()
    for _ in range(3):  # the free port may be taken before the emulator binds it
        port = _free_port()
        host = f"127.0.0.1:{port}"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [
                    java,
                    "-Duser.language=en",
                    "-cp",
                    str(jar),
                    FIRESTORE_MAIN,
                    "start",
                    "--host=127.0.0.1",
                    f"--port={port}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + FIRESTORE_START_TIMEOUT
        while process.poll() is None and time.monotonic() < deadline:
            if _answers(f"http://{host}/"):
                break
            time.sleep(0.1)
        if process.poll() is None and _answers(f"http://{host}/"):
            break
        _stop(process)
    else:
        pytest.fail(f"the Firestore emulator did not start; its log:\n{_tail(log_path)}")
    emulator = FirestoreEmulator(
        host=host,
        process=process,
        log_path=log_path,
        start_seconds=time.monotonic() - started,
    )
    try:
        yield emulator
    finally:
        _stop(process)
