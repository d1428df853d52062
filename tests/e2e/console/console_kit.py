"""What the console's browser tests share: a headless Chromium driven by Selenium, a
simulated fleet running on its own event loop thread, and screenshots as artefacts.

The browser is Debian's `chromium` with its `chromium-driver` (deploy/local/up installs
both); nothing is downloaded at run time.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from devices.fleet import Fleet, FleetConfig

ARTEFACTS = Path(__file__).resolve().parents[3] / "test-artefacts" / "console"
CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
DRIVER = "/usr/bin/chromedriver"


def browser_paths() -> tuple[str, str] | None:
    binary = next((p for p in CHROMIUM if Path(p).exists()), None)
    driver = DRIVER if Path(DRIVER).exists() else shutil.which("chromedriver")
    return (binary, driver) if binary and driver else None


def chromium(binary: str, driver: str, width: int = 1280, height: int = 900) -> WebDriver:
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
        "--disable-extensions",
        "--no-first-run",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


class Browser:
    """A driver with the few verbs the tests need, and a screenshot per named page."""

    def __init__(self, driver: WebDriver, base: str) -> None:
        self.driver, self.base = driver, base
        ARTEFACTS.mkdir(parents=True, exist_ok=True)

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def finds(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self, css: str = "main") -> str:
        return self.find(css).text

    def wait(self, condition: Callable[[WebDriver], Any], what: str, timeout_s: float = 30) -> Any:
        # Live updates replace elements between a find and a read: look again.
        ignored = (StaleElementReferenceException, NoSuchElementException)
        waiter = WebDriverWait(
            self.driver, timeout_s, poll_frequency=0.1, ignored_exceptions=ignored
        )
        return waiter.until(condition, what)

    def click(self, css: str, timeout_s: float = 30) -> None:
        """Click `css`, looking it up again if a live update replaced it meanwhile."""

        def clicked(d: WebDriver) -> bool:
            d.find_element(By.CSS_SELECTOR, css).click()
            return True

        self.wait(clicked, f"a click on {css}", timeout_s)

    def wait_text(self, css: str, needle: str, timeout_s: float = 30) -> None:
        def seen(d: WebDriver) -> bool:
            return any(needle in e.text for e in d.find_elements(By.CSS_SELECTOR, css))

        self.wait(seen, f"{needle!r} in {css}", timeout_s)

    def shot(self, name: str) -> Path:
        path = ARTEFACTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def login(self, key: str) -> None:
        self.driver.delete_all_cookies()
        self.open("/console/login")
        self.find("#api_key").send_keys(key)
        self.find("#login").click()
        self.wait(lambda d: "/login" not in d.current_url, "the login to finish")

    def csp_violations(self) -> list[str]:
        logs = self.driver.get_log("browser")  # type: ignore[attr-defined]  # Chrome only
        return [e["message"] for e in logs if "Content Security Policy" in e["message"]]


class FleetThread:
    """A simulated fleet on its own event loop in a thread (Selenium's calls block)."""

    def __init__(self, config: FleetConfig) -> None:
        self._config = config
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fleet", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as exc:  # reported by start()/stop() in the test thread
            self._error = exc
            self._ready.set()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with Fleet(self._config):
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> FleetThread:
        self._thread.start()
        if not self._ready.wait(60) or self._error is not None:
            raise RuntimeError(f"the simulated fleet did not start: {self._error!r}")
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        if self._error is not None:
            raise RuntimeError("the simulated fleet failed") from self._error
