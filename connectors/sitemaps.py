"""sitemaps.org parsing: URL sets, sitemap indexes, gzip, plain-text sitemaps. Pure: bytes in, entries out."""

from __future__ import annotations

import gzip
import io
import re
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

from lxml import etree

_GZIP_MAGIC = b"\x1f\x8b"
_YEAR_MONTH = re.compile(r"^(\d{4})(?:-(\d{2}))?$")


class SitemapError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class SitemapEntry:
    url: str
    lastmod: datetime | None = None


@dataclass(frozen=True, slots=True)
class Sitemap:
    urls: list[SitemapEntry] = field(default_factory=list)
    sitemaps: list[SitemapEntry] = field(default_factory=list)  # children of a sitemap index


def parse_sitemap(data: bytes, *, max_bytes: int) -> Sitemap:
    """Parse one sitemap file (gzipped or not). ``max_bytes`` bounds the *decompressed* size."""
    if data.startswith(_GZIP_MAGIC):
        data = _gunzip(data, max_bytes)
    stripped = data.lstrip()
    if not stripped.startswith(b"<"):
        lines = (line.strip() for line in data.decode("utf-8", errors="replace").splitlines())
        return Sitemap(
            urls=[SitemapEntry(line) for line in lines if line.startswith(("http://", "https://"))]
        )
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, recover=True)
    try:
        root = etree.fromstring(stripped, parser=parser)
    except etree.XMLSyntaxError as exc:
        raise SitemapError(f"malformed sitemap XML: {exc}") from exc
    if root is None:
        raise SitemapError("empty sitemap")
    sitemap = Sitemap()
    kind = etree.QName(root).localname
    for element in root:
        if not isinstance(element.tag, str):
            continue
        loc = lastmod = None
        for child in element:
            if not isinstance(child.tag, str):
                continue
            name = etree.QName(child).localname
            if name == "loc":
                loc = (child.text or "").strip()
            elif name == "lastmod":
                lastmod = parse_lastmod(child.text or "")
        if not loc:
            continue
        entry = SitemapEntry(loc, lastmod)
        if kind == "sitemapindex" and etree.QName(element).localname == "sitemap":
            sitemap.sitemaps.append(entry)
        elif etree.QName(element).localname == "url":
            sitemap.urls.append(entry)
    return sitemap


def parse_lastmod(value: str) -> datetime | None:
    """W3C datetime (``2024``, ``2024-05``, ``2024-05-01``, ``2024-05-01T10:00:00+02:00``) -> aware UTC."""
    value = value.strip()
    if not value:
        return None
    short = _YEAR_MONTH.match(value)
    try:
        if short:
            parsed = datetime(int(short.group(1)), int(short.group(2) or 1), 1)
        else:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _gunzip(data: bytes, max_bytes: int) -> bytes:
    """Decompress at most ``max_bytes``: a small .gz can expand without bound (a decompression bomb)."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            out = stream.read(max_bytes + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise SitemapError(f"malformed gzip sitemap: {exc}") from exc
    if len(out) > max_bytes:
        raise SitemapError(f"sitemap exceeds {max_bytes} bytes once decompressed")
    return out
