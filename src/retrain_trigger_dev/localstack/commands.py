"""The local stack's commands: ``up``, ``demo``, ``runs`` and ``replay``.

The command line (``retrain_trigger_dev.cli``) declares their options; each handler here takes
them as attributes of ``args`` (with ``overrides``: the global options' settings, by variable
name), optionally the streams to write to, and returns the exit status.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import IO, Any

from retrain_trigger_dev.localstack.supervisor import write_line

DEFAULT_STACK_DIR = ".local/stack"


# --------------------------------------------------------------------------- up


def _clock() -> str:
    return time.strftime("%H:%M:%S")


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


class Monitor:
    """Follows the functions' decision lines and the ledger's run states, one line per change."""

    def __init__(self, stack: Any, out: IO[str]) -> None:
        from retrain_trigger_dev.localstack.supervisor import LogFollower

        self.stack = stack
        self.out = out
        self.followers = {
            "gcs": LogFollower(stack.log_path("function-gcs")),
            "http": LogFollower(stack.log_path("function-http")),
            "worker": LogFollower(stack.log_path("worker")),
        }
        self.states: dict[str, str] = {}
        self._ledger: Any = None

    def prime(self) -> None:
        """Runs already in the ledger (a restarted stack) are shown only when they change."""
        for record in self.ledger().list(limit=200):
            self.states[record.job_id] = record.state

    def ledger(self) -> Any:
        if self._ledger is None:
            self._ledger = self.stack.ledger()
        return self._ledger

    def poll(self) -> int:
        """Prints what happened since the last call; returns the number of lines printed."""
        printed = 0
        for source, follower in self.followers.items():
            for line in follower.lines():
                text = self.format_log_line(source, line)
                if text:
                    write_line(self.out, text)
                    printed += 1
        for record in reversed(self.ledger().list(limit=50)):
            if self.states.get(record.job_id) != record.state:
                self.states[record.job_id] = record.state
                write_line(self.out, self.format_run(record))
                printed += 1
        return printed

    @staticmethod
    def format_log_line(source: str, line: str) -> str:
        line = line.strip()
        if not line.startswith("{"):
            return ""
        try:
            entry = json.loads(line)
        except ValueError:
            return ""
        if not isinstance(entry, dict):
            return ""
        if "decision" in entry:
            decision = str(entry["decision"])
            trigger = entry.get("trigger") or {}
            subject = entry.get("job_id") or (
                f"{trigger.get('object')}" if trigger.get("object") else entry.get("run_key") or ""
            )
            text = f"{_clock()}  {source:<5} {decision:<10} {_short(str(subject), 56)}"
            if entry.get("reason"):
                text += f"  ({_short(str(entry['reason']), 90)})"
            elif entry.get("run_key") and entry.get("job_id"):
                text += f"  run key {_short(str(entry['run_key']), 80)}"
            return text
        if entry.get("severity") in ("ERROR", "CRITICAL"):
            return (
                f"{_clock()}  {source:<5} ERROR      {_short(str(entry.get('message', '')), 160)}"
            )
        return ""

    @staticmethod
    def format_run(record: Any) -> str:
        text = f"{_clock()}  run   {record.state:<10} {_short(record.job_id, 56)}"
        if record.state == "SUCCEEDED":
            outputs = record.outputs or {}
            seconds = (record.end_time or 0) - (record.start_time or record.create_time)
            text += f"  in {seconds:.1f} s"
            if isinstance(outputs.get("accuracy"), int | float):
                text += f", accuracy {outputs['accuracy']:.4f}"
            if outputs.get("registered"):
                text += f", registered {outputs.get('version')}"
            elif "registered" in outputs:
                text += ", not registered"
        elif record.state in ("FAILED", "CANCELLED"):
            error = (record.error or "").strip().splitlines()
            text += f"  {_short(error[-1], 120) if error else ''}  log {record.log_path}"
        return text


def print_banner(stack: Any, out: IO[str]) -> None:
    via = (
        "fake-gcs-server → Pub/Sub emulator (push) → function_gcs"
        if stack.mode == "pubsub"
        else "bucket poller → Eventarc CloudEvents → function_gcs (no Pub/Sub emulator)"
    )
    write_line(out, f"Local stack up in {stack.startup_seconds:.1f} s: {via}")
    for name, url in stack.urls().items():
        write_line(out, f"  {name:<14} {url}")
    write_line(out, f"  {'config':<14} {stack.config_path}")
    write_line(out, f"  {'logs':<14} {stack.log_dir}")
    write_line(out, "")
    write_line(out, "Environment for a client shell:")
    for key, value in stack.client_env().items():
        write_line(out, f"  export {key}={value}")
    write_line(out, "")
    if stack.user_config is not None:
        _print_user_banner(stack, out)
        return
    day = time.strftime("%Y-%m-%d", time.gmtime())
    write_line(out, "Try (in that shell):")
    write_line(out, f"  retrain-trigger sample-data gs://{stack.bucket}/data/{day}/")
    write_line(
        out,
        f"  curl -sX POST --data-binary '' '{stack.gcs_url}/upload/storage/v1/b/{stack.bucket}/o"
        f"?uploadType=media&name=data/{day}/_SUCCESS'",
    )
    write_line(
        out,
        f"  curl -sX POST -H 'Content-Type: application/json' {stack.function_http_url}/ "
        '-d \'{"kind":"code","commit_sha":"0123abcd","image_uri":"localhost:5000/mnist-trainer:dev"}\'',
    )
    write_line(out, "  retrain-trigger runs")
    write_line(out, "")
    write_line(out, "Decisions and runs (Ctrl-C to stop):")


def _print_user_banner(stack: Any, out: IO[str]) -> None:
    """What the user's configuration listens to, and how to feed it."""
    config = stack.config()
    topology = stack.topology
    write_line(out, f"Routes of {stack.config_path} (edit it: the stack applies each change):")
    for route in config.routes:
        kinds = [k for k in ("data", "code", "model") if route.accepts(k)]
        line = f"  {route.name:<14} {', '.join(kinds)} -> {route.template}"
        if route.data is not None:
            rule = route.data
            line += f"\n  {'':<14} objects gs://{rule.bucket}/{{{','.join(rule.include)}}}"
            line += f" ({rule.mode} mode"
            line += f", marker {rule.marker})" if rule.mode == "marker" else ")"
        write_line(out, line)
    if topology is not None and topology.notify:
        write_line(out, "")
        write_line(out, "Upload data (in that shell), e.g.:")
        for bucket, prefix in topology.notify.items():
            write_line(out, f"  retrain-trigger upload ./my-data/ gs://{bucket}/{prefix}")
    write_line(out, "  retrain-trigger windows; retrain-trigger runs")
    write_line(out, "")
    write_line(out, "Decisions and runs (Ctrl-C to stop):")


def cmd_up(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    from retrain_trigger_dev.localstack.stack import Stack
    from retrain_trigger_dev.localstack.supervisor import terminate_on_signals

    out = out or sys.stdout
    stack = Stack(
        args.dir,
        port_base=args.port_base,
        pubsub=False if args.no_pubsub else None,
        poll_interval=args.poll_interval,
        persist=True,
        settings=_overrides(args),
        config_file=getattr(args, "config", None) or None,
    )
    status = 0
    with terminate_on_signals():
        try:
            write_line(out, f"Starting the local stack in {Path(args.dir).resolve()} …")
            from retrain_trigger_dev.progress import waiting

            with waiting("starting fake-gcs-server, the emulator, both functions and the worker"):
                stack.start()
            monitor = Monitor(stack, out)
            monitor.prime()
            print_banner(stack, out)
            while True:
                for line in stack.reload_if_changed():
                    write_line(out, f"{_clock()}  {line}")
                monitor.poll()
                dead = stack.dead_children()
                if dead:
                    for child in dead:
                        write_line(
                            out,
                            f"{child.name} exited with status {child.process.returncode}; log {child.log_path}",
                        )
                        write_line(out, child.tail(10))
                    status = 1
                    break
                time.sleep(0.5)
        except KeyboardInterrupt as exc:
            reason = str(exc) or "interrupted"
            write_line(out, f"\nStopping the local stack ({reason}) …")
        finally:
            stack.stop()
    write_line(out, "Stopped.")
    return status


# --------------------------------------------------------------------------- demo


def cmd_demo(
    args: argparse.Namespace, out: IO[str] | None = None, err: IO[str] | None = None
) -> int:
    from retrain_trigger_dev.localstack.demo import run_demo

    out = out or sys.stdout
    narrate = (err or sys.stderr) if args.json else out
    result = run_demo(
        narrate,
        json_out=out if args.json else None,
        pubsub=False if args.no_pubsub else None,
        timeout=args.timeout,
        root=args.dir,
        port_base=args.port_base,
        settings=_overrides(args),
    )
    return 0 if result.ok else 1


# --------------------------------------------------------------------------- runs


def _overrides(args: Any) -> dict[str, str]:
    """The global options' settings (by variable name) the command was given."""
    return dict(getattr(args, "overrides", None) or {})


def _state_dir(overrides: dict[str, str]) -> str:
    from retrain_trigger import settings
    from retrain_trigger.config import load_config
    from retrain_trigger.errors import ConfigError

    try:
        return load_config(overrides=overrides).state_dir
    except ConfigError:
        pass
    env = {**os.environ, **overrides}
    return settings.value(env, "RETRAIN_STATE_DIR") or os.path.join(DEFAULT_STACK_DIR, "state")


def _duration(record: Any) -> float | None:
    if record.start_time is None:
        return None
    end = record.end_time or time.time()
    return end - record.start_time


def run_summary(record: Any) -> dict[str, Any]:
    from retrain_trigger.constants import KIND_LABEL, rfc3339

    duration = _duration(record)
    outputs = record.outputs or {}
    return {
        "job_id": record.job_id,
        "job": record.job_name,
        "state": record.state,
        "route": record.route,
        "kind": record.labels.get(KIND_LABEL, ""),
        "run_key": record.run_key,
        "create_time": rfc3339(record.create_time),
        "start_time": rfc3339(record.start_time),
        "end_time": rfc3339(record.end_time),
        "duration_seconds": round(duration, 2) if duration is not None else None,
        "metrics": {
            k: v
            for k, v in outputs.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        },
        "registered": outputs.get("registered"),
        "version": outputs.get("version") or None,
        "error": record.error or None,
        "log_path": record.log_path,
    }


def _reported(outputs: dict[str, Any], error: str) -> str:
    """What a run reported, whatever its pipeline: its error, else its scalar outputs."""
    if error:
        return _short(error.splitlines()[0], 70)
    parts = []
    for name, value in sorted(outputs.items()):
        if isinstance(value, bool):
            parts.append(f"{name}={'yes' if value else 'no'}")
        elif isinstance(value, float):
            parts.append(f"{name}={value:.4f}")
        elif isinstance(value, int | str) and len(str(value)) <= 40:
            parts.append(f"{name}={value}")
    return _short(" ".join(parts), 70) or "-"


def _vertex_runs(args: argparse.Namespace, config: Any, out: IO[str]) -> int:
    """``runs`` against Vertex AI: the trigger's jobs, found by their ``retrain-route`` label."""
    from retrain_trigger.backends import create_backend
    from retrain_trigger.constants import KIND_LABEL

    backend = create_backend(config)
    if args.action == "show":
        if not args.job_id:
            write_line(out, "runs show needs a JOB_ID")
            return 2
        try:
            status = backend.get(args.job_id)
        except KeyError:
            write_line(out, f"no run {args.job_id} in {config.project}/{config.region}")
            return 1
        shown = dataclasses.asdict(status)
        if args.json:
            write_line(out, json.dumps(shown, indent=2, default=str))
            return 0
        for key in ("job_id", "job_name", "state", "route", "run_key", "create_time", "end_time"):
            write_line(out, f"{key:<14} {shown[key]}")
        for name, value in sorted(status.parameters.items()):
            write_line(out, f"{'parameter':<14} {name} = {value}")
        if status.error:
            write_line(out, f"{'error':<14} {status.error}")
        return 0
    jobs = backend.list(route=args.route, limit=args.limit, state=args.state)
    if args.json:
        write_line(out, json.dumps([dataclasses.asdict(j) for j in jobs], indent=2, default=str))
        return 0
    if not jobs:
        write_line(out, f"no runs of the trigger in {config.project}/{config.region}")
        return 0
    write_line(
        out, f"{'JOB ID':<48} {'ROUTE':<12} {'KIND':<6} {'STATE':<10} {'CREATED':<20}  REPORTED"
    )
    for job in jobs:
        write_line(
            out,
            f"{_short(job.job_id, 48):<48} {_short(job.route, 12):<12} "
            f"{job.labels.get(KIND_LABEL, '-'):<6} {job.state:<10} {job.create_time[:19]:<20}  "
            f"{_reported(job.outputs, job.error)}",
        )
    return 0


def cmd_runs(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    from retrain_trigger.config import load_config
    from retrain_trigger.errors import ConfigError
    from retrain_trigger_dev.local.ledger import Ledger, ledger_path

    out = out or sys.stdout
    try:
        config = load_config(overrides=_overrides(args))
    except ConfigError:
        config = None
    if config is not None and config.backend == "vertex":
        return _vertex_runs(args, config, out)
    state_dir = _state_dir(_overrides(args))
    if not os.path.exists(ledger_path(state_dir)):
        write_line(out, f"no runs yet: {ledger_path(state_dir)} does not exist")
        return 0 if args.action == "list" else 3
    ledger = Ledger.for_state_dir(state_dir)
    if args.action == "show":
        if not args.job_id:
            write_line(out, "runs show needs a JOB_ID")
            return 2
        record = ledger.get(args.job_id)
        if record is None:
            write_line(out, f"no run {args.job_id} in {ledger.path}")
            return 3  # not found (README, "Exit codes"); 1 means a submission failed
        summary = run_summary(record)
        summary.update(
            {"parameters": record.parameters, "labels": record.labels, "outputs": record.outputs}
        )
        if args.json:
            write_line(out, json.dumps(summary, indent=2, default=str))
            return 0
        for key in (
            "job_id",
            "job",
            "state",
            "route",
            "kind",
            "run_key",
            "create_time",
            "start_time",
            "end_time",
        ):
            write_line(out, f"{key:<14} {summary[key]}")
        if summary["duration_seconds"] is not None:
            write_line(out, f"{'duration':<14} {summary['duration_seconds']:.1f} s")
        for name, value in sorted(summary["metrics"].items()):
            write_line(out, f"{'metric':<14} {name} = {value}")
        if summary["registered"] is not None:
            registered = f"yes, version {summary['version']}" if summary["registered"] else "no"
            write_line(out, f"{'registered':<14} {registered}")
            if record.outputs.get("reason"):
                write_line(out, f"{'':<14} {record.outputs['reason']}")
        for name, value in sorted(record.parameters.items()):
            write_line(out, f"{'parameter':<14} {name} = {value}")
        if record.error:
            write_line(out, f"{'error':<14} {record.error}")
        write_line(out, f"{'log':<14} {record.log_path}")
        return 0

    records = ledger.list(route=args.route, state=args.state.upper(), limit=args.limit)
    if args.json:
        write_line(out, json.dumps([run_summary(r) for r in records], indent=2, default=str))
        return 0
    if not records:
        write_line(out, f"no runs in {ledger.path}")
        return 0
    write_line(out, f"{'JOB ID':<48} {'STATE':<10} {'CREATED':<20} {'DURATION':>8}  REPORTED")
    for record in records:
        summary = run_summary(record)
        duration = summary["duration_seconds"]
        write_line(
            out,
            f"{_short(record.job_id, 48):<48} {record.state:<10} {summary['create_time'][:19]:<20} "
            f"{(f'{duration:.1f}s' if duration is not None else '-'):>8}  "
            f"{_reported(record.outputs or {}, record.error)}",
        )
    return 0


# --------------------------------------------------------------------------- replay


def cmd_replay(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    from retrain_trigger_dev import replay

    out = out or sys.stdout
    project = args.replay_project or replay.default_project({**os.environ, **_overrides(args)})
    if args.bucket:
        return _backfill(args, out, project)
    if not args.subscription or not args.since:
        write_line(
            out, "replay needs --subscription S --since TIME, or --bucket B [--prefix P] --topic T"
        )
        return 2
    subscription = replay.resource_path("subscriptions", args.subscription, project)
    since = replay.parse_since(args.since)
    replay.seek(subscription, since)
    if args.json:
        write_line(out, json.dumps({"subscription": subscription, "since": since.isoformat()}))
    else:
        write_line(
            out,
            f"{subscription}: moved back to {since.isoformat()}: messages published since then are delivered again",
        )
    return 0


def _backfill(args: argparse.Namespace, out: IO[str], project: str) -> int:
    from retrain_trigger_dev import replay
    from retrain_trigger_dev.localstack import objects

    resources = list(objects.iter_objects(args.bucket, args.prefix))
    messages = replay.backfill_messages(resources)
    where = f"gs://{args.bucket}/{args.prefix}"
    if args.dry_run:
        from retrain_trigger.config import load_config

        planned = replay.plan_backfill(load_config(overrides=_overrides(args)), messages)
        if args.json:
            write_line(out, json.dumps([p.to_dict() for p in planned], indent=2, default=str))
            return 0
        for item in planned:
            if item.outcome == "run":
                write_line(out, f"run     {item.job_id}  {item.run_key}")
            else:
                write_line(out, f"{item.outcome:<7} {item.key}: {item.reason}")
        starts = sum(1 for p in planned if p.outcome == "run")
        write_line(
            out,
            f"{len(planned)} object(s) under {where}: {starts} would start a run (dry run: nothing published)",
        )
        return 0
    if not args.topic:
        write_line(out, "a backfill needs --topic T (or RETRAIN_TOPIC), or --dry-run")
        return 2
    topic = replay.resource_path("topics", args.topic, project)
    ids = replay.publish(topic, messages)
    if args.json:
        write_line(
            out,
            json.dumps(
                {
                    "topic": topic,
                    "published": [
                        {"object": m.key, "message_id": i}
                        for m, i in zip(messages, ids, strict=True)
                    ],
                }
            ),
        )
    else:
        write_line(out, f"published {len(ids)} notification(s) for {where} to {topic}")
    return 0
