"""Crawl building blocks that need no network: URL identity, scope, sitemaps, robots.txt."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime

import pytest

from connectors.robots import RobotsPolicy, agent_token, robots_url
from connectors.sitemaps import SitemapError, parse_lastmod, parse_sitemap
from connectors.website import CrawlScope, WebsiteConnector, normalize_url

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("HTTP://Example.COM:80/a/b?x=1#frag", "http://example.com/a/b?x=1"),
        ("https://example.com:443", "https://example.com/"),
        ("https://example.com:8443/p", "https://example.com:8443/p"),
        ("http://[::1]:8080/x", "http://[::1]:8080/x"),
        ("http://example.com./a", "http://example.com/a"),
    ],
)
def test_normalize_url(raw: str, normalized: str) -> None:
    assert normalize_url(raw) == normalized


def test_scope_is_host_and_start_folder_then_globs() -> None:
    scope = CrawlScope.from_urls(["https://acme.test/docs/index.html"], include=(), exclude=["*/drafts/*"])
    assert scope.on_site("https://acme.test/docs/guide/install.html")
    assert scope.on_site("http://acme.test/docs/")  # the scheme may change (http -> https redirects)
    assert not scope.on_site("https://acme.test/blog/post")
    assert not scope.on_site("https://other.test/docs/x")
    assert scope.selected("https://acme.test/docs/guide")
    assert not scope.selected("https://acme.test/docs/drafts/new")
    only_api = CrawlScope.from_urls(["https://acme.test/"], include=["/api/*"], exclude=["*?print=*"])
    assert only_api.selected("https://acme.test/api/users")
    assert not only_api.selected("https://acme.test/guide")
    assert not only_api.selected("https://acme.test/api/users?print=1")


def test_connector_validates_its_arguments() -> None:
    with pytest.raises(ValueError, match="start URL or a sitemap"):
        WebsiteConnector([])
    with pytest.raises(ValueError, match="not an http"):
        WebsiteConnector(["ftp://acme.test/"])
    with pytest.raises(ValueError, match="positive"):
        WebsiteConnector(["https://acme.test/"], max_pages=0)
    connector = WebsiteConnector(["HTTPS://ACME.test/docs/#top"])
    assert connector.scope == "https://acme.test/docs/"


URLSET = b"""<?xml version="1.0" encoding="UTF-8"?>
<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
  <url><loc> https://acme.test/a </loc><lastmod>2024-05-01</lastmod></url>
  <url><loc>https://acme.test/b</loc><lastmod>2024-05-02T10:30:00+02:00</lastmod></url>
  <url><loc>https://acme.test/c</loc></url>
  <url><lastmod>2024-01-01</lastmod></url>
</urlset>"""


def test_sitemap_urlset_plain_and_gzipped() -> None:
    for data in (URLSET, gzip.compress(URLSET)):
        sitemap = parse_sitemap(data, max_bytes=10_000)
        assert [e.url for e in sitemap.urls] == [
            "https://acme.test/a",
            "https://acme.test/b",
            "https://acme.test/c",
        ]
        assert sitemap.urls[0].lastmod == datetime(2024, 5, 1, tzinfo=UTC)
        assert sitemap.urls[1].lastmod == datetime(2024, 5, 2, 8, 30, tzinfo=UTC)
        assert sitemap.urls[2].lastmod is None
        assert sitemap.sitemaps == []


def test_sitemap_index_and_text_sitemaps() -> None:
    index = b"""<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
      <sitemap><loc>https://acme.test/s1.xml</loc></sitemap><sitemap><loc>https://acme.test/s2.xml.gz</loc></sitemap>
    </sitemapindex>"""
    assert [e.url for e in parse_sitemap(index, max_bytes=10_000).sitemaps] == [
        "https://acme.test/s1.xml",
        "https://acme.test/s2.xml.gz",
    ]
    text = b"https://acme.test/x\n\nnot a url\nhttps://acme.test/y\n"
    assert [e.url for e in parse_sitemap(text, max_bytes=10_000).urls] == [
        "https://acme.test/x",
        "https://acme.test/y",
    ]


def test_sitemap_bombs_and_entities_are_contained() -> None:
    bomb = gzip.compress(b"<urlset>" + b" " * 50_000 + b"</urlset>")
    with pytest.raises(SitemapError, match="decompressed"):
        parse_sitemap(bomb, max_bytes=10_000)
    xxe = b"""<?xml version="1.0"?><!DOCTYPE u [<!ENTITY x SYSTEM "file:///etc/passwd">]>
    <urlset><url><loc>https://acme.test/&x;</loc></url></urlset>"""
    urls = [e.url for e in parse_sitemap(xxe, max_bytes=10_000).urls]
    assert all("root:" not in u for u in urls)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-03", datetime(2024, 3, 1, tzinfo=UTC)),
        ("2024-03-09T12:00:00Z", datetime(2024, 3, 9, 12, tzinfo=UTC)),
        ("yesterday", None),
        ("", None),
    ],
)
def test_lastmod_formats(value: str, expected: datetime | None) -> None:
    assert parse_lastmod(value) == expected


ROBOTS = """
User-agent: evilbot
Disallow: /

User-agent: *
Disallow: /private/
Allow: /private/public-note.html
Disallow: /*?print=
Crawl-delay: 0.25
Sitemap: https://acme.test/sitemap.xml
"""


def test_robots_rules_for_our_agent() -> None:
    agent = agent_token("ragbot-crawler/0.1 (+https://github.com/ragbot/ragbot)")
    assert agent == "ragbot-crawler"
    policy = RobotsPolicy.parse(ROBOTS)
    assert policy.can_fetch("https://acme.test/docs/a", agent)
    assert not policy.can_fetch("https://acme.test/private/x.html", agent)
    assert policy.can_fetch("https://acme.test/private/public-note.html", agent)  # longest match wins
    assert not policy.can_fetch("https://acme.test/docs/a?print=1", agent)
    assert not policy.can_fetch("https://acme.test/docs/a", "evilbot")
    assert policy.delay_s(agent) == 0.25
    assert policy.sitemaps() == ["https://acme.test/sitemap.xml"]
    assert RobotsPolicy.parse("User-agent: *\nRequest-rate: 2/1s\n").delay_s(agent) == 0.5
    assert RobotsPolicy.allow_all().can_fetch("https://acme.test/anything", agent)
    assert not RobotsPolicy.block("robots.txt answered HTTP 503").can_fetch("https://acme.test/", agent)
    assert robots_url("https://acme.test:8443/a/b?c") == "https://acme.test:8443/robots.txt"
