"""DOCX -> one segment per heading section; tables become ``cell | cell`` rows in reading order."""

from __future__ import annotations

import io
import re
import zipfile

from docx import Document
from docx.opc.exceptions import PackageNotFoundError
from docx.table import Table
from docx.text.paragraph import Paragraph

from connectors.documents.base import DocumentError, DocumentFormat
from ragbot.types import Segment, SourceDocument

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_HEADING_STYLE = re.compile(r"^heading\s*(\d)$", re.IGNORECASE)


def parse_docx(data: bytes, *, uri: str, fallback_title: str) -> SourceDocument:
    if data.startswith(_OLE_MAGIC):
        raise DocumentError("encrypted DOCX or legacy .doc file (OLE container), not a readable DOCX")
    try:
        document = Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError) as exc:
        raise DocumentError(f"malformed DOCX: {exc}") from exc

    segments: list[Segment] = []
    stack: list[tuple[int, str]] = []
    blocks: list[str] = []
    styled_title: str | None = None

    def flush() -> None:
        text = "\n\n".join(blocks).strip()
        if text:
            segments.append(Segment(text=text, heading_path=tuple(h for _, h in stack)))
        blocks.clear()

    for item in document.iter_inner_content():
        if isinstance(item, Table):
            rows = [" | ".join(cell.text.strip() for cell in row.cells) for row in item.rows]
            blocks.append("\n".join(r for r in rows if r.strip(" |")))
            continue
        text = item.text.strip()
        if not text:
            continue
        level = _heading_level(item)
        if level is None:
            blocks.append(text)
            continue
        if level == 0:
            styled_title = styled_title or text
        flush()
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, text))
        blocks.append(text)
    flush()
    title = (document.core_properties.title or "").strip() or styled_title or fallback_title
    return SourceDocument(uri=uri, title=title, segments=tuple(segments), mime_type=DocumentFormat.DOCX.value)


def _heading_level(paragraph: Paragraph) -> int | None:
    """0 for the Title style, n for "Heading n", None for body text."""
    name = (paragraph.style.name if paragraph.style is not None else "") or ""
    if name.lower() == "title":
        return 0
    match = _HEADING_STYLE.match(name)
    return int(match.group(1)) if match else None
