"""Visitor session tokens: signed, short-lived, renewable for a while, and the secret that signs them.

The clock is the one seam faked here (``time`` as the sessions module sees it): expiry and the renewal
window are days long, and PyJWT checks ``exp`` against the real clock, so tokens are issued "in the past"
and verified now.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import jwt
import pytest
from fixtures.threads import race

from ragbot.tenancy import sessions as sessions_module
from ragbot.tenancy.sessions import InvalidSessionError, VisitorSessions, key_fingerprint, load_secret

pytestmark = pytest.mark.unit

SECRET = "s" * 48
OTHER_SECRET = "o" * 48
PUBLIC_KEY = "pk_test_public_key"
DAY = 86400


def _issued_at(monkeypatch: pytest.MonkeyPatch, when: float) -> None:
    """Make the sessions module's clock read ``when`` (issue stamps ``iat``/``exp`` from it)."""
    monkeypatch.setattr(sessions_module, "time", SimpleNamespace(time=lambda: when))


def _real_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessions_module, "time", time)


def _tamper_payload(token: str, **claims: object) -> str:
    header, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(claims)
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


# --------------------------------------------------------------------------- issue / verify


def test_a_token_round_trips_to_its_session() -> None:
    sessions = VisitorSessions(SECRET, ttl_s=600)
    token, issued = sessions.issue("acme-1", PUBLIC_KEY)
    verified = sessions.verify(token)
    assert verified == issued
    assert verified.bot_id == "acme-1"
    assert verified.visitor_id.startswith("v_") and len(verified.visitor_id) > 10
    assert verified.key_fingerprint == key_fingerprint(PUBLIC_KEY)
    assert verified.expires_at - verified.issued_at == 600


def test_a_renewed_token_keeps_the_visitor() -> None:
    """Passing the previous visitor id is how a returning visitor keeps their conversations."""
    sessions = VisitorSessions(SECRET)
    token, first = sessions.issue("acme-1", PUBLIC_KEY)
    _, second = sessions.issue("acme-1", PUBLIC_KEY, visitor_id=sessions.verify(token).visitor_id)
    assert second.visitor_id == first.visitor_id
    _, stranger = sessions.issue("acme-1", PUBLIC_KEY)
    assert stranger.visitor_id != first.visitor_id


def test_the_key_fingerprint_changes_with_the_public_key() -> None:
    """Rotating a bot's public key ends its sessions because the fingerprint no longer matches."""
    assert key_fingerprint(PUBLIC_KEY) == key_fingerprint(PUBLIC_KEY)
    assert key_fingerprint(PUBLIC_KEY) != key_fingerprint(PUBLIC_KEY + "x")


@pytest.mark.parametrize("claims", [{"bot": "other-bot"}, {"sub": "v_someone_else"}, {"exp": 4102444800}])
def test_a_tampered_payload_is_refused(claims: dict[str, object]) -> None:
    """Changing the bot, the visitor or the expiry without the secret breaks the signature."""
    sessions = VisitorSessions(SECRET)
    token, _ = sessions.issue("acme-1", PUBLIC_KEY)
    with pytest.raises(InvalidSessionError):
        sessions.verify(_tamper_payload(token, **claims))
    with pytest.raises(InvalidSessionError):
        sessions.verify(_tamper_payload(token, **claims), allow_expired=True)


def test_a_tampered_signature_is_refused() -> None:
    sessions = VisitorSessions(SECRET)
    token, _ = sessions.issue("acme-1", PUBLIC_KEY)
    head, _, signature = token.rpartition(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    with pytest.raises(InvalidSessionError):
        sessions.verify(f"{head}.{flipped}")
    with pytest.raises(InvalidSessionError):
        sessions.verify(f"{head}.")


def test_a_token_signed_with_another_secret_is_refused() -> None:
    token, _ = VisitorSessions(OTHER_SECRET).issue("acme-1", PUBLIC_KEY)
    with pytest.raises(InvalidSessionError):
        VisitorSessions(SECRET).verify(token)
    with pytest.raises(InvalidSessionError):
        VisitorSessions(SECRET).verify(token, allow_expired=True)


@pytest.mark.parametrize("typ", ["admin", None])
def test_a_token_of_another_type_is_refused(typ: str | None) -> None:
    """Same secret, same claims, another ``typ`` (or none): not a visitor session."""
    now = int(time.time())
    claims: dict[str, object] = {"bot": "acme-1", "sub": "v_x", "kfp": "f", "iat": now, "exp": now + 600}
    if typ is not None:
        claims["typ"] = typ
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    with pytest.raises(InvalidSessionError, match="not a visitor session"):
        VisitorSessions(SECRET).verify(token)


def test_an_unsigned_token_is_refused() -> None:
    """``alg: none`` must never pass, even with the claims of a real session."""
    now = int(time.time())
    claims = {"typ": "visitor", "bot": "acme-1", "sub": "v_x", "kfp": "f", "iat": now, "exp": now + 600}
    token = jwt.encode(claims, None, algorithm="none")
    with pytest.raises(InvalidSessionError):
        VisitorSessions(SECRET).verify(token)


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30."])
def test_garbage_is_refused(token: str) -> None:
    with pytest.raises(InvalidSessionError):
        VisitorSessions(SECRET).verify(token)


# --------------------------------------------------------------------------- expiry and renewal


def test_an_expired_token_is_refused_for_chat_but_renewable(monkeypatch: pytest.MonkeyPatch) -> None:
    sessions = VisitorSessions(SECRET, ttl_s=3600, renew_window_s=30 * DAY)
    _issued_at(monkeypatch, time.time() - 2 * 3600)
    token, issued = sessions.issue("acme-1", PUBLIC_KEY)
    _real_clock(monkeypatch)
    with pytest.raises(InvalidSessionError, match="expired"):
        sessions.verify(token)
    renewed = sessions.verify(token, allow_expired=True)
    assert renewed.visitor_id == issued.visitor_id and renewed.bot_id == "acme-1"


def test_a_token_is_renewable_until_the_window_closes(monkeypatch: pytest.MonkeyPatch) -> None:
    sessions = VisitorSessions(SECRET, ttl_s=3600, renew_window_s=30 * DAY)
    issued_at = time.time() - 10 * DAY
    _issued_at(monkeypatch, issued_at)
    token, _ = sessions.issue("acme-1", PUBLIC_KEY)

    _issued_at(monkeypatch, issued_at + 30 * DAY - 60)  # a minute before the window closes
    assert sessions.verify(token, allow_expired=True).bot_id == "acme-1"
    _issued_at(monkeypatch, issued_at + 30 * DAY + 60)  # a minute after
    with pytest.raises(InvalidSessionError, match="too old"):
        sessions.verify(token, allow_expired=True)


def test_a_token_older_than_the_window_is_not_renewed(monkeypatch: pytest.MonkeyPatch) -> None:
    sessions = VisitorSessions(SECRET, ttl_s=3600, renew_window_s=30 * DAY)
    _issued_at(monkeypatch, time.time() - 31 * DAY)
    token, _ = sessions.issue("acme-1", PUBLIC_KEY)
    _real_clock(monkeypatch)
    with pytest.raises(InvalidSessionError):
        sessions.verify(token)
    with pytest.raises(InvalidSessionError, match="too old"):
        sessions.verify(token, allow_expired=True)


def test_renewal_still_checks_the_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    """``allow_expired`` relaxes the expiry only: a forged expired token is not renewable."""
    sessions = VisitorSessions(SECRET)
    _issued_at(monkeypatch, time.time() - 2 * 3600)
    token, _ = VisitorSessions(OTHER_SECRET).issue("acme-1", PUBLIC_KEY)
    _real_clock(monkeypatch)
    with pytest.raises(InvalidSessionError):
        sessions.verify(token, allow_expired=True)


# --------------------------------------------------------------------------- load_secret


@pytest.mark.parametrize("configured", ["short", "x" * 31])
def test_a_short_configured_secret_is_refused(configured: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="32"):
        load_secret(configured, tmp_path)
    assert not (tmp_path / "secret.key").exists()


def test_a_configured_secret_is_used_as_is(tmp_path: Path) -> None:
    configured = "c" * 32
    assert load_secret(configured, tmp_path) == configured
    assert not (tmp_path / "secret.key").exists()


def test_a_generated_secret_is_private_and_stable(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"  # not there yet: created on demand
    first = load_secret(None, data_dir)
    path = data_dir / "secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 32
    assert load_secret(None, data_dir) == first
    assert load_secret("", data_dir) == first  # an empty setting is "unset", not a weak secret
    assert sorted(p.name for p in data_dir.iterdir()) == ["secret.key"]  # no temporary file left


def test_a_generated_secret_stays_private_under_a_loose_umask(tmp_path: Path) -> None:
    old = os.umask(0o000)
    try:
        load_secret(None, tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "secret.key").stat().st_mode) == 0o600


def test_concurrent_first_starts_agree_on_one_secret(tmp_path: Path) -> None:
    """Two API workers starting together must sign with the same secret, or each refuses the other's
    visitors."""
    secrets: list[str] = []
    lock = threading.Lock()

    def start(_: int, barrier: threading.Barrier) -> None:
        barrier.wait()
        secret = load_secret(None, tmp_path)
        with lock:
            secrets.append(secret)

    assert race(8, start) == []
    assert len(secrets) == 8 and len(set(secrets)) == 1
    assert (tmp_path / "secret.key").read_text(encoding="ascii").strip() == secrets[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.key"]


def test_a_token_signed_before_a_restart_verifies_after_it(tmp_path: Path) -> None:
    """The persisted secret is what keeps visitors signed in across restarts."""
    token, _ = VisitorSessions(load_secret(None, tmp_path)).issue("acme-1", PUBLIC_KEY)
    assert VisitorSessions(load_secret(None, tmp_path)).verify(token).bot_id == "acme-1"
