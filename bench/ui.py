"""The status page: first byte and full load of a route page with 10,000 decisions in the store.

A SQLite store is filled with 10,000 decisions of one route (every outcome, data objects under
ten folders), an open window of 200 objects and a queued run. ``retrain-trigger ui --port 0``
serves it in its own process, as a user runs it; the figure is taken over HTTP:

- ``first byte``: from sending the request for ``/routes/mnist`` to the first byte of the
  answer (the server has read the store and rendered the page by then);
- ``full load``: in Debian's chromium (headless, through chromedriver), from the navigation's
  start to its ``load`` event: the page, its stylesheet and its script fetched and laid out.
  Without the browser, the time to the answer's last byte over HTTP stands in, and says so.

Each is the median of ``REPEATS`` loads after one warm-up load (the first load of a new
process, which compiles the templates, is reported apart), for the newest page, a page filtered
by outcome, one filtered by object substring and the fifth page back (by its token).
Target: under 300 ms on this machine.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._report import Row

DECISIONS = 10_000
WINDOW_OBJECTS = 200
REPEATS = 30
TARGET_MS = 300.0
START_TIMEOUT = 60.0
ROUTE = "mnist"
OUTCOMES = ("submitted", "duplicate", "batched", "skipped", "rejected", "failed")
REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "pipeline_specs" / "mnist_training.yaml"

CONFIG = """\
backend: local
store: sqlite
local:
  state_dir: {state_dir}
routes:
  - name: mnist
    template: {template}
    pipeline_root: gs://bench-bucket/pipeline-root
    parameters:
      data_uri: "{{data_uri}}"
      model_registry_uri: gs://bench-bucket/models
      commit_sha: "{{commit_sha}}"
      image_uri: "{{image_uri}}"
    data:
      bucket: bench-bucket
      include: ["data/**"]
      mode: window
      quiet_seconds: 300
      max_wait_seconds: 3600
    code: true
    concurrency: queue_latest
"""


def fill(state_dir: Path, now: float) -> None:
    """10,000 decisions over the last ~3 hours, an open window and a queued run.

    The decisions are prepared as ``record_decision`` prepares them and inserted in one
    transaction (one at a time, each in its own transaction, takes minutes on a busy disk)."""
    from retrain_trigger.store import SQLiteStore, WindowItem
    from retrain_trigger.store.base import DecisionRecord

    store = SQLiteStore.for_state_dir(state_dir)
    records = []
    for n in range(DECISIONS):
        outcome = OUTCOMES[n % len(OUTCOMES)]
        obj = f"data/2026-11-{n % 10 + 10:02d}/part-{n:05d}.csv"
        entry = {
            "time": now - DECISIONS + n,
            "outcome": outcome,
            "reason": "" if outcome == "submitted" else f"{outcome} for a reason",
            "route": ROUTE,
            "run_key": f"gs://bench-bucket/{obj}#{n + 1}",
            "job_id": f"mnist-data-{n:05d}" if outcome in ("submitted", "duplicate") else "",
            "trigger": {
                "kind": "data",
                "bucket": "bench-bucket",
                "object": obj,
                "generation": str(n + 1),
            },
            "window_id": "",
        }
        records.append(DecisionRecord.prepare(entry, 30 * 86400.0, now))
    with store._write() as conn:
        conn.executemany(
            "INSERT INTO decisions (id, time, expire_at, route, outcome, object_key, run_key, "
            "job_id, window_id, entry) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    *(r.id, r.time, r.expire_at, r.route, r.outcome, r.object_key, r.run_key),
                    *(r.job_id, r.window_id, r.entry_json),
                )
                for r in records
            ],
        )
    for n in range(WINDOW_OBJECTS):
        item = WindowItem(
            bucket="bench-bucket", object=f"data/open/part-{n:04d}.csv", generation="1", size=4096
        )
        store.add_to_window(ROUTE, item, now - WINDOW_OBJECTS + n)
    store.set_pending(ROUTE, '{"job_id": "mnist-code-bench"}', "commit bench", now - 5)


class _Server:
    """``retrain-trigger ui --port 0`` in its own process; the port it bound is read from its
    first line."""

    def __init__(self, config: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RETRAIN_")}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "retrain_trigger_dev.cli",
                "--config",
                str(config),
                "ui",
                "--port",
                "0",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # blocks until the server has bound its port
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if not match:
            self.stop()
            raise RuntimeError(f"retrain-trigger ui did not report its address: {line!r}")
        self.port = int(match.group(1))
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def http_get(port: int, path: str) -> tuple[float, float, int, str]:
    """(first byte s, last byte s, status, body) of one GET on a new connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        started = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()  # returns once the status line (the first bytes) is read
        first = time.perf_counter() - started
        body = response.read()
        last = time.perf_counter() - started
    finally:
        conn.close()
    return first, last, response.status, body.decode("utf-8", "replace")


def _browser() -> Any:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        return None
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument("--window-size=1280,900")
    return webdriver.Chrome(options=options, service=Service(executable_path=driver_path))


_TIMING = """
const nav = performance.getEntriesByType('navigation')[0];
return [nav.responseStart - nav.requestStart, nav.loadEventEnd - nav.startTime];
"""


def _browser_load(driver: Any, url: str) -> tuple[float, float]:
    """(first byte ms, load event ms) of one navigation, from Navigation Timing."""
    driver.get(url)
    for _ in range(200):  # loadEventEnd is set just after the load event's handlers return
        first, load = driver.execute_script(_TIMING)
        if load > 0:
            return float(first), float(load)
        time.sleep(0.01)
    raise RuntimeError(f"no load event for {url}")


def measure(repeats: int = REPEATS) -> tuple[list[Row], dict[str, Any]]:
    root = Path(tempfile.mkdtemp(prefix="retrain-bench-ui-"))
    details: dict[str, Any] = {
        "decisions": DECISIONS,
        "window_objects": WINDOW_OBJECTS,
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }
    server: _Server | None = None
    driver: Any = None
    try:
        state_dir = root / "state"
        config = root / "retrain.yaml"
        config.write_text(CONFIG.format(state_dir=state_dir, template=TEMPLATE))
        started = time.perf_counter()
        fill(state_dir, time.time())
        details["fill_s"] = round(time.perf_counter() - started, 2)
        server = _Server(config)

        first, last, status, body = http_get(server.port, f"/routes/{ROUTE}")
        if status != 200:
            raise RuntimeError(f"/routes/{ROUTE} answered {status}")
        details["first_load_of_the_process_ms"] = {
            "first_byte": round(first * 1000, 1),
            "last_byte": round(last * 1000, 1),
        }
        older = re.search(r'id="older" href="([^"]+)"', body)
        token_path = ""
        if older:
            path = older.group(1).replace("&amp;", "&")
            for _ in range(3):  # follow to the fifth page
                _, _, _, text = http_get(server.port, path)
                nxt = re.search(r'id="older" href="([^"]+)"', text)
                if not nxt:
                    break
                path = nxt.group(1).replace("&amp;", "&")
            token_path = path
        pages = {
            "newest": f"/routes/{ROUTE}",
            "outcome=failed": f"/routes/{ROUTE}?outcome=failed",
            "object contains": f"/routes/{ROUTE}?object=2026-11-15/part-0",
        }
        if token_path:
            pages["fifth page"] = token_path
        details["pages"] = {}
        for name, path in pages.items():
            _, _, status, text = http_get(server.port, path)  # warm-up
            if status != 200 or '<table class="timeline"' not in text:
                raise RuntimeError(f"{path} answered {status} without a timeline")
            firsts, lasts = [], []
            for _ in range(repeats):
                first, last, _, _ = http_get(server.port, path)
                firsts.append(first * 1000)
                lasts.append(last * 1000)
            details["pages"][name] = {
                "path": path,
                "http_first_byte_ms": _stats(firsts),
                "http_last_byte_ms": _stats(lasts),
            }

        driver = _browser()
        details["browser"] = driver.capabilities.get("browserVersion") if driver else None
        if driver is not None:
            for name, path in pages.items():
                _browser_load(driver, server.url + path)  # warm-up
                firsts, loads = [], []
                for _ in range(repeats):
                    first, load = _browser_load(driver, server.url + path)
                    firsts.append(first)
                    loads.append(load)
                details["pages"][name]["browser_first_byte_ms"] = _stats(firsts)
                details["pages"][name]["browser_load_ms"] = _stats(loads)
    finally:
        if driver is not None:
            driver.quit()
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)

    details["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    newest = details["pages"]["newest"]
    full_key = "browser_load_ms" if "browser_load_ms" in newest else "http_last_byte_ms"
    how = "chromium load event" if full_key == "browser_load_ms" else "HTTP last byte (no browser)"
    rows = [
        Row(
            f"status page: route page first byte ({DECISIONS:,} decisions)",
            "ms",
            newest["http_first_byte_ms"]["median"],
            target=("<=", TARGET_MS),
            note=f"median of {repeats}; p95 {newest['http_first_byte_ms']['p95']} ms",
        ),
        Row(
            f"status page: route page full load ({DECISIONS:,} decisions)",
            "ms",
            newest[full_key]["median"],
            target=("<=", TARGET_MS),
            note=f"{how}, median of {repeats}; p95 {newest[full_key]['p95']} ms",
        ),
    ]
    for name, figures in details["pages"].items():
        if name == "newest":
            continue
        worst = figures.get("browser_load_ms") or figures["http_last_byte_ms"]
        rows.append(
            Row(
                f"status page: route page, {name}, full load",
                "ms",
                worst["median"],
                target=("<=", TARGET_MS),
                note=f"p95 {worst['p95']} ms",
            )
        )
    return rows, details


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median": round(statistics.median(ordered), 1),
        "p95": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 1),
        "min": round(ordered[0], 1),
        "max": round(ordered[-1], 1),
    }
