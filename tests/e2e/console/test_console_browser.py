"""The console in a real browser (headless Chromium) against the real stack: log in with
a read key and a write key, upload a package, create a task with a canary wave for
simulated devices and watch it finish live, pause, resume and cancel a second task, read
a failed device's cause, send a webhook a signed test event and read it in the delivery
log, count dead letters per reason on the overview, and check that a read key cannot act
and that a form without the CSRF token is refused. Every page is saved as a screenshot in test-artefacts/console.

The tests run in order and build on each other (one fleet, one package).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from console_kit import Browser, FleetThread
from kafka import KafkaProducer
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from devices.behaviour import Behaviour
from devices.fleet import FleetConfig, Mode
from ops.demo_env import StackPlan, stack_env
from ops.fleet_group import registrar
from ota.catalog import cause_for_result_code
from ota.settings import CommonSettings
from scheduler import webhook_signing

FAIL_CODE = 5  # the device refuses before downloading
FINISHED = ("Success", "Fail", "PartialSuccess", "Stopped")


class Run:
    """What the ordered tests hand on to each other."""

    package_id = ""
    task_id = ""
    failed_device = ""


@pytest.fixture(scope="module")
def fleet(console_stack: StackPlan) -> Iterator[dict[str, list[str]]]:
    prefix = f"con-{uuid.uuid4().hex[:6]}"
    behaviours = [Behaviour()] * 5 + [Behaviour(fail_with=FAIL_CODE)] + [Behaviour(install_s=1)] * 6
    config = FleetConfig.from_settings(
        CommonSettings.from_env(stack_env(console_stack)),
        len(behaviours),
        mode=Mode.CONNECTIONS,
        prefix=prefix,
        behaviour_of=lambda index, _device: behaviours[index],
        register=registrar(console_stack),
    )
    ids = config.device_ids()
    with FleetThread(config):
        yield {"canary": ids[:6], "failing": [ids[5]], "slow": ids[6:]}


def test_login_is_refused_for_an_unknown_key(browser: Browser) -> None:
    browser.open("/console/")
    assert "/console/login" in browser.driver.current_url  # no session: the login page
    browser.find("#api_key").send_keys("not-a-key-at-all")
    browser.find("#login").click()
    browser.wait_text("#login-error", "Unknown API key")
    assert "not-a-key" not in browser.driver.current_url  # the key never goes in a URL
    browser.shot("01-login-refused")


def test_session_cookie_is_httponly_and_strict(browser: Browser, console_stack: StackPlan) -> None:
    browser.login(console_stack.read_key)
    cookie = browser.driver.get_cookie("ota_console")
    assert cookie is not None
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert console_stack.read_key not in cookie["value"]
    assert browser.driver.execute_script("return document.cookie") == ""  # type: ignore[no-untyped-call]


def test_read_key_sees_but_cannot_act(browser: Browser, console_stack: StackPlan) -> None:
    browser.login(console_stack.read_key)
    assert browser.text("#scope") == "read-only key"
    browser.open("/console/packages")
    assert not browser.find("#upload-form").is_displayed()  # write controls are not offered
    browser.shot("02-packages-read-key")
    # ... and the server refuses what a read key's session sends anyway, CSRF token and all.
    token = browser.find('meta[name="csrf-token"]').get_attribute("content")
    cookies = {c["name"]: c["value"] for c in browser.driver.get_cookies()}
    refused = httpx.post(
        f"{console_stack.api_url}/console/webhooks/add",
        data={"csrf": token, "url": "http://127.0.0.1:9/x", "secret": "0123456789abcdef"},
        cookies=cookies,
    )
    assert refused.status_code == 403
    assert "lacks the write scope" in refused.text
    listed = httpx.get(
        f"{console_stack.api_url}/v1/webhooks",
        headers={"Authorization": f"Bearer {console_stack.write_key}"},
    )
    assert listed.json()["items"] == []


def test_csp_headers(console_stack: StackPlan) -> None:
    response = httpx.get(f"{console_stack.api_url}/console/login")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"


def test_upload_a_package_with_a_write_key(
    browser: Browser, console_stack: StackPlan, tmp_path: Path
) -> None:
    browser.login(console_stack.write_key)
    assert browser.text("#scope") == "write key"
    firmware = tmp_path / "fw-2.0.bin"
    firmware.write_bytes(uuid.uuid4().bytes * 4096 * 16)  # 1 MiB
    browser.open("/console/packages")
    browser.find("#file").send_keys(str(firmware))
    browser.find("#up-version").send_keys("2.0")
    browser.find("#up-sources").send_keys("1.0")
    browser.find("#upload").click()
    try:
        browser.wait(lambda d: "/console/packages/" in d.current_url, "the package page")
    except Exception as exc:
        raise AssertionError(
            f"{browser.text('#upload-status')!r}; {browser.driver.get_log('browser')}"
        ) from exc
    assert "fw-2.0.bin" in browser.text()
    assert "1.0 MiB" in browser.text()
    Run.package_id = browser.driver.current_url.rsplit("/", 1)[1]
    browser.shot("03-package")
    assert browser.csp_violations() == []


def test_a_form_without_the_csrf_token_is_refused(
    browser: Browser, console_stack: StackPlan
) -> None:
    browser.login(console_stack.write_key)
    browser.open("/console/webhooks")
    browser.find("#url").send_keys("http://127.0.0.1:9/hook")
    browser.find("#secret").send_keys("0123456789abcdef")
    browser.driver.execute_script(  # type: ignore[no-untyped-call]
        "document.querySelectorAll('form input[name=csrf]').forEach(e => e.remove())"
    )
    browser.find("section[aria-labelledby=add-h] button[type=submit]").click()
    browser.wait_text("#error", "CSRF token is missing or wrong")
    browser.shot("04-csrf-refused")
    browser.open("/console/webhooks")
    assert "No webhooks." in browser.text("#webhooks")


class _Receiver(BaseHTTPRequestHandler):
    """A webhook endpoint: keeps what it was sent and answers 202."""

    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        self.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(202)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_args: Any) -> None:  # quiet
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    _Receiver.received = []
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_a_webhook_test_delivery_is_signed_and_logged(
    browser: Browser, console_stack: StackPlan, receiver: str
) -> None:
    secret = "test-delivery-secret-0123"
    browser.login(console_stack.write_key)
    browser.open("/console/webhooks")
    browser.find("#url").send_keys(receiver)
    browser.find("#secret").send_keys(secret)
    browser.find("section[aria-labelledby=add-h] button[type=submit]").click()
    browser.wait_text("#webhooks", receiver)
    browser.find("#webhooks tbody a").click()
    browser.wait_text("h1", receiver)
    browser.find("#send-test").click()
    browser.wait_text("#done", "Test event sent")
    first = browser.text("#deliveries tbody tr:first-child")
    assert "test" in first
    assert "HTTP 202" in first
    browser.shot("04b-webhook-test-delivery")
    assert len(_Receiver.received) == 1
    headers, body = _Receiver.received[0]
    event = json.loads(body)
    assert event["kind"] == "test"
    assert event["id"] in first
    # Signed as every delivery is: the receiver's check passes with the webhook's secret.
    webhook_signing.verify([secret], headers, body, int(time.time()))
    hook_id = browser.driver.current_url.split("/console/webhooks/")[1].split("?")[0]
    logged = httpx.get(
        f"{console_stack.api_url}/v1/webhooks/{hook_id}/deliveries",
        headers={"Authorization": f"Bearer {console_stack.read_key}"},
    ).json()["items"]
    assert [(d["kind"], d["status_code"], d["ok"]) for d in logged] == [("test", 202, True)]
    browser.open("/console/webhooks")
    browser.find(f'form[action="/console/webhooks/{hook_id}/delete"] button').click()
    browser.wait_text("#webhooks", "No webhooks.")


def _status(driver: WebDriver) -> str:
    """The live region's task status, read in one script call (SSE swaps replace it)."""
    status = driver.execute_script(  # type: ignore[no-untyped-call]
        "const p = document.getElementById('progress'); return p ? p.dataset.status : ''"
    )
    return str(status or "")


def test_create_a_task_with_a_canary_wave_and_watch_it_finish_live(
    browser: Browser, console_stack: StackPlan, fleet: dict[str, list[str]]
) -> None:
    browser.login(console_stack.write_key)
    browser.open(f"/console/tasks/new?package_id={Run.package_id}")
    browser.find("#name").send_keys("canary to 2.0")
    browser.find("#device_ids").send_keys("\n".join(fleet["canary"]))
    browser.find("#waves").send_keys("2:50")
    browser.find("#dry-run").click()
    browser.wait_text("#preview", "devices targeted")
    assert browser.text("#preview-targeted") == "6"
    browser.shot("05-task-dry-run")
    browser.find("#create").click()
    browser.wait(
        lambda d: "/console/tasks/" in d.current_url and "new" not in d.current_url, "the task page"
    )
    Run.task_id = browser.driver.current_url.split("/console/tasks/")[1].split("?")[0]
    # A marker on the window: still there at the end means no page load happened.
    browser.driver.execute_script("window.stillTheSamePage = true")  # type: ignore[no-untyped-call]
    browser.wait(lambda d: _status(d) in FINISHED, "the task to finish on the live page", 120)
    assert browser.driver.execute_script("return window.stillTheSamePage === true")  # type: ignore[no-untyped-call]
    assert _status(browser.driver) == "PartialSuccess"
    browser.wait_text("#count-Success", "5")
    assert browser.text("#count-Fail") == "1"
    browser.shot("06-task-finished-live")
    assert browser.csp_violations() == []


def test_a_failed_device_tells_its_cause(
    browser: Browser, console_stack: StackPlan, fleet: dict[str, list[str]]
) -> None:
    browser.login(console_stack.write_key)
    page = f"/console/tasks/{Run.task_id}?devices=Fail"

    def wrapped_up(d: WebDriver) -> bool:
        # The reconciler's wrap-up of the finished task sets when its device states go.
        browser.open(page)
        return bool(d.find_elements(By.ID, "devices-kept"))

    browser.wait(wrapped_up, "the finished task's wrap-up")
    assert browser.text("#devices-kept").startswith("Per-device states kept until 20")
    link = browser.find("#task-devices tbody a")
    assert link.text == fleet["failing"][0]
    link.click()
    browser.wait_text("h1", fleet["failing"][0])
    cause = cause_for_result_code(FAIL_CODE)
    steps = browser.text(".story")
    assert f"Cause {int(cause)}: {cause.message}" in steps
    assert "Upgrade failed" in steps
    assert "Sent the upgrade command" in steps
    browser.shot("07-failed-device")


def test_pause_resume_and_cancel_a_rollout(
    browser: Browser, console_stack: StackPlan, fleet: dict[str, list[str]]
) -> None:
    browser.login(console_stack.write_key)
    browser.open(f"/console/tasks/new?package_id={Run.package_id}")
    browser.find("#name").send_keys("slow rollout")
    browser.find("#device_ids").send_keys(" ".join(fleet["slow"]))
    browser.find("#rate_per_min").send_keys("6")
    browser.find("#create").click()
    browser.wait(lambda d: _status(d) == "Processing", "the task to process")
    browser.click("#act-pause")
    browser.wait_text("h1", "Pause task")
    browser.shot("08-confirm-pause")
    browser.find("#confirm").click()
    browser.wait(lambda d: _status(d) == "Paused", "the task to pause")
    assert "Paused: no more devices are released" in browser.text("#done")
    browser.click("#act-resume")
    browser.find("#confirm").click()
    browser.wait(lambda d: _status(d) == "Processing", "the task to resume")
    # Stopping a bad rollout: two clicks.
    browser.click("#act-cancel")
    outlook = browser.text("#cancel-outlook")
    assert "never start" in outlook
    assert "left to finish" in outlook
    browser.shot("09-confirm-cancel")
    browser.find("#confirm").click()
    browser.wait(lambda d: _status(d) == "Stopped", "the task to stop")
    assert "Cancelled:" in browser.text("#done")
    browser.shot("10-task-stopped")


def _reload_until(browser: Browser, css: str, needle: str, timeout_s: float = 60) -> None:
    """The overview is not live: reload it until `needle` shows in `css`."""

    shown: list[str] = []

    def seen(d: WebDriver) -> bool:
        d.refresh()
        shown[:] = [e.text for e in d.find_elements(By.CSS_SELECTOR, css)]
        return any(needle in text for text in shown)

    try:
        browser.wait(seen, f"{needle!r} in {css} after a reload", timeout_s)
    except TimeoutException:
        browser.shot(f"failed-{css.strip('#')}")
        raise AssertionError(f"{needle!r} never showed in {css}; it showed {shown}") from None


def test_overview_devices_and_narrow_screen(
    browser: Browser, console_stack: StackPlan, kafka_bootstrap: str, fleet: dict[str, list[str]]
) -> None:
    # A record no service can read, in the inbox: the workers and the scheduler each
    # refuse it to the dead-letter topic, and the overview counts both by reason.
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    try:
        inbox = console_stack.topic_prefix + "ota.inbox"
        producer.send(inbox, key=b"not-a-device-record", value=b"{not json").get(30)
    finally:
        producer.close(timeout=10)
    browser.login(console_stack.read_key)
    browser.open("/console/")
    _reload_until(browser, "#dead-worker-invalid_json", "invalid_json")
    _reload_until(browser, "#dead-scheduler-invalid_json", "invalid_json")
    assert browser.text("#dead-worker-invalid_json td:last-child") == "1"
    assert browser.text("#dead-scheduler-invalid_json td:last-child") == "1"

    # The fleet's 12 devices, at least: the device broker is shared, so a test stack running
    # beside this one may have its devices counted here too.
    def fleet_counted(d: WebDriver) -> bool:
        d.refresh()
        return int(d.find_element(By.CSS_SELECTOR, "#devices-total").text.replace(",", "")) >= 12

    browser.wait(fleet_counted, "the fleet's 12 devices on the overview")
    chart = browser.text("section[aria-labelledby=fw-h]")
    assert "1.0" in chart  # the census may be up to 10 s old: the fleet started on 1.0
    browser.shot("11-overview")
    prefix = fleet["canary"][0][:-2]
    browser.open(f"/console/devices?q={prefix}")
    rows = browser.finds("#results tbody tr")
    assert len(rows) >= 2
    browser.shot("12-devices")
    browser.driver.set_window_size(390, 844)
    browser.open(f"/console/tasks/{Run.task_id}")
    width: Any = browser.driver.execute_script("return document.documentElement.scrollWidth")  # type: ignore[no-untyped-call]
    assert width <= 400  # no sideways scrolling at phone width
    browser.shot("13-task-390px")
    browser.driver.set_window_size(1280, 900)
