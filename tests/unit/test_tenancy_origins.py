"""The widget's origin allowlist: what counts as the same origin, and what a wildcard entry may cover.

An allowlist decides which websites may open visitor sessions for a bot, so every case that could let a
foreign page in (suffix tricks, scheme or port changes, ``null``) is pinned here without any server.
"""

from __future__ import annotations

import pytest

from ragbot.tenancy.origins import InvalidOriginError, is_allowed, normalize_origin, normalize_origins

pytestmark = pytest.mark.unit


# --------------------------------------------------------------------------- normalize_origin


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://www.example.com", "https://www.example.com"),
        ("https://www.example.com:443", "https://www.example.com"),
        ("http://example.com:80", "http://example.com"),
        ("https://example.com:80", "https://example.com:80"),
        ("http://example.com:443", "http://example.com:443"),
        ("http://localhost:3000", "http://localhost:3000"),
        ("HTTPS://WWW.Example.COM", "https://www.example.com"),
        ("https://example.com.", "https://example.com"),
        ("  https://example.com  ", "https://example.com"),
        ("https://example.com/pricing?plan=pro#faq", "https://example.com"),
        ("https://example.com:8443/a/b", "https://example.com:8443"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("http://[::1]:80", "http://[::1]"),
        ("https://[2001:DB8::1]", "https://[2001:db8::1]"),
        ("https://bücher.example", "https://xn--bcher-kva.example"),
    ],
)
def test_an_origin_is_written_as_browsers_send_it(value: str, expected: str) -> None:
    """Browsers drop default ports, lower-case the host and send IDNA; an entry written otherwise must
    still match their ``Origin`` header."""
    assert normalize_origin(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "https://user:secret@example.com",
        "https://user@example.com",
        "ftp://example.com",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "chrome-extension://abcdef",
        "null",
        "",
        "example.com",
        "//example.com",
        "https://",
        "https://example.com:99999",
        "https://example.com:443.evil.io",
        "https://exa mple.com",
        "https://example..com",
        "https://%65xample.com",
        "https://www.acme.test, https://acme.test",
        "https://[::1.example.com]",
    ],
)
def test_what_no_browser_sends_is_refused(value: str) -> None:
    """Credentials, other schemes and malformed hosts are errors: an allowlist entry that can never
    match (a comma-separated list pasted into one field) must fail loudly instead of allowing nothing."""
    with pytest.raises(InvalidOriginError):
        normalize_origin(value)


def test_a_wildcard_is_an_origin_only_when_asked_for() -> None:
    """An ``Origin`` header holding ``*`` is not a pattern: only allowlist entries may be wildcards."""
    with pytest.raises(InvalidOriginError):
        normalize_origin("https://*.example.com")
    assert normalize_origin("https://*.Example.com:443", allow_wildcard=True) == "https://*.example.com"


# --------------------------------------------------------------------------- normalize_origins


def test_an_allowlist_is_normalised_without_duplicates_in_order() -> None:
    values = [
        "https://www.example.com/",
        "HTTPS://WWW.EXAMPLE.COM:443",
        "https://*.example.com",
        "http://localhost:3000/app",
        "https://www.example.com",
    ]
    assert normalize_origins(values) == [
        "https://www.example.com",
        "https://*.example.com",
        "http://localhost:3000",
    ]


def test_an_empty_allowlist_stays_empty() -> None:
    assert normalize_origins([]) == []


@pytest.mark.parametrize(
    "entry",
    [
        "*example.com",
        "https://*example.com",
        "https://*.com",
        "https://*.com.",
        "https://*",
        "https://*.",
        "https://a.*.com",
        "https://*.*.example.com",
        "https://www.*",
        "https://*.0.1",
        "https://*.[::1]",
    ],
)
def test_malformed_wildcards_are_refused(entry: str) -> None:
    """Only ``scheme://*.domain`` is a pattern. ``*.com`` would allow every site under a TLD and
    ``*.0.1`` every address ending in .0.1: both are refused rather than taken literally."""
    with pytest.raises(InvalidOriginError):
        normalize_origins([entry])


def test_one_bad_entry_refuses_the_whole_allowlist() -> None:
    with pytest.raises(InvalidOriginError, match="evil"):
        normalize_origins(["https://ok.example.com", "ftp://evil.example.com"])


# --------------------------------------------------------------------------- is_allowed

SITE = ["https://www.example.com"]
WILDCARD = ["https://*.example.com"]


@pytest.mark.parametrize("origin", [None, "", "null", "file://", "not an origin"])
def test_missing_null_and_garbage_origins_are_never_allowed(origin: str | None) -> None:
    """Sandboxed frames and file: pages send ``null``; an allowlist naming ``null`` must not open them."""
    assert not is_allowed(origin, [*SITE, *WILDCARD, "null"])


def test_an_empty_allowlist_allows_nothing() -> None:
    assert not is_allowed("https://www.example.com", [])
    assert not is_allowed("http://localhost:3000", [])


@pytest.mark.parametrize(
    "origin",
    [
        "https://www.example.com",
        "https://WWW.example.com",
        "https://www.example.com:443",
        "https://www.example.com.",
    ],
)
def test_the_listed_origin_is_allowed_however_it_is_spelled(origin: str) -> None:
    assert is_allowed(origin, SITE)


@pytest.mark.parametrize(
    "origin",
    [
        "http://www.example.com",
        "https://www.example.com:8443",
        "https://example.com",
        "https://shop.www.example.com",
        "https://www.example.com.evil.io",
        "https://evilwww.example.com",
    ],
)
def test_an_exact_entry_allows_only_its_own_scheme_host_and_port(origin: str) -> None:
    assert not is_allowed(origin, SITE)


@pytest.mark.parametrize(
    "origin", ["https://shop.example.com", "https://a.b.c.example.com", "https://SHOP.Example.com:443"]
)
def test_a_wildcard_allows_subdomains_of_any_depth(origin: str) -> None:
    assert is_allowed(origin, WILDCARD)


@pytest.mark.parametrize(
    "origin",
    [
        "https://example.com",  # the apex: list it separately
        "https://example.com.evil.io",
        "https://shop.example.com.evil.io",
        "https://evilexample.com",
        "https://shop.evilexample.com",
        "http://shop.example.com",  # the entry is https
        "https://shop.example.com:8443",  # the entry is on the default port
        "https://*.example.com",  # a pattern is not an origin
    ],
)
def test_a_wildcard_does_not_cover_lookalikes_other_schemes_or_ports(origin: str) -> None:
    assert not is_allowed(origin, WILDCARD)


def test_a_wildcard_with_a_port_allows_that_port_only() -> None:
    entries = normalize_origins(["https://*.example.com:8443"])
    assert is_allowed("https://shop.example.com:8443", entries)
    assert not is_allowed("https://shop.example.com", entries)
    assert not is_allowed("https://shop.example.com:9443", entries)
    assert not is_allowed("https://example.com:8443", entries)


def test_ipv6_origins_match_exactly() -> None:
    entries = normalize_origins(["http://[::1]:8080"])
    assert is_allowed("http://[::1]:8080", entries)
    assert not is_allowed("http://[::1]:8081", entries)
    assert not is_allowed("http://[::2]:8080", entries)


def test_an_idn_entry_matches_the_punycode_origin_browsers_send() -> None:
    entries = normalize_origins(["https://bücher.example", "https://*.bücher.example"])
    assert is_allowed("https://xn--bcher-kva.example", entries)
    assert is_allowed("https://shop.xn--bcher-kva.example", entries)
