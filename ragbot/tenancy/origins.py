"""Website origins a bot's widget may run on. Pure functions: the allowlist rule is tested without servers.

An origin is ``scheme://host[:port]`` as browsers send it in the ``Origin`` header (default ports left
out, host lower-cased). An allowlist entry is such an origin, or ``scheme://*.example.com`` for every
subdomain of a site (not the site itself: list it too). An empty allowlist allows nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

__all__ = ["InvalidOriginError", "is_allowed", "normalize_origin", "normalize_origins"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


class InvalidOriginError(ValueError):
    """Not something a browser could send as an origin (or a usable allowlist pattern)."""


def normalize_origin(value: str, *, allow_wildcard: bool = False) -> str:
    """``value`` (an origin, or any URL on it) as a canonical origin; ``InvalidOriginError`` if none."""
    raw = value.strip()
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise InvalidOriginError(f"{value!r} is not a valid origin: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise InvalidOriginError(f"{value!r}: an origin starts with http:// or https://")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host or parts.username or parts.password:
        raise InvalidOriginError(f"{value!r} has no host (or carries credentials)")
    wildcard_ok = allow_wildcard and host.startswith("*.") and "*" not in host[2:] and "." in host[2:]
    if "*" in host and not wildcard_ok:
        raise InvalidOriginError(f"{value!r}: a wildcard is only allowed as '*.example.com'")
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}:{port}"
    return f"{scheme}://{host}"


def normalize_origins(values: Iterable[str]) -> list[str]:
    """An allowlist in canonical form, duplicates dropped, order kept."""
    out: list[str] = []
    for value in values:
        origin = normalize_origin(value, allow_wildcard=True)
        if origin not in out:
            out.append(origin)
    return out


def is_allowed(origin: str | None, allowlist: Iterable[str]) -> bool:
    """Whether a request from ``origin`` may use a bot with this allowlist; no origin, ``null`` (sandboxed
    frames, file: pages) and an empty allowlist are never allowed."""
    if not origin or origin == "null":
        return False
    try:
        candidate = normalize_origin(origin)
    except InvalidOriginError:
        return False
    scheme, _, rest = candidate.partition("://")
    for entry in allowlist:
        if entry == candidate:
            return True
        entry_scheme, _, entry_rest = entry.partition("://")
        if entry_rest.startswith("*.") and entry_scheme == scheme:
            suffix = entry_rest[1:]  # ".example.com" or ".example.com:8443"
            label = rest[: -len(suffix)] if rest.endswith(suffix) else ""
            if label and ":" not in label:  # any depth of subdomain, same port
                return True
    return False
