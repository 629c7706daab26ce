"""WebVTT and SRT transcripts: one segment per cue with its time span, so citations can point into a video."""

from __future__ import annotations

import io
import re

import webvtt
from webvtt.errors import MalformedCaptionError, MalformedFileError

from connectors.documents.base import DocumentError, DocumentFormat
from ragbot.types import Segment, SourceDocument

_WHITESPACE = re.compile(r"\s+")


def parse_transcript(text: str, *, uri: str, fallback_title: str, fmt: DocumentFormat) -> SourceDocument:
    kind = "srt" if fmt is DocumentFormat.SRT else "vtt"
    try:
        captions = webvtt.from_buffer(io.StringIO(text.replace("\r\n", "\n")), format=kind).captions
    except (MalformedFileError, MalformedCaptionError) as exc:
        raise DocumentError(f"malformed {kind.upper()} transcript: {exc or 'no valid cue'}") from exc
    segments = []
    for caption in captions:
        cue = _WHITESPACE.sub(" ", caption.text).strip()
        if caption.voice:
            cue = f"{caption.voice}: {cue}"
        if cue:
            segments.append(
                Segment(
                    text=cue,
                    start_s=caption.start_time.in_milliseconds() / 1000,
                    end_s=caption.end_time.in_milliseconds() / 1000,
                )
            )
    return SourceDocument(uri=uri, title=fallback_title, segments=tuple(segments), mime_type=fmt.value)
