"""Standard Webhooks signatures (https://www.standardwebhooks.com), made with the reference package.

Receivers verify a delivery with any Standard Webhooks library (``standardwebhooks.Webhook(secret)
.verify(body, headers)``), so ragbot signs with that same package rather than re-implementing the HMAC:
``webhook-signature`` is ``v1,`` + base64 HMAC-SHA256 of ``{webhook-id}.{webhook-timestamp}.{body}`` keyed
with the base64-decoded part of a ``whsec_`` secret. Pure: no clock, no I/O.
"""

from __future__ import annotations

import base64
import json
import math
import secrets
from datetime import UTC, datetime
from typing import Any

from standardwebhooks import Webhook

__all__ = ["SECRET_PREFIX", "encode_body", "new_secret", "sign", "signed_headers"]

SECRET_PREFIX = "whsec_"  # noqa: S105 (a format marker, not a secret)
#: 32 random bytes, the size of an HMAC-SHA256 output; the spec asks for 24 to 64.
_SECRET_BYTES = 32


def new_secret() -> str:
    """A fresh signing secret in the Standard Webhooks format, ``whsec_<base64>``."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode("ascii")


def encode_body(payload: dict[str, Any]) -> str:
    """The exact text that is signed and sent: compact JSON, ASCII-only so no transcoding can alter it."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=True)


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` value for one send; ``timestamp`` is whole seconds since the epoch."""
    return Webhook(secret).sign(msg_id, datetime.fromtimestamp(timestamp, UTC), body)


def signed_headers(secret: str, msg_id: str, body: str, *, now: datetime) -> dict[str, str]:
    """The three Standard Webhooks headers for sending ``body`` at ``now`` (a fresh signature per send:
    receivers reject timestamps older than a few minutes, so retries and replays are re-signed)."""
    timestamp = math.floor(now.timestamp())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }
