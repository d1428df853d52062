"""A download token that expires mid-download, end to end. A stack of its own (on a private
Redis: every db of the shared one has its suite) whose workers mint tokens living
LIFETIME_S (OTA_TOKEN_LIFETIME_S); a reference device fetches part of
the package, leaves MQTT for longer than that, and comes back: the edge refuses its old
token with 410, the platform sends the command again with a fresh URL (the reconnect, or
the progress report the refusal makes the device send), and the device finishes the
download from the byte it had (Range), not from 0. The job succeeds. A device that stays
connected but idle past the token's life gets its fresh URL from that progress report
alone."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from e2e_support import E2E, Rollout, e2e_stack, run_rollout

from devices.behaviour import Behaviour
from ops.demo_env import redis_url_with_db
from tests.redis_kit import running_redis

LIFETIME_S = 5
PACKAGE_BYTES = 256 * 1024
CUT = 64 * 1024
AWAY_S = LIFETIME_S + 2.5  # back after the first token expired, whatever its second


@pytest.fixture(scope="module")
def short_tokens(
    kafka_bootstrap: str,
    redis_url: str,
    mqtt_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[E2E]:
    state = tmp_path_factory.mktemp("tokens")
    # Device credentials stay in the shared store the broker reads.
    credentials = {"OTA_CREDENTIALS_REDIS_URL": redis_url_with_db(redis_url, 1)}
    with (
        running_redis(state / "redis") as redis_node,
        e2e_stack(
            "tokens",
            kafka_bootstrap=kafka_bootstrap,
            redis_url=redis_node.url(),
            redis_db=0,
            state_dir=state,
            extra={**mqtt_env, **credentials, "OTA_TOKEN_LIFETIME_S": str(LIFETIME_S)},
        ) as stack,
    ):
        yield stack


async def _resumed_after_expiry(stack: E2E, behaviour: Behaviour) -> Rollout:
    """One device with `behaviour` (a scripted cut at CUT, then idle past its token's
    life) through a task, asserting what every way of getting the fresh URL shares: the
    job succeeded, the old token was refused, and the download went on from where it had
    stopped under the same command."""
    rollout = await run_rollout(
        stack,
        [("device", behaviour)],
        package=os.urandom(PACKAGE_BYTES),
        policy={},
        timeout_s=90,
    )
    # On failure: the job's row and timeline say which step went wrong.
    assert rollout.task["status"] == "Success", (
        rollout.device("device"),
        rollout.timeline("device"),
    )
    assert rollout.device("device")["state"] == "SUCCEEDED"
    device_id = rollout.ids["device"]
    agent = rollout.agents[device_id]
    assert rollout.outcomes[device_id] == "succeeded"
    # Every continuation starts past byte 0, the last one where the cut left it.
    assert agent.expired_tokens >= 1
    assert agent.resumed_from
    assert agent.resumed_from[-1] == CUT
    assert all(start > 0 for start in agent.resumed_from)
    assert agent.upgrade_commands == 1  # the fresh URL came as a repeat, not a new command
    return rollout


async def test_a_token_that_expires_mid_download_is_renewed_and_the_download_resumed(
    short_tokens: E2E,
) -> None:
    away = Behaviour(drop_download_at=CUT, offline_mid_download_s=AWAY_S)
    rollout = await _resumed_after_expiry(short_tokens, away)
    timeline = rollout.timeline("device")
    # The job's timeline shows the fresh URL going out while it waited for the download
    # (in DOWNLOADED too: the edge may have sent the last byte into a connection the device
    # cut at CUT, and only the device's progress report says it still lacks the rest).
    fresh = [e for e in timeline if e["detail"].get("note") in ("command_resent", "token_renewed")]
    assert fresh
    assert {e["to"] for e in fresh} <= {"COMMAND_SENT", "DOWNLOADING", "DOWNLOADED"}
    states = rollout.timeline_states("device")
    assert states.index("DOWNLOADING") < states.index("DOWNLOADED") < states.index("SUCCEEDED")


async def test_a_connected_device_whose_token_expired_gets_a_fresh_url_from_its_progress_report(
    short_tokens: E2E,
) -> None:
    idle = Behaviour(drop_download_at=CUT, pause_mid_download_s=AWAY_S)
    timeline = (await _resumed_after_expiry(short_tokens, idle)).timeline("device")
    # No reconnect: the device's report that its token was refused brought the fresh URL.
    renewals = [e for e in timeline if e["detail"].get("note") == "token_renewed"]
    assert renewals, timeline
    assert {e["detail"].get("by") for e in renewals} == {"progress"}
    assert not [e for e in timeline if e["detail"].get("note") == "command_resent"]
