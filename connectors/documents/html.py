"""HTML -> main content (trafilatura) split into sections by heading, plus what a crawler needs from the page.

Links, canonical URL, language and robots directives are read from the full page with lxml first:
trafilatura keeps only the main content and prunes the tree it is given.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urldefrag, urljoin

import trafilatura
from lxml.html import HtmlElement
from trafilatura.utils import load_html

from connectors.documents.base import DocumentError, DocumentFormat, charset_of
from ragbot.types import Segment, SourceDocument

_SKIPPED_SCHEMES = ("javascript:", "mailto:", "tel:", "data:", "ftp:", "file:")
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class HtmlPage:
    document: SourceDocument
    links: tuple[str, ...]  # absolute, without fragment, rel=nofollow links left out
    canonical: str | None
    noindex: bool = False
    nofollow: bool = False


def parse_html(
    data: bytes | str, *, uri: str, fallback_title: str, content_type: str | None = None
) -> HtmlPage:
    if isinstance(data, bytes):
        charset = charset_of(content_type)
        if charset:
            data = data.decode(charset, errors="replace")
    tree = load_html(data)
    if tree is None:
        raise DocumentError("not parseable as HTML")
    base = _base_url(tree, uri)
    directives = _robots_directives(tree)
    canonical = _first_attr(
        tree, "//link[contains(concat(' ', normalize-space(@rel), ' '), ' canonical ')]", "href"
    )
    language = _language(tree)
    page_title = _text(tree.findtext(".//title") or "")
    links = () if "nofollow" in directives else tuple(_links(tree, base))

    extracted: Any = trafilatura.bare_extraction(
        tree, url=uri, with_metadata=True, include_tables=True, include_comments=False, fast=True
    )
    body = getattr(extracted, "body", None)
    segments = _sections(body) if body is not None else []
    if not segments:
        baseline_body, _, _ = trafilatura.baseline(data)
        segments = _sections(baseline_body)
    if not segments:
        raise DocumentError("no readable text in the page")
    title = _text(getattr(extracted, "title", None) or "") or page_title or segments[0].text.split("\n", 1)[0]
    document = SourceDocument(
        uri=uri,
        title=title[:300] or fallback_title,
        segments=tuple(segments),
        mime_type=DocumentFormat.HTML.value,
        language=language,
        metadata={"canonical_url": urljoin(base, canonical)} if canonical else {},
    )
    return HtmlPage(
        document=document,
        links=links,
        canonical=urljoin(base, canonical) if canonical else None,
        noindex="noindex" in directives,
        nofollow="nofollow" in directives,
    )


def _text(value: str) -> str:
    return _WHITESPACE.sub(" ", value).strip()


def _first_attr(tree: HtmlElement, xpath: str, attr: str) -> str | None:
    for element in tree.xpath(xpath):
        value = element.get(attr)
        if value and value.strip():
            return str(value).strip()
    return None


def _base_url(tree: HtmlElement, uri: str) -> str:
    base = _first_attr(tree, "//base[@href]", "href")
    return urljoin(uri, base) if base else uri


def _language(tree: HtmlElement) -> str | None:
    lang = tree.get("lang") or tree.get("{http://www.w3.org/XML/1998/namespace}lang")
    if not lang:
        lang = next((m.get("content") for m in _metas(tree, "http-equiv", "content-language")), None)
    if not lang:
        return None
    primary = lang.strip().split(",")[0].split("-")[0].split("_")[0].lower()
    return primary or None


def _metas(tree: HtmlElement, attribute: str, value: str) -> list[HtmlElement]:
    return [m for m in tree.iter("meta") if (m.get(attribute) or "").strip().lower() == value]


def _robots_directives(tree: HtmlElement) -> set[str]:
    directives: set[str] = set()
    for meta in _metas(tree, "name", "robots"):
        for value in (meta.get("content") or "").lower().split(","):
            directives.add(value.strip())
    if "none" in directives:
        directives |= {"noindex", "nofollow"}
    return directives


def _links(tree: HtmlElement, base: str) -> Iterable[str]:
    seen: set[str] = set()
    for anchor in tree.xpath("//a[@href] | //area[@href]"):
        if "nofollow" in (anchor.get("rel") or "").lower().split():
            continue
        href = (anchor.get("href") or "").strip()
        if not href or href.startswith("#") or href.lower().startswith(_SKIPPED_SCHEMES):
            continue
        url = urldefrag(urljoin(base, _slashes(href) if _is_web(base) else href)).url
        if url.startswith(("http://", "https://")) and url not in seen:
            seen.add(url)
            yield url


def _is_web(base: str) -> bool:
    return base.lower().startswith(("http://", "https://"))


def _slashes(href: str) -> str:
    """Backslashes before the query or fragment read as slashes, as browsers read a web link (the URL
    standard's rule for http and https): ``href="\\"`` is the site's root, not a page named ``%5C``."""
    end = min((i for i in (href.find("?"), href.find("#")) if i >= 0), default=len(href))
    return href[:end].replace("\\", "/") + href[end:]


def _block_text(element: Any) -> str:
    tag = element.tag
    if tag == "list":
        items = [_text(" ".join(item.itertext())) for item in element.iter("item")]
        return "\n".join(f"- {item}" for item in items if item)
    if tag == "table":
        rows = []
        for row in element.iter("row"):
            cells = [_text(" ".join(cell.itertext())) for cell in row.iter("cell")]
            if any(cells):
                rows.append(" | ".join(cells))
        return "\n".join(rows)
    if tag in ("code", "pre"):
        return "".join(element.itertext()).strip()
    return _text(" ".join(element.itertext()))


def _sections(body: Any) -> list[Segment]:
    """One segment per heading section; the heading text opens its section so it is searchable too."""
    segments: list[Segment] = []
    stack: list[tuple[int, str]] = []
    blocks: list[str] = []

    def flush() -> None:
        text = "\n\n".join(b for b in blocks if b)
        if text.strip():
            segments.append(Segment(text=text, heading_path=tuple(h for _, h in stack)))
        blocks.clear()

    for element in body:
        if not isinstance(element.tag, str):
            continue
        if element.tag == "head":
            heading = _text(" ".join(element.itertext()))
            if not heading:
                continue
            flush()
            level = _heading_level(element)
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, heading))
            blocks.append(heading)
        else:
            blocks.append(_block_text(element))
    flush()
    # A heading with no text under it still belongs to the page, but not as a section of its own.
    return [s for s in segments if s.text != (s.heading_path[-1] if s.heading_path else None)] or segments


def _heading_level(element: Any) -> int:
    rend = (element.get("rend") or "h2").lower()
    return int(rend[1]) if len(rend) == 2 and rend[0] == "h" and rend[1].isdigit() else 2
