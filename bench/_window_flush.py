"""``python -m bench._window_flush CONFIG ROUTE``: one forced flush of a route's open window in a
process of its own, for the ``window`` figure. Prints one JSON line: the flush's seconds, the
process's RSS before it and its peak RSS (VmHWM) after it, the decisions and the manifest size.

Everything a flush needs is loaded before the RSS is read (the store's and Cloud Storage's client
libraries, the configuration, the template): the growth is what the flush itself holds."""

from __future__ import annotations

import json
import os
import sys
import time

from bench._procs import rss


def main(argv: list[str]) -> int:
    config_path, route = argv
    from retrain_trigger import gcs
    from retrain_trigger.config import load_config
    from retrain_trigger.gates import windows  # noqa: F401 - loaded before the measurement
    from retrain_trigger.service import Service

    config = load_config(config_path)
    service = Service.from_config(config)
    (route_config,) = [r for r in config.routes if r.name == route]
    (window,) = service.store.list_windows(route, "OPEN")
    # Load what the flush will use: the GCS client, the template, the backend client.
    gcs.client()
    service.templates.for_route(route_config)
    before = rss(os.getpid())["VmRSS"]
    began = time.monotonic()
    decisions = service.flush(route=route, force=True)
    seconds = time.monotonic() - began
    after = rss(os.getpid())
    closed = service.store.get_window(window.window_id)
    manifest_bytes = 0
    if closed is not None and closed.manifest_uri:
        bucket, name = gcs.split_uri(closed.manifest_uri)
        blob = gcs.client().bucket(bucket).get_blob(name)
        manifest_bytes = int(blob.size or 0) if blob is not None else 0
    print(
        json.dumps(
            {
                "window_id": window.window_id,
                "seconds": round(seconds, 2),
                "rss_before_mib": round(before, 1),
                "peak_rss_mib": round(after["VmHWM"], 1),
                "rss_growth_mib": round(after["VmHWM"] - before, 1),
                "decisions": [str(d.outcome) for d in decisions],
                "reasons": [d.reason for d in decisions],
                "manifest_mib": round(manifest_bytes / 2**20, 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
