"""The reference device agent: the IoTDA OTA protocol as a device speaks it.

The agent is transport-free: it is handed each downlink payload and a `publish`
coroutine for its uplink, so the same logic runs behind its own MQTT connection
(`devices.connection`) or inside a multiplexed fleet. It answers `version_query` with
`version_report`, handles `firmware_upgrade`/`software_upgrade` and their `_v2` forms
(download with the token, resume with Range/If-Range, verify the SHA-256 and, when it
trusts signing keys, the package signature; report progress and the final result code,
switch its version), and follows its `Behaviour` knobs.
A repeated command (same event_id) is recognised and not acted on twice; only its URL (a
fresh token) is taken. A download keeps what it received across commands for the same
package: a later command (a repeat, or a new try after a failed download) continues it
with Range. A token the edge refuses as expired (410) is reported as progress and the
download waits for the fresh URL the platform answers with. Reports leave in order;
progress reports are queued without waiting for the link, so a download or an install
goes on while the broker is away (results are awaited).
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devices.behaviour import WELL_BEHAVED, AfterInstall, Behaviour, FailStage, stage_of
from devices.download import Download, DownloadError, Interrupted, TokenExpired, fetch
from devices.http import HttpClient
from ota.backoff import Backoff, retry
from ota.catalog import (
    RESULT_ALREADY_LATEST,
    RESULT_INVALID_URI,
    RESULT_SIGNATURE_INVALID,
    RESULT_SUCCESS,
)
from ota.clock import now_ms
from ota.package_signing import load_public_keys, refusal
from ota.protocol import (
    PARA_KEY_ID,
    PARA_SIGNATURE,
    DownlinkType,
    Event,
    ProtocolError,
    encode_envelope,
    parse_downlink,
    up_topic,
    uplink_event,
)
from ota.reports import HealthCheck, ProgressReport, VersionReport

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes], Awaitable[None]]
GoOffline = Callable[[float], Awaitable[None]]

RESULT_BAD_PACKAGE = 7
RESULT_DOWNLOAD_FAILED = 6
DOWNLOAD_ATTEMPTS = 5
DOWNLOAD_RETRY = Backoff(0.2, 2.0, attempts=DOWNLOAD_ATTEMPTS - 1)
DOWNLOAD_SHARE = 90  # progress 0..90 is the download, 95 installing, 100 done
_MAX_SEEN_IDS = 64


@dataclass
class Outcome:
    """What happened to one device, for fleet reports (monotonic seconds)."""

    version_queries: int = 0
    upgrade_commands: int = 0
    first_command_at: float | None = None
    finished_at: float | None = None
    result_code: int | None = None
    reported_version: str | None = None
    resumed_downloads: int = 0
    health: AfterInstall | None = None  # what the post-install health check came to
    resumed_from: list[int] = field(default_factory=list)  # each Range continuation's start
    expired_tokens: int = 0  # downloads the edge refused with 410 (token expired)
    errors: list[str] = field(default_factory=list)

    @property
    def duration_s(self) -> float | None:
        if self.first_command_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.first_command_at


class DeviceAgent:
    def __init__(
        self,
        device_id: str,
        publish: Publish,
        http: HttpClient,
        behaviour: Behaviour = WELL_BEHAVED,
        *,
        go_offline: GoOffline | None = None,
        download_dir: Path | None = None,
    ) -> None:
        self.device_id = device_id
        self.behaviour = behaviour
        self.fw_version = behaviour.fw_version
        self.sw_version = behaviour.sw_version
        self.outcome = Outcome()
        self._publish = publish
        self._http = http
        self._go_offline = go_offline
        self._download_dir = download_dir
        # Keys whose signatures it accepts, by key id; none: it checks the SHA-256 only.
        pem = behaviour.trusted_keys_pem
        self._trusted = load_public_keys(pem) if pem else {}
        self._seen: list[str] = []
        self._busy: str | None = None  # target version of the upgrade under way
        # The package download under way, or the partial one a failed download left: a
        # later command for the same package continues it.
        self._package_download: Download | None = None
        self._fresh_url = asyncio.Event()  # a command handed the download a new URL
        self._failures = 0  # upgrades failed with behaviour.fail_with so far
        self._fail: int | None = None  # the result code the upgrade under way fails with
        self._muted = False  # mute_after_install took effect
        # The health check's verdict on the version installed last, sent with every
        # version_report while the device runs it (None: not checked).
        self._health: HealthCheck | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_report: asyncio.Task[None] | None = None  # the report queued last
        self.finished = asyncio.Event()

    # ------------------------------------------------------------ inputs

    async def boot(self) -> None:
        """Just connected: report the versions when the device is set to."""
        if self.behaviour.report_at_boot:
            await self._send(self._version_event(None))

    def on_downlink(self, payload: bytes) -> None:
        try:
            message = parse_downlink(self.device_id, payload)
        except ProtocolError as error:
            self.outcome.errors.append(f"{error.reason}: {error.message}")
            log.warning("bad command", extra={"device_id": self.device_id, "reason": error.reason})
            return
        for event in message.events:
            if event.event_id is not None:
                if event.event_id in self._seen:
                    # The platform (or broker) sent this command again: an upgrade's may
                    # carry a fresh token, which the download takes; nothing else is new.
                    self._take_url(event)
                    continue
                self._seen = [*self._seen[-(_MAX_SEEN_IDS - 1) :], event.event_id]
            self._spawn(self._handle(event))

    def _spawn(self, work: Awaitable[None]) -> asyncio.Task[None]:
        async def run() -> None:
            await work

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.outcome.errors.append(repr(task.exception()))
            log.error(
                "agent task failed", exc_info=task.exception(), extra={"device_id": self.device_id}
            )

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ------------------------------------------------------------ handling

    async def _handle(self, event: Event) -> None:
        kind = DownlinkType(event.event_type)
        if kind is DownlinkType.VERSION_QUERY:
            self.outcome.version_queries += 1
            if self.behaviour.answer_version_query and not self._muted:
                await self._pause()
                await self._send(self._version_event(event.event_id))
            return
        self.outcome.upgrade_commands += 1
        if self.outcome.first_command_at is None:
            self.outcome.first_command_at = time.monotonic()
        if self.behaviour.ignore_upgrades:
            return
        await self._upgrade(kind, event)

    def _next_failure(self) -> int | None:
        """The result code this upgrade fails with (behaviour.fail_with, while fail_times lasts)."""
        times = self.behaviour.fail_times
        if self.behaviour.fail_with is None or (times is not None and self._failures >= times):
            return None
        self._failures += 1
        return self.behaviour.fail_with

    async def _upgrade(self, kind: DownlinkType, event: Event) -> None:
        paras = event.paras
        target: str = paras["version"]
        firmware = kind in (DownlinkType.FIRMWARE_UPGRADE, DownlinkType.FIRMWARE_UPGRADE_V2)
        current = self.fw_version if firmware else self.sw_version
        if self._busy is not None:
            if self._busy != target:
                await self._progress(event, 1, None, current, "busy with another upgrade")
            else:
                self._take_url(event)
            return
        await self._pause()
        if current == target:
            await self._finish(event, RESULT_ALREADY_LATEST, current, "already the latest version")
            if self._health is not None:  # the verdict it holds on this version, again
                await self._send(self._version_event(None))
            return
        fail = self._fail = self._next_failure()
        if fail is not None and stage_of(fail) is FailStage.BEFORE_DOWNLOAD:
            await self._finish(event, fail, current, f"refused with result code {fail}")
            return
        self._busy = target
        try:
            code = await self._download(kind, event, current)
            if code != RESULT_SUCCESS:
                await self._finish(event, code, current, "download failed")
                return
            refused = refusal(
                self._trusted, paras.get(PARA_SIGNATURE), paras.get(PARA_KEY_ID), paras["sign"]
            )
            if refused is not None:  # checked before anything is installed
                await self._finish(event, RESULT_SIGNATURE_INVALID, current, refused)
                return
            if self.behaviour.mute_after_download:
                self._mute()
                return
            self._report(event, RESULT_SUCCESS, 95, current, "installing")
            if self.behaviour.install_s:
                await asyncio.sleep(self.behaviour.install_s)
            if fail is not None:
                await self._finish(event, fail, current, f"install failed with result code {fail}")
                return
            if firmware:
                self.fw_version = target
            else:
                self.sw_version = target
            self._health = None  # a new version, not checked yet
            if self.behaviour.mute_after_install:
                self._mute()
                return
            if not self.behaviour.report_result:
                self.outcome.finished_at = time.monotonic()
                self.finished.set()
                return
            reported = self.behaviour.wrong_version or target
            checks = self.behaviour.after_install is not None
            await self._finish(event, RESULT_SUCCESS, reported, "upgrade succeeded", not checks)
            if checks:
                await self._check_health(firmware, current)
        finally:
            self._busy = None

    async def _check_health(self, firmware: bool, previous: str) -> None:
        """The post-install health check `behaviour.after_install` scripts: a verdict on the
        new version, sent unprompted and kept for every later version_report; or a boot
        back into `previous`, whose version it then reports as it does after booting."""
        after = self.behaviour.after_install
        assert after is not None
        if self.behaviour.health_check_s:
            await asyncio.sleep(self.behaviour.health_check_s)
        if after is AfterInstall.BOOT_OLD:
            if firmware:
                self.fw_version = previous
            else:
                self.sw_version = previous
        else:
            passed = after is AfterInstall.CONFIRM
            self._health = HealthCheck.PASSED if passed else HealthCheck.FAILED
        self.outcome.health = after
        await self._send(self._version_event(None))
        self.outcome.finished_at = time.monotonic()
        self.finished.set()

    def _mute(self) -> None:
        self._muted = True
        self.outcome.finished_at = time.monotonic()
        self.finished.set()

    def _take_url(self, event: Event) -> None:
        """An upgrade command for the package being downloaded (or left partial) hands its
        URL and token to that download: its next request goes with them."""
        kind = DownlinkType(event.event_type)
        job = self._package_download
        if kind is DownlinkType.VERSION_QUERY or job is None:
            return
        paras = event.paras
        if job.of(paras["sign"], paras["file_size"]):
            job.use(paras["url"], None if kind.presigned else paras.get("access_token"))
            self._fresh_url.set()

    def _download_for(self, kind: DownlinkType, paras: Mapping[str, Any]) -> Download:
        """The download of this command's package: the partial one when there is one (it
        goes on with this command's URL), else a new one."""
        token = None if kind.presigned else paras.get("access_token")
        job = self._package_download
        if job is not None and job.of(paras["sign"], paras["file_size"]):
            job.use(paras["url"], token)
            return job
        job = self._package_download = Download(
            url=paras["url"],
            size=paras["file_size"],
            token=token,
            target=self._download_dir / f"{self.device_id}-{paras['file_name']}"
            if self._download_dir
            else None,
            package=paras["sign"],
        )
        return job

    async def _fresh_url_after(
        self, job: Download, refused: tuple[str, str | None], event: Event, current: str
    ) -> bool:
        """The edge refused `refused` (URL, token) as expired. The platform sends the command
        again with a fresh URL on the device's next download progress report or reconnect:
        report where the download stands, then wait for the URL (at most
        `fresh_url_wait_s`). False when none came."""
        if (job.url, job.token) != refused:
            return True  # a fresh URL came while the refused request was out
        self._fresh_url.clear()
        if self.behaviour.progress_every_pct:
            pct = job.received * 100 // job.size if job.size else 0
            self._report(
                event,
                RESULT_SUCCESS,
                pct * DOWNLOAD_SHARE // 100,
                current,
                "downloading: the download token expired",
            )
        try:
            async with asyncio.timeout(self.behaviour.fresh_url_wait_s):
                while (job.url, job.token) == refused:
                    await self._fresh_url.wait()
                    self._fresh_url.clear()
        except TimeoutError:
            return False
        return True

    async def _download(self, kind: DownlinkType, event: Event, current: str) -> int:
        paras = event.paras
        if not usable_url(paras["url"]):
            return RESULT_INVALID_URI
        job = self._download_for(kind, paras)
        step = self.behaviour.progress_every_pct
        if step or self.behaviour.stall_download:  # 0: no download progress reports at all
            # From where it starts: 0, or how far a partial download of the package got.
            had = job.received * 100 // job.size if job.size else 0
            self._report(event, RESULT_SUCCESS, had * DOWNLOAD_SHARE // 100, current, "downloading")
        if self.behaviour.stall_download:
            await asyncio.Event().wait()  # until the agent closes (its tasks are cancelled)
        next_report = [step]

        async def on_progress(received: int) -> None:
            if not step or not job.size:
                return
            pct = received * 100 // job.size
            if pct >= next_report[0] and pct < 100:
                next_report[0] = (pct // step + 1) * step
                # Queued, not awaited: the download goes on while the link is down.
                self._report(
                    event, RESULT_SUCCESS, pct * DOWNLOAD_SHARE // 100, current, "downloading"
                )

        cut = self.behaviour.drop_download_at
        if cut is not None and job.received >= cut:
            cut = None  # a partial download already past the scripted cut

        async def download() -> None:
            nonlocal cut
            while not job.done:
                sent = (job.url, job.token)
                try:
                    await fetch(self._http, job, stop_at=cut, on_progress=on_progress)
                except Interrupted:  # the scripted cut: resume, not a failure
                    cut = None
                    if self.behaviour.offline_mid_download_s and self._go_offline is not None:
                        # What it queued goes out first: closing the link under a publish
                        # would leave that publish waiting for a PUBACK that never comes.
                        await self._sent()
                        await self._go_offline(self.behaviour.offline_mid_download_s)
                    elif self.behaviour.pause_mid_download_s:
                        await asyncio.sleep(self.behaviour.pause_mid_download_s)
                except TokenExpired as error:
                    self.outcome.expired_tokens += 1
                    if not await self._fresh_url_after(job, sent, event, current):
                        self.outcome.errors.append(str(error))
                        raise
                except DownloadError as error:
                    self.outcome.errors.append(str(error))
                    raise

        seen = len(job.resumed_from)
        try:
            await retry(
                "device.download",
                download,
                on=DownloadError,
                policy=DOWNLOAD_RETRY,
                retriable=_download_retriable,
            )
        except DownloadError as error:
            return error.result_code  # what it received stays, for the next command
        finally:
            continued = job.resumed_from[seen:]
            self.outcome.resumed_from.extend(continued)
            self.outcome.resumed_downloads += len(continued)
        self._package_download = None  # complete: nothing left to continue
        if self._fail in (6, 9):
            return self._fail
        if self._fail == RESULT_BAD_PACKAGE or job.sha256() != paras["sign"]:
            return RESULT_BAD_PACKAGE
        return RESULT_SUCCESS

    # ------------------------------------------------------------ reports

    async def _finish(
        self, event: Event, code: int, version: str, description: str, done: bool = True
    ) -> None:
        """The final result; `done` False: the device has more to do (its health check)."""
        await self._progress(event, code, 100, version, description)
        self.outcome.result_code = code
        self.outcome.reported_version = version
        if done:
            self.outcome.finished_at = time.monotonic()
            self.finished.set()

    async def _progress(
        self, command: Event, code: int, progress: int | None, version: str, description: str
    ) -> None:
        await self._report(command, code, progress, version, description)

    def _report(
        self, command: Event, code: int, progress: int | None, version: str, description: str
    ) -> asyncio.Task[None]:
        report = ProgressReport(code, version, progress, description)
        return self._queue(uplink_event(report, command.event_id))

    def _version_event(self, event_id: str | None) -> Event:
        report = VersionReport(self.fw_version, self.sw_version, self._health)
        return uplink_event(report, event_id)

    async def _send(self, event: Event) -> None:
        await self._queue(event)

    async def _sent(self) -> None:
        """Until every report queued so far has gone out."""
        if self._last_report is not None:
            await asyncio.wait({self._last_report})

    def _queue(self, event: Event) -> asyncio.Task[None]:
        """Publish `event` once every report queued before it went out: reports leave in
        order, and whoever queues one may go on without waiting (a device's MQTT client
        publishes asynchronously; a download does not stall while the broker is away)."""
        payload = encode_envelope(self.device_id, (event,), now_ms())
        previous = self._last_report

        async def publish() -> None:
            if previous is not None:
                await asyncio.wait({previous})  # its own failure is recorded by _done
            for _ in range(2 if self.behaviour.answer_twice else 1):
                await self._publish(up_topic(self.device_id), payload)

        self._last_report = self._spawn(publish())
        return self._last_report

    async def _pause(self) -> None:
        if self.behaviour.slow_s:
            await asyncio.sleep(self.behaviour.slow_s)


def usable_url(url: str) -> bool:
    """An address the device can download from: http(s) with a host. Anything else is
    reported as result code 11, IoTDA's "Invalid URI"."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _download_retriable(error: BaseException) -> bool:
    """A failed transfer is tried again; a refused or missing package is not, nor a token
    that expired with no fresh URL in sight (the same URL would be refused again)."""
    return (
        isinstance(error, DownloadError)
        and not isinstance(error, TokenExpired)
        and error.result_code == RESULT_DOWNLOAD_FAILED
    )
