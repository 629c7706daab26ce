"""Standard Webhooks signing, checked against the reference verifier and the spec's own test vector, and
the retry schedule (doubling plus bounded jitter)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from ragbot.webhooks.signing import encode_body, new_secret, sign, signed_headers
from ragbot.webhooks.worker import MAX_RETRY_DELAY_S, retry_delay

pytestmark = pytest.mark.unit

# The example from the Standard Webhooks specification (and its reference libraries' tests).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = '{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signature_matches_the_specification_example() -> None:
    assert sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_signature_is_hmac_sha256_over_id_timestamp_body() -> None:
    key = base64.b64decode(SPEC_SECRET.removeprefix("whsec_"))
    digest = hmac.new(key, f"{SPEC_ID}.{SPEC_TIMESTAMP}.{SPEC_BODY}".encode(), hashlib.sha256).digest()
    assert sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == "v1," + base64.b64encode(digest).decode()


def test_signed_headers_verify_with_the_reference_package() -> None:
    secret = new_secret()
    body = encode_body({"type": "lead.created", "data": {"email": "ana@example.com", "name": "Ана"}})
    headers = signed_headers(secret, "msg_1", body, now=datetime.now(UTC))
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(body.encode(), headers) == json.loads(body)


def test_tampering_and_other_secrets_fail_verification() -> None:
    secret = new_secret()
    body = encode_body({"type": "message.created", "data": {"n": 1}})
    headers = signed_headers(secret, "msg_1", body, now=datetime.now(UTC))
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace("1", "2").encode(), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.encode(), {**headers, "webhook-id": "msg_2"})
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body.encode(), headers)


def test_timestamp_is_whole_seconds_and_stale_ones_are_rejected() -> None:
    secret = new_secret()
    at = datetime(2026, 1, 2, 3, 4, 5, 999_999, tzinfo=UTC)
    headers = signed_headers(secret, "msg_1", "{}", now=at)
    assert headers["webhook-timestamp"] == str(int(at.timestamp()))
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify("{}", headers)  # a replay must be re-signed, not re-sent as is
    fresh = signed_headers(secret, "msg_1", "{}", now=datetime.now(UTC) - timedelta(seconds=30))
    assert Webhook(secret).verify("{}", fresh) == {}


def test_secrets_are_random_whsec_base64_of_32_bytes() -> None:
    secrets = {new_secret() for _ in range(50)}
    assert len(secrets) == 50
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
        assert len(secret) <= 100  # the column


def test_body_is_compact_ascii_json() -> None:
    body = encode_body({"data": {"name": "Zoë", "n": [1, 2]}})
    assert body == '{"data":{"name":"Zo\\u00eb","n":[1,2]}}'
    assert body.isascii()


def test_retry_delay_doubles_with_bounded_jitter() -> None:
    assert [retry_delay(n, 2.0, rand=lambda: 0.0) for n in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 16.0]
    assert retry_delay(3, 2.0, rand=lambda: 1.0) == pytest.approx(8.0 * 1.2)
    for n in range(1, 12):
        delay = retry_delay(n, 0.5)
        assert 0.5 * 2 ** (n - 1) <= delay <= 0.5 * 2 ** (n - 1) * 1.2
    assert retry_delay(10_000, 2.0, rand=lambda: 0.0) == MAX_RETRY_DELAY_S
