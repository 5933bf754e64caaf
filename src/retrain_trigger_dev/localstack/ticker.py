"""The local stand-in for Cloud Scheduler: POST ``/flush`` to function_http every few seconds.

In production a Cloud Scheduler job calls the HTTP function's ``/flush`` every minute to close the
batch windows that are due and to start queued runs; the local stack does the same, more often.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request

log = logging.getLogger(__name__)


class FlushTicker:
    def __init__(self, url: str, *, interval: float = 1.0, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/") + "/flush"
        self.interval = interval
        self.timeout = timeout
        self.ticks = 0
        self.flushed = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> list[dict]:
        """One flush; returns the decisions it answered (empty when nothing was due)."""
        request = urllib.request.Request(
            self.url, data=b"{}", headers={"Content-Type": "application/json"}, method="POST"
        )
        self.ticks += 1
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:  # 503: a window failed and stays due; next tick
            self.failures += 1
            try:
                body = json.loads(exc.read() or b"{}")
            except ValueError:
                body = {}
        except (OSError, ValueError) as exc:
            self.failures += 1
            log.debug("flush failed: %s", exc)
            return []
        flushed = list(body.get("flushed") or [])
        self.flushed += len(flushed)
        return flushed

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()

    def start(self) -> FlushTicker:
        self._thread = threading.Thread(target=self._run, name="flush-ticker", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 1)
            self._thread = None
