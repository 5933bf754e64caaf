"""A progress line on stderr for every wait longer than a moment.

``with waiting("starting the local stack"):`` shows, once the wait has lasted ``after`` seconds, a
spinner with the seconds elapsed on a terminal (redrawn in place, erased at the end). Nothing is
shown for a wait shorter than ``after`` (quick commands stay quiet), nor when stderr is not a
terminal (a log file or CI gets no control characters, and no thread is started).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO

FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class Progress:
    def __init__(
        self,
        what: str,
        stream: IO[str] | None = None,
        *,
        after: float = 2.0,
        interval: float = 0.2,
        tty: bool | None = None,
    ) -> None:
        self.what = what
        self.stream = stream or sys.stderr
        self.after = after
        self.interval = interval
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty()) if tty is None else tty
        self.shown = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0

    def line(self, frame: int, elapsed: float) -> str:
        return f"\r{FRAMES[frame % len(FRAMES)]} {self.what} … {elapsed:.0f} s"

    def _run(self) -> None:
        if self._stop.wait(self.after):
            return
        frame = 0
        while True:
            self._write(self.line(frame, time.monotonic() - self._started))
            frame += 1
            if self._stop.wait(self.interval):
                return

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
            self.shown = True
        except (OSError, ValueError):  # a closed stream: progress is never worth failing over
            self._stop.set()

    def start(self) -> Progress:
        self._started = time.monotonic()
        if not self.tty:
            return self
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.shown and self.tty:
            self._write("\r\033[K")


@contextlib.contextmanager
def waiting(
    what: str, stream: IO[str] | None = None, *, after: float = 2.0, tty: bool | None = None
) -> Iterator[Progress]:
    progress = Progress(what, stream, after=after, tty=tty).start()
    try:
        yield progress
    finally:
        progress.stop()
