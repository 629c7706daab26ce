"""Markdown -> one segment per heading section (markdown-it finds the headings, so code fences are safe)."""

from __future__ import annotations

import re

from markdown_it import MarkdownIt

from connectors.documents.base import DocumentFormat
from ragbot.types import Segment, SourceDocument

_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n)---[ \t]*(?:\n|\Z)", re.DOTALL)
_FRONT_MATTER_TITLE = re.compile(r"^title:[ \t]*(.+?)[ \t]*$", re.MULTILINE)


def parse_markdown(text: str, *, uri: str, fallback_title: str) -> SourceDocument:
    title: str | None = None
    front = _FRONT_MATTER.match(text)
    if front:
        found = _FRONT_MATTER_TITLE.search(front.group(1))
        title = found.group(1).strip("\"'") if found else None
        text = text[front.end() :]
    lines = text.splitlines()
    tokens = MarkdownIt("commonmark").parse(text)
    headings: list[tuple[int, int, str]] = []  # (first line, level, text)
    for i, token in enumerate(tokens):
        if token.type == "heading_open" and token.map is not None:
            headings.append((token.map[0], int(token.tag[1]), tokens[i + 1].content.strip()))

    segments: list[Segment] = []
    stack: list[tuple[int, str]] = []
    bounds = [0] + [line for line, _, _ in headings] + [len(lines)]
    for k in range(len(bounds) - 1):
        if k > 0:
            _, level, heading = headings[k - 1]
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, heading))
        body = "\n".join(lines[bounds[k] : bounds[k + 1]]).strip()
        if body:
            segments.append(Segment(text=body, heading_path=tuple(h for _, h in stack)))
    if title is None:
        title = next((h for _, level, h in headings if level == 1 and h), None)
    return SourceDocument(
        uri=uri,
        title=title or fallback_title,
        segments=tuple(segments),
        mime_type=DocumentFormat.MARKDOWN.value,
    )
