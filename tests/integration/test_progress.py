"""The progress line on stderr (a thread draws it, so it is tested here, not with the pure unit
tests): shown only on a terminal and only for a wait longer than ``after``, erased at the end."""

from __future__ import annotations

import io
import threading

from retrain_trigger_dev.progress import Progress, waiting


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_long_wait_on_a_terminal_shows_a_spinner_and_erases_it() -> None:
    stream = Terminal()
    drawn = threading.Event()
    original = stream.write

    def write(text: str) -> int:
        if text.startswith("\r") and "…" in text:
            drawn.set()
        return original(text)

    stream.write = write  # type: ignore[method-assign]
    with waiting("starting the stack", stream, after=0.0):
        assert drawn.wait(10), "no progress line drawn"
    text = stream.getvalue()
    assert "starting the stack … 0 s" in text
    assert text.endswith("\r\033[K")


def test_a_short_wait_shows_nothing() -> None:
    stream = Terminal()
    with waiting("quick", stream, after=60.0):
        pass
    assert stream.getvalue() == ""


def test_nothing_is_drawn_and_no_thread_started_off_a_terminal() -> None:
    stream = io.StringIO()
    before = threading.active_count()
    progress = Progress("piped", stream, after=0.0).start()
    assert threading.active_count() == before
    progress.stop()
    assert stream.getvalue() == ""


def test_a_closed_stream_never_fails_the_command() -> None:
    stream = Terminal()
    stream.close()
    with waiting("closed", stream, after=0.0):
        pass
