"""The ``window`` figure: a bulk upload into one batch window, on both state stores in one run.

The same route (``mode: window``) is served by ``function_gcs`` (a real functions-framework
process) with ``store: sqlite`` and with ``store: firestore`` on the Firestore emulator; the same
deliveries reach both. Measured per store:

- **ingest**: ``window_ingest`` deliveries of distinct objects, 16 at a time: events/s, and the
  deliveries answered 5xx (each would be redelivered by the platform);
- **flush**: windows of 1,000 (the ingested window itself), 10,000 and 100,000 objects, each
  closed by one ``Service.flush`` in a process of its own: seconds, and that process's peak RSS
  above its RSS before the flush. The larger windows are seeded through the store's own records
  (their first object through ``add_to_window``, the rest written in bulk in the same form),
  because 100,000 deliveries through HTTP would take long on one machine; what the flush reads
  is the same either way. Each flush must close its window into one run whose manifest lists
  every object once.

Targets (issue 14): Firestore ingest at least 0.5x SQLite's in the same run, no delivery answered
5xx, every window closed by one flush into one run with a complete manifest, flush memory flat
in the window size.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench._env import DATA_BUCKET, PROJECT, REGION, TEMPLATE_URI, Bench
from bench._load import Encoded, run_load, storage_event, summary
from bench._procs import REPO, BenchError, FunctionProcess, base_env
from bench._report import Row

ROUTE = "bulk"
CONCURRENCY = 16
FLUSH_SIZES = (1_000, 10_000, 100_000)
INGEST_RATIO_TARGET = 0.5
# "Flat": the flush of the largest window may use at most this much more memory than the
# smallest one's (a list of 100,000 items alone takes well over 50 MiB).
FLAT_RSS_SLACK_MIB = 15.0
SEED_BATCH = 500


def _config(store: str, state_dir: Path, endpoint: str) -> str:
    return textwrap.dedent(
        f"""\
        project: {PROJECT}
        region: {REGION}
        backend: vertex
        vertex_endpoint: {endpoint}
        store: {store}
        local: {{state_dir: "{state_dir}"}}
        history: {{enabled: true, ttl_days: 7}}
        auth:
          mode: none
        limits:
          submit_deadline_seconds: 30
        routes:
          - name: {ROUTE}
            template: {TEMPLATE_URI}
            pipeline_root: gs://{DATA_BUCKET}/bulk-root
            parameters:
              data_uri: "{{data_uri}}"
              model_registry_uri: gs://{DATA_BUCKET}/models
            data:
              bucket: {DATA_BUCKET}
              include: ["bulk/**"]
              mode: window
              quiet_seconds: 3600
              max_wait_seconds: 86400
        """
    )


# --------------------------------------------------------------------------- Firestore emulator


@contextlib.contextmanager
def firestore_emulator(log_dir: Path) -> Iterator[str]:
    """The tests' launcher (tests/integration/conftest.py): gcloud's emulator jar run by Java on
    a free port, retried when the port was taken. Yields ``host:port``."""
    from tests.integration import conftest as launcher

    java, gcloud = shutil.which("java"), shutil.which("gcloud")
    if java is None or gcloud is None:
        raise BenchError("the Firestore emulator needs java and gcloud")
    jar = next(
        (
            root / launcher.FIRESTORE_JAR
            for root in launcher._sdk_roots(gcloud)
            if (root / launcher.FIRESTORE_JAR).is_file()
        ),
        None,
    )
    if jar is None:
        raise BenchError("gcloud's Firestore emulator is not installed")
    for attempt in range(1, launcher.FIRESTORE_START_ATTEMPTS + 1):
        host = f"127.0.0.1:{launcher._candidate_port()}"
        log_path = log_dir / f"firestore-emulator-{attempt}.log"
        process = launcher._start_emulator(java, jar, int(host.rsplit(":", 1)[1]), log_path)
        state = launcher._wait_ready(process, host, log_path)
        if state == "ready":
            break
        launcher._stop(process)
        if state != "port taken":
            raise BenchError(f"the Firestore emulator did not start: {state}")
    else:
        raise BenchError("the Firestore emulator found no free port")
    try:
        yield host
    finally:
        launcher._stop(process)


# --------------------------------------------------------------------------- seeding


def _seed(store: Any, count: int, now: float) -> str:
    """A window of ``count`` objects: the first through ``add_to_window`` (it opens the window),
    the others written in bulk as the store records them. Returns the window id."""
    from retrain_trigger.store import WindowItem
    from retrain_trigger.store.base import item_doc_id

    prefix = f"seeded-{uuid.uuid4().hex[:8]}"

    def item(n: int) -> WindowItem:
        return WindowItem(DATA_BUCKET, f"bulk/{prefix}/part-{n:06d}.csv", "1", size=1000 + n)

    window_id: str = store.add_to_window(ROUTE, item(0), now).window_id
    if type(store).__name__ == "SQLiteStore":
        rows = [
            (ROUTE, item(n).key, window_id, n, DATA_BUCKET, item(n).object, "1", 1000 + n, now + n)
            for n in range(1, count)
        ]
        with store._write() as conn:
            conn.executemany(
                "INSERT INTO window_items (route, item_key, window_id, seq, bucket, object, "
                "generation, size, added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            conn.execute(
                "UPDATE windows SET item_count = ?, last_event_at = ? WHERE window_id = ?",
                (count, now + count - 1, window_id),
            )
        return window_id
    batch, pending = store._client.batch(), 0
    for n in range(1, count):
        one = item(n)
        record = one.to_dict()
        record.update(
            route=ROUTE, window_id=window_id, key=one.key, added_at=now + n, expire_at=None
        )
        batch.create(store._items.document(item_doc_id(ROUTE, one.key)), record)
        pending += 1
        if pending == SEED_BATCH:
            batch.commit()
            batch, pending = store._client.batch(), 0
    if pending:
        batch.commit()
    return window_id


# --------------------------------------------------------------------------- one store


def _flush(config_path: Path, env: dict[str, str]) -> dict[str, Any]:
    """``python -m bench._window_flush``: one forced flush in a fresh process."""
    out = subprocess.run(
        [sys.executable, "-m", "bench._window_flush", str(config_path), ROUTE],
        cwd=str(REPO),
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if out.returncode != 0:
        raise BenchError(f"flush failed ({out.returncode}):\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _check_manifest(uri: str, window_id: str, count: int) -> list[str]:
    from retrain_trigger import gcs

    data = gcs.read_bytes(uri, max_bytes=1 << 30)
    body = json.loads(data)
    problems = []
    objects = body.get("objects") or []
    if body.get("window_id") != window_id:
        problems.append(f"manifest of {body.get('window_id')}, not {window_id}")
    if body.get("count") != count or len(objects) != count:
        problems.append(f"manifest count {body.get('count')}, {len(objects)} objects, not {count}")
    if len({o["uri"] for o in objects}) != len(objects):
        problems.append("manifest lists an object twice")
    return problems


def _one_store(
    bench: Bench, kind: str, events: list[Encoded], firestore_host: str
) -> dict[str, Any]:
    from retrain_trigger.config import load_config
    from retrain_trigger.store import open_store

    state_dir = bench.root / f"window-{kind}"
    state_dir.mkdir()
    config_path = bench.root / f"window-{kind}.yaml"
    config_path.write_text(_config(kind, state_dir, bench.vertex.endpoint))
    env = {"RETRAIN_CONFIG": str(config_path), "STORAGE_EMULATOR_HOST": bench.gcs.url}
    if kind == "firestore":
        env["FIRESTORE_EMULATOR_HOST"] = firestore_host
    function = FunctionProcess(
        f"window-{kind}",
        REPO / "function_gcs" / "main.py",
        "retrain_event",
        env=env,
        log_dir=bench.log_dir,
        cpu=bench.cpu,
        threads=CONCURRENCY,
    )
    bench.functions.append(function)
    function.start()
    out: dict[str, Any] = {}
    try:
        function.wait_listening()
        warm = run_load(function.port, [bench.placeholder()], concurrency=1)
        if warm.statuses.get(200) != 1:
            raise BenchError(f"window-{kind} warm-up answered {warm.statuses}")
        result = run_load(function.port, events, concurrency=CONCURRENCY)
        out["ingest"] = {
            **summary(result),
            "events_per_s": round(result.count / result.wall, 1) if result.wall else 0.0,
            "answered_5xx": sum(n for status, n in result.statuses.items() if status >= 500),
        }
    finally:
        bench.forget(function)

    saved = dict(os.environ)
    os.environ.update(env)
    try:
        config = load_config(config_path)
        store = open_store(config)
        flush_env = base_env(env)
        flushes: dict[str, Any] = {}
        for size in FLUSH_SIZES:
            if size == FLUSH_SIZES[0]:
                (window,) = store.list_windows(ROUTE, "OPEN")
                window_id, seeded = window.window_id, False
                if window.count != len(events):
                    raise BenchError(
                        f"{kind}: {window.count} objects in the window, not {len(events)}"
                    )
            else:
                began = time.monotonic()
                window_id, seeded = _seed(store, size, time.time()), True
                seed_s = time.monotonic() - began
            created_before = bench.vertex.counts()["created"]
            flushed = _flush(config_path, flush_env)
            created = bench.vertex.counts()["created"] - created_before
            closed = store.get_window(window_id)
            problems = []
            if closed is None or str(closed.state) != "CLOSED":
                problems.append(f"window not closed ({closed.state if closed else 'gone'})")
            if created != 1:
                problems.append(f"{created} runs created")
            if flushed["decisions"] != ["submitted"]:
                problems.append(f"flush decisions {flushed['decisions']}")
            count = window.count if size == FLUSH_SIZES[0] else size
            if closed is not None and closed.manifest_uri:
                problems += _check_manifest(closed.manifest_uri, window_id, count)
            else:
                problems.append("no manifest recorded")
            flushes[str(size)] = {
                **flushed,
                "objects": count,
                "seeded": seeded,
                "seed_s": round(seed_s, 1) if seeded else None,
                "runs_created": created,
                "problems": problems,
            }
        out["flush"] = flushes
        store.close()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return out


def window(bench: Bench, sizes: Any) -> tuple[list[Row], dict[str, Any]]:
    deliveries = int(sizes.window_ingest)
    serial = uuid.uuid4().hex[:6]
    generation = int(time.time() * 1_000_000)
    events = [
        storage_event(DATA_BUCKET, f"bulk/{serial}/part-{n:06d}.csv", generation + n)
        for n in range(deliveries)
    ]
    details: dict[str, Any] = {"deliveries": deliveries, "concurrency": CONCURRENCY}
    with firestore_emulator(bench.log_dir) as host:
        for kind in ("sqlite", "firestore"):
            print(f"... window: {kind}", file=sys.stderr, flush=True)
            details[kind] = _one_store(bench, kind, events, host)
    return _rows(details), details


def _rows(details: dict[str, Any]) -> list[Row]:
    sq, fs = details["sqlite"], details["firestore"]
    n, c = details["deliveries"], details["concurrency"]
    ratio = fs["ingest"]["events_per_s"] / sq["ingest"]["events_per_s"]
    rows = [
        Row(
            f"window ingest: {n} objects into one window, {c} deliveries at a time: Firestore",
            "events/s",
            fs["ingest"]["events_per_s"],
            None,
            note=f"{ratio:.2f}x the SQLite path in the same run (target >= {INGEST_RATIO_TARGET}x)",
            failed_checks=[]
            if ratio >= INGEST_RATIO_TARGET
            else [f"Firestore ingest {ratio:.2f}x SQLite's"],
        ),
        Row(
            f"window ingest: {n} objects into one window, {c} deliveries at a time: SQLite",
            "events/s",
            sq["ingest"]["events_per_s"],
            None,
        ),
    ]
    for kind, data in (("Firestore", fs), ("SQLite", sq)):
        bad = data["ingest"]["answered_5xx"]
        rows.append(
            Row(
                f"window ingest: deliveries answered 5xx: {kind}",
                "",
                bad,
                None,
                ("==", 0),
                failed_checks=[] if bad == 0 else [f"{kind}: {bad} deliveries answered 5xx"],
            )
        )
    for kind, data in (("Firestore", fs), ("SQLite", sq)):
        growth = [data["flush"][str(s)]["rss_growth_mib"] for s in FLUSH_SIZES]
        for size in FLUSH_SIZES:
            one = data["flush"][str(size)]
            how = "seeded through the store" if one["seeded"] else "ingested through HTTP"
            rows.append(
                Row(
                    f"window flush: {size:,} objects ({how}): {kind}: time",
                    "s",
                    one["seconds"],
                    None,
                    note=f"one run, manifest {one['manifest_mib']:.1f} MiB",
                    failed_checks=list(one["problems"]),
                )
            )
        flat = growth[-1] - growth[0] <= FLAT_RSS_SLACK_MIB
        rows.append(
            Row(
                f"window flush: {kind}: RSS growth during the flush at "
                + " / ".join(f"{s:,}" for s in FLUSH_SIZES),
                "MiB",
                " / ".join(f"{g:.1f}" for g in growth),
                None,
                note="peak RSS of the flush process "
                + " / ".join(f"{data['flush'][str(s)]['peak_rss_mib']:.0f}" for s in FLUSH_SIZES)
                + " MiB",
                failed_checks=[]
                if flat
                else [f"{kind}: flush memory grows {growth[-1] - growth[0]:.1f} MiB with size"],
            )
        )
    return rows
