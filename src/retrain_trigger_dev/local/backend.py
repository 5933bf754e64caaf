"""The ``local`` backend: the compiled pipeline run by Kubeflow's local runner, runs kept in SQLite.

It behaves like Vertex where the core can tell: ``submit`` returns at once with the job's full
name (``projects/<project or local>/locations/<region>/pipelineJobs/<job id>``), a second submit
with the same id answers ``created=False`` with the existing job, and runs move through the same
states (PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLING, CANCELLED).

The ledger (``<state_dir>/runs.sqlite3``, see :mod:`retrain_trigger_dev.local.ledger`) is the only thing the
processes share. ``submit`` inserts a PENDING run and wakes a worker; a :class:`Worker` claims
runs while fewer than ``concurrency`` are active and executes each in its own process
(:mod:`retrain_trigger_dev.local.runner`), which records the result. Any number of workers, in
any number of processes, may serve one ledger: claims are atomic. :class:`LocalBackend` starts one
in a daemon thread on its first submit; :func:`run_worker` runs one until told to stop.

Each run's process lives in its own session: it outlives a worker that is killed, keeps its
heartbeat and records its own result. Runs whose process died are marked FAILED ("worker exited
before the run finished") by any worker, when it starts and on each pass; a run whose worker died
after claiming it but before starting its process goes back to PENDING. A restart loses nothing.
A worker that is stopped (``stop_event``) records its runs FAILED ("worker stopped before the run
finished") and stops their processes within ``stop_grace`` seconds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from retrain_trigger.backends.base import JobStatus
from retrain_trigger.constants import JOB_ID
from retrain_trigger.errors import BackendRefused, BackendUnavailable, TemplateError
from retrain_trigger.model import RunHandle
from retrain_trigger_dev.local import ledger as ledger_mod
from retrain_trigger_dev.local.ledger import CLAIMED, FAILED, Ledger, RunRecord
from retrain_trigger_dev.processes import process_alive

if TYPE_CHECKING:
    from retrain_trigger.config import Config
    from retrain_trigger.model import RunRequest
    from retrain_trigger.spec import PipelineTemplate

logger = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL = 0.25
DEFAULT_STALE_AFTER = 60.0
DEFAULT_HEARTBEAT_INTERVAL = 2.0
DEFAULT_STOP_GRACE = 5.0
WORKER_STOPPED = "worker stopped before the run finished"
RUN_MODULE = "retrain_trigger_dev.local.runner"

# (state_dir, job_id, claim_token) -> argv of the run's process
Command = Callable[[str, str, str], list[str]]


class StopEvent(Protocol):
    """``threading.Event`` or ``multiprocessing.Event``."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = ...) -> bool: ...


def _job_id(job: str) -> str:
    """A job id from an id or a full job name (``projects/.../pipelineJobs/<id>``)."""
    return job.rsplit("/", 1)[-1]


def _child_env() -> dict[str, str]:
    """The run process's environment: ours, unbuffered, able to import this package, and with
    pip kept offline so that a component's install step can never change this environment."""
    import retrain_trigger

    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PIP_NO_INDEX", "1")
    env.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(retrain_trigger.__file__)))
    existing = env.get("PYTHONPATH", "")
    if package_parent not in existing.split(os.pathsep):
        env["PYTHONPATH"] = package_parent + (os.pathsep + existing if existing else "")
    return env


class Worker:
    """Claims PENDING runs of one ledger and executes each in a child process.

    ``run(stop_event)`` loops until the event is set; on the way out it gives up the runs it
    started (recorded FAILED, "worker stopped before the run finished") and stops their processes.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        concurrency: int = 1,
        ledger: Ledger | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        stale_after: float = DEFAULT_STALE_AFTER,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        stop_grace: float = DEFAULT_STOP_GRACE,
        command: Command | None = None,
        reporter: Any = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.state_dir = os.path.abspath(os.fspath(state_dir))
        self.ledger = ledger or Ledger.for_state_dir(self.state_dir)
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.stale_after = stale_after
        self.heartbeat_interval = heartbeat_interval
        self.stop_grace = stop_grace
        self.host = socket.gethostname()
        self._command = command or self._default_command
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._wake = threading.Event()
        self._stopping = False
        # Reports each ended run to the trigger (retrain_trigger_dev.local.outcomes), if set.
        self.reporter = reporter

    @classmethod
    def from_config(cls, config: Config, **options: Any) -> Worker:
        return cls(config.state_dir, concurrency=config.local_concurrency, **options)

    def _default_command(self, state_dir: str, job_id: str, claim_token: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            RUN_MODULE,
            state_dir,
            job_id,
            "--claim",
            claim_token,
            "--heartbeat-interval",
            str(self.heartbeat_interval),
        ]

    @property
    def running(self) -> list[str]:
        """Job ids of the runs this worker has started and not yet reaped."""
        return list(self._children)

    def wake(self) -> None:
        """Look for PENDING runs now rather than at the next poll."""
        self._wake.set()

    def run(self, stop_event: StopEvent) -> None:
        self._stopping = False
        logger.info(
            "local worker started: pid %s, ledger %s, concurrency %s",
            os.getpid(),
            self.ledger.path,
            self.concurrency,
        )
        try:
            while not stop_event.is_set():
                self._wake.clear()
                try:
                    self.step()
                except (BackendUnavailable, OSError) as exc:
                    logger.warning("local worker pass failed, retrying: %s", exc)
                except Exception:
                    logger.exception("local worker pass failed, retrying")
                if self.reporter is not None:
                    try:
                        self.reporter.report()
                    except Exception:
                        logger.exception("local worker: reporting outcomes failed, retrying")
                if stop_event.is_set():
                    break
                self._wake.wait(self.poll_interval)
        finally:
            self.shutdown()
            logger.info("local worker stopped: pid %s", os.getpid())

    def step(self) -> list[str]:
        """One pass: reap finished runs, recover abandoned ones, start what the bound allows.

        Returns the job ids started.
        """
        self._reap()
        recovered = self.ledger.recover(
            stale_after=self.stale_after, host=self.host, is_alive=self._alive
        )
        for job_id, state in recovered.items():
            logger.warning("run %s: %s; now %s", job_id, ledger_mod.WORKER_GONE, state)
        started: list[str] = []
        while not self._stopping and self.ledger.has_pending():
            record = self.ledger.claim(self.concurrency, host=self.host, pid=os.getpid())
            if record is None:
                break
            self._start(record)
            started.append(record.job_id)
        return started

    def _alive(self, pid: int | None, job_id: str) -> bool:
        """Recovery's liveness check. A run whose process is this worker's own child is left to
        :meth:`_reap`, which records how it ended (its exit status and the error in its log):
        a child that exits between the reap and the recovery of one pass must not be recorded
        as gone by recovery, which knows neither."""
        return (bool(job_id) and job_id in self._children) or process_alive(pid, job_id)

    def _start(self, record: RunRecord) -> None:
        base = ledger_mod.run_dir(self.state_dir, record.job_id)
        from retrain_trigger_dev.local.runner import LOG_FILE

        log_path = record.log_path or os.path.join(base, LOG_FILE)
        try:
            os.makedirs(base, exist_ok=True)
            with open(log_path, "ab") as log:
                proc = subprocess.Popen(
                    self._command(self.state_dir, record.job_id, record.claim_token),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=base,
                    env=_child_env(),
                    start_new_session=True,
                    close_fds=True,
                )
        except OSError as exc:
            logger.error("run %s: could not start its process: %s", record.job_id, exc)
            self.ledger.finish(
                record.job_id, FAILED, error=f"could not start the run process: {exc}"
            )
            return
        self._children[record.job_id] = proc
        logger.info("run %s started: pid %s, log %s", record.job_id, proc.pid, log_path)
        try:
            registered = self.ledger.set_run_pid(record.job_id, record.claim_token, proc.pid)
        except BackendUnavailable as exc:  # the run's process registers itself too
            logger.warning("run %s: pid not recorded: %s", record.job_id, exc)
            return
        if not registered:
            logger.warning(
                "run %s: claim lost before its process started; stopping it", record.job_id
            )
            _signal_group(proc, signal.SIGTERM)

    def _reap(self) -> None:
        from retrain_trigger_dev.local.runner import last_error, read_log_tail

        for job_id, proc in list(self._children.items()):
            code = proc.poll()
            if code is None:
                continue
            del self._children[job_id]
            record = self.ledger.get(job_id)
            if record is None or record.state not in CLAIMED:
                continue
            detail = last_error(read_log_tail(record.log_path)) if record.log_path else ""
            error = f"run process exited with code {code} before recording a result"
            self.ledger.finish(job_id, FAILED, error=f"{error}: {detail}" if detail else error)
            logger.warning("run %s: %s", job_id, error)

    def shutdown(self) -> None:
        """Give up the runs this worker started and stop their processes."""
        self._stopping = True
        live = {job_id: proc for job_id, proc in self._children.items() if proc.poll() is None}
        for job_id, proc in live.items():
            try:
                if self.ledger.finish(job_id, FAILED, error=WORKER_STOPPED):
                    logger.warning("run %s: %s", job_id, WORKER_STOPPED)
            except BackendUnavailable as exc:
                logger.warning("run %s: end not recorded: %s", job_id, exc)
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace
        for proc in live.values():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        try:
            self._reap()
        except BackendUnavailable as exc:
            logger.warning("local worker: final pass failed: %s", exc)


def _signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)


def run_worker(config: Config, stop_event: StopEvent, **options: Any) -> None:
    """Serve the ledger of ``config.state_dir`` until ``stop_event`` is set.

    For the local stack: run it in a thread or a process of its own (``options`` are
    :class:`Worker`'s keyword arguments). Any number of workers may serve the same ledger.
    """
    Worker.from_config(config, **options).run(stop_event)


class LocalBackend:
    """Runs pipelines on this machine; see the module's documentation."""

    name = "local"

    def __init__(
        self,
        state_dir: str | os.PathLike[str] = ".local/state",
        *,
        concurrency: int = 1,
        project: str = "",
        region: str = "us-central1",
        start_worker: bool = True,
        busy_timeout: float = ledger_mod.DEFAULT_BUSY_TIMEOUT,
        **worker_options: Any,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.state_dir = os.path.abspath(os.fspath(state_dir))
        self.concurrency = concurrency
        self.project = project
        self.region = region
        self.busy_timeout = busy_timeout
        self._auto_worker = start_worker
        self._worker_options = worker_options
        self._lock = threading.Lock()
        self._ledger: Ledger | None = None
        self._worker: Worker | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @classmethod
    def from_config(cls, config: Config, **options: Any) -> LocalBackend:
        options.setdefault("start_worker", config.local_worker)
        return cls(
            config.state_dir,
            concurrency=config.local_concurrency,
            project=config.project,
            region=config.region,
            **options,
        )

    @property
    def ledger(self) -> Ledger:
        """The ledger, opened (and created) on first use."""
        with self._lock:
            if self._ledger is None:
                path = ledger_mod.ledger_path(self.state_dir)
                try:
                    self._ledger = Ledger(path, busy_timeout=self.busy_timeout)
                except OSError as exc:  # the folder cannot be made; SQLite's errors are mapped
                    raise BackendUnavailable(f"local run ledger {path}: {exc}") from None
            return self._ledger

    def job_name(self, job_id: str, project: str = "", region: str = "") -> str:
        project = project or self.project or "local"
        region = region or self.region
        return f"projects/{project}/locations/{region}/pipelineJobs/{job_id}"

    # -- the Backend protocol ----------------------------------------------------------------

    def submit(self, request: RunRequest, template: PipelineTemplate) -> RunHandle:
        """Record the run as PENDING and return at once; a worker runs it when a slot is free."""
        job_id = request.job_id
        if not JOB_ID.match(job_id):
            raise BackendRefused(
                f"job id {job_id!r} is not valid: 1-128 characters of a-z, 0-9 and -, "
                "starting with a letter"
            )
        if not template.raw:
            raise TemplateError(f"template {template.uri} has no compiled YAML to run")
        from retrain_trigger_dev.local.runner import LOG_FILE

        described = request.to_dict()
        if request.trigger is not None:
            described["trigger"] = request.trigger.to_dict()
        ledger = self.ledger
        try:
            record, created = ledger.insert(
                job_id=job_id,
                job_name=self.job_name(job_id, request.project, request.region),
                template_raw=template.raw,
                template_digest=template.digest,
                template_uri=template.uri or request.template,
                run_key=request.run_key,
                route=request.route,
                display_name=request.display_name,
                parameters=dict(request.parameter_values),
                labels=dict(request.labels),
                request=described,
                log_path=os.path.join(ledger_mod.run_dir(self.state_dir, job_id), LOG_FILE),
            )
        except ValueError as exc:
            raise BackendRefused(f"run {job_id}: parameters cannot be stored: {exc}") from None
        except OSError as exc:
            raise BackendUnavailable(f"local run ledger {ledger.path}: {exc}") from None
        if self._auto_worker:
            self.start_worker()
        if created:
            logger.info("run %s queued (%s)", job_id, record.job_name)
        return RunHandle(
            job_id=record.job_id, job_name=record.job_name, state=record.state, created=created
        )

    def get(self, job_id: str) -> JobStatus:
        """The run's status (by id or full job name); ``KeyError`` when there is no such run."""
        job_id = _job_id(job_id)
        ledger = self.ledger
        record = ledger.get(job_id)
        if record is None:
            raise KeyError(job_id)
        return record.to_status()

    def list(self, *, route: str = "", limit: int = 100, state: str = "") -> list[JobStatus]:
        """Most recent runs first, optionally of one route and/or in one state."""
        ledger = self.ledger
        records = ledger.list(route=route, state=state, limit=limit)
        return [record.to_status() for record in records]

    # -- beyond the protocol -----------------------------------------------------------------

    def cancel(self, job_id: str) -> JobStatus:
        """Cancel a run: a PENDING one at once, a RUNNING one within a heartbeat or two."""
        job_id = _job_id(job_id)
        ledger = self.ledger
        record = ledger.cancel(job_id)
        logger.info("run %s: cancel requested (%s)", job_id, record.state)
        return record.to_status()

    def log_path(self, job_id: str) -> str:
        """Where the run's log is (or will be) written; ``KeyError`` for an unknown run."""
        job_id = _job_id(job_id)
        record = self.ledger.get(job_id)
        if record is None:
            raise KeyError(job_id)
        return record.log_path

    def wait(self, job_id: str, timeout: float = 300.0, *, poll_interval: float = 0.1) -> JobStatus:
        """Block until the run is final. ``TimeoutError`` when it is not after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.get(job_id)
            if status.terminal:
                return status
            if time.monotonic() >= deadline:
                raise TimeoutError(f"run {job_id} is still {status.state} after {timeout:g} s")
            time.sleep(poll_interval)

    def start_worker(self) -> None:
        """Start the in-process worker thread unless it is running; then wake it."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._worker = Worker(
                    self.state_dir,
                    concurrency=self.concurrency,
                    ledger=self._ledger,
                    **self._worker_options,
                )
                self._thread = threading.Thread(
                    target=self._worker.run,
                    args=(self._stop,),
                    name="retrain-local-worker",
                    daemon=True,
                )
                self._thread.start()
            worker = self._worker
        if worker is not None:
            worker.wake()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the in-process worker; the runs it started are recorded FAILED and stopped."""
        with self._lock:
            thread, worker = self._thread, self._worker
            self._thread = None
        if thread is None:
            return
        self._stop.set()
        if worker is not None:
            worker.wake()
        thread.join(timeout)

    def __enter__(self) -> LocalBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
