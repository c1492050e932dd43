"""Headless Chromium for the dashboard tests (Debian's chromium + chromedriver, via Selenium).

No browser download: the tests use the system's /usr/bin/chromium, which ``.ci/run`` installs.
Without it the browser tests are skipped, unless ``MOTEX_REQUIRE_BROWSER=1`` (set by CI), where
a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
#: where the tests leave their screenshots (CI keeps this folder as an artefact)
ARTEFACTS = Path(os.environ.get("MOTEX_TEST_ARTEFACTS", "test-artefacts"))

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1400,1500",
)


def require_browser() -> None:
    if Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists():
        return
    why = f"no Chromium/ChromeDriver ({CHROMIUM}, {CHROMEDRIVER}); .ci/run installs them"
    if os.environ.get("MOTEX_REQUIRE_BROWSER") == "1":
        pytest.fail(why)
    pytest.skip(why)


@contextmanager
def chromium() -> Iterator[Any]:
    """A fresh headless Chromium (own profile folder) driven by Selenium."""
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    with tempfile.TemporaryDirectory(prefix="motex-chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def wait_until(
    check: Callable[[], Any], timeout: float = 30.0, what: str = "condition", every: float = 0.05
) -> Any:
    """Poll ``check`` until it returns something truthy; fail saying ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def screenshot(driver: Any, name: str) -> Path:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTEFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def open_page(driver: Any, url: str) -> None:
    """Load the dashboard at ``url`` and wait until its script has set ``window.motex`` (the
    page listens for frames from then on)."""
    driver.get(url)
    wait_until(lambda: driver.execute_script("return window.motex !== undefined"), what=url)
