"""Local end to end: data written to the local stack's bucket, to a registered model.

Starts :class:`retrain_trigger_dev.localstack.stack.Stack` as it ships (fake-gcs-server, the Pub/Sub
emulator when installed or else the bucket poller, both functions, the flush ticker and the local
backend's worker) and writes the digits shards under ``data/``. The stack batches data changes
in a window that closes once no object arrived for its quiet period; the clock starts when the
last shard is written and records:

- ``batched``: function_gcs logged every shard into one window;
- ``submitted``: the flush closed the window and function_http logged ``submitted``;
- ``run ended``: the local backend's ledger shows the run SUCCEEDED;
- ``registered``: ``champion.json`` in the model registry names the run's model version.

Only retrain-trigger has this figure: the baseline cannot run without Vertex AI.
"""

from __future__ import annotations

import json
import time
from typing import Any

from bench._report import Row

TIMEOUT = 600.0
FIGURE = "local end to end: data written → model registered"


def _wait(what: str, probe: Any, stack: Any, deadline: float, interval: float = 0.05) -> Any:
    while True:
        stack.check()
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: nothing after {TIMEOUT:.0f} s")
        time.sleep(interval)


def _not_measured(reason: str, details: dict[str, Any]) -> tuple[list[Row], dict[str, Any]]:
    details["error"] = reason
    return [Row(FIGURE, "s", f"not measured ({reason})")], details


class _Decisions:
    """Decision lines appended to one function's log."""

    def __init__(self, follower: Any) -> None:
        self.follower = follower
        self.entries: list[dict[str, Any]] = []

    def read(self) -> list[dict[str, Any]]:
        for line in self.follower.lines():
            if line.startswith("{") and '"decision"' in line:
                try:
                    self.entries.append(json.loads(line))
                except ValueError:
                    pass
        return self.entries


def measure(*, quick: bool) -> tuple[list[Row], dict[str, Any]]:
    details: dict[str, Any] = {}
    try:
        from retrain_trigger import gcs
        from retrain_trigger_dev import sampledata
        from retrain_trigger_dev.localstack import objects
        from retrain_trigger_dev.localstack.stack import DATA_PREFIX, Stack
    except ImportError as exc:
        return _not_measured(f"local stack not available: {exc}", details)

    started = time.monotonic()
    try:
        with Stack() as stack:
            details["mode"] = stack.mode
            details["stack_start_s"] = round(stack.startup_seconds, 2)
            details["window_quiet_seconds"] = stack.window_quiet_seconds
            gcs_log = _Decisions(stack.follow("function-gcs", from_start=True))
            http_log = _Decisions(stack.follow("function-http", from_start=True))
            folder = f"gs://{stack.bucket}/{DATA_PREFIX}bench-{int(time.time())}/"
            t_first = time.monotonic()
            written = sampledata.write_shards(folder, shards=4)
            t0 = time.monotonic()  # the last shard is in the bucket
            keys = set()
            for uri in written:
                bucket, name = gcs.split_uri(uri)
                resource = next(r for r in objects.iter_objects(bucket, name) if r["name"] == name)
                keys.add(f"{uri}#{resource['generation']}")
            deadline = t0 + TIMEOUT

            def batched() -> set[str] | None:
                windows = {
                    e["window_id"]
                    for e in gcs_log.read()
                    if e.get("run_key") in keys and e.get("window_id")
                }
                found = {e.get("run_key") for e in gcs_log.entries if e.get("run_key") in keys}
                return windows if found == keys else None

            windows = _wait("function_gcs batching every shard", batched, stack, deadline)
            t_batched = time.monotonic()
            if len(windows) != 1:
                return _not_measured(f"shards went to {len(windows)} windows", details)
            window_id = next(iter(windows))

            def submitted() -> dict[str, Any] | None:
                for entry in http_log.read():
                    if entry.get("window_id") == window_id and entry.get("decision") == "submitted":
                        return entry
                return None

            entry = _wait(f"the flush closing window {window_id}", submitted, stack, deadline)
            t_submitted = time.monotonic()
            job_id = str(entry["job_id"])
            ledger = stack.ledger()

            def ended() -> Any:
                record = ledger.get(job_id)
                return record if record is not None and record.terminal else None

            record = _wait(f"run {job_id}", ended, stack, deadline, interval=0.1)
            t_ended = time.monotonic()
            if record.state != "SUCCEEDED":
                return _not_measured(f"run {job_id} ended {record.state}", details)
            version = (record.outputs or {}).get("version")
            uri = f"{stack.registry_uri}/champion.json"

            def registered() -> dict[str, Any] | None:
                try:
                    pointer = json.loads(gcs.read_bytes(uri, max_bytes=1 << 20))
                except Exception:
                    return None
                return pointer if pointer.get("version") == version else None

            pointer = _wait("champion.json naming the run's model", registered, stack, deadline)
            t_registered = time.monotonic()
            details.update(
                {
                    "shards": len(written),
                    "write_shards_s": round(t0 - t_first, 3),
                    "written_to_batched_s": round(t_batched - t0, 3),
                    "batched_to_submitted_s": round(t_submitted - t_batched, 3),
                    "submitted_to_run_ended_s": round(t_ended - t_submitted, 3),
                    "run_ended_to_registered_s": round(t_registered - t_ended, 3),
                    "written_to_submitted_s": round(t_submitted - t0, 3),
                    "written_to_registered_s": round(t_registered - t0, 3),
                    "job_id": job_id,
                    "version": version,
                    "accuracy": pointer.get("accuracy"),
                }
            )
    except Exception as exc:  # the stack belongs to another module: report, do not crash
        return _not_measured(f"{type(exc).__name__}: {str(exc)[:200]}", details)
    details["total_s"] = round(time.monotonic() - started, 2)
    note = (
        f"{details['mode']} mode, {details['shards']} digit shards; submitted after "
        f"{details['written_to_submitted_s']:.1f} s (window quiet period "
        f"{details['window_quiet_seconds']} s), run {details['submitted_to_run_ended_s']:.1f} s "
        "on the local backend"
    )
    return [Row(FIGURE, "s", details["written_to_registered_s"], None, note=note)], details
