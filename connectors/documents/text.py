"""Plain text: one segment; the chunker splits it at blank lines, lines and sentences."""

from __future__ import annotations

from connectors.documents.base import DocumentFormat
from ragbot.types import Segment, SourceDocument


def parse_text(text: str, *, uri: str, fallback_title: str) -> SourceDocument:
    body = text.replace("\r\n", "\n").replace("\r", "\n").strip()
    return SourceDocument(
        uri=uri,
        title=fallback_title,
        segments=(Segment(text=body),) if body else (),
        mime_type=DocumentFormat.TEXT.value,
    )
