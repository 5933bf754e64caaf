"""``retrain-trigger``: the command line over the same core the functions use (click).

Every setting with a flag (``retrain_trigger.settings``) is one global option, declared once
from that declaration with ``envvar=`` as functions-framework's ``_cli.py`` does: a flag wins over
its variable. Options become overrides passed to the configuration loader; nothing is written
into the environment. Shell completion:
``eval "$(_RETRAIN_TRIGGER_COMPLETE=bash_source retrain-trigger)"`` (``zsh_source``,
``fish_source``).

Exit codes: 0 done, 1 a submission failed, 2 bad input or configuration.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import click

from retrain_trigger import __version__, settings
from retrain_trigger.errors import ConfigError, RetrainError

PROG = "retrain-trigger"
_STACK_DIR_DEFAULT = ".local/stack"
# Exit codes (README, "Exit codes"): one meaning each, whatever the command.
EXIT_OK = 0
EXIT_FAILED = 1  # a submission (or a run asked about) failed; retrying may help
EXIT_BAD_INPUT = 2  # bad input or configuration: fix it
EXIT_NOT_FOUND = 3  # the object, run or route asked about is unknown
OUTCOMES = ("submitted", "duplicate", "batched", "skipped", "rejected", "failed")


class NotFound(RetrainError):
    """What the command was asked about does not exist (exit code 3)."""


@dataclass
class Session:
    """What the global options set: settings by variable name, for the configuration loader."""

    overrides: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        """The environment as the options amend it (for what reads settings by name)."""
        return {**os.environ, **self.overrides}

    def config(self) -> Any:
        from retrain_trigger.config import load_config

        # A command lives for a moment: it never runs pipelines in a worker thread of its own
        # (its run processes would outlive it). The local stack's worker runs what it submits.
        return load_config(overrides={"RETRAIN_LOCAL_WORKER": "false", **self.overrides})

    def service(self, check_remote: bool = False, *, human: bool = True) -> Any:
        """The Service over the configuration, installed as the process's. Logs go to stderr:
        JSON lines when the command prints JSON, else readable warnings only (the command
        prints each decision itself, so decision lines would repeat it)."""
        from retrain_trigger.decisions import setup_logging
        from retrain_trigger.service import Service, set_service

        if human:
            _human_logging()
        setup_logging(sys.stderr)
        service = Service.from_config(self.config(), check_remote=check_remote)
        set_service(service)
        return service


class _HumanLogHandler(logging.Handler):
    """stderr lines ``retrain-trigger: warning: ...`` for the package's warnings and errors;
    decision lines are left to the command's own output. It takes the JSON handler's place
    (``setup_logging`` installs one handler per process)."""

    _retrain_json = True

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "retrain_trigger.decision" or record.levelno < logging.WARNING:
            return
        try:
            sys.stderr.write(f"{PROG}: {record.levelname.lower()}: {record.getMessage()}\n")
        except Exception:  # never fail a command over a log line
            self.handleError(record)


def _human_logging() -> None:
    root = logging.getLogger("retrain_trigger")
    if any(getattr(h, "_retrain_json", False) for h in root.handlers):
        return
    root.addHandler(_HumanLogHandler())
    root.setLevel(logging.INFO)
    root.propagate = False


def _write(obj: Any, as_json: bool, text: Callable[[Any], str] = str) -> None:
    sys.stdout.write((json.dumps(obj, indent=2, default=str) if as_json else text(obj)) + "\n")


def _settings_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """One global option per declared setting that has a flag."""
    for setting in reversed(settings.GLOBAL_FLAGS):
        kind: Any = click.Choice(setting.choices) if setting.choices else str
        command = click.option(
            setting.flag,
            setting.name,
            envvar=setting.name,
            type=kind,
            metavar="VALUE" if not setting.choices else None,
            show_envvar=True,
            help=settings_help(setting),
        )(command)
    return command


def settings_help(setting: settings.Setting) -> str:
    overrides = f" (overrides {setting.field})" if setting.field else ""
    return setting.meaning.replace("`", "") + overrides


pass_session = click.make_pass_decorator(Session)


@click.group(
    name=PROG,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    help="Start exactly one Vertex AI pipeline run per change of data, code or base model.",
)
@click.version_option(__version__, prog_name=PROG)
@_settings_options
@click.pass_context
def main_group(ctx: click.Context, **values: str | None) -> None:
    ctx.obj = Session({name: value for name, value in values.items() if value is not None})


# --------------------------------------------------------------------------- check, submit


@main_group.command(help="Validate the configuration and every template it names.")
@click.option("--remote", is_flag=True, help="also read gs:// and https:// templates")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@pass_session
def check(session: Session, remote: bool, as_json: bool) -> int:
    from retrain_trigger_dev.progress import waiting

    with waiting("reading the configuration and its templates"):
        service = session.service(check_remote=remote, human=not as_json)
    config = service.config
    out: dict[str, Any] = {"config": config.source, "backend": config.backend, "routes": []}
    for route in config.routes:
        entry: dict[str, Any] = {"name": route.name, "template": route.template}
        template = service.templates.peek(route.template)
        if template is not None:
            entry["pipeline"] = template.pipeline_name
            entry["digest"] = template.digest
        else:
            entry["pipeline"] = "(remote, not read: use --remote)"
        entry["triggers"] = [k for k in ("data", "code", "model") if route.accepts(k)]
        entry["loop_guard"] = [f"{uri} ({origin})" for uri, origin in route.written]
        out["routes"].append(entry)
    out["warnings"] = list(config.warnings)
    _write(
        out,
        as_json,
        lambda o: "\n".join(
            [f"{o['config']}: valid ({o['backend']} backend)"]
            + [
                f"  route {r['name']}: {', '.join(r['triggers'])} -> {r['template']} [{r['pipeline']}]"
                + (f"\n    never triggers: {', '.join(r['loop_guard'])}" if r["loop_guard"] else "")
                for r in o["routes"]
            ]
            + [f"warning: {w}" for w in o["warnings"]]
        ),
    )
    return 0


@main_group.command(help="Decide and submit one change, through the same core as the functions.")
@click.option("--kind", type=click.Choice(["code", "model"]), help="code or model change")
@click.option("--route", help="the route (default: the only one accepting the kind)")
@click.option("--commit-sha", help="a code change's commit")
@click.option("--image-uri", help="a code change's training image")
@click.option("--build-id", help="the Cloud Build id")
@click.option("--branch", help="the branch built")
@click.option("--model-uri", help="a model change's base model")
@click.option("--template", help="a template under the route's allowed_templates")
@click.option("--gcs-uri", help="a data change: gs://bucket/object (needs --generation)")
@click.option("--generation", help="the object's generation")
@click.option("--size", default="1", show_default=True, help="the object's size in bytes")
@click.option("--force", is_flag=True, help="run again even if this change already ran")
@click.option("--nonce", help="what tells one forced rerun from the next (needed with --force)")
@click.option("--dry-run", is_flag=True, help="print the RunRequest, submit nothing")
@click.option("--json", "as_json", is_flag=True, help="print the decision as JSON")
@pass_session
def submit(session: Session, **options: Any) -> int:
    import dataclasses

    from retrain_trigger import events
    from retrain_trigger.decisions import decision_dict

    args = argparse.Namespace(**options)
    service = session.service(human=not args.as_json)
    if args.gcs_uri:
        from retrain_trigger.gcs import split_uri

        bucket, name = split_uri(args.gcs_uri)
        if not args.generation:
            raise ConfigError("--generation is required with --gcs-uri (the object's generation)")
        resource = {
            "bucket": bucket,
            "name": name,
            "generation": args.generation,
            "size": args.size,
        }
        trigger = events.trigger_from_gcs_object(
            resource, source="cli", event_type="OBJECT_FINALIZE"
        )
        if args.dry_run:
            trigger = dataclasses.replace(trigger, dry_run=True)
    else:
        body = {
            key: getattr(args, key)
            for key in (
                "kind",
                "route",
                "commit_sha",
                "image_uri",
                "build_id",
                "branch",
                "model_uri",
                "template",
                "force",
                "nonce",
                "dry_run",
            )
        }
        trigger = events.decode_trigger_body(
            {k: v for k, v in body.items() if v not in (None, "", False)}, source="cli"
        )
    decision = service.handle(trigger)
    answer = decision_dict(decision)
    if decision.request is not None and args.dry_run:
        answer["request"] = decision.request.to_dict()
    _write(answer, args.as_json, _decision_text)
    return 0 if decision.ok else (2 if decision.outcome == "rejected" else 1)


def _decision_text(answer: dict[str, Any]) -> str:
    """One decision for a reader: the outcome, the job, the reason, the request of a dry run."""
    line = str(answer.get("decision"))
    if answer.get("job_id"):
        line += f" {answer['job_id']}"
    if answer.get("reason"):
        line += f": {answer['reason']}"
    lines = [line]
    if answer.get("job"):
        lines.append(f"  job      {answer['job']}")
    if answer.get("run_key"):
        lines.append(f"  run key  {answer['run_key']}")
    request = answer.get("request")
    if isinstance(request, dict):
        lines.append("  would submit (dry run):")
        for key in ("template", "pipeline_root", "display_name"):
            if request.get(key):
                lines.append(f"    {key:<14} {request[key]}")
        for name, value in sorted((request.get("parameter_values") or {}).items()):
            lines.append(f"    parameter      {name} = {json.dumps(value)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- tools


@main_group.command("sample-data", help="Write the digits data set as CSV shards (no download).")
@click.argument("dest")
@click.option("--shards", type=click.IntRange(1), default=4, show_default=True, help="shards")
@click.option("--broken", is_flag=True, help="also write a shard that fails validation")
def sample_data(dest: str, shards: int, broken: bool) -> int:
    from retrain_trigger_dev import sampledata

    try:
        written = sampledata.write_shards(dest, shards, broken=broken)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    for uri in written:
        click.echo(uri)
    return 0


@main_group.command(help="Build the deployable zip of each Cloud Function (content-hashed).")
@click.option("--repo-root", default=".", show_default=True, help="repository root")
@click.option("--dist", default="dist", show_default=True, help="output folder, under the root")
@click.option(
    "--config",
    "config_path",
    default=None,
    help="configuration to include as retrain.yaml, with its relative templates (default: the "
    "global --config / RETRAIN_CONFIG)",
)
@click.option("--tfvars", default="", help="also write the zip paths as Terraform variables")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@pass_session
def package(
    session: Session,
    repo_root: str,
    dist: str,
    config_path: str | None,
    tfvars: str,
    as_json: bool,
) -> int:
    from retrain_trigger_dev import packaging

    chosen = config_path or settings.value(session.env(), "RETRAIN_CONFIG")
    args = argparse.Namespace(
        repo_root=repo_root, dist=dist, config=chosen, tfvars=tfvars, json=as_json
    )
    return packaging.run(args)


@main_group.command(help="Write a commented retrain.yaml for a compiled pipeline (KFP YAML).")
@click.option(
    "--template",
    "template_path",
    required=True,
    metavar="PIPELINE.yaml",
    help="the compiled pipeline whose parameters to list and fill",
)
@click.option("--output", default="retrain.yaml", show_default=True, help="the file to write")
@click.option(
    "--route", "route_name", default="", help="the route's name (default: the pipeline's)"
)
@click.option("--bucket", default="", help="the data bucket (default: <route>-data)")
@click.option("--force", is_flag=True, help="overwrite an existing file")
def init(template_path: str, output: str, route_name: str, bucket: str, force: bool) -> int:
    from retrain_trigger_dev.scaffold import scaffold

    if os.path.exists(output) and not force:
        raise click.UsageError(f"{output} exists; choose another --output or add --force")
    text, todo = scaffold(template_path, output, route=route_name, bucket=bucket)
    with open(output, "w", encoding="utf-8") as fh:
        fh.write(text)
    click.echo(f"wrote {output} for {template_path}")
    if todo:
        click.echo(f"set the required parameter(s) {', '.join(todo)} in it, then:")
    click.echo(f"  retrain-trigger --config {output} check")
    click.echo(f"  retrain-trigger up --config {output}")
    return 0


@main_group.command(help="Copy local files to gs:// (the local stack's bucket, or a real one).")
@click.argument("source", type=click.Path(exists=True, dir_okay=True, file_okay=True))
@click.argument("dest")
@click.option("--stack-dir", default=_STACK_DIR_DEFAULT, show_default=True, help="a running stack")
def upload(source: str, dest: str, stack_dir: str) -> int:
    from retrain_trigger_dev.localstack.objects import upload_files
    from retrain_trigger_dev.progress import waiting

    with waiting(f"uploading {source} to {dest}"):
        written = upload_files(source, dest, stack_dir=stack_dir)
    for uri in written:
        click.echo(uri)
    return 0


# --------------------------------------------------------------------------- decision history


@main_group.command(help="Close due batch windows and start queued runs now.")
@click.option("--route", default="", help="only this route")
@click.option("--now", "force", is_flag=True, help="close every open window, due or not")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@pass_session
def flush(session: Session, route: str, force: bool, as_json: bool) -> int:
    from retrain_trigger.decisions import decision_dict
    from retrain_trigger_dev.progress import waiting

    service = session.service(human=not as_json)
    with waiting("closing windows and starting queued runs"):
        decisions = service.flush(route=route, force=force)
    body = {"flushed": [decision_dict(d) for d in decisions]}
    _write(
        body,
        as_json,
        lambda o: (
            f"{len(o['flushed'])} window(s) or queued run(s) acted on"
            + "".join(
                f"\n  {d['decision']} {d.get('job_id') or ''} {d.get('reason') or ''}"
                for d in o["flushed"]
            )
        ),
    )
    return 1 if any(d.outcome == "failed" for d in decisions) else 0


@main_group.command(help="Explain what happened to one object (decision history).")
@click.argument("uri")
@click.option("--limit", type=click.IntRange(1), default=20, show_default=True, help="decisions")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@pass_session
def why(session: Session, uri: str, limit: int, as_json: bool) -> int:
    from retrain_trigger_dev import history

    report = history.explain(session.service(), uri, limit=limit)
    _write(report, as_json, history.text_explain)
    # An object with no decision is "not found": a script can tell it from a known one.
    return EXIT_OK if report["decisions"] else EXIT_NOT_FOUND


@main_group.command(help="List recorded decisions.")
@click.option("--since", default="1d", show_default=True, help="RFC 3339 time or an age: 15m, 2h")
@click.option("--route", default="", help="only this route")
@click.option("--outcome", type=click.Choice(OUTCOMES), help="only this outcome")
@click.option("--limit", type=click.IntRange(1), default=100, show_default=True, help="at most")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@pass_session
def decisions(
    session: Session, since: str, route: str, outcome: str | None, limit: int, as_json: bool
) -> int:
    from retrain_trigger_dev import history

    listed = history.list_decisions(
        session.service(), since, route=route, outcome=outcome or "", limit=limit
    )
    _write(listed, as_json, history.text_decisions)
    return 0


# --------------------------------------------------------------------------- windows, queue, pauses


def _routes(service: Any, route: str) -> list[str]:
    names = [r.name for r in service.config.routes]
    if route and route not in names:
        raise NotFound(
            f"no route {route!r} in {service.config.source} (routes: {', '.join(names)})"
        )
    return [route] if route else names


def _when(seconds: float | None) -> str:
    from retrain_trigger.constants import rfc3339

    return rfc3339(seconds) if seconds else "-"


@main_group.command(help="List the batch windows of window routes (open ones by default).")
@click.option("--route", default="", help="only this route")
@click.option(
    "--state",
    type=click.Choice(["OPEN", "CLOSING", "CLOSED", "all"], case_sensitive=False),
    default="OPEN",
    show_default=True,
    help="windows in this state",
)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@pass_session
def windows(session: Session, route: str, state: str, as_json: bool) -> int:
    service = session.service()
    now = service.now()
    listed: list[dict[str, Any]] = []
    for name in _routes(service, route):
        config_route = service.config.route(name)
        rule = config_route.data if config_route is not None else None
        if rule is None or rule.mode != "window":
            continue
        chosen = None if state.lower() == "all" else state.upper()
        for window in service.store.list_windows(name, chosen):
            due_in = None
            if window.state == "OPEN":
                due_at = min(
                    window.last_event_at + rule.quiet_seconds,
                    window.opened_at + rule.max_wait_seconds,
                )
                due_in = round(max(0.0, due_at - now), 1)
            listed.append(
                {
                    "route": name,
                    "window_id": window.window_id,
                    "state": str(window.state),
                    "objects": window.count,
                    "opened_at": _when(window.opened_at),
                    "last_object_at": _when(window.last_event_at),
                    "closes_in_seconds": due_in,
                    "job_id": window.job_id or None,
                    "manifest_uri": window.manifest_uri or None,
                }
            )

    def text(rows: list[dict[str, Any]]) -> str:
        if not rows:
            return f"no {'' if state.lower() == 'all' else state.lower() + ' '}windows"
        lines = [f"{'ROUTE':<14} {'WINDOW':<36} {'STATE':<8} {'OBJECTS':>7}  CLOSES / RUN"]
        for row in rows:
            after = (
                f"in {row['closes_in_seconds']:.0f} s (or on flush --now)"
                if row["closes_in_seconds"] is not None
                else row["job_id"] or "-"
            )
            lines.append(
                f"{row['route']:<14} {row['window_id']:<36} {row['state']:<8} "
                f"{row['objects']:>7}  {after}"
            )
        return "\n".join(lines)

    _write(listed, as_json, text)
    return 0


@main_group.command(help="List the run waiting per queue_latest route (the queue).")
@click.option("--route", default="", help="only this route")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@pass_session
def queue(session: Session, route: str, as_json: bool) -> int:
    service = session.service()
    listed: list[dict[str, Any]] = []
    for name in _routes(service, route):
        config_route = service.config.route(name)
        if config_route is None or config_route.concurrency != "queue_latest":
            continue
        pending = service.store.get_pending(name)
        active = service.store.get_active(name)
        entry: dict[str, Any] = {
            "route": name,
            "running": active.job_id if active is not None else None,
            "waiting": None,
        }
        if pending is not None:
            try:
                job_id = json.loads(pending.request_json).get("job_id")
            except (ValueError, AttributeError):
                job_id = None
            entry["waiting"] = {
                "job_id": job_id,
                "run_key": pending.run_key,
                "queued_at": _when(pending.queued_at),
            }
        listed.append(entry)

    def text(rows: list[dict[str, Any]]) -> str:
        if not rows:
            return "no queue_latest route" + (f" named {route}" if route else "")
        lines = [f"{'ROUTE':<14} {'RUNNING':<48} WAITING"]
        for row in rows:
            waiting = row["waiting"]
            shown = f"{waiting['job_id']} (since {waiting['queued_at']})" if waiting else "-"
            lines.append(f"{row['route']:<14} {row['running'] or '-':<48} {shown}")
        return "\n".join(lines)

    _write(listed, as_json, text)
    return 0


def _who() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@main_group.command(help="Pause a route: its events are recorded skipped until resume.")
@click.argument("route")
@click.option("--reason", required=True, help="why (shown in every skipped decision)")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@pass_session
def pause(session: Session, route: str, reason: str, as_json: bool) -> int:
    service = session.service()
    _routes(service, route)
    if not service.pauses_shared():
        raise ConfigError(
            "pauses are kept in the state store the functions share: set store: firestore "
            "(the local backend's SQLite file is shared by the local stack)",
            source=service.config.source,
            field="store",
        )
    done = service.store.set_pause(route, reason.strip(), _who(), service.now())
    _write(
        done.to_dict(),
        as_json,
        lambda o: (
            f"paused {o['route']}: {o['reason']} (resume with: retrain-trigger resume {o['route']})"
        ),
    )
    return 0


@main_group.command(help="Resume a paused route.")
@click.argument("route")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@pass_session
def resume(session: Session, route: str, as_json: bool) -> int:
    service = session.service()
    _routes(service, route)
    was = service.pauses_shared() and service.store.clear_pause(route)
    _write(
        {"route": route, "resumed": bool(was)},
        as_json,
        lambda o: f"resumed {route}" if o["resumed"] else f"{route} was not paused",
    )
    return 0


# --------------------------------------------------------------------------- the local stack

_STACK_DIR = ".local/stack"


@main_group.command(help="Run the local stack (GCS, Pub/Sub, both functions, the worker).")
@click.option(
    "--port-base",
    type=click.IntRange(0, 65532),
    default=0,
    metavar="PORT",
    help="PORT (fake-gcs-server), PORT+1 (Pub/Sub), PORT+2 and PORT+3 (the functions)",
)
@click.option("--no-pubsub", is_flag=True, help="deliver events with a bucket poller")
@click.option("--dir", default=_STACK_DIR, show_default=True, help="the stack's folder")
@click.option("--poll-interval", type=float, default=1.0, show_default=True, help="seconds")
@click.option(
    "--config",
    "config",
    default=None,
    metavar="FILE",
    help="your retrain.yaml (default: the global --config; none: the built-in MNIST route); "
    "read, never written, and applied again whenever it changes",
)
@pass_session
def up(session: Session, **options: Any) -> int:
    from retrain_trigger_dev.localstack.commands import cmd_up

    if not options.get("config"):
        given = click.get_current_context().find_root().get_parameter_source("RETRAIN_CONFIG")
        if given is click.core.ParameterSource.COMMANDLINE:
            options["config"] = session.overrides.get("RETRAIN_CONFIG")
    return cmd_up(argparse.Namespace(overrides=session.overrides, **options))


@main_group.command(
    help="Run the whole loop end to end on a fresh local stack, checking each step."
)
@click.option("--json", is_flag=True, help="print a machine-readable summary on stdout")
@click.option("--no-pubsub", is_flag=True, help="use the bucket poller instead of Pub/Sub")
@click.option("--timeout", type=float, default=600.0, show_default=True, help="give up after S")
@click.option("--dir", default=None, help="keep the stack's files here (default: a temporary one)")
@click.option("--port-base", type=click.IntRange(0, 65532), default=0, help="as for up")
@pass_session
def demo(session: Session, **options: Any) -> int:
    from retrain_trigger_dev.localstack.commands import cmd_demo

    return cmd_demo(argparse.Namespace(overrides=session.overrides, **options))


@main_group.command(help="List the local backend's runs, or show one (from the ledger).")
@click.argument("action", type=click.Choice(["list", "show"]), default="list")
@click.argument("job_id", required=False)
@click.option("--json", is_flag=True, help="print JSON")
@click.option("--limit", type=click.IntRange(1), default=20, show_default=True, help="at most")
@click.option("--route", default="", help="only this route")
@click.option("--state", default="", help="only runs in this state (e.g. RUNNING)")
@pass_session
def runs(session: Session, **options: Any) -> int:
    from retrain_trigger_dev.localstack.commands import cmd_runs

    return cmd_runs(argparse.Namespace(overrides=session.overrides, **options))


@main_group.command(help="Redeliver past events: seek a subscription, or backfill a bucket.")
@click.option(
    "--subscription", envvar="RETRAIN_SUBSCRIPTION", default="", show_envvar=True, help="to seek"
)
@click.option("--since", help="RFC 3339 time (2026-11-26T00:00Z) or an age (15m, 2h, 1d)")
@click.option("--bucket", help="backfill: the bucket whose objects to announce again")
@click.option("--prefix", default="", help="backfill: only objects under this prefix")
@click.option(
    "--topic", envvar="RETRAIN_TOPIC", default="", show_envvar=True, help="backfill topic"
)
@click.option(
    "--project", "replay_project", default="", help="project of short names (default: the setting)"
)
@click.option("--dry-run", is_flag=True, help="backfill: print the runs that would start")
@click.option("--json", is_flag=True, help="print JSON")
@pass_session
def replay(session: Session, **options: Any) -> int:
    from retrain_trigger_dev.localstack.commands import cmd_replay

    return cmd_replay(argparse.Namespace(overrides=session.overrides, **options))


# --------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: runs one command and returns its exit status."""
    try:
        status = main_group.main(args=argv, prog_name=PROG, standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        return 130
    except NotFound as exc:
        sys.stderr.write(f"{PROG}: {exc}\n")
        return EXIT_NOT_FOUND
    except RetrainError as exc:
        sys.stderr.write(f"{PROG}: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if not _is_missing_credentials(exc):
            raise
        sys.stderr.write(
            f"{PROG}: no Google credentials found ({type(exc).__name__}): run "
            "`gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to "
            "a service account key file; for the local stack, export the STORAGE_EMULATOR_HOST "
            "that `retrain-trigger up` prints\n"
        )
        return EXIT_BAD_INPUT
    return int(status or 0)


def _is_missing_credentials(exc: BaseException) -> bool:
    """google-auth's "no default credentials" (imported only if it is already loaded)."""
    module = sys.modules.get("google.auth.exceptions")
    kind = getattr(module, "DefaultCredentialsError", None) if module else None
    seen: BaseException | None = exc
    for _ in range(5):  # the error may arrive wrapped (raise ... from)
        if seen is None:
            return False
        if kind is not None and isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


if __name__ == "__main__":
    sys.exit(main())
