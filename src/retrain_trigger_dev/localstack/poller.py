"""The bucket poller: Eventarc-style delivery for a stack without the Pub/Sub emulator.

Every ``interval`` seconds it lists the bucket (under ``prefix``), and for each object version
(name + generation) it has not delivered yet it POSTs a ``google.cloud.storage.object.v1.finalized``
CloudEvent in HTTP binary mode to the event function, as Eventarc does. A delivery that fails
with a connection error or a 5xx answer (the function raised) is retried on the next polls, with
a bounded number of attempts; a 4xx answer is final. Objects present when the poller starts are
not delivered unless ``deliver_existing``.
"""

from __future__ import annotations

import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from retrain_trigger_dev.localstack import objects

log = logging.getLogger(__name__)

Lister = Callable[[str, str], Iterable[Mapping[str, Any]]]
Sender = Callable[[str, Any], int]

MAX_ATTEMPTS = 10


def post_cloud_event(url: str, event: Any, *, timeout: float = 30.0) -> int:
    """POSTs a CloudEvent in binary mode; returns the HTTP status (connection errors raise)."""
    from cloudevents.conversion import to_binary

    headers, body = to_binary(event)
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.read()
        return int(exc.code)


def _list(bucket: str, prefix: str) -> Iterable[Mapping[str, Any]]:
    return objects.iter_objects(bucket, prefix)


@dataclass
class Delivery:
    key: str
    status: int
    error: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class BucketPoller:
    def __init__(
        self,
        bucket: str,
        url: str,
        *,
        prefix: str = "",
        interval: float = 1.0,
        deliver_existing: bool = False,
        lister: Lister | None = None,
        sender: Sender | None = None,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self.bucket = bucket
        self.url = url
        self.prefix = prefix
        self.interval = interval
        self.deliver_existing = deliver_existing
        self._list = lister or _list
        self._send = sender or post_cloud_event
        self.max_attempts = max_attempts
        self.seen: dict[str, str] = {}  # object name -> last generation delivered (or given up on)
        self.attempts: dict[str, int] = {}
        self.delivered: list[Delivery] = []
        self._primed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0

    def prime(self) -> None:
        """Remembers what exists now, so that only later writes are delivered."""
        if not self.deliver_existing:
            for resource in self._list(self.bucket, self.prefix):
                self.seen[str(resource["name"])] = str(resource.get("generation", ""))
        self._primed = True

    def poll_once(self) -> list[Delivery]:
        """One listing; delivers every new object version. Returns this round's deliveries."""
        if not self._primed:
            self.prime()
        out: list[Delivery] = []
        for resource in self._list(self.bucket, self.prefix):
            name = str(resource["name"])
            generation = str(resource.get("generation", ""))
            if self.seen.get(name) == generation:
                continue
            if name.endswith("/"):
                self.seen[name] = generation
                continue
            out.append(self._deliver(name, generation, resource))
        self.delivered.extend(out)
        return out

    def _deliver(self, name: str, generation: str, resource: Mapping[str, Any]) -> Delivery:
        key = objects.object_key(resource)
        try:
            status = self._send(self.url, objects.storage_cloud_event(resource))
            error = "" if status < 500 else f"HTTP {status}"
        except OSError as exc:
            status, error = 0, f"{type(exc).__name__}: {exc}"
        if status and status < 500:
            self.seen[name] = generation
            self.attempts.pop(key, None)
            if status >= 400:
                log.warning("event for %s refused with HTTP %s; not retried", key, status)
        else:
            attempts = self.attempts.get(key, 0) + 1
            self.attempts[key] = attempts
            self.errors += 1
            if attempts >= self.max_attempts:
                log.error("giving up on %s after %d attempts: %s", key, attempts, error)
                self.seen[name] = generation
                self.attempts.pop(key, None)
            else:
                log.warning(
                    "delivery of %s failed (%s); retrying (attempt %d)", key, error, attempts
                )
        return Delivery(key=key, status=status, error=error)

    # ------------------------------------------------------------------ thread

    def run(self, stop: threading.Event | None = None) -> None:
        stop = stop or self._stop
        while not stop.is_set():
            try:
                self.poll_once()
            except Exception as exc:  # keep polling: the bucket may be restarting
                self.errors += 1
                log.warning("bucket poll failed: %s: %s", type(exc).__name__, exc)
            stop.wait(self.interval)

    def start(self) -> BucketPoller:
        self.prime()
        self._thread = threading.Thread(target=self.run, name="bucket-poller", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
