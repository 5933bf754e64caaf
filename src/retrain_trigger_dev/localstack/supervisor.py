"""Process supervision for the local stack: the one supervisor of the development tools.

Which processes are alive, and what a child left behind, is read through
:mod:`retrain_trigger_dev.processes` (psutil: Linux and macOS alike).

Every child runs in its own process group (``start_new_session``), writes stdout and stderr to
``<log_dir>/<name>.log`` and is stopped by signalling its whole group: SIGTERM, a grace period,
then SIGKILL. On Linux each child also gets ``PR_SET_PDEATHSIG`` so that it is terminated even if
the supervising process is killed without a chance to clean up.

:func:`terminate_on_signals` turns SIGTERM and SIGHUP into :class:`Terminated` (a
``KeyboardInterrupt``) in the main thread, so ``with`` blocks unwind and stop their children
exactly as they do on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from retrain_trigger.errors import RetrainError
from retrain_trigger_dev.processes import descendants, same_process_alive

log = logging.getLogger(__name__)

DEFAULT_STOP_TIMEOUT = 10.0
_PR_SET_PDEATHSIG = 1


class StackError(RetrainError):
    """A local stack service could not be started or answered unexpectedly."""


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM or SIGHUP."""


@dataclass(frozen=True)
class ServiceSpec:
    """How to start one child process and how to tell that it is ready."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    cwd: str | None = None
    ready: Callable[[], bool] | None = None
    ready_timeout: float = 30.0
    stop_timeout: float = DEFAULT_STOP_TIMEOUT
    stop_signal: int = signal.SIGTERM


@dataclass
class Child:
    spec: ServiceSpec
    process: subprocess.Popen[bytes]
    log_path: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, lines: int = 20) -> str:
        return tail_file(self.log_path, lines)


def tail_file(path: Path, lines: int = 20, *, max_bytes: int = 64 << 10) -> str:
    from retrain_trigger_dev.local.runner import read_log_tail

    return "\n".join(read_log_tail(path, max_bytes).splitlines()[-lines:])


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_answers(url: str, timeout: float = 2.0) -> bool:
    """True once anything answers HTTP at ``url``, whatever the status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read(1)
        return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True once ``url`` answers with a 2xx status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (OSError, ValueError):
        return False


def _pdeathsig() -> Callable[[], None] | None:
    """A pre-exec hook asking Linux to SIGTERM the child when its parent dies."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.restype = ctypes.c_int
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)

    return hook


def _signal_group(pgid: int, sig: int) -> bool:
    """Signals a process group; False when it no longer exists."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return False


def _kill_leftovers(leftovers: Sequence[tuple[int, float]], grace: float = 3.0) -> list[int]:
    """SIGTERM, then SIGKILL, the listed processes still alive; returns the pids signalled."""
    alive = [(pid, start) for pid, start in leftovers if same_process_alive(pid, start)]
    for pid, _start in alive:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(same_process_alive(p, s) for p, s in alive):
        time.sleep(0.05)
    for pid, start in alive:
        if same_process_alive(pid, start):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    return [pid for pid, _start in alive]


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


class Supervisor:
    """Starts children, waits for them to be ready and stops every one of them.

    Children are stopped in reverse start order. Use as a context manager, or call
    :meth:`stop_all` from a ``finally``. Safe to call :meth:`stop_all` more than once.
    """

    def __init__(self, log_dir: str | os.PathLike[str]) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.children: list[Child] = []
        self._lock = threading.Lock()
        self._preexec = (
            _pdeathsig() if threading.current_thread() is threading.main_thread() else None
        )

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def start(self, spec: ServiceSpec) -> Child:
        log_path = self.log_dir / f"{spec.name}.log"
        env = dict(os.environ if spec.env is None else spec.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        with open(log_path, "ab", buffering=0) as log_file:
            command = shlex.join(spec.argv).replace("\n", "\\n")
            log_file.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} start {command}\n".encode())
            try:
                process = subprocess.Popen(
                    list(spec.argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=spec.cwd,
                    start_new_session=True,
                    preexec_fn=self._preexec,
                    close_fds=True,
                )
            except OSError as exc:
                raise StackError(
                    f"{spec.name}: cannot start {spec.argv[0]}: {exc.strerror or exc}"
                ) from None
        child = Child(spec=spec, process=process, log_path=log_path)
        with self._lock:
            self.children.append(child)
        log.debug("started %s pid %s", spec.name, process.pid)
        return child

    def wait_ready(self, child: Child, timeout: float | None = None) -> float:
        """Polls the child's readiness probe; returns the seconds it took.

        Raises :class:`StackError`, with the tail of its log, when the child exits first or the
        probe does not succeed in time.
        """
        probe = child.spec.ready
        timeout = child.spec.ready_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            if not child.alive():
                raise StackError(
                    f"{child.name} exited with status {child.process.returncode} while starting; "
                    f"log {child.log_path}:\n{child.tail()}"
                )
            if probe is None or probe():
                return time.monotonic() - child.started
            if time.monotonic() >= deadline:
                raise StackError(
                    f"{child.name} was not ready after {timeout:.0f} s; log {child.log_path}:\n{child.tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def start_and_wait(self, spec: ServiceSpec) -> Child:
        child = self.start(spec)
        self.wait_ready(child)
        return child

    def dead(self) -> list[Child]:
        """Children that exited on their own."""
        return [c for c in self.children if not c.alive()]

    def stop(
        self,
        child: Child,
        timeout: float | None = None,
        *,
        signalled: bool = False,
        tree: Sequence[tuple[int, float]] | None = None,
    ) -> int | None:
        """Stops the child's process group: its stop signal, then SIGKILL after ``timeout``.

        Descendants that left the group (a new session of their own) and outlive it are then
        signalled one by one, so that nothing the child started is left behind.
        """
        timeout = child.spec.stop_timeout if timeout is None else timeout
        pgid = child.pid  # leader of its own session and group
        if tree is None:
            tree = descendants(child.pid)
        if not signalled:
            _signal_group(pgid, child.spec.stop_signal)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if child.process.poll() is not None and not group_alive(pgid):
                break
            time.sleep(0.05)
        else:
            log.warning(
                "%s did not stop within %.0f s; killing its process group", child.name, timeout
            )
        _signal_group(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.process.wait(timeout=5)
        leftovers = _kill_leftovers(tree)
        if leftovers:
            log.warning("%s left %d process(es) behind; stopped them", child.name, len(leftovers))
        with self._lock:
            if child in self.children:
                self.children.remove(child)
        return child.process.returncode

    def stop_all(self, timeout: float | None = None) -> None:
        """Stops every child, newest first; all are signalled before any is waited for."""
        with self._lock:
            children = list(reversed(self.children))
        trees = {child.pid: descendants(child.pid) for child in children}
        for child in children:
            _signal_group(child.pid, child.spec.stop_signal)
        for child in children:
            self.stop(child, timeout, signalled=True, tree=trees[child.pid])

    def process_tree(self) -> list[int]:
        """Pids of every child and every live descendant."""
        out: list[int] = []
        for child in list(self.children):
            if child.alive():
                out.append(child.pid)
            out.extend(pid for pid, _start in descendants(child.pid))
        return out


@contextlib.contextmanager
def terminate_on_signals(
    signals: Sequence[int] = (signal.SIGTERM, signal.SIGHUP),
) -> Iterator[None]:
    """Inside the block, the listed signals raise :class:`Terminated` in the main thread, and
    SIGINT raises KeyboardInterrupt (Ctrl-C) even where the process started with SIGINT ignored:
    a script's background job inherits it ignored, and Python then installs no handler of its
    own, so a Ctrl-C or ``kill -INT`` would not stop the stack."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        raise Terminated(f"received {signal.Signals(signum).name}")

    previous: dict[int, Any] = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler)
    }
    for sig in signals:
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def signals_ignored(
    signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP),
) -> Iterator[None]:
    """Inside the block (main thread only), the listed signals are ignored: a second Ctrl-C
    cannot interrupt a shutdown half way and leave children behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class LogFollower:
    """Reads the complete lines appended to a file since the last call (like ``tail -f``)."""

    def __init__(self, path: str | os.PathLike[str], *, from_start: bool = False) -> None:
        self.path = Path(path)
        self._offset = 0
        self._partial = b""
        if not from_start:
            with contextlib.suppress(OSError):
                self._offset = self.path.stat().st_size

    def lines(self) -> list[str]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
                self._offset = fh.tell()
        except OSError:
            return []
        if not data:
            return []
        data = self._partial + data
        *complete, self._partial = data.split(b"\n")
        return [line.decode("utf-8", "replace") for line in complete]


def write_line(stream: IO[str] | None, text: str) -> None:
    """Writes one line of user-facing output and flushes it (no-op without a stream)."""
    if stream is None:
        return
    stream.write(text + "\n")
    stream.flush()
