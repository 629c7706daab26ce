"""SSRF refusals against a real loopback server: nothing outside 127.0.0.0/8 is ever dialed or resolved.

Private and metadata hosts are reached only through the resolver seam (``StaticResolver``); the
``dialed`` fixture records every socket connect and fails on any system DNS lookup, on top of the
conftest guard, so a refusal can never be "tested" by actually sending a packet somewhere.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from fixtures.site import FixtureSite

from connectors.base import Failed, Fetched
from connectors.net import (
    AddressRefusedError,
    FetchError,
    IPAddress,
    ResponseTooLargeError,
    SafeHttpClient,
    StaticResolver,
    UnsupportedContentTypeError,
)
from connectors.website import WebsiteConnector

pytestmark = pytest.mark.integration

RESOLVER = StaticResolver(
    {
        "public.example": ["127.0.0.1"],  # stands in for a public site: see LOOPBACK_AS_PUBLIC
        "intranet.example": ["10.0.0.7"],
        "metadata.example": ["169.254.169.254"],
    }
)
#: The loopback test server plays a public host; everything else internal stays refused.
LOOPBACK_AS_PUBLIC = ["127.0.0.1/32"]


@pytest.fixture
def dialed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Every address a socket connects to during the test; system DNS for any other name fails the test."""
    calls: list[Any] = []
    guarded_connect = socket.socket.connect  # already wrapped by the conftest's loopback guard
    real_getaddrinfo = socket.getaddrinfo

    def spy_connect(self: socket.socket, address: Any) -> None:
        calls.append(address)
        guarded_connect(self, address)

    def spy_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise AssertionError(f"system DNS lookup for {host!r}: names must go through the resolver seam")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", spy_connect)
    monkeypatch.setattr(socket, "getaddrinfo", spy_getaddrinfo)
    yield calls
    outside = [a for a in calls if isinstance(a, tuple) and not ipaddress.ip_address(a[0]).is_loopback]
    assert not outside, f"dialed outside loopback: {outside}"


@pytest.fixture(scope="module")
def site() -> Iterator[FixtureSite]:
    with FixtureSite(topics=1, articles_per_topic=3) as running:
        running.add_redirect("/to-intranet", "http://intranet.example/wiki")
        running.add_redirect("/to-metadata", "http://169.254.169.254/latest/meta-data/iam/")
        running.add_redirect("/to-metadata-name", "http://metadata.example/")
        running.add_redirect("/to-metadata-host", "http://metadata.google.internal/computeMetadata/v1/")
        running.add_redirect("/loop-a", "/loop-b")
        running.add_redirect("/loop-b", "/loop-a")
        running.pages["/"].links += ["/to-intranet", "/to-metadata", "/to-metadata-name"]
        yield running


def crawl(start: str, **options: Any) -> list[Any]:
    return list(WebsiteConnector([start], **options).fetch({}))


def the_failure(results: Sequence[Any]) -> str:
    assert len(results) == 1, results
    assert isinstance(results[0], Failed)
    return str(results[0].reason)


def test_loopback_server_is_refused_without_allow_private(site: FixtureSite, dialed: list[Any]) -> None:
    site.clear_log()
    reason = the_failure(crawl(site.url("/")))
    assert "127.0.0.1, a loopback address" in reason
    assert "--allow-private" in reason
    assert site.fetched_paths() == []  # the server never saw a request
    assert dialed == []


@pytest.mark.parametrize(
    ("start", "needle"),
    [
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254, a cloud metadata address"),
        ("http://[fd00:ec2::254]/latest/", "cloud metadata address"),
        ("http://intranet.example/wiki", "intranet.example resolves to 10.0.0.7, a private address"),
        ("http://metadata.example/", "metadata.example resolves to 169.254.169.254"),
        ("http://10.1.2.3:8080/", "a private address"),
    ],
)
def test_internal_targets_are_refused_before_any_packet(start: str, needle: str, dialed: list[Any]) -> None:
    reason = the_failure(crawl(start, resolver=RESOLVER))
    assert reason.startswith("refused ")
    assert needle in reason
    assert dialed == []


def test_metadata_stays_refused_even_with_allow_private(dialed: list[Any]) -> None:
    for start in ("http://169.254.169.254/", "http://metadata.example/", "http://metadata.google.internal/"):
        assert "cloud metadata" in the_failure(crawl(start, resolver=RESOLVER, allow_private=True))
    assert dialed == []


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("/to-intranet", "intranet.example resolves to 10.0.0.7, a private address"),
        ("/to-metadata", "169.254.169.254, a cloud metadata address"),
        ("/to-metadata-name", "metadata.example resolves to 169.254.169.254"),
        ("/to-metadata-host", "cloud metadata host name"),
    ],
)
def test_public_looking_url_redirecting_inside_is_refused_at_the_hop(
    site: FixtureSite, dialed: list[Any], path: str, needle: str
) -> None:
    site.clear_log()
    start = f"http://public.example:{site.base.rsplit(':', 1)[1]}{path}"
    with (
        SafeHttpClient(
            user_agent="ragbot-test",
            timeout_s=5,
            max_bytes=10_000,
            resolver=RESOLVER,
            allowed_networks=LOOPBACK_AS_PUBLIC,
        ) as client,
        pytest.raises(AddressRefusedError) as refused,
    ):
        client.get(start)
    assert needle in str(refused.value)
    assert site.fetched_paths() == [path]  # the public hop was served; the private one never dialed
    assert all(a[0] == "127.0.0.1" for a in dialed)

    # The crawler reports the same start URL as a failure and carries on.
    site.clear_log()
    reason = the_failure(crawl(start, resolver=RESOLVER, allowed_networks=LOOPBACK_AS_PUBLIC))
    assert "redirects to" in reason
    assert "/robots.txt" in site.fetched_paths()
    assert path in site.fetched_paths()


class RebindingResolver:
    """Answers a public-looking address first and an internal one afterwards (DNS rebinding)."""

    def __init__(self) -> None:
        self.answers = ["127.0.0.1", "10.0.0.7"]

    def resolve(self, host: str, port: int) -> list[IPAddress]:
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return [ipaddress.ip_address(answer)]


def test_dns_rebinding_between_hops_is_refused(site: FixtureSite, dialed: list[Any]) -> None:
    site.clear_log()
    port = site.base.rsplit(":", 1)[1]
    site.add_redirect("/rebind", "/topics/0/")
    with (
        SafeHttpClient(
            user_agent="ragbot-test",
            timeout_s=5,
            max_bytes=10_000,
            resolver=RebindingResolver(),
            allowed_networks=LOOPBACK_AS_PUBLIC,
        ) as client,
        pytest.raises(AddressRefusedError, match=r"10\.0\.0\.7, a private address"),
    ):
        client.get(f"http://rebind.example:{port}/rebind")
    assert site.fetched_paths() == ["/rebind"]


def test_size_type_and_redirect_limits(site: FixtureSite, dialed: list[Any]) -> None:
    with SafeHttpClient(user_agent="ragbot-test", timeout_s=5, max_bytes=500, allow_private=True) as client:
        with pytest.raises(ResponseTooLargeError, match="over the 500-byte limit"):
            client.get(site.url("/files/handbook.pdf"))
        with pytest.raises(UnsupportedContentTypeError, match="application/pdf"):
            client.get(site.url("/files/handbook.pdf"), accept=lambda ct: ct.startswith("text/html"))
        with pytest.raises(FetchError, match="more than 5 redirects"):
            client.get(site.url("/loop-a"))
        ok = client.get(site.url("/robots.txt"))
    assert ok.status == 200
    assert b"Disallow: /private/" in ok.content
    assert dialed  # the spy does see real connections (to loopback only)


def test_allowed_loopback_crawl_still_obeys_scope(site: FixtureSite, dialed: list[Any]) -> None:
    """With the loopback server allowed, its redirects into internal hosts are still never followed."""
    results = crawl(site.url("/"), allow_private=True, max_pages=50)
    fetched = {r.document.uri for r in results if isinstance(r, Fetched)}
    assert site.url("/topics/0/article-0.html") in fetched
    assert "/to-intranet" in site.fetched_paths()  # followed as far as the loopback hop, no further
    assert dialed
    assert all(a[0] == "127.0.0.1" for a in dialed)
