"""Executes one run of the ledger: ``python -m retrain_trigger_dev.local.runner STATE_DIR JOB_ID``
(with ``--claim TOKEN``, the token of the worker's claim).

The local backend's worker starts this module in its own process (and process group), with stdout
and stderr going to ``<state_dir>/runs/<job_id>/run.log``, after it has claimed the run. This
process then:

1. registers its pid under the claim token (and exits if the claim is no longer valid), then
   copies the run's compiled template from the ledger to ``runs/<job_id>/pipeline.yaml``;
2. runs it with Kubeflow's local runner (``SubprocessRunner(use_venv=False)``) under the local
   pipeline root ``runs/<job_id>/root``, keeping a heartbeat in the ledger meanwhile;
3. records SUCCEEDED or FAILED, the run's outputs (pipeline outputs, task output parameters,
   numeric metrics, artifact URIs) and, on failure, the error the pipeline raised.

A cancel request (state CANCELLING) or a worker that gave the run up (state no longer active) is
seen by the heartbeat, which then stops this process group; the run ends as CANCELLED or FAILED.
Kubeflow is imported only here, never by the process that submits.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from retrain_trigger.errors import BackendUnavailable
from retrain_trigger_dev.local import ledger as ledger_mod
from retrain_trigger_dev.local.ledger import FAILED, RUNNING, SUCCEEDED, Ledger

logger = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_INTERVAL = 2.0
TEMPLATE_FILE = "pipeline.yaml"
LOG_FILE = "run.log"
ROOT_DIR = "root"
WORKSPACE_DIR = "workspace"

MAX_STRING_OUTPUT = 1024
MAX_STRUCT_OUTPUT = 2048
LOG_TAIL_BYTES = 256 * 1024
FINISH_ATTEMPTS = 5

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_TRACEBACK = "Traceback (most recent call last):"
_FAILED_TASK = re.compile(r"Task '([^']+)' finished with status FAILURE")
_PIPELINE_FAILED = re.compile(r"Pipeline '[^']*' finished with status FAILURE")


class _Stopped(BaseException):
    """Raised in the main thread when the run is told to stop (SIGTERM or SIGINT)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _on_signal(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise _Stopped(signum)


def _stop_self() -> None:
    """Stop this run: the whole process group when it leads one (the component processes too)."""
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpid(), signal.SIGTERM)
    else:
        os.kill(os.getpid(), signal.SIGTERM)


class _Heartbeat(threading.Thread):
    """Beats every ``interval`` seconds; stops the run when it is no longer wanted."""

    def __init__(self, ledger: Ledger, job_id: str, interval: float) -> None:
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.ledger = ledger
        self.job_id = job_id
        self.interval = interval
        self.done = threading.Event()
        self.stopped_as = ""

    def run(self) -> None:
        while not self.done.wait(self.interval):
            try:
                state = self.ledger.heartbeat(self.job_id)
            except Exception as exc:  # a locked or busy database: try again on the next beat
                logger.warning("heartbeat of %s not recorded: %s", self.job_id, exc)
                continue
            if state != RUNNING and not self.done.is_set():
                self.stopped_as = state or "gone"
                logger.warning("run %s is %s: stopping it", self.job_id, self.stopped_as)
                self.done.set()
                _stop_self()
                return


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def read_log_tail(path: str | os.PathLike[str], max_bytes: int = LOG_TAIL_BYTES) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return ""
    return strip_ansi(data.decode("utf-8", errors="replace"))


def _exception_lines(lines: list[str]) -> list[str]:
    """The final line of every Python traceback in ``lines`` (``ValueError: bad shard``)."""
    found = []
    for index, line in enumerate(lines):
        if line.strip() != _TRACEBACK:
            continue
        indent = len(line) - len(line.lstrip())
        for later in lines[index + 1 :]:
            if not later.strip():
                continue
            later_indent = len(later) - len(later.lstrip())
            if later_indent > indent:
                continue
            if later_indent == indent and not later.strip().startswith(_TRACEBACK):
                found.append(later.strip())
            break
    return found


def last_error(log_text: str, fallback: str = "") -> str:
    """The most meaningful error in a run's log: the exception a component raised, with its task.

    Kubeflow's own summary ("Pipeline ... finished with status FAILURE") is used only when no
    component traceback is found.
    """
    text = strip_ansi(log_text)
    lines = text.splitlines()
    candidates = [
        line
        for line in _exception_lines(lines)
        if not _PIPELINE_FAILED.search(line) and not line.startswith(_Stopped.__qualname__)
    ]
    failed_tasks = _FAILED_TASK.findall(text)
    if candidates:
        error = candidates[-1]
        if failed_tasks:
            error = f"task {failed_tasks[-1]!r} failed: {error}"
        return error
    fallback = strip_ansi(fallback).strip()
    if fallback:
        return fallback.splitlines()[0]
    if failed_tasks:
        return f"task {failed_tasks[-1]!r} failed"
    return ""


def _scalar(value: Any) -> tuple[bool, Any]:
    """Whether ``value`` is worth keeping as an output, and the value to keep."""
    if value is None or isinstance(value, bool | int):
        return True, value
    if isinstance(value, float):
        return True, value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return True, value if len(value) <= MAX_STRING_OUTPUT else value[:MAX_STRING_OUTPUT] + "..."
    if isinstance(value, list | dict):
        try:
            encoded = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            return False, None
        return len(encoded) <= MAX_STRUCT_OUTPUT, value
    return False, None


def _metrics(metadata: Any) -> dict[str, float | int]:
    """The metadata of a metrics artifact: a non-empty mapping of names to numbers."""
    if not isinstance(metadata, Mapping) or not metadata:
        return {}
    values = {}
    for key, value in metadata.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            return {}
        if isinstance(value, float) and not math.isfinite(value):
            return {}
        values[str(key)] = value
    return values


def collect_outputs(
    pipeline_outputs: Mapping[str, Any] | None, root: str | os.PathLike[str]
) -> dict[str, Any]:
    """What a run produced, as one JSON-able mapping.

    - every output parameter of the pipeline, and every output parameter of each task (a task's
      single unnamed ``Output`` under the task's name), by name;
    - every numeric metric logged to a Metrics artifact, by name;
    - ``artifacts``: the URI of each output artifact, by pipeline output name or ``task/name``.

    The pipeline's own outputs win over task outputs of the same name; among tasks, the one that
    finished last wins. Works on partial runs too: task outputs are read from the
    ``executor_output.json`` files under the local pipeline root.
    """
    from_tasks: dict[str, Any] = {}
    artifacts: dict[str, str] = {}
    root_path = Path(root)
    files = []
    if root_path.is_dir():
        for path in root_path.rglob("executor_output.json"):
            try:
                files.append((path.stat().st_mtime, str(path), path))
            except OSError:
                continue
    for _, _, path in sorted(files):
        task = path.parent.name
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(data, Mapping):
            continue
        for name, value in (data.get("parameterValues") or {}).items():
            keep, value = _scalar(value)
            if keep:
                from_tasks[task if name == "Output" else name] = value
        for name, entry in (data.get("artifacts") or {}).items():
            items = entry.get("artifacts") if isinstance(entry, Mapping) else None
            for item in items or []:
                if not isinstance(item, Mapping):
                    continue
                if item.get("uri"):
                    artifacts[f"{task}/{name}"] = str(item["uri"])
                from_tasks.update(_metrics(item.get("metadata")))

    from_pipeline: dict[str, Any] = {}
    for name, value in (pipeline_outputs or {}).items():
        if hasattr(value, "uri") and hasattr(value, "metadata"):
            if value.uri:
                uri = str(value.uri)
                # Named once: by the pipeline's output name rather than by task/name.
                artifacts = {key: known for key, known in artifacts.items() if known != uri}
                artifacts[name] = uri
            from_pipeline.update(_metrics(value.metadata))
            continue
        keep, value = _scalar(value)
        if keep:
            from_pipeline[name] = value

    outputs: dict[str, Any] = {**from_tasks, **from_pipeline}
    outputs.pop("artifacts", None)
    if artifacts:
        outputs["artifacts"] = artifacts
    return outputs


def _run_pipeline(
    yaml_path: str, root: str, workspace: str, parameters: Mapping[str, Any]
) -> Mapping[str, Any]:
    from kfp import components, local

    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=root,
        workspace_root=workspace,
        raise_on_error=True,
    )
    pipeline = components.load_component_from_file(yaml_path)
    task = pipeline(**dict(parameters))
    return dict(task.outputs or {})


def execute(
    ledger: Ledger, state_dir: str, job_id: str, heartbeat_interval: float, claim_token: str = ""
) -> bool:
    """Run a claimed run and record its end. Returns whether the end was recorded by this call."""
    record = ledger.get(job_id)
    if record is None:
        logger.error("run %s is not in the ledger %s", job_id, ledger.path)
        return False
    if record.state != RUNNING:
        logger.warning("run %s is %s, not RUNNING: nothing to do", job_id, record.state)
        return False
    if not ledger.set_run_pid(job_id, claim_token or record.claim_token, os.getpid()):
        logger.warning("run %s: the claim is no longer valid: nothing to do", job_id)
        return False
    base = ledger_mod.run_dir(state_dir, job_id)
    root = os.path.join(base, ROOT_DIR)
    workspace = os.path.join(base, WORKSPACE_DIR)
    yaml_path = os.path.join(base, TEMPLATE_FILE)
    log_path = record.log_path or os.path.join(base, LOG_FILE)

    heartbeat = _Heartbeat(ledger, job_id, heartbeat_interval)
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    pipeline_outputs: Mapping[str, Any] | None = None
    state, error = FAILED, ""
    started = time.monotonic()
    try:
        try:
            os.makedirs(root, exist_ok=True)
            os.makedirs(workspace, exist_ok=True)
            with open(yaml_path, "wb") as fh:
                fh.write(ledger.template(record.template_digest))
            logger.info(
                "run %s (%s): template %s, parameters %s",
                job_id,
                record.route,
                record.template_uri,
                json.dumps(record.parameters, sort_keys=True),
            )
            heartbeat.start()
            pipeline_outputs = _run_pipeline(yaml_path, root, workspace, record.parameters)
            state = SUCCEEDED
        finally:
            heartbeat.done.set()
            for sig in previous:
                signal.signal(sig, signal.SIG_IGN)
    except _Stopped as stop:
        if pipeline_outputs is None:  # else the pipeline had already finished
            reason = heartbeat.stopped_as
            if reason == "CANCELLING":
                error = "cancelled while running"
            elif reason:
                error = f"stopped: the run became {reason}"
            else:
                error = f"run process stopped by {stop}"
    except Exception as exc:
        message = strip_ansi(str(exc))
        if _PIPELINE_FAILED.search(message):
            logger.error("%s", message)
        else:
            logger.exception("run %s failed", job_id)
        sys.stdout.flush()
        sys.stderr.flush()
        error = last_error(read_log_tail(log_path), f"{type(exc).__name__}: {message}")
        if isinstance(exc, ImportError) and (exc.name or "").split(".")[0] == "kfp":
            error += " (the local backend needs Kubeflow: pip install 'retrain-trigger[local]')"
    outputs = collect_outputs(pipeline_outputs, root)
    recorded = _finish(ledger, job_id, state, outputs, error)
    final = ledger.get(job_id)
    logger.info(
        "run %s %s in %.1f s%s%s",
        job_id,
        final.state if final else state,
        time.monotonic() - started,
        f": {error}" if error else "",
        "" if recorded else " (already ended elsewhere; this result was not recorded)",
    )
    return recorded


def _finish(ledger: Ledger, job_id: str, state: str, outputs: dict[str, Any], error: str) -> bool:
    """Record the end, trying again for a while if the database stays locked."""
    for attempt in range(FINISH_ATTEMPTS):
        try:
            return ledger.finish(job_id, state, outputs=outputs, error=error)
        except BackendUnavailable as exc:
            if attempt == FINISH_ATTEMPTS - 1:
                raise
            logger.warning("run %s: end not recorded yet (%s), trying again", job_id, exc)
            time.sleep(1.0)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m retrain_trigger_dev.local.runner")
    parser.add_argument("state_dir")
    parser.add_argument("job_id")
    parser.add_argument("--claim", default="", help="the worker's claim token")
    parser.add_argument("--heartbeat-interval", type=float, default=DEFAULT_HEARTBEAT_INTERVAL)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        ledger = Ledger.for_state_dir(args.state_dir)
        execute(ledger, args.state_dir, args.job_id, args.heartbeat_interval, args.claim)
    except Exception:
        # The run stays active; the worker (or, without one, recovery) records it FAILED with
        # the last error of this log.
        logger.exception("run %s could not be executed", args.job_id)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
