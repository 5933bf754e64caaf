"""Emulators shared by the integration tests, started once per session, and the state stores
on them."""

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
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.clock import Clock

FIRESTORE_JAR = Path("platform") / "cloud-firestore-emulator" / "cloud-firestore-emulator.jar"
FIRESTORE_MAIN = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"
FIRESTORE_START_TIMEOUT = 60.0
FIRESTORE_START_ATTEMPTS = 5
READY_LINE = "Dev App Server is now running"


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


def _candidate_port() -> int:
    """A port that was free a moment ago. Another process may take it before the emulator binds
    it: the caller sees the emulator exit with "Address already in use" and tries another."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def _start_emulator(java: str, jar: Path, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(
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


def _wait_ready(process: subprocess.Popen[bytes], host: str, log_path: Path) -> str:
    """``ready``, ``port taken`` (the emulator exited on EADDRINUSE) or what went wrong.

    Ready means this very process printed that it serves (it does so only after binding the
    port) and the port answers: a server of someone else's on a reused port is never taken for
    the emulator.
    """
    deadline = time.monotonic() + FIRESTORE_START_TIMEOUT
    while time.monotonic() < deadline:
        text = _read(log_path)
        if process.poll() is not None:
            if "Address already in use" in text:
                return "port taken"
            return f"exited with status {process.returncode}"
        if READY_LINE in text and _answers(f"http://{host}/"):
            return "ready"
        time.sleep(0.05)  # polling the condition above, bounded by the deadline
    return f"not ready after {FIRESTORE_START_TIMEOUT:.0f}s"


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


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
    log_dir = tmp_path_factory.mktemp("firestore-emulator")
    started = time.monotonic()
    for attempt in range(1, FIRESTORE_START_ATTEMPTS + 1):
        port = _candidate_port()
        host = f"127.0.0.1:{port}"
        log_path = log_dir / f"emulator-{attempt}.log"
        process = _start_emulator(java, jar, port, log_path)
        state = _wait_ready(process, host, log_path)
        if state == "ready":
            break
        _stop(process)
        if state != "port taken":
            pytest.fail(
                f"the Firestore emulator did not start ({state}); its log:\n{_tail(log_path)}"
            )
    else:
        pytest.fail(
            f"the Firestore emulator found no free port in {FIRESTORE_START_ATTEMPTS} attempts; "
            f"its last log:\n{_tail(log_path)}"
        )
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


# --------------------------------------------------------------------------- state stores


@dataclass
class StoreBacking:
    """One state store's data (an SQLite file, or a Firestore project on the emulator) that any
    number of store objects open, as separate function instances do."""

    kind: str
    state_dir: str = ""
    project: str = ""
    opened: list[Any] = field(default_factory=list)

    def open(self, **kwargs: Any) -> Any:
        """A new store object on this data (``clock``, ``retention_seconds`` ...)."""
        from retrain_trigger.config import Config
        from retrain_trigger.store import open_store

        if self.kind == "sqlite":
            config = Config(routes=(), store="sqlite", state_dir=self.state_dir)
        else:
            config = Config(routes=(), store="firestore", project=self.project)
        store = open_store(config, **kwargs)
        self.opened.append(store)
        return store

    def count(self, table: str) -> int:
        """How many records a table (SQLite) or collection (Firestore) holds, expired or not."""
        if self.kind == "sqlite":
            import sqlite3

            from retrain_trigger.store.sqlite import state_path

            with contextlib.closing(sqlite3.connect(state_path(self.state_dir))) as conn:
                return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
        from google.cloud import firestore

        client = firestore.Client(project=self.project)
        try:
            return sum(1 for _ in client.collection(f"retrain_{table}").select([]).stream())
        finally:
            client.close()

    def close(self) -> None:
        for store in self.opened:
            with contextlib.suppress(Exception):
                store.close()


@pytest.fixture(params=["sqlite", "firestore"])
def store_backing(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[StoreBacking]:
    """The data of one state store, for each implementation: SQLite, and Firestore on its
    emulator (a project of its own, cleared afterwards)."""
    if request.param == "sqlite":
        backing = StoreBacking("sqlite", state_dir=str(tmp_path / "state"))
    else:
        emulator = request.getfixturevalue("firestore_emulator")
        monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", emulator.host)
        backing = StoreBacking("firestore", project=f"store-{uuid.uuid4().hex[:12]}")
        request.addfinalizer(lambda: emulator.clear(backing.project))
    try:
        yield backing
    finally:
        backing.close()


@pytest.fixture
def clock() -> Clock:
    """The clock a ``store`` reads (``tests/clock.py``), set by hand."""
    return Clock()


@pytest.fixture
def store(store_backing: Any, clock: Clock) -> Any:
    """A store of each implementation (``store_backing``), reading ``clock``."""
    return store_backing.open(clock=clock)
