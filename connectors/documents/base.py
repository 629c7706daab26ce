"""What every document parser shares: the supported formats, how a format is recognised, the error type."""

from __future__ import annotations

import codecs
from enum import StrEnum
from pathlib import PurePosixPath

from charset_normalizer import from_bytes


class DocumentError(ValueError):
    """A file that cannot be turned into text; the message is shown to the user as the failure reason."""


class DocumentFormat(StrEnum):
    PDF = "application/pdf"
    DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    HTML = "text/html"
    MARKDOWN = "text/markdown"
    TEXT = "text/plain"
    VTT = "text/vtt"
    SRT = "application/x-subrip"


EXTENSIONS: dict[str, DocumentFormat] = {
    ".pdf": DocumentFormat.PDF,
    ".docx": DocumentFormat.DOCX,
    ".html": DocumentFormat.HTML,
    ".htm": DocumentFormat.HTML,
    ".xhtml": DocumentFormat.HTML,
    ".md": DocumentFormat.MARKDOWN,
    ".markdown": DocumentFormat.MARKDOWN,
    ".txt": DocumentFormat.TEXT,
    ".text": DocumentFormat.TEXT,
    ".rst": DocumentFormat.TEXT,
    ".vtt": DocumentFormat.VTT,
    ".srt": DocumentFormat.SRT,
}

_CONTENT_TYPES: dict[str, DocumentFormat] = {
    **{f.value: f for f in DocumentFormat},
    "application/xhtml+xml": DocumentFormat.HTML,
    "text/x-markdown": DocumentFormat.MARKDOWN,
    "application/x-srt": DocumentFormat.SRT,
    "text/srt": DocumentFormat.SRT,
}


def format_for_name(name: str) -> DocumentFormat | None:
    return EXTENSIONS.get(PurePosixPath(name).suffix.lower())


def format_for_content_type(content_type: str | None) -> DocumentFormat | None:
    if not content_type:
        return None
    return _CONTENT_TYPES.get(content_type.split(";", 1)[0].strip().lower())


def detect_format(name: str, content_type: str | None = None) -> DocumentFormat | None:
    """The declared content type wins, except a generic one (plain text, octet-stream) defers to the name."""
    declared = format_for_content_type(content_type)
    by_name = format_for_name(name)
    if declared in (None, DocumentFormat.TEXT) and by_name is not None:
        return by_name
    return declared


def charset_of(content_type: str | None) -> str | None:
    """The ``charset`` parameter of a Content-Type header, if it names a codec Python knows."""
    for param in (content_type or "").split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip("\"'")
            try:
                return codecs.lookup(charset).name
            except LookupError:
                return None
    return None


def decode_text(data: bytes, charset: str | None = None) -> str:
    """Bytes -> text: BOM, then the declared charset, then UTF-8, then charset-normalizer.

    On short samples charset-normalizer often ranks a Baltic or Central European code page above
    windows-1252 for plain Western text, so windows-1252 (the WHATWG fallback for legacy content) is
    taken whenever charset-normalizer finds it acceptable; its own best guess is used otherwise.
    """
    if b"\x00" in data[:8192] and not data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise DocumentError("binary content (NUL bytes) in a text file")
    for bom, codec in (
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            return data.decode(codec, errors="replace")
    for declared in (charset, "utf-8"):
        if declared:
            try:
                return data.decode(declared)
            except (UnicodeDecodeError, LookupError):
                pass
    best = from_bytes(data, cp_isolation=["cp1252"]).best() or from_bytes(data).best()
    if best is None:
        raise DocumentError("cannot detect the text encoding (binary file?)")
    return str(best)
