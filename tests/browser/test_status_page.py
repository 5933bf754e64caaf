"""Every section of the status page in chromium, over a store that implements the whole agreed
contract (run outcomes, the champion's history and pauses included): the chart is drawn, the
filters work through the page's own form and script, markup in names stays text, and nothing
the page loads breaks its Content-Security-Policy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from retrain_trigger.config import load_config
from retrain_trigger_dev.ui.app import create_app
from retrain_trigger_dev.ui.data import StatusData
from retrain_trigger_dev.ui.server import UIServer
from tests.browser.conftest import console_problems, screenshot
from tests.conftest import MNIST_TEMPLATE
from tests.unit.test_ui import CONFIG, MARKUP, Clock, FakeBackend, filled_store

WAIT = 20.0


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("ui") / "retrain.yaml"
    path.write_text(CONFIG.format(template=MNIST_TEMPLATE))
    clock = Clock()
    data = StatusData(load_config(path, env={}), filled_store(clock), FakeBackend(), clock=clock)
    server = UIServer(create_app(data), "127.0.0.1", 0, log_requests=False).start()
    try:
        yield server.url.rstrip("/")
    finally:
        server.stop()


def open_page(browser: Any, url: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    console_problems(browser)  # clears the log
    browser.get(url)
    WebDriverWait(browser, WAIT).until(
        lambda d: d.execute_script("return document.body.dataset.enhanced") == "true"
    )


def test_the_champion_chart_and_the_runs(browser: Any, site: str) -> None:
    from selenium.webdriver.common.by import By

    open_page(browser, f"{site}/routes/mnist")

    chart = browser.find_element(By.ID, "champion-chart")
    assert chart.size["width"] > 300 and chart.size["height"] > 100
    dots = chart.find_elements(By.CSS_SELECTOR, "circle.dot")
    assert len(dots) == 3
    titles = [d.find_element(By.TAG_NAME, "title").get_attribute("textContent") for d in dots]
    assert "version v2" in titles[1] and "commit bead002" in titles[1]
    ys = [float(d.get_attribute("cy")) for d in dots]
    assert ys[0] > ys[1] > ys[2]  # the metric rose with each registration: drawn higher
    registrations = browser.find_elements(By.CSS_SELECTOR, "#registrations tbody tr")
    assert "mnist-data-old" in registrations[0].text

    failed = browser.find_element(By.ID, "run-mnist-code-bad")
    assert "task load-data: ValueError: <no rows> in shard" in failed.text
    assert "FAILED" in failed.text and "1 min 0 s" in failed.text
    assert console_problems(browser) == []
    path = screenshot(browser, "route-champion")
    assert path.stat().st_size > 10_000


def test_the_paused_route_and_the_overview(browser: Any, site: str) -> None:
    from selenium.webdriver.common.by import By

    open_page(browser, f"{site}/routes/churn")
    assert browser.find_element(By.ID, "paused").text == "paused"
    assert "bad labels <upstream>" in browser.find_element(By.CSS_SELECTOR, "p.warn").text

    open_page(browser, f"{site}/")
    assert "paused" in browser.find_element(By.ID, "route-churn").text
    assert console_problems(browser) == []


def test_markup_in_an_object_name_stays_text(browser: Any, site: str) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    open_page(browser, f"{site}/routes/mnist")
    subjects = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "td.subject")]
    assert f"gs://ct-bucket/{MARKUP}#7" in subjects
    assert browser.find_elements(By.CSS_SELECTOR, "td.subject *") == []  # no element made of it
    assert browser.find_elements(By.CSS_SELECTOR, "main script, main img") == []
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 - reading it is what raises
    assert console_problems(browser) == []


def test_a_page_of_the_wrong_kind_is_refused_with_its_reason(browser: Any, site: str) -> None:
    from selenium.webdriver.common.by import By

    open_page(browser, f"{site}/routes/mnist?outcome=%3Cb%3Ebold%3C/b%3E")
    message = browser.find_element(By.ID, "error-message").text
    assert message.startswith("outcome must be one of submitted")
    assert browser.find_elements(By.CSS_SELECTOR, "main b") == []


def test_screenshots_are_kept_for_the_readme() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for name in ("overview", "route", "why", "route-champion"):
        assert f"docs/screenshots/{name}.png" in readme
