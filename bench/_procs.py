"""Child processes of the benchmarks: the fakes and the functions, each stopped by its own id.

Every child runs in a session of its own (``start_new_session``) and is stopped by signalling
that process group: SIGTERM, then SIGKILL after a grace period. Function processes are pinned to
one CPU so that "per core" figures mean one core, whatever else runs on the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from retrain_trigger_dev import processes
from retrain_trigger_dev.localstack.stack import fake_gcs_binary

REPO = Path(__file__).resolve().parent.parent
PYCACHE = REPO / "bench" / "results" / ".pycache"
HOST = "127.0.0.1"

# Settings of the caller's shell that must not reach a function under test.
_SCRUBBED = (
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_CLOUD_PROJECT",
    "K_SERVICE",
    "K_REVISION",
    "K_CONFIGURATION",
    "FUNCTION_TARGET",
    "FUNCTION_SOURCE",
    "FUNCTION_SIGNATURE_TYPE",
    "PORT",
    "PUBSUB_EMULATOR_HOST",
    "DEBUG",
)


class BenchError(RuntimeError):
    """A process of the benchmark did not start or answered unexpectedly."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in _SCRUBBED and not k.startswith("RETRAIN_")
    }
    env.update(extra or {})
    return env


def _pin(cpu: int | None) -> Any:
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return None

    def hook() -> None:
        os.sched_setaffinity(0, {cpu})

    return hook


def stop_group(process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the child's process group (it leads its own session), then SIGKILL."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def http_json(url: str, body: Any = None, *, method: str = "GET", timeout: float = 30.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


# --------------------------------------------------------------------------- fake Vertex


class FakeVertexProcess:
    """``python -m tests.fakes.vertex`` in a child process, steered over ``/_fake/``."""

    def __init__(self, log_dir: Path, cpu: int | None = None) -> None:
        self.port = free_port()
        self.endpoint = f"http://{HOST}:{self.port}"
        self.log_path = log_dir / "fake-vertex.log"
        self.cpu = cpu
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> FakeVertexProcess:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.fakes.vertex", "--port", str(self.port)],
                cwd=str(REPO),
                env=base_env({"PYTHONPATH": str(REPO)}),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_pin(self.cpu),
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise BenchError(f"fake Vertex exited:\n{_tail(self.log_path)}")
            try:
                self.requests()
                return self
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"fake Vertex not ready:\n{_tail(self.log_path)}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process)
            self.process = None

    def reset(self) -> None:
        """Forget every job and request (keeps the fake's memory flat between figures)."""
        http_json(f"{self.endpoint}/_fake/reset", {}, method="POST")

    def requests(self) -> list[dict[str, Any]]:
        """One row per request received: method, path, op, job_id and the status answered."""
        return list(http_json(f"{self.endpoint}/_fake/requests", timeout=60)["requests"])

    def inject(self, op: str, **fault: Any) -> None:
        http_json(f"{self.endpoint}/_fake/inject", {"op": op, **fault}, method="POST")

    def clear_faults(self) -> None:
        http_json(f"{self.endpoint}/_fake/clear_faults", {}, method="POST")

    def counts(self) -> dict[str, int]:
        """Requests by operation, and ``created``: creates answered 200 (a job was stored).

        (``/_fake/jobs`` would copy every stored pipeline spec; the request log is enough.)
        """
        out: dict[str, int] = {"create": 0, "get": 0, "created": 0}
        for row in self.requests():
            out[row["op"]] = out.get(row["op"], 0) + 1
            if row["op"] == "create" and row["status"] == 200:
                out["created"] += 1
        return out

    def rss_mib(self) -> float:
        return rss(self.process.pid)["VmRSS"] if self.process else 0.0

    def cpu_used(self) -> float:
        return cpu_seconds(self.process.pid) if self.process else 0.0


# --------------------------------------------------------------------------- fake GCS


class FakeGcsProcess:
    """fake-gcs-server (in memory) on 127.0.0.1, as the tests and the local stack run it."""

    def __init__(self, log_dir: Path, cpu: int | None = None) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log_path = log_dir / "fake-gcs-server.log"
        self.cpu = cpu
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> FakeGcsProcess:
        argv = [
            str(fake_gcs_binary()),
            "-scheme", "http",
            "-backend", "memory",
            "-host", HOST,
            "-port", str(self.port),
            "-external-url", self.url,
            "-public-host", f"{HOST}:{self.port}",
            "-log-level", "error",
        ]  # fmt: skip
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_pin(self.cpu),
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise BenchError(f"fake-gcs-server exited:\n{_tail(self.log_path)}")
            try:
                http_json(f"{self.url}/storage/v1/b", timeout=1)
                return self
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"fake-gcs-server not ready:\n{_tail(self.log_path)}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process)
            self.process = None

    def create_bucket(self, name: str) -> None:
        try:
            http_json(
                f"{self.url}/storage/v1/b?project=bench-project", {"name": name}, method="POST"
            )
        except urllib.error.HTTPError as exc:
            if exc.code != 409:
                raise

    def upload(self, bucket: str, name: str, data: bytes) -> dict[str, Any]:
        from urllib.parse import quote

        request = urllib.request.Request(
            f"{self.url}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={quote(name, safe='')}",
            data=data,
            method="POST",
            headers={"Content-Type": "application/octet-stream"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return dict(json.loads(response.read()))


# --------------------------------------------------------------------------- functions


def rss(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process, in MiB (0 when it is gone)."""
    memory = processes.memory_mib(pid)
    return {"VmRSS": memory["rss_mib"], "VmHWM": memory["hwm_mib"]}


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far (0 when it is gone)."""
    return processes.cpu_seconds(pid)


def children_of(pid: int) -> list[int]:
    return processes.children_of(pid)


def functions_framework_argv(source: Path, target: str, signature: str, port: int) -> list[str]:
    """The ``functions-framework`` console script of this interpreter's environment."""
    script = Path(sys.executable).parent / "functions-framework"
    head = [str(script)] if script.exists() else [sys.executable, "-m", "functions_framework"]
    return [
        *head,
        "--target", target,
        "--source", str(source),
        "--signature-type", signature,
        "--host", HOST,
        "--port", str(port),
    ]  # fmt: skip


class FunctionProcess:
    """One ``functions-framework`` process (gunicorn master and one gthread worker)."""

    def __init__(
        self,
        name: str,
        source: Path,
        target: str,
        *,
        env: Mapping[str, str],
        log_dir: Path,
        signature: str = "cloudevent",
        cpu: int | None = None,
        threads: int = 8,
    ) -> None:
        self.name = name
        self.source = source
        self.target = target
        self.signature = signature
        self.port = free_port()
        self.env = base_env({**env, "WORKERS": "1", "THREADS": str(threads)})
        # Bytecode caches for every module, ours and the libraries', in one private tree: both
        # implementations start with compiled modules (warmed by the discarded first round), and
        # a caller's PYTHONDONTWRITEBYTECODE cannot make only the uninstalled sources recompile.
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
        self.cpu = cpu
        fd, path = tempfile.mkstemp(prefix=f"{name}-", suffix=".log", dir=log_dir)
        os.close(fd)
        self.log_path = Path(path)
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> FunctionProcess:
        argv = functions_framework_argv(self.source, self.target, self.signature, self.port)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            argv,
            cwd=str(REPO),
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_pin(self.cpu),
        )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise BenchError(f"{self.name} exited:\n{_tail(self.log_path)}")

    def wait_listening(self, timeout: float = 60.0) -> float:
        """Seconds from start until the port accepts connections."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            try:
                with socket.create_connection((HOST, self.port), timeout=1):
                    return time.monotonic() - self.started
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} not listening after {timeout} s")
            time.sleep(0.002)

    @property
    def worker_pid(self) -> int:
        """The gunicorn worker serving requests (the master's only child)."""
        assert self.process is not None
        kids = children_of(self.process.pid)
        return kids[0] if kids else self.process.pid

    def memory(self) -> dict[str, float]:
        assert self.process is not None
        worker = rss(self.worker_pid)
        master = rss(self.process.pid)
        return {
            "rss_mib": worker["VmRSS"],
            "hwm_mib": worker["VmHWM"],
            "master_rss_mib": master["VmRSS"],
        }

    def cpu_used(self) -> float:
        """CPU seconds used so far by the worker that serves the requests."""
        return cpu_seconds(self.worker_pid)

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process)
            self.process = None
        log = getattr(self, "_log", None)
        if log is not None:
            log.close()
            self._log = None

    def __enter__(self) -> FunctionProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def decisions_in(lines: Sequence[str]) -> dict[str, int]:
    """Counts of retrain-trigger's decision log lines (one JSON object per event)."""
    out: dict[str, int] = {}
    for line in lines:
        if not line.startswith("{") or '"decision"' not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        decision = entry.get("decision")
        if isinstance(decision, str):
            out[decision] = out.get(decision, 0) + 1
    return out


def baseline_answers_in(lines: Sequence[str]) -> dict[str, int]:
    """What the baseline printed per event: ``submitted`` / ``skipped``, and tracebacks."""
    out: dict[str, int] = {}
    for line in lines:
        for word in ("submitted", "skipped"):
            if line.startswith(f"{word} "):
                out[word] = out.get(word, 0) + 1
        if line.startswith("Traceback"):
            out["exception"] = out.get("exception", 0) + 1
    return out
