"""Webhook deliveries are signed over id, timestamp and body (Standard Webhooks), so a
captured delivery cannot be replayed late, altered, or passed off under another id."""

from __future__ import annotations

import pytest

from scheduler.webhook_signing import (
    TOLERANCE_S,
    WebhookVerificationError,
    headers,
    sign,
    verify,
)
from scheduler.webhooks import active_secrets, message_id, public

SECRET = "a-webhook-secret-of-some-length"
NEXT = "the-next-webhook-secret-value"
BODY = b'{"v":1,"kind":"task_status","id":"e1"}'
NOW = 1_800_000_000


def test_the_scheme_s_published_vector() -> None:
    # From the Standard Webhooks specification's test vectors.
    assert (
        sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            b'{"test": 2432232314}',
        )
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_a_fresh_delivery_verifies() -> None:
    sent = headers([SECRET], "e1_h1", NOW, BODY)
    assert set(sent) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert verify([SECRET], sent, BODY, now_s=NOW + 10) == "e1_h1"


@pytest.mark.parametrize("age_s", [TOLERANCE_S + 1, -(TOLERANCE_S + 1), 86_400])
def test_a_replay_outside_the_tolerance_is_rejected(age_s: int) -> None:
    sent = headers([SECRET], "e1_h1", NOW, BODY)
    with pytest.raises(WebhookVerificationError, match="from now"):
        verify([SECRET], sent, BODY, now_s=NOW + age_s)


def test_a_new_timestamp_on_an_old_signature_is_rejected() -> None:
    sent = headers([SECRET], "e1_h1", NOW, BODY)
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify([SECRET], {**sent, "webhook-timestamp": str(NOW + 3600)}, BODY, now_s=NOW + 3600)


def test_another_id_or_body_under_the_same_signature_is_rejected() -> None:
    sent = headers([SECRET], "e1_h1", NOW, BODY)
    with pytest.raises(WebhookVerificationError):
        verify([SECRET], {**sent, "webhook-id": "e2_h1"}, BODY, now_s=NOW)
    with pytest.raises(WebhookVerificationError):
        verify([SECRET], sent, BODY.replace(b"e1", b"e2"), now_s=NOW)
    with pytest.raises(WebhookVerificationError):
        verify(["some-other-secret-entirely"], sent, BODY, now_s=NOW)


@pytest.mark.parametrize(
    "bad",
    [{}, {"webhook-id": "x", "webhook-timestamp": "soon", "webhook-signature": "v1,AAAA"}],
)
def test_missing_or_malformed_headers_are_rejected(bad: dict[str, str]) -> None:
    with pytest.raises(WebhookVerificationError):
        verify([SECRET], bad, BODY, now_s=NOW)


def test_during_a_rotation_either_key_verifies() -> None:
    hook = {"id": "h1", "secret": NEXT, "previous_secret": SECRET}
    sent = headers(active_secrets(hook), message_id({"id": "e1"}, hook), NOW, BODY)
    assert len(sent["webhook-signature"].split(" ")) == 2
    assert verify([SECRET], sent, BODY, now_s=NOW) == "e1_h1"
    assert verify([NEXT], sent, BODY, now_s=NOW) == "e1_h1"


def test_the_message_id_is_stable_per_event_and_webhook() -> None:
    hook = {"id": "h1", "secret": SECRET}
    assert message_id({"id": "e1"}, hook) == message_id({"id": "e1"}, dict(hook))
    assert message_id({"id": "e1"}, hook) != message_id({"id": "e1"}, {**hook, "id": "h2"})


def test_the_api_never_shows_a_secret() -> None:
    shown = public({"id": "h1", "url": "https://x", "secret": NEXT, "previous_secret": SECRET})
    assert shown == {"id": "h1", "url": "https://x", "rotating": True}
