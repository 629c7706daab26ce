"""PDF -> one segment per page (page numbers are 1-based, as readers show them), headings from the outline."""

from __future__ import annotations

import io
import logging
from typing import Any

from pypdf import PdfReader
from pypdf.errors import FileNotDecryptedError, PdfReadError

from connectors.documents.base import DocumentError, DocumentFormat
from ragbot.types import Segment, SourceDocument

logger = logging.getLogger(__name__)


def parse_pdf(data: bytes, *, uri: str, fallback_title: str) -> SourceDocument:
    if not data.lstrip()[:5].startswith(b"%PDF"):
        raise DocumentError("not a PDF file (missing %PDF header)")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentError("encrypted PDF: a password is required")
        pages = [page.extract_text() or "" for page in reader.pages]
    except FileNotDecryptedError as exc:
        raise DocumentError("encrypted PDF: a password is required") from exc
    except PdfReadError as exc:
        raise DocumentError(f"malformed PDF: {exc}") from exc
    headings = _outline_by_page(reader, len(pages))
    segments = tuple(
        Segment(text=text.strip(), page=number, heading_path=headings[number - 1])
        for number, text in enumerate(pages, start=1)
        if text.strip()
    )
    if pages and not segments:
        raise DocumentError("PDF has no extractable text (scanned images only?)")
    title = _metadata_title(reader) or fallback_title
    return SourceDocument(uri=uri, title=title, segments=segments, mime_type=DocumentFormat.PDF.value)


def _metadata_title(reader: PdfReader) -> str | None:
    try:
        title = reader.metadata.title if reader.metadata else None
    except PdfReadError:
        return None
    return (str(title).strip() or None) if title else None


def _outline_by_page(reader: PdfReader, page_count: int) -> list[tuple[str, ...]]:
    """The outline path in force on each page: the last bookmark at or before it, in reading order."""
    marks: list[tuple[int, tuple[str, ...]]] = []

    def walk(items: list[Any], path: tuple[str, ...]) -> None:
        last: tuple[str, ...] = path
        for item in items:
            if isinstance(item, list):
                walk(item, last)
                continue
            title = str(getattr(item, "title", "") or "").strip()
            last = (*path, title) if title else path
            page = reader.get_destination_page_number(item)
            if title and page is not None and page >= 0:
                marks.append((page, last))

    try:
        walk(reader.outline, ())
    except Exception as exc:  # a broken outline must not cost the text
        logger.debug("ignoring unreadable PDF outline: %s", exc)
        return [()] * page_count
    marks.sort(key=lambda mark: mark[0])
    result: list[tuple[str, ...]] = []
    current: tuple[str, ...] = ()
    k = 0
    for page in range(page_count):
        while k < len(marks) and marks[k][0] <= page:
            current = marks[k][1]
            k += 1
        result.append(current)
    return result
