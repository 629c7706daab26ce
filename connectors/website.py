"""Website connector: crawl a site (start URLs, sitemaps, in-scope links) politely and incrementally.

Scope is the start URLs' hosts, each under its start URL's folder, narrowed by include/exclude globs.
robots.txt is obeyed for our agent token (Allow/Disallow/Crawl-delay); a host whose robots.txt cannot be
read because of a server or network error is not crawled at all (RFC 9309), and its documents are left
as they are rather than removed. Requests run on a small thread pool, spaced per host by the site's
Crawl-delay (or ``host_rate`` when it declares none), through ``SafeHttpClient`` (SSRF policy per hop).

Re-sync: a known page is requested conditionally (ETag / Last-Modified) and a 304 is ``Unchanged``; a
sitemap ``lastmod`` no later than what we stored skips the request entirely. A 404/410 on a known page
is ``Gone``; known pages not reached by this crawl are re-checked one by one at the end, so a page that
vanished from both links and sitemap is found gone, while one that merely fails (500, timeout) is kept.
The crawl runs on a background thread feeding a bounded queue, so fetching overlaps the consumer's
encoding work.
"""

from __future__ import annotations

import fnmatch
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from connectors.base import Failed, Fetched, FetchResult, Gone, KnownDocument, Unchanged
from connectors.documents import DocumentError, DocumentFormat, detect_format, parse_document, parse_html
from connectors.documents.base import format_for_content_type
from connectors.net import (
    AddressRefusedError,
    FetchError,
    RedirectNotFollowedError,
    Resolver,
    SafeHttpClient,
    UnsupportedContentTypeError,
)
from connectors.robots import RobotsPolicy, agent_token, robots_url
from connectors.sitemaps import SitemapError, parse_sitemap

if TYPE_CHECKING:
    from ragbot.config import Settings

logger = logging.getLogger(__name__)

#: Links to these are never documents; skipping them saves a request each.
_ASSET_EXTENSIONS = frozenset(
    {
        ".png",
        ".jpg",
        ".jpeg",
        ".gif",
        ".svg",
        ".webp",
        ".ico",
        ".bmp",
        ".tif",
        ".tiff",
        ".avif",
        ".css",
        ".js",
        ".mjs",
        ".map",
        ".json",
        ".woff",
        ".woff2",
        ".ttf",
        ".otf",
        ".eot",
        ".zip",
        ".gz",
        ".tgz",
        ".tar",
        ".bz2",
        ".xz",
        ".rar",
        ".7z",
        ".mp3",
        ".wav",
        ".ogg",
        ".flac",
        ".mp4",
        ".m4v",
        ".mov",
        ".avi",
        ".mkv",
        ".webm",
        ".exe",
        ".msi",
        ".dmg",
        ".iso",
        ".apk",
        ".bin",
        ".deb",
        ".rpm",
        ".xls",
        ".xlsx",
        ".ppt",
        ".pptx",
        ".doc",
        ".odt",
        ".rss",
        ".atom",
    }
)
_GENERIC_TYPES = ("", "application/octet-stream", "binary/octet-stream")
_MAX_SITEMAPS = 100


def normalize_url(url: str) -> str:
    """Canonical form used as identity: lower-case scheme and host, default port and fragment dropped."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    netloc = host if port is None or (scheme, port) in (("http", 80), ("https", 443)) else f"{host}:{port}"
    if parts.username:
        netloc = f"{parts.username}@{netloc}"  # kept so it is visible, never silently dropped
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


@dataclass(frozen=True, slots=True)
class CrawlScope:
    """Where the crawl may go: (host, path prefix) pairs, then include/exclude globs on the URL."""

    roots: tuple[tuple[str, str], ...]
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @classmethod
    def from_urls(cls, urls: Sequence[str], include: Sequence[str], exclude: Sequence[str]) -> CrawlScope:
        roots = []
        for url in urls:
            parts = urlsplit(url)
            folder = parts.path[: parts.path.rfind("/") + 1] or "/"
            roots.append((parts.netloc, folder))
        return cls(tuple(dict.fromkeys(roots)), tuple(include), tuple(exclude))

    def on_site(self, url: str) -> bool:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and any(
            parts.netloc == host and (parts.path or "/").startswith(prefix) for host, prefix in self.roots
        )

    def selected(self, url: str) -> bool:
        """Include/exclude globs match the full URL or its path (``/blog/*``, ``*?print=*``)."""
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")

        def hit(pattern: str) -> bool:
            return fnmatch.fnmatchcase(url, pattern) or fnmatch.fnmatchcase(target, pattern)

        if self.include and not any(hit(p) for p in self.include):
            return False
        return not any(hit(p) for p in self.exclude)


class HostThrottle:
    """Spaces requests to one host at least ``interval`` apart, across all worker threads."""

    def __init__(self, stop: threading.Event) -> None:
        self._lock = threading.Lock()
        self._next: dict[str, float] = {}
        self._interval: dict[str, float] = {}
        self._stop = stop

    def set_interval(self, host: str, seconds: float) -> None:
        with self._lock:
            self._interval[host] = max(0.0, seconds)

    def wait(self, host: str) -> None:
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next.get(host, now))
            self._next[host] = slot + self._interval.get(host, 0.0)
        if slot > now:
            self._stop.wait(slot - now)


@dataclass(frozen=True, slots=True)
class _Task:
    url: str
    depth: int
    referrer: str | None = None
    known: KnownDocument | None = None
    lastmod: datetime | None = None


@dataclass(slots=True)
class _Outcome:
    task: _Task
    results: list[FetchResult] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    visited: list[str] = field(default_factory=list)


class WebsiteConnector:
    """Crawls one site (or a few start URLs) and yields one ``FetchResult`` per page or document."""

    kind = "web"

    def __init__(
        self,
        start_urls: Sequence[str],
        *,
        sitemap: str | None = None,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        max_pages: int = 500,
        max_depth: int | None = None,
        allow_private: bool = False,
        allowed_networks: Sequence[str] = (),
        user_agent: str = "ragbot-crawler/0.1",
        concurrency: int = 4,
        timeout_s: float = 15.0,
        max_bytes: int = 10 * 1024 * 1024,
        max_redirects: int = 5,
        host_rate: float = 8.0,
        resolver: Resolver | None = None,
        trust_sitemap_lastmod: bool = True,
        queue_size: int = 64,
    ) -> None:
        urls = [normalize_url(u) for u in start_urls]
        if sitemap:
            sitemap = normalize_url(sitemap)
        if not urls and not sitemap:
            raise ValueError("a website crawl needs a start URL or a sitemap URL")
        for url in [*urls, *([sitemap] if sitemap else [])]:
            if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
                raise ValueError(f"not an http(s) URL: {url}")
        if max_pages < 1 or concurrency < 1 or host_rate <= 0:
            raise ValueError("max_pages, concurrency and host_rate must be positive")
        self.start_urls = tuple(urls)
        self.sitemap = sitemap
        self.crawl_scope = CrawlScope.from_urls(urls or [sitemap or ""], include, exclude)
        self.max_pages = max_pages
        self.max_depth = max_depth
        self.agent = agent_token(user_agent)
        self.concurrency = concurrency
        self.host_interval_s = 1.0 / host_rate
        self.trust_sitemap_lastmod = trust_sitemap_lastmod
        self.queue_size = queue_size
        self.max_bytes = max_bytes
        self._client_options: dict[str, Any] = {
            "user_agent": user_agent,
            "timeout_s": timeout_s,
            "max_bytes": max_bytes,
            "max_redirects": max_redirects,
            "allow_private": allow_private,
            "allowed_networks": tuple(allowed_networks),
            "resolver": resolver,
            "max_connections": concurrency * 2,
        }
        self._crawl: _Crawl | None = None

    @classmethod
    def from_settings(
        cls, start_urls: Sequence[str], settings: Settings, **overrides: Any
    ) -> WebsiteConnector:
        """Crawl options from ``Settings``; keyword overrides (CLI/API options) win when not None."""
        options: dict[str, Any] = {
            "max_pages": settings.crawl_max_pages,
            "max_depth": settings.crawl_max_depth,
            "allow_private": settings.crawl_allow_private,
            "allowed_networks": settings.crawl_allowed_networks,
            "user_agent": settings.crawl_user_agent,
            "concurrency": settings.crawl_concurrency,
            "timeout_s": settings.crawl_timeout_s,
            "max_bytes": settings.crawl_max_bytes,
            "max_redirects": settings.crawl_max_redirects,
            "host_rate": settings.crawl_host_rate,
        }
        options.update({k: v for k, v in overrides.items() if v is not None})
        return cls(start_urls, **options)

    @property
    def scope(self) -> str:
        return self.start_urls[0] if self.start_urls else self.sitemap or ""

    def open_client(self) -> SafeHttpClient:
        return SafeHttpClient(**self._client_options)

    @property
    def expected_total(self) -> int | None:
        """Documents this crawl will likely report: grows as links are discovered."""
        crawl = self._crawl
        return crawl.expected_total() if crawl is not None else None

    def fetch(self, known: Mapping[str, KnownDocument]) -> Iterator[FetchResult]:
        items: queue.Queue[FetchResult | BaseException | None] = queue.Queue(maxsize=self.queue_size)
        stop = threading.Event()

        def emit(item: FetchResult | BaseException | None) -> None:
            while not stop.is_set():
                try:
                    items.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue

        crawl = _Crawl(self, known, emit, stop)
        self._crawl = crawl
        thread = threading.Thread(target=crawl.run, name="ragbot-crawl", daemon=True)
        thread.start()
        try:
            while True:
                item = items.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            thread.join(timeout=30)


class _Crawl:
    """One run of a ``WebsiteConnector``: frontier, robots, sitemaps, worker pool, re-checks."""

    def __init__(
        self,
        config: WebsiteConnector,
        known: Mapping[str, KnownDocument],
        emit: Callable[[FetchResult | BaseException | None], None],
        stop: threading.Event,
    ) -> None:
        self.config = config
        self.known = {normalize_url(uri): doc for uri, doc in known.items()}
        self.emit = emit
        self.stop = stop
        self.throttle = HostThrottle(stop)
        self.robots: dict[str, RobotsPolicy] = {}
        self.frontier: deque[_Task] = deque()
        self.seen: set[str] = set()
        self.reported: set[str] = set()
        self.sitemap_lastmod: dict[str, datetime | None] = {}
        self.fetches = 0  # pages fetched or proven unchanged: what max_pages caps
        self.pending = 0
        self.client = config.open_client()

    def expected_total(self) -> int:
        return len(self.reported) + len(self.frontier) + self.pending

    # --- orchestration (crawl thread) ---------------------------------------------------------------

    def run(self) -> None:
        try:
            self._crawl()
        except BaseException as exc:  # surfaced in the consumer's thread, not lost in this one
            self.emit(exc)
        finally:
            self.client.close()
            self.emit(None)

    def _crawl(self) -> None:
        for url in dict.fromkeys(
            [*self.config.start_urls, *([self.config.sitemap] if self.config.sitemap else [])]
        ):
            self._load_robots(url)
        self._load_sitemaps()
        for url in self.config.start_urls:
            self._offer(url, 0, None)
        rechecked = False
        with ThreadPoolExecutor(self.config.concurrency, thread_name_prefix="ragbot-fetch") as pool:
            running: dict[Future[_Outcome], _Task] = {}
            while not self.stop.is_set():
                while self.frontier and len(running) < self.config.concurrency:
                    if self.fetches >= self.config.max_pages:
                        logger.info(
                            "crawl stopped at max_pages=%d; %d URLs left", self.fetches, len(self.frontier)
                        )
                        self.frontier.clear()
                        break
                    task = self.frontier.popleft()
                    self.fetches += 1
                    running[pool.submit(self._fetch, task)] = task
                self.pending = len(running)
                if not running:
                    if rechecked or self.fetches >= self.config.max_pages:
                        break
                    rechecked = True
                    for uri, doc in self.known.items():
                        if uri not in self.seen and uri not in self.reported:
                            self._offer(uri, 0, None, known=doc)
                    continue
                done, _ = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in done:
                    running.pop(future)
                    self._absorb(future.result())
            for future in running:
                future.cancel()

    def _report(self, result: FetchResult) -> None:
        uri = result.document.uri if isinstance(result, Fetched) else result.uri
        if uri in self.reported:
            return
        self.reported.add(uri)
        self.emit(result)

    def _offer(
        self,
        url: str,
        depth: int,
        referrer: str | None,
        *,
        known: KnownDocument | None = None,
        lastmod: datetime | None = None,
    ) -> None:
        """Queue ``url`` unless seen, out of scope, not selected, disallowed, or proven unchanged."""
        url = normalize_url(url)
        if url in self.seen:
            return
        known = known or self.known.get(url)
        if not self.config.crawl_scope.on_site(url):
            if known is not None:
                self._report(Gone(known.uri, "outside the crawl scope"))
            return
        if PurePosixPath(unquote(urlsplit(url).path)).suffix.lower() in _ASSET_EXTENSIONS:
            return
        self.seen.add(url)
        if not self.config.crawl_scope.selected(url):
            if known is not None:
                self._report(Gone(known.uri, "excluded by the crawl's include/exclude patterns"))
            return
        policy = self.robots.get(urlsplit(url).netloc)
        if policy is None or policy.blocked_reason is not None:
            return  # host not crawlable this time: leave what we have untouched
        if not policy.can_fetch(url, self.config.agent):
            if known is not None:
                self._report(Gone(known.uri, "disallowed by robots.txt"))
            return
        if self.config.max_depth is not None and depth > self.config.max_depth:
            return
        lastmod = lastmod or self.sitemap_lastmod.get(url)
        if known is not None and lastmod is not None and self.config.trust_sitemap_lastmod:
            stored = _http_date(known.last_modified)
            if stored is not None and lastmod <= stored:
                # A page proven unchanged counts against max_pages like a fetched one, so a re-sync with
                # the same cap covers the same site instead of adding max_pages new pages every run.
                # Past the cap it is left as it is: neither re-verified nor removed.
                if self.fetches < self.config.max_pages:
                    self.fetches += 1
                    self._report(Unchanged(known.uri))
                return
        self.frontier.append(_Task(url, depth, referrer, known, lastmod))

    def _absorb(self, outcome: _Outcome) -> None:
        self.seen.update(outcome.visited)
        for result in outcome.results:
            self._report(result)
        for link in outcome.links:
            self._offer(link, outcome.task.depth + 1, outcome.visited[-1] if outcome.visited else None)

    # --- robots.txt and sitemaps (crawl thread) -------------------------------------------------------

    def _load_robots(self, start_url: str) -> None:
        host = urlsplit(start_url).netloc
        if host in self.robots:
            if self.robots[host].blocked_reason:
                self._report(Failed(start_url, self.robots[host].blocked_reason or ""))
            return
        try:
            self.client.vet(start_url)
            self.throttle.wait(host)
            response = self.client.get(robots_url(start_url), accept=lambda _: True)
        except AddressRefusedError as exc:
            policy = RobotsPolicy.block(str(exc))
        except FetchError as exc:
            policy = RobotsPolicy.block(f"robots.txt unreachable, not crawling this host: {exc}")
        else:
            if response.status == 200:
                policy = RobotsPolicy.parse(response.content.decode("utf-8", errors="replace"))
            elif 400 <= response.status < 500:
                policy = RobotsPolicy.allow_all()
            else:
                policy = RobotsPolicy.block(
                    f"robots.txt answered HTTP {response.status}: not crawling this host until it is readable"
                )
        self.robots[host] = policy
        delay = policy.delay_s(self.config.agent)
        self.throttle.set_interval(host, delay if delay is not None else self.config.host_interval_s)
        if policy.blocked_reason:
            self._report(Failed(start_url, policy.blocked_reason))

    def _load_sitemaps(self) -> None:
        declared = [self.config.sitemap] if self.config.sitemap else []
        for policy in self.robots.values():
            if policy.blocked_reason is None:
                declared.extend(policy.sitemaps())
        guessed = []
        if not declared:
            for url in self.config.start_urls:
                parts = urlsplit(url)
                guessed.append(urlunsplit((parts.scheme, parts.netloc, "/sitemap.xml", "", "")))
        todo = deque([(normalize_url(u), True) for u in dict.fromkeys(declared)])
        todo.extend((normalize_url(u), False) for u in dict.fromkeys(guessed))
        done: set[str] = set()
        while todo and len(done) < _MAX_SITEMAPS and not self.stop.is_set():
            url, must_exist = todo.popleft()
            if url in done:
                continue
            done.add(url)
            host = urlsplit(url).netloc
            host_policy = self.robots.get(host)
            if host_policy is None or host_policy.blocked_reason is not None:
                continue
            try:
                self.throttle.wait(host)
                response = self.client.get(url, accept=lambda _: True)
                if response.status != 200:
                    if must_exist:
                        self._report(Failed(url, f"sitemap answered HTTP {response.status}"))
                    continue
                sitemap = parse_sitemap(response.content, max_bytes=self.config.max_bytes)
            except (FetchError, SitemapError) as exc:
                if must_exist:
                    self._report(Failed(url, f"sitemap: {exc}"))
                continue
            todo.extend((normalize_url(child.url), True) for child in sitemap.sitemaps)
            for entry in sitemap.urls:
                page = normalize_url(entry.url)
                if self.config.crawl_scope.on_site(page):
                    self.sitemap_lastmod[page] = entry.lastmod
        for page, lastmod in self.sitemap_lastmod.items():
            self._offer(page, 0, None, lastmod=lastmod)

    # --- one page (worker threads) ----------------------------------------------------------------------

    def _fetch(self, task: _Task) -> _Outcome:
        outcome = _Outcome(task, visited=[task.url])
        try:
            self._fetch_into(task, outcome)
        except Exception as exc:  # one bad page never aborts the crawl
            logger.warning("unexpected error crawling %s", task.url, exc_info=True)
            outcome.results.append(Failed(task.url, f"{type(exc).__name__}: {exc}"))
        return outcome

    def _fetch_into(self, task: _Task, outcome: _Outcome) -> None:
        known = task.known
        headers = {}
        if known is not None and known.etag:
            headers["If-None-Match"] = known.etag
        if known is not None and known.last_modified:
            headers["If-Modified-Since"] = known.last_modified
        self.throttle.wait(urlsplit(task.url).netloc)
        try:
            response = self.client.get(
                task.url, headers=headers, accept=_acceptable, follow=self._redirect_refusal
            )
        except RedirectNotFollowedError as exc:
            if normalize_url(exc.location) in self.seen:  # reached (or queued) under its own URL
                if known is not None and normalize_url(exc.location) != normalize_url(known.uri):
                    outcome.results.append(Gone(known.uri, f"redirects to {exc.location}"))
                return
            self._skip(task, exc, outcome)
            return
        except UnsupportedContentTypeError as exc:
            self._skip(task, exc, outcome)
            return
        except FetchError as exc:
            outcome.results.append(Failed(task.url, str(exc)))
            return
        final = normalize_url(response.url)
        outcome.visited = [normalize_url(u) for u in response.redirects] + [final]
        if response.status == 304 and known is not None:
            outcome.results.append(Unchanged(known.uri))
        elif response.status in (404, 410):
            if known is not None:
                outcome.results.append(Gone(known.uri, f"HTTP {response.status}"))
            else:
                origin = f" (linked from {task.referrer})" if task.referrer else ""
                outcome.results.append(Failed(task.url, f"HTTP {response.status}{origin}"))
        elif response.status != 200:
            outcome.results.append(Failed(task.url, f"HTTP {response.status}"))
        else:
            self._parse_into(task, response.content, response.headers, final, outcome)

    def _parse_into(self, task: _Task, content: bytes, headers: Any, final: str, outcome: _Outcome) -> None:
        content_type = headers.get("content-type", "")
        name = PurePosixPath(unquote(urlsplit(final).path)).name or "index.html"
        fmt = detect_format(name, content_type) or (
            DocumentFormat.HTML if content_type in _GENERIC_TYPES else None
        )
        identity = final
        try:
            if fmt is DocumentFormat.HTML:
                page = parse_html(content, uri=final, fallback_title=name, content_type=content_type)
                if not page.nofollow:
                    outcome.links = list(page.links)
                if page.canonical and self._same_host(page.canonical, final):
                    identity = normalize_url(page.canonical)
                if page.noindex:
                    if task.known is not None:
                        outcome.results.append(Gone(task.known.uri, "page is marked noindex"))
                    return
                document = page.document
            else:
                document = parse_document(content, uri=final, name=name, content_type=content_type, fmt=fmt)
        except DocumentError as exc:
            outcome.results.append(Failed(final, str(exc)))
            return
        last_modified = headers.get("last-modified")
        if not last_modified and task.lastmod is not None:
            last_modified = format_datetime(task.lastmod, usegmt=True)
        document = replace(
            document,
            uri=identity,
            etag=headers.get("etag"),
            last_modified=last_modified,
            metadata={**document.metadata, "url": final},
        )
        if task.known is not None and task.known.uri != identity:
            outcome.results.append(Gone(task.known.uri, f"now served as {identity}"))
        outcome.results.append(Fetched(document))

    def _skip(self, task: _Task, exc: FetchError, outcome: _Outcome) -> None:
        """Not for ingesting (a redirect off the site, an image): drop a known copy, report a start URL."""
        if task.known is not None:
            outcome.results.append(Gone(task.known.uri, str(exc)))
        elif task.referrer is None and task.url in self.config.start_urls:
            outcome.results.append(Failed(task.url, str(exc)))
        else:
            logger.debug("skipping %s: %s", task.url, exc)

    def _redirect_refusal(self, location: str) -> str | None:
        url = normalize_url(location)
        if url in self.seen:
            return "already crawled"
        if not self.config.crawl_scope.on_site(url):
            return "outside the crawl scope"
        policy = self.robots.get(urlsplit(url).netloc)
        if policy is not None and not policy.can_fetch(url, self.config.agent):
            return "disallowed by robots.txt"
        return None

    @staticmethod
    def _same_host(a: str, b: str) -> bool:
        return urlsplit(normalize_url(a)).netloc == urlsplit(b).netloc


def _acceptable(content_type: str) -> bool:
    base = content_type.split(";", 1)[0].strip().lower()
    return base in _GENERIC_TYPES or format_for_content_type(base) is not None


def _http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
