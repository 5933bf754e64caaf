"""``retrain-trigger``: the command line over the same core the functions use.

Every setting is both an environment variable and a global flag (``--config`` for
``RETRAIN_CONFIG``, ``--project`` for ``GOOGLE_CLOUD_PROJECT``, ``--backend`` for
``RETRAIN_BACKEND`` …); a flag wins over the environment.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from retrain_trigger import __version__
from retrain_trigger.config import ENV_SETTINGS
from retrain_trigger.errors import ConfigError, RetrainError


def _flag(env_name: str) -> str:
    if env_name == "GOOGLE_CLOUD_PROJECT":
        return "--project"
    return "--" + env_name.removeprefix("RETRAIN_").lower().replace("_", "-")


def _add_settings(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (each overrides its environment variable)")
    for env_name, (_, meaning) in ENV_SETTINGS.items():
        group.add_argument(
            _flag(env_name), dest=f"env_{env_name}", metavar="VALUE", help=f"{meaning} [{env_name}]"
        )


def _apply_settings(args: argparse.Namespace) -> None:
    for env_name in ENV_SETTINGS:
        value = getattr(args, f"env_{env_name}", None)
        if value is not None:
            os.environ[env_name] = value


def _service(check_remote: bool = False) -> Any:
    from retrain_trigger_dev.history import _service as load_service

    return load_service(check_remote)


def cmd_check(args: argparse.Namespace) -> int:
    service = _service(check_remote=args.remote)
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
    _print(
        out,
        args.json,
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


def cmd_submit(args: argparse.Namespace) -> int:
    from retrain_trigger import events

    service = _service()
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
            import dataclasses

            trigger = dataclasses.replace(trigger, dry_run=True)
    else:
        body = {
            "kind": args.kind,
            "route": args.route,
            "commit_sha": args.commit_sha,
            "image_uri": args.image_uri,
            "build_id": args.build_id,
            "branch": args.branch,
            "model_uri": args.model_uri,
            "template": args.template,
            "force": args.force,
            "nonce": args.nonce,
            "dry_run": args.dry_run,
        }
        trigger = events.decode_trigger_body(
            {k: v for k, v in body.items() if v not in (None, "", False)}, source="cli"
        )
    decision = service.handle(trigger)
    from retrain_trigger.decisions import decision_dict

    body = decision_dict(decision)
    if decision.request is not None and args.dry_run:
        body["request"] = decision.request.to_dict()
    _print(body, True, str)
    return 0 if decision.ok else (2 if decision.outcome == "rejected" else 1)


def _print(obj: Any, as_json: bool, text: Any) -> None:
    if as_json:
        sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    else:
        sys.stdout.write(text(obj) + "\n")


def _delegate(module: str, argv_attr: str = "rest"):
    def run(args: argparse.Namespace) -> int:
        import importlib

        main = importlib.import_module(module).main
        return int(main(getattr(args, argv_attr)) or 0)

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="retrain-trigger",
        description="Start exactly one Vertex AI pipeline run per change of data, code or base model.",
    )
    parser.add_argument("--version", action="version", version=f"retrain-trigger {__version__}")
    _add_settings(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    check = sub.add_parser("check", help="validate the configuration and the templates it names")
    check.add_argument(
        "--remote", action="store_true", help="also read gs:// and https:// templates"
    )
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=cmd_check)

    submit = sub.add_parser("submit", help="decide and submit one change, as the functions would")
    submit.add_argument("--kind", choices=["code", "model"], help="code or model change")
    submit.add_argument("--route")
    submit.add_argument("--commit-sha")
    submit.add_argument("--image-uri")
    submit.add_argument("--build-id")
    submit.add_argument("--branch")
    submit.add_argument("--model-uri")
    submit.add_argument("--template", help="a template under the route's allowed_templates")
    submit.add_argument("--gcs-uri", help="a data change: gs://bucket/object (needs --generation)")
    submit.add_argument("--generation")
    submit.add_argument("--size", default="1")
    submit.add_argument(
        "--force", action="store_true", help="run again even if this change already ran"
    )
    submit.add_argument("--nonce")
    submit.add_argument(
        "--dry-run", action="store_true", help="print the RunRequest, submit nothing"
    )
    submit.set_defaults(func=cmd_submit)

    for name, module, text in (
        (
            "sample-data",
            "retrain_trigger_dev.sampledata",
            "write the digits data set as CSV shards",
        ),
        ("package", "retrain_trigger_dev.packaging", "build the deployable function zips"),
    ):
        p = sub.add_parser(name, help=text, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=_delegate(module), passthrough=True)

    try:
        from retrain_trigger_dev.localstack.commands import add_commands
    except ImportError:  # the local stack's extra dependencies are not installed
        pass
    else:
        add_commands(sub)
    try:
        from retrain_trigger_dev.history import add_commands as add_history_commands
    except ImportError:
        pass
    else:
        add_history_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "passthrough", False):
        args.rest = [*args.rest, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    _apply_settings(args)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, RetrainError) as exc:
        sys.stderr.write(f"retrain-trigger: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
