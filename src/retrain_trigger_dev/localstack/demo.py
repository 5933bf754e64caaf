"""``retrain-trigger demo``: the whole continuous-training loop, end to end, on the local stack.

Steps, each timed and checked:

1. ``stack``: start the local stack (Pub/Sub emulator mode when installed, else the poller);
2. ``data``: write the digits data set as CSV shards to ``gs://<bucket>/data/<date>/``, and an
   empty ``_SUCCESS`` file (which the rules skip: zero bytes);
3. ``data_run``: each shard's notification reaches ``function_gcs``, which batches it into the
   route's window; once the window is quiet, the flush ticker's ``POST /flush`` closes it, writes
   its manifest and submits one run; wait for it to succeed;
4. ``champion``: read ``champion.json`` from the model registry in the bucket;
5. ``why``: ask the decision history what happened to ``_SUCCESS`` (skipped, and why) and to a
   shard (batched, in which window, which run, its state);
6. ``code_run``: POST a code change (``kind=code``) to ``function_http``; its run succeeds;
7. ``redelivery``: deliver a shard's event again; ``function_gcs`` answers ``duplicate``, and so
   does ``function_http`` for the same code change;
8. ``replay``: seek the push subscription back to the demo's start (or, without Pub/Sub, deliver
   every object's event again); everything is answered and no new run starts;
9. ``teardown``: stop the stack; no child process is left.

The process exits non-zero when any step did not happen as described.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from retrain_trigger.constants import FINAL_STATES, KIND_LABEL
from retrain_trigger_dev.localstack import objects
from retrain_trigger_dev.localstack.stack import DATA_PREFIX, MARKER, Stack
from retrain_trigger_dev.localstack.supervisor import (
    LogFollower,
    terminate_on_signals,
    write_line,
)

DEFAULT_TIMEOUT = 600.0
QUIET_SECONDS = 1.5


class StepFailed(Exception):
    """A demo step did not happen as described; the message says what was seen instead."""


@dataclass
class Step:
    name: str
    title: str
    ok: bool = False
    skipped: bool = False
    detail: str = ""
    seconds: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "ok": self.ok,
            "seconds": round(self.seconds, 2),
            "detail": self.detail,
        }
        if self.skipped:
            out["skipped"] = True
        out.update(self.data)
        return out


@dataclass
class DemoResult:
    steps: list[Step]
    mode: str
    wall_seconds: float
    runs: list[dict[str, Any]]
    champion: dict[str, Any] | None
    stack_dir: str

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "mode": self.mode,
            "wall_seconds": round(self.wall_seconds, 2),
            "steps": [s.to_dict() for s in self.steps],
            "runs": self.runs,
            "champion": self.champion,
            "stack_dir": self.stack_dir,
        }


# --------------------------------------------------------------------------- helpers


def post_json(
    url: str, body: dict[str, Any], *, timeout: float = 30.0
) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        status, raw = int(exc.code), exc.read()
    try:
        answer = json.loads(raw or b"{}")
    except ValueError:
        answer = {"raw": raw[:200].decode("utf-8", "replace")}
    return status, answer if isinstance(answer, dict) else {"raw": answer}


def decisions(lines: list[str]) -> list[dict[str, Any]]:
    """The decision entries among a function's log lines (one JSON object per event)."""
    out = []
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and "decision" in entry:
            out.append(entry)
    return out


def demo_commit(stack: Stack) -> str:
    """The checkout's HEAD commit when there is one, else a stable stand-in."""
    from retrain_trigger_dev.localstack.stack import source_root

    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=source_root(),
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    if len(sha) == 40 and all(c in "0123456789abcdef" for c in sha):
        return sha
    return hashlib.sha1(f"retrain-trigger-demo:{stack.bucket}".encode()).hexdigest()


def _short(job_id: str, width: int = 44) -> str:
    return job_id if len(job_id) <= width else job_id[: width - 1] + "…"


# --------------------------------------------------------------------------- the demo


class Demo:
    def __init__(
        self,
        out: IO[str],
        *,
        pubsub: bool | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        root: str | None = None,
        port_base: int = 0,
        tty: bool | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.out = out
        self.settings = dict(settings or {})
        self.pubsub = pubsub
        self.timeout = timeout
        self.root = root
        self.port_base = port_base
        self.tty = out.isatty() if tty is None else tty
        self.steps: list[Step] = []
        self.stack: Stack | None = None
        self.gcs_log: LogFollower | None = None
        self.gcs_decisions: list[dict[str, Any]] = []
        self.run_ids: dict[str, str] = {}
        self.champion: dict[str, Any] | None = None
        self.deadline = 0.0
        self.started = 0.0
        self.started_at: dt.datetime | None = None
        self.marker_uri = ""
        self.shard_keys: list[str] = []
        self.http_log: LogFollower | None = None
        self.http_decisions: list[dict[str, Any]] = []
        self.runs: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ output

    def say(self, text: str = "") -> None:
        self._end_progress()
        write_line(self.out, text)

    def _progress(self, text: str) -> None:
        if self.tty:
            self.out.write("\r\x1b[K" + text)
            self.out.flush()

    def _end_progress(self) -> None:
        if self.tty:
            self.out.write("\r\x1b[K")
            self.out.flush()

    @contextlib.contextmanager
    def step(self, name: str, title: str) -> Iterator[Step]:
        step = Step(name=name, title=title)
        self.steps.append(step)
        self.say(f"▶ {title}")
        started = time.monotonic()
        try:
            yield step
            step.ok = True
        except StepFailed as exc:
            step.detail = str(exc)
        except Exception as exc:
            step.detail = f"{type(exc).__name__}: {exc}"
        finally:
            step.seconds = time.monotonic() - started
            self._end_progress()
            mark = "✓" if step.ok else "✗"
            self.say(f"  {mark} {step.detail}  ({step.seconds:.1f} s)")

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    # ------------------------------------------------------------------ waiting

    def read_decisions(self) -> list[dict[str, Any]]:
        assert self.gcs_log is not None and self.http_log is not None
        new = decisions(self.gcs_log.lines())
        self.gcs_decisions.extend(new)
        self.http_decisions.extend(decisions(self.http_log.lines()))
        return new

    def wait_for(self, what: str, probe: Callable[[], Any], *, timeout: float | None = None) -> Any:
        """Polls ``probe`` until it returns something truthy, showing progress."""
        assert self.stack is not None
        limit = min(self.remaining(), timeout if timeout is not None else self.remaining())
        started = time.monotonic()
        spinner = "|/-\\"
        tick = 0
        while True:
            self.stack.check()
            result = probe()
            if result:
                return result
            elapsed = time.monotonic() - started
            if elapsed >= limit:
                raise StepFailed(f"{what}: nothing after {elapsed:.0f} s")
            self._progress(f"  {spinner[tick % 4]} {what}  {elapsed:5.1f} s")
            tick += 1
            time.sleep(0.2)

    def wait_run(self, job_id: str) -> Any:
        """Waits for the run to end, showing its state; returns its ledger record."""
        assert self.stack is not None
        ledger = self.stack.ledger()
        started = time.monotonic()
        last_state = ""
        spinner = "|/-\\"
        tick = 0
        while True:
            self.stack.check()
            self.read_decisions()
            record = ledger.get(job_id)
            state = record.state if record else "UNKNOWN"
            elapsed = time.monotonic() - started
            if state != last_state:
                if not self.tty:
                    self.say(f"    {_short(job_id)}  {state}  ({elapsed:.1f} s)")
                last_state = state
            if record is not None and record.state in FINAL_STATES:
                return record
            if elapsed >= self.remaining():
                raise StepFailed(f"run {job_id} still {state} after {elapsed:.0f} s (--timeout)")
            self._progress(f"  {spinner[tick % 4]} {_short(job_id)}  {state:<10} {elapsed:5.1f} s")
            tick += 1
            time.sleep(0.25)

    # ------------------------------------------------------------------ steps

    def run(self) -> DemoResult:
        self.started = time.monotonic()
        self.deadline = self.started + self.timeout
        self.started_at = dt.datetime.now(dt.UTC)
        stack = Stack(
            self.root, pubsub=self.pubsub, port_base=self.port_base, settings=self.settings
        )
        try:
            self._run_steps(stack)
        finally:
            if stack.supervisor is not None:
                self.runs = self._runs_summary(stack)
            with self.step("teardown", "Stopping the stack") as step:
                pids = stack.supervisor.process_tree() if stack.supervisor else []
                stack.stop()
                left = [pid for pid in pids if _alive(pid)]
                if left:
                    raise StepFailed(f"process(es) left running: {left}")
                step.detail = f"stopped {len(pids)} process(es); none left running"
        return DemoResult(
            steps=self.steps,
            mode=stack.mode,
            wall_seconds=time.monotonic() - self.started,
            runs=self.runs,
            champion=self.champion,
            stack_dir=str(stack.root),
        )

    def _run_steps(self, stack: Stack) -> None:
        with self.step("stack", "Starting the local stack") as step:
            stack.start()
            self.stack = stack
            self.gcs_log = stack.follow("function-gcs", from_start=True)
            self.http_log = stack.follow("function-http", from_start=True)
            via = (
                "fake-gcs-server → Pub/Sub emulator → push → function_gcs"
                if stack.mode == "pubsub"
                else "fake-gcs-server ← bucket poller → Eventarc CloudEvents → function_gcs"
            )
            step.detail = f"{stack.mode} mode ({via}), up in {stack.startup_seconds:.1f} s"
            step.data.update({"mode": stack.mode, "urls": stack.urls()})
        if not self.steps[-1].ok:
            return
        for method in (
            self._data,
            self._data_run,
            self._champion,
            self._why,
            self._code_run,
            self._redelivery,
            self._replay,
        ):
            if not method():
                break

    def _data(self) -> bool:
        from retrain_trigger import gcs
        from retrain_trigger_dev import sampledata

        assert self.stack is not None
        day = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
        folder = f"gs://{self.stack.bucket}/{DATA_PREFIX}{day}/"
        with self.step("data", f"Writing digit shards to {folder}") as step:
            written = sampledata.write_shards(folder, shards=4)
            self.shard_keys = []
            for uri in written:
                bucket, name = gcs.split_uri(uri)
                resource = next(r for r in objects.iter_objects(bucket, name) if r["name"] == name)
                self.shard_keys.append(f"{uri}#{resource['generation']}")
            self.marker_uri = folder + MARKER
            gcs.write_bytes(self.marker_uri, b"", content_type="text/plain", if_generation_match=0)
            step.detail = f"{len(written)} shards + an empty {MARKER}"
            step.data.update({"objects": [*written, self.marker_uri], "shards": self.shard_keys})
        return self.steps[-1].ok

    def _data_run(self) -> bool:
        with self.step(
            "data_run",
            "Waiting for the shards to be batched into one window, its run, and its success",
        ) as step:

            def batched() -> list[dict[str, Any]] | None:
                self.read_decisions()
                found = {
                    e.get("run_key"): e
                    for e in self.gcs_decisions
                    if e.get("run_key") in self.shard_keys and e.get("window_id")
                }
                return list(found.values()) if len(found) == len(self.shard_keys) else None

            shard_entries = self.wait_for("function_gcs batching every shard", batched)
            windows = {e["window_id"] for e in shard_entries}
            if len(windows) != 1:
                raise StepFailed(f"the shards went to {len(windows)} windows: {sorted(windows)}")
            window_id = windows.pop()
            self.say(f"    {len(shard_entries)} shards batched into window {window_id}")

            def submitted() -> dict[str, Any] | None:
                self.read_decisions()
                for entry in self.http_decisions:
                    if entry.get("window_id") == window_id and entry.get("decision") == "submitted":
                        return entry
                return None

            entry = self.wait_for(f"the flush closing window {window_id}", submitted)
            job_id = str(entry["job_id"])
            record = self.wait_run(job_id)
            manifest_uri = str(record.parameters.get("data_uri", ""))
            from retrain_trigger import gcs

            manifest = json.loads(gcs.read_bytes(manifest_uri, max_bytes=16 << 20))
            self.say(f"    window closed: {manifest['count']} objects in {manifest_uri}")
            if manifest["count"] != len(self.shard_keys):
                raise StepFailed(
                    f"manifest lists {manifest['count']} objects, not {len(self.shard_keys)}"
                )
            self.run_ids["data"] = job_id
            step.data.update({"window_id": window_id, "manifest": manifest_uri})
            self._check_succeeded(step, record)
            step.detail += f", manifest of {manifest['count']} objects"
        return self.steps[-1].ok

    def _why(self) -> bool:
        from retrain_trigger_dev.history import explain, text_explain

        assert self.stack is not None
        with self.step("why", "Asking the decision history why (retrain-trigger why)") as step:
            service = self.stack.service()
            marker = explain(service, self.marker_uri)
            shard = explain(service, self.shard_keys[0].split("#", 1)[0])
            for report in (marker, shard):
                for line in text_explain(report).splitlines():
                    self.say("    " + line)
            first = marker["decisions"][0] if marker["decisions"] else {}
            if first.get("decision") != "skipped" or "0 bytes" not in first.get("reason", ""):
                raise StepFailed(f"expected {MARKER} skipped for its size, got {first}")
            latest = shard["decisions"][-1] if shard["decisions"] else {}
            window = latest.get("window") or {}
            if window.get("state") != "CLOSED" or latest.get("run_state") != "SUCCEEDED":
                raise StepFailed(
                    f"expected the shard's window CLOSED and its run SUCCEEDED: {latest}"
                )
            step.detail = (
                f"{MARKER}: skipped ({first['reason']}); shard: window {window['id']} "
                f"closed, run {latest['job_id']} {latest['run_state']}"
            )
            step.data.update({"marker": marker, "shard": shard})
        return self.steps[-1].ok

    def _check_succeeded(self, step: Step, record: Any) -> None:
        seconds = (record.end_time or 0) - (record.start_time or record.create_time)
        outputs = record.outputs or {}
        step.data.update(
            {
                "job_id": record.job_id,
                "state": record.state,
                "run_seconds": round(seconds, 2),
                "accuracy": outputs.get("accuracy"),
                "registered": outputs.get("registered"),
                "version": outputs.get("version"),
            }
        )
        if record.state != "SUCCEEDED":
            raise StepFailed(f"run {record.job_id} ended {record.state}: {record.error[:300]}")
        accuracy = outputs.get("accuracy")
        shown = (
            f"accuracy {accuracy:.4f}"
            if isinstance(accuracy, int | float)
            else "no accuracy recorded"
        )
        registered = outputs.get("registered")
        reg = f"registered {outputs.get('version')}" if registered else "not registered"
        step.detail = f"{record.job_id} SUCCEEDED in {seconds:.1f} s, {shown}, {reg}"

    def _champion(self) -> bool:
        from retrain_trigger import gcs

        assert self.stack is not None
        uri = f"{self.stack.registry_uri}/champion.json"
        with self.step("champion", f"Reading the champion from {uri}") as step:
            pointer = json.loads(gcs.read_bytes(uri, max_bytes=1 << 20))
            self.champion = pointer
            data_step = next(s for s in self.steps if s.name == "data_run")
            if pointer.get("version") != data_step.data.get("version"):
                raise StepFailed(
                    f"champion is {pointer.get('version')!r}, not the data run's {data_step.data.get('version')!r}"
                )
            step.detail = f"champion {pointer.get('version')} (accuracy {float(pointer.get('accuracy', 0)):.4f})"
            step.data["champion"] = pointer
        return self.steps[-1].ok

    def _code_body(self) -> dict[str, Any]:
        assert self.stack is not None
        sha = demo_commit(self.stack)
        return {
            "kind": "code",
            "commit_sha": sha,
            "image_uri": f"localhost:5000/mnist-trainer:{sha[:12]}",
            "build_id": f"local-{sha[:8]}",
            "branch": "main",
        }

    def _code_run(self) -> bool:
        assert self.stack is not None
        url = self.stack.function_http_url + "/"
        with self.step("code_run", f"POST a code change to function_http ({url})") as step:
            body = self._code_body()
            status, answer = post_json(url, body)
            step.data.update({"http_status": status, "answer": answer})
            if status != 200 or answer.get("decision") != "submitted":
                raise StepFailed(f"HTTP {status}: {answer}")
            job_id = str(answer["job_id"])
            self.say(f"    HTTP {status} {answer.get('decision')} {job_id}")
            record = self.wait_run(job_id)
            self.run_ids["code"] = job_id
            self._check_succeeded(step, record)
            with contextlib.suppress(Exception):
                from retrain_trigger import gcs

                pointer = json.loads(
                    gcs.read_bytes(f"{self.stack.registry_uri}/champion.json", max_bytes=1 << 20)
                )
                self.champion = pointer
        return self.steps[-1].ok

    def _redelivery(self) -> bool:
        assert self.stack is not None
        stack = self.stack
        with self.step("redelivery", "Delivering the same events again") as step:
            runs_before = len(stack.ledger().list(limit=10_000))
            shard_key = self.shard_keys[0]
            shard_name = shard_key.split("#")[0][len(f"gs://{stack.bucket}/") :]
            resource = next(
                r for r in objects.iter_objects(stack.bucket, shard_name) if r["name"] == shard_name
            )
            seen = len(self.gcs_decisions)
            if stack.mode == "pubsub":
                from retrain_trigger_dev import replay

                [message_id] = replay.publish(stack.topic, replay.backfill_messages([resource]))
                how = f"republished a shard's GCS notification to {stack.topic_id} (message {message_id})"
            else:
                from retrain_trigger_dev.localstack.poller import post_cloud_event

                status = post_cloud_event(
                    stack.function_gcs_url, objects.storage_cloud_event(resource)
                )
                if status != 200:
                    raise StepFailed(f"function_gcs answered HTTP {status} to the same CloudEvent")
                how = "POSTed a shard's CloudEvent again to function_gcs"

            def answered() -> dict[str, Any] | None:
                self.read_decisions()
                for entry in self.gcs_decisions[seen:]:
                    if entry.get("run_key") == shard_key:
                        return entry
                return None

            entry = self.wait_for(
                "function_gcs answering the redelivered event", answered, timeout=60
            )
            self.say(
                f"    {how}: function_gcs answered {entry.get('decision')} ({entry.get('job_id')})"
            )
            status, answer = post_json(stack.function_http_url + "/", self._code_body())
            self.say(
                f"    the same code change again: function_http answered HTTP {status} {answer.get('decision')}"
            )
            runs_after = len(stack.ledger().list(limit=10_000))
            step.data.update(
                {
                    "event_decision": entry.get("decision"),
                    "http_decision": answer.get("decision"),
                    "runs_before": runs_before,
                    "runs_after": runs_after,
                }
            )
            if entry.get("decision") != "duplicate" or answer.get("decision") != "duplicate":
                raise StepFailed(
                    f"expected duplicate twice, got event {entry.get('decision')!r} and HTTP {answer.get('decision')!r}"
                )
            if runs_after != runs_before:
                raise StepFailed(f"run count changed from {runs_before} to {runs_after}")
            step.detail = f"both answered duplicate; still {runs_after} runs"
        return self.steps[-1].ok

    def _replay(self) -> bool:
        assert self.stack is not None and self.started_at is not None
        stack = self.stack
        title = (
            f"Replaying {stack.subscription_id} by seek to the demo's start"
            if stack.mode == "pubsub"
            else "Replaying every object's event (no Pub/Sub: direct redelivery)"
        )
        with self.step("replay", title) as step:
            ledger = stack.ledger()
            runs_before = len(ledger.list(limit=10_000))
            self.read_decisions()
            seen = len(self.gcs_decisions)
            if stack.mode == "pubsub":
                from retrain_trigger_dev import replay

                # Every message delivered so far was published since the start: expect each again.
                expected = len(
                    {
                        str(e.get("trigger", {}).get("event_id", i))
                        for i, e in enumerate(self.gcs_decisions)
                    }
                )
                replay.seek(stack.subscription, self.started_at)
                how = f"seek to {self.started_at.isoformat(timespec='seconds')}"
            else:
                from retrain_trigger_dev.localstack.poller import post_cloud_event

                resources = list(objects.iter_objects(stack.bucket, DATA_PREFIX))
                for resource in resources:
                    post_cloud_event(stack.function_gcs_url, objects.storage_cloud_event(resource))
                expected = len(resources)
                how = f"{expected} CloudEvent(s) delivered again"

            def all_answered() -> bool:
                self.read_decisions()
                return len(self.gcs_decisions) - seen >= expected

            self.wait_for(
                f"function_gcs answering {expected} replayed event(s)", all_answered, timeout=90
            )
            quiet_until = time.monotonic() + QUIET_SECONDS
            while time.monotonic() < quiet_until:  # let stragglers arrive before counting
                if self.read_decisions():
                    quiet_until = time.monotonic() + QUIET_SECONDS
                time.sleep(0.2)
            replayed = self.gcs_decisions[seen:]
            counts: dict[str, int] = {}
            for entry in replayed:
                counts[str(entry.get("decision"))] = counts.get(str(entry.get("decision")), 0) + 1
            runs_after = len(ledger.list(limit=10_000))
            step.data.update(
                {
                    "replayed": len(replayed),
                    "decisions": counts,
                    "runs_before": runs_before,
                    "runs_after": runs_after,
                }
            )
            if counts.get("submitted") or runs_after != runs_before:
                raise StepFailed(
                    f"the replay started runs: {counts}, runs {runs_before} → {runs_after}"
                )
            summary = ", ".join(f"{n} {d}" for d, n in sorted(counts.items()))
            step.detail = (
                f"{how}: {len(replayed)} event(s) answered ({summary}); still {runs_after} runs"
            )
        return self.steps[-1].ok

    # ------------------------------------------------------------------ summary

    def _runs_summary(self, stack: Stack) -> list[dict[str, Any]]:
        try:
            records = stack.ledger().list(limit=100)
        except Exception:
            return []
        out = []
        for record in reversed(records):
            seconds = (
                (record.end_time - record.start_time)
                if record.end_time and record.start_time
                else None
            )
            out.append(
                {
                    "job_id": record.job_id,
                    "state": record.state,
                    "run_key": record.run_key,
                    "kind": record.labels.get(KIND_LABEL, ""),
                    "seconds": round(seconds, 2) if seconds is not None else None,
                    "accuracy": record.outputs.get("accuracy"),
                    "registered": record.outputs.get("registered"),
                    "version": record.outputs.get("version"),
                }
            )
        return out


def _alive(pid: int) -> bool:
    from retrain_trigger_dev.processes import pid_alive

    return pid_alive(pid)


def render_summary(result: DemoResult, out: IO[str]) -> None:
    write_line(out, "")
    write_line(
        out,
        f"Demo {'PASSED' if result.ok else 'FAILED'} in {result.wall_seconds:.1f} s ({result.mode} mode)",
    )
    for step in result.steps:
        mark = "✓" if step.ok else "✗"
        write_line(out, f"  {mark} {step.name:<11} {step.seconds:6.1f} s  {step.detail}")
    if result.runs:
        write_line(out, "Runs:")
        for run in result.runs:
            accuracy = run.get("accuracy")
            acc = f"accuracy {accuracy:.4f}" if isinstance(accuracy, int | float) else ""
            secs = f"{run['seconds']:.1f} s" if run.get("seconds") is not None else ""
            write_line(out, f"  {run['job_id']:<48} {run['state']:<10} {secs:>7}  {acc}")
    if result.champion:
        write_line(
            out,
            f"Champion: {result.champion.get('version')} "
            f"(accuracy {float(result.champion.get('accuracy', 0)):.4f}, commit {str(result.champion.get('commit_sha') or '-')[:12]})",
        )


def run_demo(
    out: IO[str],
    *,
    json_out: IO[str] | None = None,
    pubsub: bool | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    root: str | None = None,
    port_base: int = 0,
    settings: Mapping[str, str] | None = None,
) -> DemoResult:
    """Runs the demo, narrating on ``out``; with ``json_out``, writes the summary there as JSON.

    Without ``root`` the stack lives in a temporary folder, removed when the demo passes and
    kept (for its logs) when it fails.
    """
    own = root is None
    folder = root or tempfile.mkdtemp(prefix="retrain-demo-")
    demo = Demo(
        out, pubsub=pubsub, timeout=timeout, root=folder, port_base=port_base, settings=settings
    )
    with terminate_on_signals():
        result = demo.run()
    keep = not result.ok or not own
    if json_out is not None:
        summary = result.to_dict()
        if not keep:
            summary["stack_dir"] = None
        json_out.write(json.dumps(summary, indent=2, default=str) + "\n")
        json_out.flush()
    else:
        render_summary(result, out)
    if keep:
        write_line(out, f"Logs and state are in {folder}")
    else:
        shutil.rmtree(folder, ignore_errors=True)
    return result
