"""A headless chromium driven through Debian's chromedriver, and the status page it reads.

The browser tests are skipped, saying so, only where chromium or chromedriver is not installed
(``apt-get install chromium chromium-driver``; ``.ci/run`` installs them). Screenshots of the
pages go to a temporary folder, and to ``docs/screenshots/`` for the README only when asked
(``make screenshots``, which sets ``UPDATE_SCREENSHOTS=1``): a test run leaves the checkout as
it found it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "docs" / "screenshots"


def screenshots_dir() -> Path:
    """docs/screenshots with ``UPDATE_SCREENSHOTS=1``, else a folder under the system's temp."""
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        return SCREENSHOTS
    return Path(tempfile.gettempdir()) / "retrain-trigger-screenshots"


WIDTH = 1280
START_ATTEMPTS = 3


def _binaries() -> tuple[str, str] | None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless chromium for the session; its console log is cleared per test."""
    found = _binaries()
    if found is None:
        pytest.skip(
            "chromium and chromedriver are not installed (apt-get install chromium "
            "chromium-driver): the status page is not checked in a browser here"
        )
    chromium, driver_path = found
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespace for the sandbox
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--window-size={WIDTH},900",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = None
    for attempt in range(START_ATTEMPTS):
        try:
            # chromedriver's port is picked by selenium a moment before it starts: another
            # process may take it first, and the start fails; a new attempt picks another.
            driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
            break
        except WebDriverException:
            if attempt == START_ATTEMPTS - 1:
                raise
    assert driver is not None
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: Any, name: str) -> Path:
    """The whole page (the window made as tall as the page) as <name>.png in
    :func:`screenshots_dir`."""
    height = driver.execute_script(
        "return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)"
    )
    driver.set_window_size(WIDTH, min(max(int(height) + 20, 600), 6000))
    folder = screenshots_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"no screenshot {path}"
    driver.set_window_size(WIDTH, 900)
    return path


def console_problems(driver: Any) -> list[str]:
    """Console messages of level SEVERE (script errors, CSP violations, failed loads) since the
    last call."""
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
