"""The status page in chromium over a store the real local stack filled.

The stack (fake-gcs-server, the bucket poller, both functions under functions-framework, the flush
ticker and the local backend's worker running the mnist pipeline) takes two digit shards, an
empty marker and an empty object whose name is markup, batches the shards into one window and
runs it; a code change is posted to function_http. The page then serves that stack's store and
ledger, as ``retrain-trigger up`` serves them: every page loads, the filters work through the
page's own form and script, markup in an object name is shown as text, ``why`` is one click from a
decision, and a screenshot of each page is written for the README.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from retrain_trigger import gcs
from retrain_trigger_dev import sampledata
from retrain_trigger_dev.localstack.demo import post_json
from retrain_trigger_dev.localstack.stack import MARKER, Stack
from retrain_trigger_dev.ui.app import app_for_config
from retrain_trigger_dev.ui.server import UIServer
from tests.browser.conftest import console_problems, screenshot

pytestmark = [pytest.mark.slow, pytest.mark.emulator]

RUN_TIMEOUT = 240.0
WAIT = 30.0
# An object name that is markup: shown as text, or the test fails (an alert, an element).
MARKUP_NAME = "<img src=x onerror=alert(document.domain)><svg onload=alert(1)>.csv"
CODE_CHANGE = {
    "kind": "code",
    "commit_sha": "0123456789abcdef0123456789abcdef01234567",
    "image_uri": "localhost:5000/mnist-trainer:0123456789ab",
}


def wait_until(what: str, probe: Any, stack: Stack, timeout: float = RUN_TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        stack.check()
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout:.0f} s")
        time.sleep(0.2)  # polling the stack's ledger, bounded by the deadline


@pytest.fixture(scope="module")
def stack_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("stack")
    with Stack(root, pubsub=False, persist=True) as stack:
        day = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
        folder = f"gs://{stack.bucket}/data/{day}/"
        shards = sampledata.write_shards(folder, shards=2)
        gcs.write_bytes(folder + MARKER, b"", content_type="text/plain", if_generation_match=0)
        markup_uri = folder + MARKUP_NAME
        gcs.write_bytes(markup_uri, b"", content_type="text/plain", if_generation_match=0)
        ledger = stack.ledger()

        def data_run_done() -> Any:
            runs = [r for r in ledger.list(limit=20) if "-data-" in r.job_id]
            return runs[0] if runs and runs[0].terminal else None

        run = wait_until("the window's run", data_run_done, stack)
        assert run.state == "SUCCEEDED", run.error
        status, body = post_json(stack.function_http_url + "/", CODE_CHANGE)
        assert status == 200 and body.get("decision") == "submitted", body

        store = stack.service().store

        def markup_decided() -> bool:
            return bool(store.decisions_for_object(markup_uri))

        wait_until("the decision about the markup object", markup_decided, stack, 60)

        def outcome_recorded() -> bool:  # the worker reports the run's end after the ledger has it
            record = store.get_run(run.job_id)
            return record is not None and record.ended

        wait_until("the run's outcome in the store", outcome_recorded, stack, 60)
        page = UIServer(app_for_config(stack.config()), "127.0.0.1", 0, log_requests=False)
        page.start()
        try:
            yield {
                "url": page.url.rstrip("/"),
                "shards": shards,
                "markup_uri": markup_uri,
                "folder": folder,
                "run": run.job_id,
            }
        finally:
            page.stop()


def open_page(browser: Any, url: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    console_problems(browser)
    browser.get(url)
    WebDriverWait(browser, WAIT).until(
        lambda d: d.execute_script("return document.body.dataset.enhanced") == "true"
    )


def outcomes_shown(browser: Any) -> list[str]:
    from selenium.webdriver.common.by import By

    rows = browser.find_elements(By.CSS_SELECTOR, "#timeline tr.decision")
    return [row.get_attribute("data-outcome") for row in rows]


def test_the_overview_shows_what_the_stack_did(browser: Any, stack_site: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By

    open_page(browser, stack_site["url"] + "/")
    assert browser.title == "Overview · retrain-trigger"
    route = browser.find_element(By.ID, "route-mnist").text
    assert "data, code, model" in route and "window" in route
    recent = browser.find_element(By.ID, "recent").text
    assert "submitted" in recent and "skipped" in recent
    runs = browser.find_element(By.ID, "recent-runs").text
    assert stack_site["run"] in runs and "SUCCEEDED" in runs
    assert console_problems(browser) == []
    screenshot(browser, "overview")


def test_the_route_page_filters_by_outcome_and_object(
    browser: Any, stack_site: dict[str, Any]
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    open_page(browser, stack_site["url"] + "/routes/mnist")
    shown = outcomes_shown(browser)
    assert {"submitted", "skipped"} <= set(shown), shown
    screenshot(browser, "route")

    # the outcome select submits itself (the page's script)
    Select(browser.find_element(By.ID, "filter-outcome")).select_by_value("skipped")
    WebDriverWait(browser, WAIT).until(lambda d: "outcome=skipped" in d.current_url)
    WebDriverWait(browser, WAIT).until(
        lambda d: d.execute_script("return document.body.dataset.enhanced") == "true"
    )
    shown = outcomes_shown(browser)
    assert shown and set(shown) == {"skipped"}
    assert console_problems(browser) == []

    # the object filter, typed and submitted like a user would; the outcome filter stays
    box = browser.find_element(By.ID, "filter-object")
    box.clear()
    box.send_keys(MARKER)
    browser.find_element(By.ID, "filter-apply").click()
    WebDriverWait(browser, WAIT).until(lambda d: f"object={MARKER}" in d.current_url)
    subjects = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#timeline td.subject")]
    assert subjects and all(f"/{MARKER}#" in s for s in subjects), subjects
    assert set(outcomes_shown(browser)) == {"skipped"}


def test_an_object_name_with_markup_is_shown_as_text(
    browser: Any, stack_site: dict[str, Any]
) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    open_page(browser, stack_site["url"] + "/routes/mnist?object=" + quote("<img"))
    subjects = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#timeline td.subject")]
    assert len(subjects) == 1 and subjects[0].startswith(stack_site["markup_uri"] + "#")
    assert browser.find_elements(By.CSS_SELECTOR, "main img, main td svg, td.subject *") == []
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 - reading it is what raises
    assert browser.find_element(By.ID, "filter-object").get_attribute("value") == "<img"
    assert console_problems(browser) == []


def test_why_is_one_click_from_a_decision(browser: Any, stack_site: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    shard = stack_site["shards"][0]
    name = shard.rsplit("/", 1)[-1]
    open_page(browser, stack_site["url"] + "/routes/mnist?object=" + quote(name))
    browser.find_element(By.CSS_SELECTOR, "#timeline a.why").click()
    WebDriverWait(browser, WAIT).until(lambda d: d.find_elements(By.ID, "why-subject"))
    assert browser.find_element(By.ID, "why-subject").text == shard
    explained = browser.find_element(By.ID, "why-decisions").text
    assert "batched" in explained and "CLOSED" in explained
    assert f"run {stack_site['run']}: SUCCEEDED" in explained
    assert console_problems(browser) == []
    screenshot(browser, "why")

    open_page(browser, stack_site["url"] + "/why?object=" + quote(stack_site["markup_uri"]))
    assert browser.find_element(By.ID, "why-subject").text == stack_site["markup_uri"]
    assert "skipped" in browser.find_element(By.ID, "why-decisions").text
    assert browser.find_elements(By.CSS_SELECTOR, "main img") == []


def test_the_decisions_page_filters_by_route(browser: Any, stack_site: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    open_page(browser, stack_site["url"] + "/decisions")
    Select(browser.find_element(By.NAME, "route")).select_by_value("mnist")
    WebDriverWait(browser, WAIT).until(lambda d: "route=mnist" in d.current_url)
    WebDriverWait(browser, WAIT).until(lambda d: d.find_elements(By.CSS_SELECTOR, "tr.decision"))
    routes = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "tr.decision td:nth-child(3)")]
    assert routes and set(routes) == {"mnist"}
