"""``retrain-trigger why``, ``decisions`` and ``flush``: the decision history, and batch windows.

Every Decision is recorded in the state store (SQLite locally, Firestore in production) for
``history.ttl_days``. ``why gs://bucket/object`` answers "why didn't my upload start a run?": each
decision taken for that object, which rule filtered it or which window batched it, which run it
became and that run's state now.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

from retrain_trigger.errors import ConfigError


def _service(check_remote: bool = False) -> Any:
    """The Service over the configuration, installed as the process's (logs go to stderr)."""
    from retrain_trigger.config import load_config
    from retrain_trigger.decisions import setup_logging
    from retrain_trigger.service import Service, set_service

    setup_logging(sys.stderr)
    service = Service.from_config(load_config(), check_remote=check_remote)
    set_service(service)
    return service


def _when(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _job_state(service: Any, job_id: str) -> str:
    if not job_id:
        return ""
    try:
        return str(service.backend.get(job_id).state)
    except KeyError:
        return "unknown to the backend"
    except Exception as exc:  # the backend may be unreachable; the history still answers
        return f"state not available ({type(exc).__name__})"


def explain(service: Any, uri: str, *, limit: int = 20) -> dict[str, Any]:
    """What happened to one object: decisions newest first, with windows and run states."""
    if not uri.startswith("gs://") or "/" not in uri[5:]:
        raise ConfigError(f"expected gs://bucket/object, got {uri!r}")
    store = service.store
    entries = store.decisions_for_object(uri, limit=limit)
    out: list[dict[str, Any]] = []
    for entry in entries:
        item = {
            "time": _when(float(entry.get("time", 0))),
            "decision": entry.get("outcome"),
            "reason": entry.get("reason") or "",
            "route": entry.get("route") or "",
            "generation": (entry.get("trigger") or {}).get("generation", ""),
            "run_key": entry.get("run_key") or "",
            "job_id": entry.get("job_id") or "",
        }
        window_id = entry.get("window_id") or ""
        if window_id:
            window = store.get_window(window_id)
            item["window"] = {
                "id": window_id,
                "state": str(window.state) if window else "expired",
                "objects": window.count if window else None,
                "job_id": window.job_id if window else "",
                "manifest": window.manifest_uri if window else "",
            }
            if window and window.job_id and not item["job_id"]:
                item["job_id"] = window.job_id
        item["run_state"] = _job_state(service, str(item["job_id"]))
        out.append(item)
    return {"object": uri, "decisions": out}


def text_explain(report: dict[str, Any]) -> str:
    lines = [report["object"]]
    if not report["decisions"]:
        lines.append(
            "  no decision recorded: no event arrived for it (check the bucket notification / "
            "Eventarc trigger), or its history expired"
        )
    for item in report["decisions"]:
        gen = f" generation {item['generation']}" if item["generation"] else ""
        lines.append(f"  {item['time']}{gen}: {item['decision']}  {item['reason']}".rstrip())
        if "window" in item:
            w = item["window"]
            extra = f", manifest {w['manifest']}" if w["manifest"] else ""
            lines.append(f"    window {w['id']}: {w['state']}, {w['objects']} objects{extra}")
        if item["job_id"]:
            lines.append(f"    run {item['job_id']}: {item['run_state']}")
    return "\n".join(lines)


def cmd_why(args: argparse.Namespace) -> int:
    report = explain(_service(), args.uri, limit=args.limit)
    _out(report, args.json, text_explain)
    return 0


def cmd_decisions(args: argparse.Namespace) -> int:
    from retrain_trigger_dev.replay import parse_since

    service = _service()
    since = parse_since(args.since).timestamp()
    entries = service.store.list_decisions(
        since, route=args.route or None, outcome=args.outcome or None, limit=args.limit
    )
    rows = [
        {
            "time": _when(float(e.get("time", 0))),
            "decision": e.get("outcome"),
            "route": e.get("route") or "",
            "subject": _subject(e),
            "reason": e.get("reason") or "",
            "job_id": e.get("job_id") or "",
        }
        for e in entries
    ]
    _out(
        {"since": _when(since), "decisions": rows},
        args.json,
        lambda o: "\n".join(
            [f"{len(o['decisions'])} decision(s) since {o['since']}"]
            + [
                f"  {r['time']}  {r['decision']:<9} {r['route'] or '-':<12} {r['subject']}"
                + (f"  ({r['reason']})" if r["reason"] else "")
                for r in o["decisions"]
            ]
        ),
    )
    return 0


def _subject(entry: dict[str, Any]) -> str:
    trigger = entry.get("trigger") or {}
    if trigger.get("bucket") and trigger.get("object"):
        return f"gs://{trigger['bucket']}/{trigger['object']}#{trigger.get('generation', '')}"
    return str(entry.get("run_key") or entry.get("job_id") or trigger.get("kind") or "")


def cmd_flush(args: argparse.Namespace) -> int:
    from retrain_trigger.decisions import decision_dict

    service = _service()
    decisions = service.flush(route=args.route or "", force=args.now)
    body = {"flushed": [decision_dict(d) for d in decisions]}
    _out(
        body,
        args.json,
        lambda o: (
            f"{len(o['flushed'])} window(s) or queued run(s) acted on"
            + "".join(
                f"\n  {d['decision']} {d.get('job_id') or ''} {d.get('reason') or ''}"
                for d in o["flushed"]
            )
        ),
    )
    return 1 if any(d.outcome == "failed" for d in decisions) else 0


def _out(obj: Any, as_json: bool, text: Any) -> None:
    sys.stdout.write((json.dumps(obj, indent=2, default=str) if as_json else text(obj)) + "\n")


def add_commands(sub: Any) -> None:
    why = sub.add_parser("why", help="explain what happened to one object (decision history)")
    why.add_argument("uri", help="gs://bucket/object")
    why.add_argument("--limit", type=int, default=20)
    why.add_argument("--json", action="store_true")
    why.set_defaults(func=cmd_why)

    decisions = sub.add_parser("decisions", help="list recorded decisions")
    decisions.add_argument("--since", default="1d", help="RFC 3339 time or an age (15m, 2h, 1d)")
    decisions.add_argument("--route")
    decisions.add_argument(
        "--outcome", choices=["submitted", "duplicate", "skipped", "rejected", "failed"]
    )
    decisions.add_argument("--limit", type=int, default=100)
    decisions.add_argument("--json", action="store_true")
    decisions.set_defaults(func=cmd_decisions)

    flush = sub.add_parser("flush", help="close due batch windows and start queued runs now")
    flush.add_argument("--route")
    flush.add_argument("--now", action="store_true", help="close every open window, due or not")
    flush.add_argument("--json", action="store_true")
    flush.set_defaults(func=cmd_flush)
