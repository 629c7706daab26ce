"""Parsers that turn one file's bytes into a ``SourceDocument`` with page, heading or time metadata.

``parse_document`` is the single entry point for files, uploads and crawled documents. Any failure comes
out as ``DocumentError`` with a reason fit for the ingest report, so one bad file never stops a batch.
"""

from __future__ import annotations

import logging
from pathlib import PurePosixPath

from connectors.documents.base import (
    EXTENSIONS,
    DocumentError,
    DocumentFormat,
    charset_of,
    decode_text,
    detect_format,
)
from connectors.documents.html import HtmlPage, parse_html
from connectors.documents.markdown import parse_markdown
from connectors.documents.pdf import parse_pdf
from connectors.documents.text import parse_text
from connectors.documents.transcripts import parse_transcript
from connectors.documents.word import parse_docx
from ragbot.types import SourceDocument

__all__ = [
    "EXTENSIONS",
    "DocumentError",
    "DocumentFormat",
    "HtmlPage",
    "detect_format",
    "parse_document",
    "parse_html",
]

logger = logging.getLogger(__name__)


def parse_document(
    data: bytes,
    *,
    uri: str,
    name: str,
    content_type: str | None = None,
    fmt: DocumentFormat | None = None,
) -> SourceDocument:
    """Parse one file. ``name`` gives the format when no content type decides it, and the fallback title."""
    fmt = fmt or detect_format(name, content_type)
    if fmt is None:
        raise DocumentError(
            f"unsupported file type: {PurePosixPath(name).suffix or content_type or 'unknown'}"
        )
    if not data.strip():
        raise DocumentError("empty file")
    title = PurePosixPath(name).stem or name
    try:
        document = _parse(data, fmt, uri=uri, title=title, content_type=content_type)
    except DocumentError:
        raise
    except Exception as exc:  # parser libraries raise many types on malformed input; report, never crash
        logger.debug("parser failure for %s", uri, exc_info=True)
        raise DocumentError(f"malformed {fmt.name} file: {type(exc).__name__}: {exc}") from exc
    if not document.segments:
        raise DocumentError(f"no text found in the {fmt.name} file")
    return document


def _parse(
    data: bytes, fmt: DocumentFormat, *, uri: str, title: str, content_type: str | None
) -> SourceDocument:
    if fmt is DocumentFormat.PDF:
        return parse_pdf(data, uri=uri, fallback_title=title)
    if fmt is DocumentFormat.DOCX:
        return parse_docx(data, uri=uri, fallback_title=title)
    if fmt is DocumentFormat.HTML:
        return parse_html(data, uri=uri, fallback_title=title, content_type=content_type).document
    text = decode_text(data, charset_of(content_type))
    if fmt is DocumentFormat.MARKDOWN:
        return parse_markdown(text, uri=uri, fallback_title=title)
    if fmt in (DocumentFormat.VTT, DocumentFormat.SRT):
        return parse_transcript(text, uri=uri, fallback_title=title, fmt=fmt)
    return parse_text(text, uri=uri, fallback_title=title)
