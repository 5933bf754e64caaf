"""What ``retrain-trigger why`` and ``decisions`` read from the decision history, and say.

Every Decision is recorded in the state store (SQLite locally, Firestore in production) for
``history.ttl_days``. ``why gs://bucket/object`` answers "why didn't my upload start a run?": each
decision taken for that object, which rule filtered it or which window batched it, which run it
became and that run's state now.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from retrain_trigger.errors import ConfigError


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
        item.update(_run_end(store, str(item["job_id"])))
        if not item.get("run_state"):
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
            lines.append(f"    run {item['job_id']}: {_run_text(item)}")
    return "\n".join(lines)


def _run_end(store: Any, job_id: str) -> dict[str, Any]:
    """How the run ended, from its record (run outcomes): ``{}`` while it has not, or when
    the store does not know it."""
    if not job_id:
        return {}
    try:
        record = store.get_run(job_id)
    except Exception:  # the history still answers without it
        return {}
    if record is None or not record.ended:
        return {}
    return {
        "run_state": record.state,
        "run": {
            "ended": _when(record.ended_at) if record.ended_at else "",
            "duration_seconds": record.duration_s,
            "error": record.error or "",
            "failed_task": record.failed_task or "",
            "reporter": record.reporter,
        },
    }


def _run_text(item: dict[str, Any]) -> str:
    run = item.get("run")
    if not run:
        return str(item["run_state"])
    text = f"{item['run_state']} at {run['ended']}"
    if run["duration_seconds"] is not None:
        text += f" after {run['duration_seconds']:.0f} s"
    text += f" (reported by {run['reporter']})"
    if run["failed_task"]:
        text += f", failing task {run['failed_task']}"
    if run["error"]:
        text += f": {run['error'][:300]}"
    return text


def list_decisions(
    service: Any, since: str, *, route: str = "", outcome: str = "", limit: int = 100
) -> dict[str, Any]:
    """Recorded decisions since ``since`` (RFC 3339 or an age: ``15m``, ``2h``, ``1d``)."""
    from retrain_trigger_dev.replay import parse_since

    start = parse_since(since).timestamp()
    entries = service.store.list_decisions(
        start, route=route or None, outcome=outcome or None, limit=limit
    )
    rows = [
        {
            "time": _when(float(e.get("time", 0))),
            "decision": e.get("outcome"),
            "route": e.get("route") or "",
            "subject": _subject(e),
            "reason": e.get("reason") or "",
            "job_id": e.get("job_id") or "",
            "run_state": _run_end(service.store, str(e.get("job_id") or "")).get("run_state", ""),
        }
        for e in entries
    ]
    return {"since": _when(start), "decisions": rows}


def text_decisions(listed: dict[str, Any]) -> str:
    return "\n".join(
        [f"{len(listed['decisions'])} decision(s) since {listed['since']}"]
        + [
            f"  {r['time']}  {r['decision']:<9} {r['route'] or '-':<12} {r['subject']}"
            + (f"  ({r['reason']})" if r["reason"] else "")
            + (f"  run {r['run_state']}" if r.get("run_state") else "")
            for r in listed["decisions"]
        ]
    )


def _subject(entry: dict[str, Any]) -> str:
    trigger = entry.get("trigger") or {}
    if trigger.get("bucket") and trigger.get("object"):
        return f"gs://{trigger['bucket']}/{trigger['object']}#{trigger.get('generation', '')}"
    return str(entry.get("run_key") or entry.get("job_id") or trigger.get("kind") or "")
