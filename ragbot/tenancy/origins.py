"""Website origins a bot's widget may run on. Pure functions: the allowlist rule is tested without servers.

An origin is ``scheme://host[:port]`` as browsers send it in the ``Origin`` header (default ports left
out, host lower-cased). An allowlist entry is such an origin, or ``scheme://*.example.com`` for every
subdomain of a site (not the site itself: list it too). An empty allowlist allows nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

__all__ = ["InvalidOriginError", "is_allowed", "normalize_origin", "normalize_origins"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")


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
    host = _canonical_host(value, host, parts.netloc, allow_wildcard=allow_wildcard)
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}:{port}"
    return f"{scheme}://{host}"


def _canonical_host(value: str, host: str, netloc: str, *, allow_wildcard: bool) -> str:
    """The host as browsers write it in ``Origin`` (IDNA, brackets around IPv6), or an error for what no
    browser sends: a typo such as a comma-separated list must fail, not become an entry that never matches.
    A wildcard must cover a registrable-looking domain (``*.example.com``), not a TLD or an IP range."""
    if ":" in host:  # IPv6 literal, checked by urlsplit; anything before the bracket would be dropped
        if not netloc.startswith("["):
            raise InvalidOriginError(f"{value!r} is not a valid origin")
        return f"[{host}]"
    wildcard = host.startswith("*.")
    name = host[2:] if wildcard else host
    try:
        labels = name.encode("idna").decode("ascii").split(".")
    except UnicodeError:
        labels = [""]
    if "*" in name or (wildcard and (not allow_wildcard or len(labels) < 2 or labels[-1].isdigit())):
        raise InvalidOriginError(f"{value!r}: a wildcard is only allowed as '*.example.com'")
    if not all(_LABEL.fullmatch(label) for label in labels):
        raise InvalidOriginError(f"{value!r}: {host!r} is not a valid host name")
    return ("*." if wildcard else "") + ".".join(labels)


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
