"""The status page, rendered through Flask's test client over an in-memory store (pure).

The store implements the whole agreed contract (run outcomes, champion history and pauses
included), so every section of every page is exercised.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from flask.testing import FlaskClient

from retrain_trigger.backends.base import JobStatus
from retrain_trigger.config import load_config
from retrain_trigger.errors import StoreError
from retrain_trigger.store.base import MAX_OBJECT_FILTER, WindowItem
from retrain_trigger_dev.ui import chart
from retrain_trigger_dev.ui.app import CSP, create_app
from retrain_trigger_dev.ui.data import NO_CHAMPION, ChampionPoint, StatusData
from tests.clock import T0, Clock
from tests.conftest import MNIST_TEMPLATE
from tests.fakes.memory_store import (
    ChampionChange,
    MemoryStore,
    Pause,
    RunRecord,
)

DAY = 86400.0
MARKUP = "data/<script>alert('x')</script><img src=x onerror=alert(1)>.csv"

CONFIG = """\
project: test-project
region: europe-west1
backend: vertex
store: sqlite
routes:
  - name: mnist
    template: {template}
    pipeline_root: gs://ct-bucket/pipeline-root
    parameters:
      data_uri: "{{data_uri}}"
      model_registry_uri: gs://ct-bucket/models
      commit_sha: "{{commit_sha}}"
      image_uri: "{{image_uri}}"
    data:
      bucket: ct-bucket
      include: ["data/**"]
      mode: window
      quiet_seconds: 60
      max_wait_seconds: 600
    code: true
    concurrency: queue_latest
  - name: churn
    template: {template}
    pipeline_root: gs://ct-bucket/churn-root
    parameters:
      data_uri: "{{data_uri}}"
      model_registry_uri: gs://ct-bucket/churn-models
      commit_sha: "{{commit_sha}}"
      image_uri: "{{image_uri}}"
    code: true
"""


class FakeBackend:
    """The backend's job listing (``Backend.list``), as ``retrain-trigger runs`` reads it."""

    def __init__(self, statuses: list[JobStatus] | None = None, error: Exception | None = None):
        self.statuses = statuses or []
        self.error = error
        self.calls: list[dict[str, Any]] = []

    def list(self, *, route: str = "", limit: int = 100) -> list[JobStatus]:
        self.calls.append({"route": route, "limit": limit})
        if self.error is not None:
            raise self.error
        return [s for s in self.statuses if not route or s.route == route][:limit]

    def get(self, job_id: str) -> JobStatus:
        for status in self.statuses:
            if status.job_id == job_id:
                return status
        raise KeyError(job_id)


def decision(
    moment: float,
    outcome: str = "submitted",
    *,
    route: str = "mnist",
    obj: str = "data/a.csv",
    reason: str = "",
    job_id: str = "",
    window_id: str = "",
) -> dict[str, Any]:
    return {
        "time": moment,
        "outcome": outcome,
        "reason": reason,
        "route": route,
        "run_key": f"gs://ct-bucket/{obj}#7",
        "job_id": job_id,
        "trigger": {"kind": "data", "bucket": "ct-bucket", "object": obj, "generation": "7"},
        "window_id": window_id,
    }


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def config(tmp_path: Path) -> Any:
    path = tmp_path / "retrain.yaml"
    path.write_text(CONFIG.format(template=MNIST_TEMPLATE))
    return load_config(path, env={})


def filled_store(clock: Clock) -> MemoryStore:
    """A store with a bit of everything: decisions, a window, a queued run, runs, champions,
    a pause, and an object name with markup (the browser tests show it too)."""
    s = MemoryStore(clock)
    s.record_decision(decision(T0 - 3000, "submitted", job_id="mnist-data-old"), DAY)
    s.record_decision(decision(T0 - 2000, "skipped", obj="data/_SUCCESS", reason="0 bytes"), DAY)
    s.record_decision(decision(T0 - 1000, "failed", obj="data/b.csv", reason="429 quota"), DAY)
    s.record_decision(decision(T0 - 500, "rejected", route="churn", obj="x/y.csv"), DAY)
    for n, size in enumerate((1000, 2000, 3000)):
        item = WindowItem(
            bucket="ct-bucket", object=f"data/part-{n}.csv", generation="1", size=size
        )
        info = s.add_to_window("mnist", item, T0 - 120 + n * 10)
        s.record_decision(
            decision(
                T0 - 120 + n * 10,
                "batched",
                obj=item.object,
                reason="batched into a window",
                window_id=info.window_id,
            ),
            DAY,
        )
    s.record_decision(decision(T0 - 50, obj=MARKUP, reason="<b>not bold</b>"), DAY)
    s.set_pending("mnist", json.dumps({"job_id": "mnist-code-abc"}), "commit abc", T0 - 30)
    s.runs = [
        RunRecord(
            route="mnist",
            job_id="mnist-data-old",
            job_name="projects/p/locations/l/pipelineJobs/mnist-data-old",
            state="SUCCEEDED",
            submitted_at=T0 - 3000,
            ended_at=T0 - 2700,
            duration_s=300.0,
            error=None,
            failed_task=None,
            parameters={"data_uri": "gs://ct-bucket/data/a.csv", "min_accuracy": 0.9},
            object_uri="gs://ct-bucket/data/a.csv",
            trace=None,
        ),
        RunRecord(
            route="mnist",
            job_id="mnist-code-bad",
            job_name="projects/p/locations/l/pipelineJobs/mnist-code-bad",
            state="FAILED",
            submitted_at=T0 - 900,
            ended_at=T0 - 840,
            duration_s=60.0,
            error="ValueError: <no rows> in shard",
            failed_task="load-data",
            parameters={"commit_sha": "abc"},
            object_uri=None,
            trace=None,
        ),
    ]
    s.champions = [
        ChampionChange(
            "mnist", "mnist-data-1", "accuracy", 0.91, "gs://m/1", "v1", "c0ffee1", T0 - 9 * DAY
        ),
        ChampionChange(
            "mnist", "mnist-code-2", "accuracy", 0.95, "gs://m/2", "v2", "bead002", T0 - 5 * DAY
        ),
        ChampionChange(
            "mnist", "mnist-data-old", "accuracy", 0.97, "gs://m/3", "v3", None, T0 - 2700
        ),
    ]
    s.pauses = {"churn": Pause("churn", "bad labels <upstream>", "ops@example.com", T0 - 4000)}
    return s


@pytest.fixture
def store(clock: Clock) -> MemoryStore:
    return filled_store(clock)


def client_for(config: Any, store: Any, clock: Clock, backend: Any = None) -> FlaskClient:
    app = create_app(StatusData(config, store, backend or FakeBackend(), clock=clock))
    app.testing = True
    return app.test_client()


@pytest.fixture
def client(config: Any, store: MemoryStore, clock: Clock) -> FlaskClient:
    return client_for(config, store, clock)


def page(client: FlaskClient, url: str, status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status, response.get_data(as_text=True)[:2000]
    return response.get_data(as_text=True)


def section(text: str, section_id: str) -> str:
    match = re.search(rf'<section id="{section_id}">(.*?)</section>', text, re.S)
    assert match, f"no section {section_id}"
    return match.group(1)


def texts(fragment: str, css_class: str) -> list[str]:
    """The text of each element of a class (tags stripped, entities decoded)."""
    found = re.findall(rf'class="{css_class}"[^>]*>(.*?)</(?:td|tr|span|p)>', fragment, re.S)
    return [html.unescape(re.sub(r"<[^>]+>", "", f)).strip() for f in found]


# --------------------------------------------------------------------------- overview


def test_the_overview_shows_routes_windows_queue_pauses_decisions_and_runs(
    client: FlaskClient,
) -> None:
    text = page(client, "/")

    routes = section(text, "routes")
    assert 'href="/routes/mnist"' in routes and 'href="/routes/churn"' in routes
    assert "window: quiet 1 min 0 s, max wait 10 min 0 s" in routes
    assert "queue_latest" in routes
    mnist_row = re.search(r'id="route-mnist">(.*?)</tr>', routes, re.S)
    churn_row = re.search(r'id="route-churn">(.*?)</tr>', routes, re.S)
    assert mnist_row and churn_row
    assert "1 (3 objects)" in mnist_row.group(1) and "commit abc" in mnist_row.group(1)
    assert "paused" in churn_row.group(1) and "paused" not in mnist_row.group(1)

    paused = section(text, "paused")
    assert "bad labels &lt;upstream&gt;" in paused and "ops@example.com" in paused

    windows = section(text, "windows")
    assert "mnist__" in windows
    # 3 objects, 6000 bytes, opened 120 s ago, last object 100 s ago: quiet since 40 s ago
    assert re.search(
        r'class="num">3</td>\s*<td class="num" title="6000 bytes">5.9 KiB</td>', windows
    )
    assert "2 min 0 s" in windows and "due now (quiet)" in windows

    queue = section(text, "queue")
    assert "commit abc" in queue and "mnist-code-abc" in queue

    recent = section(text, "recent")
    assert texts(recent, "badge outcome-submitted")[0] == "submitted"
    assert recent.index("&lt;script&gt;") < recent.index("data/part-2.csv")  # newest first

    runs = section(text, "recent-runs")
    assert "mnist-code-bad" in runs and "mnist-data-old" in runs


def test_a_window_not_yet_due_says_when_and_why_it_closes(config: Any, clock: Clock) -> None:
    store = MemoryStore(clock)
    item = WindowItem(bucket="ct-bucket", object="data/a.csv", generation="1", size=None)
    store.add_to_window("mnist", item, T0 - 10)
    text = page(client_for(config, store, clock), "/routes/mnist")

    windows = section(text, "windows")
    assert "in 50 s (quiet)" in windows and "0 B" in windows

    for n in range(1, 60):  # objects keep arriving: max wait closes it, 600 s after it opened
        more = WindowItem(bucket="ct-bucket", object=f"data/{n}.csv", generation="1", size=1)
        store.add_to_window("mnist", more, T0 - 10 + n * 10)
    clock.now = T0 + 560
    windows = section(page(client_for(config, store, clock), "/routes/mnist"), "windows")
    assert "in 30 s (max wait)" in windows and ">60<" in windows


# --------------------------------------------------------------------------- route page


def test_the_route_page_shows_its_timeline_runs_and_champion(client: FlaskClient) -> None:
    text = page(client, "/routes/mnist")

    timeline = section(text, "timeline")
    outcomes = texts(timeline, r"badge outcome-[a-z]+")
    assert outcomes == [
        "submitted",
        "batched",
        "batched",
        "batched",
        "failed",
        "skipped",
        "submitted",
    ]
    assert "x/y.csv" not in timeline  # the churn route's decision
    assert "429 quota" in timeline

    runs = section(text, "route-runs")
    bad = re.search(r'id="run-mnist-code-bad">(.*?)</tr>', runs, re.S)
    assert bad is not None
    assert "FAILED" in bad.group(1) and "1 min 0 s" in bad.group(1)
    assert "task <code>load-data</code>: ValueError: &lt;no rows&gt; in shard" in bad.group(1)
    assert "<dt>commit_sha</dt><dd>abc</dd>" in bad.group(1)
    good = re.search(r'id="run-mnist-data-old">(.*?)</tr>', runs, re.S)
    assert good is not None and "5 min 0 s" in good.group(1) and "2 parameters" in good.group(1)
    assert 'href="/why?object=gs://ct-bucket/data/a.csv"' in good.group(1)

    champion = section(text, "champion")
    assert "accuracy over time" in champion
    assert champion.count('<circle class="dot"') == 3
    assert "<polyline" in champion
    rows = re.findall(r'<tr id="reg-(\d)">(.*?)</tr>', champion, re.S)
    assert [r[0] for r in rows] == ["3", "2", "1"]  # newest registration first
    assert "v2" in rows[1][1] and "mnist-code-2" in rows[1][1] and "bead002" in rows[1][1]
    assert 'href="#run-mnist-data-old"' in rows[0][1]  # the run that registered it, on the page


def test_the_timeline_filters_by_outcome_and_object(client: FlaskClient) -> None:
    failed = section(page(client, "/routes/mnist?outcome=failed"), "timeline")
    assert texts(failed, r"badge outcome-[a-z]+") == ["failed"]
    assert '<option value="failed" selected>' in failed

    parts = section(page(client, "/routes/mnist?object=part-"), "timeline")
    assert texts(parts, r"badge outcome-[a-z]+") == ["batched"] * 3
    assert 'value="part-"' in parts

    both = section(page(client, "/routes/mnist?object=part-1&outcome=batched"), "timeline")
    assert "data/part-1.csv" in both and "part-0" not in both

    none = section(page(client, "/routes/mnist?object=nothing-like-it"), "timeline")
    assert "No decision recorded matches these filters." in none

    every = section(page(client, "/decisions?route=churn"), "timeline")
    assert texts(every, r"badge outcome-[a-z]+") == ["rejected"]


def test_the_timeline_is_paged(config: Any, clock: Clock) -> None:
    store = MemoryStore(clock)
    for n in range(120):
        store.record_decision(decision(T0 - 1000 + n, "skipped", obj=f"data/{n:03d}.csv"), DAY)
    client = client_for(config, store, clock)

    seen: list[str] = []
    url = "/routes/mnist?outcome=skipped"
    pages = 0
    while url:
        text = page(client, url)
        seen += re.findall(r"gs://ct-bucket/data/(\d{3})\.csv#7", section(text, "timeline"))
        older = re.search(r'id="older" href="([^"]+)"', text)
        url = html.unescape(older.group(1)) if older else ""
        pages += 1
        if pages > 1:
            assert 'id="newest" href="/routes/mnist?outcome=skipped"' in text
    assert pages == 3
    assert seen == [f"{n:03d}" for n in range(119, -1, -1)]
    assert store.reads.count("page_decisions") >= 3


def test_an_unknown_route_is_not_found(client: FlaskClient) -> None:
    text = page(client, "/routes/nope", 404)
    assert "no route &#39;nope&#39; in this deployment&#39;s configuration" in text


# --------------------------------------------------------------------------- escaping


def test_markup_in_object_names_and_reasons_is_shown_as_text(client: FlaskClient) -> None:
    for url in ("/", "/routes/mnist", "/decisions"):
        text = page(client, url)
        assert "<script>alert" not in text and "<img src=x" not in text
        assert (
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"
            in text
        )
        assert "<b>not bold</b>" not in text
    why = page(client, "/why?" + urlencode({"object": "gs://ct-bucket/" + MARKUP}))
    assert "<script>alert" not in why
    assert '<h2 id="why-subject">gs://ct-bucket/data/&lt;script&gt;' in why


def test_markup_in_filters_is_escaped_and_kept_in_links(config: Any, clock: Clock) -> None:
    store = MemoryStore(clock)
    for n in range(60):
        store.record_decision(decision(T0 - 100 + n, obj=f'data/"><b>{n}.csv'), DAY)
    client = client_for(config, store, clock)
    text = page(client, '/routes/mnist?object="><b>')
    assert 'value="&#34;&gt;&lt;b&gt;"' in text
    assert '"><b>' not in text
    older = re.search(r'id="older" href="([^"]+)"', text)
    assert older is not None
    assert "object=%22%3E%3Cb%3E" in html.unescape(older.group(1))


def test_every_page_carries_a_strict_policy_and_has_no_inline_code(client: FlaskClient) -> None:
    for url in (
        "/",
        "/routes/mnist",
        "/decisions",
        "/why",
        "/why?object=gs://ct-bucket/data/a.csv",
        "/routes/nope",
        "/decisions?outcome=nope",
    ):
        response = client.get(url)
        assert response.headers["Content-Security-Policy"] == CSP
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Cache-Control"] == "no-store"
        text = response.get_data(as_text=True)
        assert re.findall(r"<script(?![^>]*\bsrc=)", text) == []
        assert " style=" not in text and "<style" not in text
        tags = re.findall(r"<[a-zA-Z][^>]*>", text)  # escaped text holds no "<"
        assert [t for t in tags if re.search(r"\son[a-z]+=", t)] == []
        assert "http://" not in text and "https://" not in text  # no CDN, nothing external
    assert "script-src 'self'" in CSP and "'unsafe-inline'" not in CSP
    css = client.get("/static/ui.css")
    assert css.status_code == 200 and css.mimetype == "text/css"
    assert client.get("/static/ui.js").status_code == 200


def test_the_page_is_read_only(client: FlaskClient, store: MemoryStore) -> None:
    before = dict(store.decisions)
    for method in ("post", "put", "delete", "patch"):
        response = getattr(client, method)("/routes/mnist")
        assert response.status_code == 405
        assert "read-only" in response.get_data(as_text=True)
    assert client.head("/").status_code == 200
    assert store.decisions == before


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("/routes/mnist?outcome=nope", "outcome must be one of submitted, duplicate, batched"),
        ("/routes/mnist?outcome=" + "x" * 100, "outcome is longer than 32 bytes"),
        (
            "/routes/mnist?object=" + "a" * (MAX_OBJECT_FILTER + 1),
            "object is longer than 1024 bytes",
        ),
        ("/routes/mnist?object=" + "é" * 600, "object is longer than 1024 bytes"),
        ("/routes/mnist?object=a%00b", "object contains control characters"),
        ("/routes/mnist?object=a%0Ab", "object contains control characters"),
        ("/routes/mnist?page=12345", "invalid page token"),
        ("/routes/mnist?page=../../etc", "invalid page token"),
        ("/routes/mnist?page=" + "1" * 5000, "page is longer than 200 bytes"),
        ("/routes/mnist?runs_page=%3Cx%3E", "invalid page token"),
        ("/decisions?route=a/b", "invalid route name"),
        ("/decisions?route=%3Cscript%3E", "invalid route name"),
        ("/why?object=http://example.com/x", "expected gs://bucket/object"),
        ("/why?object=gs://bucket-only", "expected gs://bucket/object"),
        ("/why?object=gs://b/" + "o" * 2000, "object is longer than 1100 bytes"),
    ],
)
def test_bad_query_parameters_get_a_clear_400(client: FlaskClient, url: str, message: str) -> None:
    text = page(client, url, 400)
    assert message in html.unescape(text)
    assert "<script>" not in text


def test_a_store_that_cannot_be_read_is_a_503_naming_it(config: Any, clock: Clock) -> None:
    class Down(MemoryStore):
        def page_decisions(self, *args: Any, **kwargs: Any) -> Any:
            raise StoreError("Firestore: 503 <unavailable>")

    text = page(client_for(config, Down(clock), clock), "/decisions", 503)
    assert "the state store could not be read: Firestore: 503 &lt;unavailable&gt;" in text


def test_an_unexpected_error_is_a_500_page_that_shows_no_details(config: Any, clock: Clock) -> None:
    class Broken(MemoryStore):
        def get_pending(self, route: str) -> Any:
            raise RuntimeError("secret <internals>")

    app = create_app(StatusData(config, Broken(clock), FakeBackend(), clock=clock))
    response = app.test_client().get("/")  # not app.testing: errors become pages
    text = response.get_data(as_text=True)
    assert response.status_code == 500 and "the server&#39;s log has the error" in text
    assert "secret" not in text
    assert response.headers["Content-Security-Policy"] == CSP


# --------------------------------------------------------------------------- why


def test_why_is_one_click_from_a_decision(client: FlaskClient, store: MemoryStore) -> None:
    text = page(client, "/routes/mnist?object=part-1")
    link = re.search(r'<a class="why" href="([^"]+)">why</a>', text)
    assert link is not None
    why = page(client, html.unescape(link.group(1)))
    assert '<h2 id="why-subject">gs://ct-bucket/data/part-1.csv</h2>' in why
    assert "batched into a window" in why
    assert "OPEN, 3 objects" in why


def test_why_of_an_object_with_markup_links_and_escapes(client: FlaskClient) -> None:
    text = page(client, "/routes/mnist?object=script")
    link = re.search(r'<a class="why" href="([^"]+)">why</a>', text)
    assert link is not None
    href = html.unescape(link.group(1))
    assert "<" not in href and "%3Cscript%3E" in href
    why = page(client, href)
    assert "<script>alert" not in why
    assert "&lt;b&gt;not bold&lt;/b&gt;" in why


def test_why_says_when_nothing_was_recorded(client: FlaskClient) -> None:
    text = page(client, "/why?object=gs://ct-bucket/never/seen.csv")
    assert "No decision recorded: no event arrived for it" in text
    assert 'id="why-object"' in page(client, "/why")


def test_an_empty_champion_history_says_so(config: Any, clock: Clock) -> None:
    text = page(client_for(config, MemoryStore(clock), clock), "/routes/mnist")
    assert f"{NO_CHAMPION}." in section(text, "champion") and "<svg" not in text
    assert "No run yet." in text and "No open window." in text and "Nothing queued." in text


# --------------------------------------------------------------------------- the chart


def point(at: float, value: float, job: str = "j") -> ChampionPoint:
    return ChampionPoint(job, "accuracy", value, "gs://m", "v", "c", at)


def test_the_chart_spans_the_plot_oldest_left_best_high() -> None:
    drawn = chart.build([point(T0 + 100, 0.9), point(T0, 0.8, "first"), point(T0 + 50, 0.95)])
    assert drawn is not None
    xs = [d.x for d in drawn.dots]
    ys = [d.y for d in drawn.dots]
    assert xs == sorted(xs) and xs[0] == drawn.left and xs[-1] == drawn.right
    assert drawn.dots[0].point.job_id == "first"
    assert min(ys) == drawn.top and max(ys) == drawn.bottom  # 0.95 at the top, 0.8 at the bottom
    assert [t.label for t in drawn.y_ticks] == ["0.95", "0.875", "0.8"]
    assert len(drawn.x_ticks) == 2 and drawn.line.count(",") == 3


@pytest.mark.parametrize("values", [[0.9], [0.9, 0.9], [0.0, 0.0]])
def test_one_value_is_drawn_flat_in_the_middle(values: list[float]) -> None:
    drawn = chart.build([point(T0 + n, v) for n, v in enumerate(values)])
    assert drawn is not None
    middle = (drawn.top + drawn.bottom) / 2
    assert all(abs(d.y - middle) < 1 for d in drawn.dots)


def test_no_point_no_chart() -> None:
    assert chart.build([]) is None


def test_a_status_page_needs_a_store(config: Any) -> None:
    with pytest.raises(ValueError, match="needs a store or a service"):
        StatusData(config)


# --------------------------------------------------------------------------- demo's last line


@pytest.mark.parametrize("kept", [True, False], ids=["state kept", "state removed"])
def test_demo_ends_with_the_status_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kept: bool
) -> None:
    import argparse
    import io

    from retrain_trigger_dev.localstack import commands, demo

    folder = tmp_path / "demo"
    if kept:
        folder.mkdir()
        (folder / "retrain.yaml").write_text("routes: []\n")

    def fake_run_demo(out: Any, **options: Any) -> demo.DemoResult:
        return demo.DemoResult([], "poller", 1.0, [], None, str(folder))

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    out = io.StringIO()
    args = argparse.Namespace(
        json=False, no_pubsub=True, timeout=1.0, dir=None, port_base=0, overrides={}
    )
    commands.cmd_demo(args, out=out)
    last = out.getvalue().strip().splitlines()[-1]
    if kept:
        assert last == (
            f"Status page: retrain-trigger --config {folder}/retrain.yaml ui, "
            "then open http://127.0.0.1:8080/"
        )
    else:
        assert last == (
            "Status page: retrain-trigger --config DIR/retrain.yaml ui, then open "
            "http://127.0.0.1:8080/ (run the demo with --dir DIR to keep its state)"
        )
