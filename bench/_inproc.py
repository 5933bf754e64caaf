"""The decision path in one process, without an HTTP server (run by ``bench.figures.inproc``).

Separates what retrain-trigger costs from what functions-framework, gunicorn and HTTP cost:

- ``handle``: ``Service.handle`` on pre-decoded triggers (rules, Decision, the log line);
- ``event``: ``answer_event`` on CloudEvent objects (adds decoding);
- ``client``: functions-framework's Flask app through ``test_client()`` with binary CloudEvents
  (adds Flask, functions-framework and CloudEvent parsing, but no sockets);
- ``submitted``: ``Service.handle`` on new objects, through the real client to the fake Vertex.

Decision log lines go to a file, as they go to a pipe or file in production. Prints one JSON
document on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from bench._load import percentile

STORAGE_FINALIZED = "google.cloud.storage.object.v1.finalized"


def _timed(n: int, call: Callable[[int], Any], check: Callable[[Any], bool]) -> dict[str, Any]:
    latencies = []
    bad = 0
    began = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        result = call(i)
        latencies.append(time.perf_counter() - t0)
        if not check(result):
            bad += 1
    wall = time.perf_counter() - began
    out = {
        "count": n,
        "wall_s": round(wall, 4),
        "rate_per_s": round(n / wall, 1),
        "p50_us": round(percentile(latencies, 50) * 1e6, 1),
        "p99_us": round(percentile(latencies, 99) * 1e6, 1),
    }
    if bad:
        out["problems"] = [f"{bad} of {n} did not give the expected outcome"]
    return out


def _resource(i: int, *, folder: bool) -> dict[str, str]:
    name = f"data/2026-11-27/folder-{i:06d}/" if folder else f"data/2026-11-27/inproc-{i:06d}.csv"
    return {
        "bucket": "bench-data",
        "name": name,
        "generation": str(1_764_259_200_000_000 + i),
        "size": "0" if folder else "4096",
        "contentType": "text/csv",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._inproc")
    parser.add_argument("--config", required=True)
    parser.add_argument("--gcs", required=True)
    parser.add_argument("--handle", type=int, default=20_000)
    parser.add_argument("--event", type=int, default=20_000)
    parser.add_argument("--client", type=int, default=5000)
    parser.add_argument("--submitted", type=int, default=200)
    parser.add_argument("--log", required=True)
    args = parser.parse_args(argv)

    os.environ["RETRAIN_CONFIG"] = args.config
    os.environ["STORAGE_EMULATOR_HOST"] = args.gcs
    real_stdout = sys.stdout
    log = open(args.log, "w", buffering=1)  # noqa: SIM115 - for the life of the process
    sys.stdout = log  # the decision log handler writes to the current sys.stdout

    import functions_framework
    from cloudevents.conversion import to_binary
    from cloudevents.http import CloudEvent

    from retrain_trigger import events
    from retrain_trigger.entrypoints import answer_event
    from retrain_trigger.model import Outcome
    from retrain_trigger.service import get_service

    service = get_service()
    out: dict[str, Any] = {}

    def skipped(decision: Any) -> bool:
        return decision.outcome is Outcome.SKIPPED

    triggers = [
        events.trigger_from_gcs_object(
            _resource(i, folder=True),
            source="eventarc",
            event_type=STORAGE_FINALIZED,
            event_id=f"e{i}",
        )
        for i in range(args.handle)
    ]
    out["handle"] = _timed(args.handle, lambda i: service.handle(triggers[i]), skipped)

    def cloud_event(i: int, *, folder: bool) -> CloudEvent:
        return CloudEvent(
            {
                "type": STORAGE_FINALIZED,
                "source": "//storage.googleapis.com/projects/_/buckets/bench-data",
                "id": f"e{i}",
                "time": "2026-11-27T16:00:00.000Z",
            },
            _resource(i, folder=folder),
        )

    cloud_events = [cloud_event(i, folder=True) for i in range(args.event)]
    out["event"] = _timed(args.event, lambda i: answer_event(cloud_events[i]), skipped)

    app = functions_framework.create_app(
        "retrain_event", os.path.join(os.getcwd(), "function_gcs", "main.py"), "cloudevent"
    )
    client = app.test_client()
    encoded = [to_binary(cloud_event(i, folder=True)) for i in range(args.client)]
    out["client"] = _timed(
        args.client,
        lambda i: client.post("/", headers=encoded[i][0], data=encoded[i][1]).status_code,
        lambda status: status == 200,
    )

    fresh = [
        events.trigger_from_gcs_object(
            _resource(i, folder=False),
            source="eventarc",
            event_type=STORAGE_FINALIZED,
            event_id=f"s{i}",
        )
        for i in range(args.submitted + 1)
    ]
    first = service.handle(fresh[-1])  # loads the clients and the template; not timed
    out["submitted"] = _timed(
        args.submitted,
        lambda i: service.handle(fresh[i]),
        lambda decision: decision.outcome is Outcome.SUBMITTED,
    )
    out["submitted"]["first_outcome"] = str(first.outcome)

    sys.stdout = real_stdout
    log.close()
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
