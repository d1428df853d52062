"""Download tokens in the machine: every upgrade it sends (the first, a reconnect's resend,
a renewal) carries a token minted at that record's time for the configured lifetime, and
the job keeps its expiry. A download progress report once the token ran out (the edge
refused the device with 410), or nearly did, gets the upgrade again under the same id
with a fresh token; nothing else about the job changes."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ota.jobstates import JobState as S
from ota.records import (
    AnyRecord,
    DeviceEventRecord,
    JobStartRecord,
    PresenceRecord,
    decode,
    encode,
)
from ota.settings import CommonSettings
from ota.tokens import Verdict, verify
from workers.batch import COMMANDS, InboxItem, apply_batch
from workers.codec import pack, spec_ref, unpack
from workers.effects import SendUpgrade, SendVersionQuery
from workers.events import Event, Kind
from workers.machine import Outcome, step
from workers.model import Device

from .helpers import (
    DL_FINISHED,
    DL_STARTED,
    SHA,
    Runner,
    commands,
    events,
    notes,
    progress,
    spec,
    start,
    transitions,
    version,
)

T0 = 1_000_000
LIFETIME_S = 600
# A progress report renews the token once less than a tenth of its lifetime is left.
RENEW_AT_S = LIFETIME_S - LIFETIME_S // 10


class ShortTokens(Runner):
    """A runner whose upgrades carry tokens living LIFETIME_S (OTA_TOKEN_LIFETIME_S)."""

    def __call__(self, event: Event, at_ms: int | None = None) -> Outcome:
        if at_ms is not None:
            self.now_ms = at_ms
        self.offset += 1
        self.last = step(self.device, event, self.now_ms, f"w0-{self.offset}", LIFETIME_S)
        self.device = self.last.device
        return self.last

    def later(self, seconds: int) -> ShortTokens:
        self.now_ms += seconds * 1000
        return self


def upgrades(outcome: Outcome) -> list[SendUpgrade]:
    return [c for c in commands(outcome) if isinstance(c, SendUpgrade)]


def commanded() -> tuple[ShortTokens, SendUpgrade]:
    """A job whose device, online on connection c1, got the upgrade at T0."""
    run = ShortTokens(Device(), T0)
    run(Event(Kind.ONLINE, connection="c1"))
    run(start())
    [sent] = upgrades(run(version(fw="1.0")))
    assert run.state is S.COMMAND_SENT
    return run, sent


def downloading() -> tuple[ShortTokens, SendUpgrade]:
    run, sent = commanded()
    run(DL_STARTED)
    assert run.state is S.DOWNLOADING
    return run, sent


def test_the_first_command_carries_a_token_of_the_configured_lifetime() -> None:
    run, sent = commanded()
    assert sent.token_expires_s == T0 // 1000 + LIFETIME_S
    assert run.job.token_expires_s == sent.token_expires_s
    assert run.job.command_id == sent.id


@pytest.mark.parametrize(
    ("fetching", "note"), [(commanded, "command_resent"), (downloading, "token_renewed")]
)
def test_a_reconnect_after_expiry_resends_with_a_token_minted_then(
    fetching: Callable[[], tuple[ShortTokens, SendUpgrade]], note: str
) -> None:
    run, sent = fetching()
    job = run.job
    out = run.later(LIFETIME_S * 3)(Event(Kind.ONLINE, connection="c2"))
    [resent] = upgrades(out)
    assert resent.id == sent.id
    assert resent.token_expires_s == run.now_ms // 1000 + LIFETIME_S
    assert notes(out) == [note]
    assert run.job == job._replace(token_expires_s=resent.token_expires_s)


def test_a_reconnect_mid_download_with_a_lasting_token_only_asks_the_version() -> None:
    """The device has the command and a token that lasts: nothing new to send it."""
    run, _ = downloading()
    job = run.job
    out = run.later(RENEW_AT_S - 1)(Event(Kind.ONLINE, connection="c2"))
    assert [type(c) for c in commands(out)] == [SendVersionQuery]
    assert notes(out) == ["reconnect_query"]
    assert run.job == job
    # Once the token runs out, the next reconnect renews it.
    run(Event(Kind.OFFLINE))
    [renewed] = upgrades(run.later(1)(Event(Kind.ONLINE, connection="c3")))
    assert run.job.token_expires_s == renewed.token_expires_s


def test_progress_while_the_token_is_good_sends_nothing() -> None:
    run, _ = downloading()
    job = run.job
    out = run.later(RENEW_AT_S - 1)(progress(0, 40, desc="downloading"))
    assert commands(out) == []
    assert run.job == job._replace(download_pct=40)


@pytest.mark.parametrize("after_s", [RENEW_AT_S, LIFETIME_S, LIFETIME_S * 5])
def test_progress_once_the_token_runs_out_renews_it_under_the_same_id(after_s: int) -> None:
    run, sent = downloading()
    job = run.job
    out = run.later(after_s)(progress(0, 40, desc="downloading"))
    [renewed] = commands(out)
    assert isinstance(renewed, SendUpgrade)
    assert renewed.id == sent.id == job.command_id
    assert renewed.token_expires_s == run.now_ms // 1000 + LIFETIME_S
    assert notes(out) == ["token_renewed"]
    assert [e.detail["by"] for e in events(out)] == ["progress"]
    # Same try, state, version and deadline: only the token's expiry moved.
    assert run.job == job._replace(download_pct=40, token_expires_s=renewed.token_expires_s)
    # The fresh token is good for a while: the next report sends nothing.
    assert commands(run.later(1)(progress(0, 60, desc="downloading"))) == []


def test_the_first_progress_after_expiry_moves_to_downloading_and_renews() -> None:
    """No edge record yet (COMMAND_SENT): the report moves the job on, then renews."""
    run, sent = commanded()
    out = run.later(LIFETIME_S + 1)(progress(0, 10, desc="downloading"))
    assert transitions(out) == [(S.COMMAND_SENT.value, S.DOWNLOADING.value)]
    [renewed] = upgrades(out)
    assert renewed.id == sent.id
    assert run.job.token_expires_s == renewed.token_expires_s
    assert notes(out) == ["token_renewed"]


def test_a_progress_report_echoing_an_older_try_renews_nothing() -> None:
    run, _ = downloading()
    out = run.later(LIFETIME_S + 1)(progress(0, 40, echo="w0-99-0"))
    assert commands(out) == []
    assert notes(out) == ["stale_report"]


@pytest.mark.parametrize("code", [1, 6, 7, 255])
def test_a_failure_after_expiry_is_the_devices_result_not_a_renewal(code: int) -> None:
    run, _ = downloading()
    out = run.later(LIFETIME_S + 1)(progress(code, 100))
    assert upgrades(out) == []
    assert run.state is S.FAILED


def test_after_the_download_nothing_renews_the_token() -> None:
    """DOWNLOADED, UPDATING: the package is on the device; progress is the install's."""
    run, _ = downloading()
    run(DL_FINISHED)
    assert upgrades(run.later(LIFETIME_S + 1)(progress(0, 95, desc="installing"))) == []
    assert run.state is S.UPDATING
    assert upgrades(run.later(LIFETIME_S)(progress(0, 97, desc="installing"))) == []
    assert upgrades(run(Event(Kind.ONLINE, connection="c2"))) == []


def test_download_progress_after_the_edge_sent_it_all_renews_an_expired_token() -> None:
    """The edge wrote the last byte (DOWNLOADED), but the device's connection was cut with
    the rest in its buffers: refused with 410 for the rest, it reports its download
    progress, and gets the upgrade again under the same id with a fresh token."""
    run, sent = downloading()
    run(DL_FINISHED)
    job = run.job
    assert commands(run.later(RENEW_AT_S - 1)(progress(0, 22, desc="downloading"))) == []
    out = run.later(LIFETIME_S)(progress(0, 22, desc="downloading: the download token expired"))
    [renewed] = upgrades(out)
    assert renewed.id == sent.id
    assert renewed.token_expires_s == run.now_ms // 1000 + LIFETIME_S
    assert notes(out) == ["download_progress", "token_renewed"]
    assert run.state is S.DOWNLOADED
    assert run.job == job._replace(download_pct=22, token_expires_s=renewed.token_expires_s)
    # A reconnect in DOWNLOADED renews nothing: only the device's progress says it lacks bytes.
    run.later(LIFETIME_S * 2)(Event(Kind.OFFLINE))
    assert upgrades(run(Event(Kind.ONLINE, connection="c2"))) == []


def test_a_state_stored_before_the_expiry_was_kept_counts_from_the_command() -> None:
    run, _ = downloading()
    run.device = run.device._replace(job=run.job._replace(token_expires_s=0))
    assert commands(run.later(RENEW_AT_S - 1)(progress(0, 30))) == []
    [renewed] = upgrades(run.later(1)(progress(0, 40)))
    assert run.job.token_expires_s == renewed.token_expires_s


def test_a_retry_starts_without_the_old_tokens_expiry() -> None:
    run = ShortTokens(Device(), T0)
    run(Event(Kind.ONLINE, connection="c1"))
    run(start(spec(retry_count=1)))
    run(version(fw="1.0"))
    run(progress(6, 100))  # download failed: retried after retry_interval_s
    assert run.state is S.WAITING_RETRY
    run.timeout()
    assert run.job.state is S.QUERYING_VERSION
    assert run.job.token_expires_s == 0
    [sent] = upgrades(run(version(fw="1.0")))
    assert run.job.command_id == sent.id
    assert sent.token_expires_s == run.now_ms // 1000 + LIFETIME_S


def test_the_expiry_is_stored_with_the_job() -> None:
    run, _ = downloading()
    specs = {spec_ref(run.job.spec).digest: run.job.spec}
    assert unpack(pack(run.device), specs).job == run.job
    assert run.job.token_expires_s != 0


def test_the_shell_mints_for_the_lifetime_it_is_set_to() -> None:
    """apply_batch hands OTA_TOKEN_LIFETIME_S to the machine: the command's token expires
    that long after the record's time, and its `expires` says so."""
    settings = CommonSettings.from_env({"OTA_TOKEN_LIFETIME_S": str(LIFETIME_S)})
    at_ms = 1_800_000_000_000
    records: list[AnyRecord] = [
        PresenceRecord(device_id="d1", online=True, connection="c1", at_ms=at_ms),
        JobStartRecord(device_id="d1", job=spec(), attempt=1, at_ms=at_ms),
        DeviceEventRecord(
            device_id="d1", event_type="version_report", paras={"fw_version": "1.0"}, at_ms=at_ms
        ),
    ]
    items = [InboxItem(i, b"d1", encode(r), at_ms) for i, r in enumerate(records)]
    result = apply_batch(settings, "inbox", 0, items, {}, {}, 60_000)
    sent = [decode(o.value) for o in result.outputs if o.topic == COMMANDS]
    assert [c.event_type for c in sent] == ["version_query", "firmware_upgrade"]
    upgrade = sent[-1]
    assert upgrade.paras["expires"] == LIFETIME_S
    check = verify(
        settings.token_keys,
        upgrade.paras["access_token"],
        package_sha256=SHA,
        now_s=at_ms // 1000 + LIFETIME_S - 1,
    )
    assert (check.verdict, check.expires_s) == (Verdict.VALID, at_ms // 1000 + LIFETIME_S)
