"""Signed packages end to end: a package uploaded with a signature reaches the devices
with it in the upgrade command. A device that trusts the platform's key installs it; one
that trusts another key refuses before installing, and the job fails with "Package
signature verification failed"; a device that checks no signature (as IoTDA's) installs."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.asymmetric import ed25519
from e2e_support import E2E, public_pem, run_rollout

from devices.behaviour import Behaviour
from ota.catalog import FailureCause


async def test_only_devices_that_verify_the_signature_install(e2e: E2E) -> None:
    wrong = public_pem(ed25519.Ed25519PrivateKey.generate())
    rollout = await run_rollout(
        e2e,
        [
            ("trusts", Behaviour(trusted_keys_pem=public_pem(e2e.signing_key))),
            ("wrong_key", Behaviour(trusted_keys_pem=wrong)),
            ("checks_nothing", Behaviour()),
        ],
        package=os.urandom(128 * 1024),
        policy={},
        timeout_s=90,
        signed=True,
    )
    assert rollout.task["status"] == "PartialSuccess", (rollout.devices, rollout.outcomes)
    for ok in ("trusts", "checks_nothing"):
        assert rollout.device(ok)["state"] == "SUCCEEDED"
        assert rollout.views[rollout.ids[ok]]["fw_version"] == "2.0"
    refused = rollout.device("wrong_key")
    assert (refused["state"], refused["cause"]) == (
        "FAILED",
        int(FailureCause.SIGNATURE_CHECK_FAILED),
    )
    assert refused["cause_message"] == "Package signature verification failed"
    assert rollout.views[rollout.ids["wrong_key"]]["fw_version"] == "1.0"
    # It downloaded, then refused before installing: no update progress in between.
    states = rollout.timeline_states("wrong_key")
    assert "UPDATING" not in states
    assert states[-1] == "FAILED"
    # Delivery is at least once: receivers deduplicate by the notification's id.
    [result] = {n["id"]: n for n in rollout.device_results("wrong_key")}.values()
    assert result["cause"] == int(FailureCause.SIGNATURE_CHECK_FAILED)
