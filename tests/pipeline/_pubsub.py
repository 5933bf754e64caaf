"""gcloud's Pub/Sub emulator for the pipeline tests: started once per session, topics per test.

The emulator is the ``cloud-pubsub-emulator`` launcher of the gcloud SDK's ``pubsub-emulator``
component (what ``gcloud beta emulators pubsub start`` runs; it needs Java). Clients reach it
through ``PUBSUB_EMULATOR_HOST`` (https://cloud.google.com/pubsub/docs/emulator), which the
pipeline steps started by ``kfp.local`` inherit from the test's environment.
"""

from __future__ import annotations

import contextlib
import json
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

LAUNCHER = Path("platform") / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator"
START_TIMEOUT = 60.0
PROJECT = "test-project"


def launcher() -> Path | None:
    """The emulator's launcher in the gcloud SDK, or None when gcloud does not have it."""
    roots = []
    if os.environ.get("CLOUDSDK_ROOT_DIR"):
        roots.append(Path(os.environ["CLOUDSDK_ROOT_DIR"]))
    gcloud = shutil.which("gcloud")
    if gcloud:
        roots.append(Path(gcloud).resolve().parent.parent)
    return next((root / LAUNCHER for root in roots if (root / LAUNCHER).is_file()), None)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def _ready(log_path: Path, port: int) -> bool:
    """Ours is up, not another server that took the port: our own log says it listens there."""
    started = f"listening on {port}" in log_path.read_text(errors="replace")
    return started and _answers(f"http://127.0.0.1:{port}/")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)


@dataclass
class Received:
    data: dict[str, Any]
    attributes: dict[str, str]


@dataclass
class PubSubEmulator:
    host: str
    process: subprocess.Popen[bytes]
    log_path: Path
    _clients: dict[str, Any] = field(default_factory=dict)

    def _client(self, kind: str) -> Any:
        """Publisher / subscriber clients for the emulator (``PUBSUB_EMULATOR_HOST`` must be set)."""
        if kind not in self._clients:
            from google.cloud import pubsub_v1

            assert os.environ.get("PUBSUB_EMULATOR_HOST") == self.host
            make = pubsub_v1.PublisherClient if kind == "pub" else pubsub_v1.SubscriberClient
            self._clients[kind] = make()
        return self._clients[kind]

    def topic_with_subscription(self) -> tuple[str, str]:
        """A new topic and a pull subscription to it: ``(topic path, subscription path)``."""
        suffix = uuid.uuid4().hex[:12]
        topic = f"projects/{PROJECT}/topics/outcomes-{suffix}"
        subscription = f"projects/{PROJECT}/subscriptions/outcomes-{suffix}"
        self._client("pub").create_topic(name=topic)
        self._client("sub").create_subscription(name=subscription, topic=topic)
        return topic, subscription

    def drain(self, subscription: str, deadline: float = 30.0) -> list[Received]:
        """Every message waiting on ``subscription``, acknowledged.

        The reports are published synchronously before a pipeline run returns, so all of them
        are stored by the time this is called: pulls go on until one comes back empty.
        """
        subscriber = self._client("sub")
        received: list[Received] = []
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            response = subscriber.pull(subscription=subscription, max_messages=100, timeout=2.0)
            if not response.received_messages:
                break
            subscriber.acknowledge(
                subscription=subscription,
                ack_ids=[m.ack_id for m in response.received_messages],
            )
            received.extend(
                Received(json.loads(m.message.data), dict(m.message.attributes))
                for m in response.received_messages
            )
        return received


@contextlib.contextmanager
def running_emulator(log_dir: Path) -> Iterator[PubSubEmulator]:
    """Start the emulator on a free port of 127.0.0.1 (retrying if the port was taken)."""
    command = launcher()
    assert command is not None
    env = {**os.environ, "JAVA_OPTS": os.environ.get("JAVA_OPTS", "-Xss1m -XX:+UseSerialGC")}
    process = None
    for attempt in range(3):  # the free port may be taken before the emulator binds it
        port = _free_port()
        host = f"127.0.0.1:{port}"
        log_path = log_dir / f"pubsub-emulator-{attempt}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [str(command), "--host=127.0.0.1", f"--port={port}"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        end = time.monotonic() + START_TIMEOUT
        while process.poll() is None and time.monotonic() < end and not _ready(log_path, port):
            time.sleep(0.1)
        if process.poll() is None and _ready(log_path, port):
            break
        _stop(process)
    else:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"the Pub/Sub emulator did not start; its log:\n{tail}")
    try:
        yield PubSubEmulator(host=host, process=process, log_path=log_path)
    finally:
        _stop(process)
