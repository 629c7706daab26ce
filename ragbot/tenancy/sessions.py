"""Visitor session tokens: signed (HS256 JWT), short-lived, bound to one bot and one visitor.

A widget opens a session with the bot's public key from an allowed origin and gets a token; every chat
request carries it. An expired token can be traded for a new one (same visitor) within a renewal
window, so a returning visitor keeps their conversations without the server storing sessions. Tokens also
carry a fingerprint of the public key they were opened with: rotating a bot's public key ends them all.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import jwt

__all__ = ["InvalidSessionError", "VisitorSession", "VisitorSessions", "key_fingerprint", "load_secret"]

_ALGORITHM = "HS256"
_TYPE = "visitor"


class InvalidSessionError(ValueError):
    """The token is not one of ours, was tampered with, is expired, or its bot key was rotated."""


@dataclass(frozen=True, slots=True)
class VisitorSession:
    bot_id: str
    visitor_id: str
    key_fingerprint: str
    issued_at: int
    expires_at: int


def key_fingerprint(public_key: str) -> str:
    return hashlib.sha256(public_key.encode("utf-8")).hexdigest()[:16]


def load_secret(configured: str | None, data_dir: Path) -> str:
    """The signing secret: the configured one, else one created once (mode 0600) in the data folder."""
    if configured:
        if len(configured) < 32:
            raise ValueError("RAGBOT_SECRET_KEY must be at least 32 characters")
        return configured
    path = data_dir / "secret.key"
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    tmp = path.with_suffix(f".{secrets.token_hex(4)}.tmp")
    tmp.touch(mode=0o600)
    tmp.write_text(secret, encoding="ascii")
    try:
        os.link(tmp, path)  # atomic and never overwrites: two processes starting together keep one secret
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text(encoding="ascii").strip()


class VisitorSessions:
    def __init__(self, secret: str, *, ttl_s: int = 3600, renew_window_s: int = 30 * 86400) -> None:
        self._secret = secret
        self._ttl_s = ttl_s
        self._renew_window_s = renew_window_s

    def issue(
        self, bot_id: str, public_key: str, visitor_id: str | None = None
    ) -> tuple[str, VisitorSession]:
        now = int(time.time())
        session = VisitorSession(
            bot_id=bot_id,
            visitor_id=visitor_id or "v_" + secrets.token_urlsafe(16),
            key_fingerprint=key_fingerprint(public_key),
            issued_at=now,
            expires_at=now + self._ttl_s,
        )
        claims = {
            "typ": _TYPE,
            "bot": session.bot_id,
            "sub": session.visitor_id,
            "kfp": session.key_fingerprint,
            "iat": session.issued_at,
            "exp": session.expires_at,
        }
        return jwt.encode(claims, self._secret, algorithm=_ALGORITHM), session

    def verify(self, token: str, *, allow_expired: bool = False) -> VisitorSession:
        """The session a token stands for. ``allow_expired``: for renewal, accept an expired token that
        was issued within the renewal window."""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[_ALGORITHM],
                options={"verify_exp": not allow_expired, "require": ["exp", "iat", "sub", "bot"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidSessionError("the visitor session expired") from None
        except jwt.PyJWTError as exc:
            raise InvalidSessionError(f"not a valid visitor session: {exc}") from None
        if claims.get("typ") != _TYPE:
            raise InvalidSessionError("not a visitor session token")
        if allow_expired and int(claims["iat"]) + self._renew_window_s < time.time():
            raise InvalidSessionError("the visitor session is too old to renew")
        return VisitorSession(
            bot_id=str(claims["bot"]),
            visitor_id=str(claims["sub"]),
            key_fingerprint=str(claims.get("kfp", "")),
            issued_at=int(claims["iat"]),
            expires_at=int(claims["exp"]),
        )
