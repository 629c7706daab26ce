"""Citation markers parsed out of a streamed answer.

The model is asked to cite sources as ``[n]``. Tokens arrive in arbitrary slices, so a marker can be
split across deltas (``"[" + "2]"``); the parser holds back only the shortest tail that could still
become a marker and emits everything else at once.

Accepted forms, all rewritten to the canonical ``[n]`` so that the visible text and the stored
citations always agree:

* ``[2]``                 one source
* ``[1, 3]`` / ``[1,3]``  several sources in one bracket, shown as ``[1][3]``
* ``[1][3]``              adjacent markers (two ordinary markers)
* ``[^2]``                footnote style, which small models often produce, shown as ``[2]``

A number outside ``1..num_sources`` points at no source the model was given: it is removed from the
visible text (with the space before it) and logged, never shown. Anything else in brackets
(``[link](url)``, ``[sic]``, ``[2024]`` years beyond three digits) passes through untouched.
"""

from __future__ import annotations

import logging
import re

logger = logging.getLogger(__name__)

__all__ = ["CitationStreamParser", "strip_citations"]

_NUM = r"\^?\s*(?:\d{1,3})"
_MARKER = re.compile(rf"\[\s*{_NUM}(?:\s*,\s*{_NUM})*\s*\]")
# What a marker can look like before its closing bracket arrives.
_OPEN_PREFIX = re.compile(r"\[\s*\^?\s*(?:\d{1,3}(?:\s*,\s*\^?\s*(?:\d{1,3})?)*)?\s*")
_MAX_PENDING_MARKER = 48


class CitationStreamParser:
    """Incremental ``[n]`` marker filter for one answer with ``num_sources`` numbered sources."""

    def __init__(self, num_sources: int) -> None:
        if num_sources < 0:
            raise ValueError("num_sources must be >= 0")
        self.num_sources = num_sources
        self._pending = ""
        self._cited: list[int] = []
        self._dropped: list[int] = []

    @property
    def cited(self) -> list[int]:
        """Valid source numbers in the order they were first cited."""
        return list(self._cited)

    @property
    def dropped(self) -> list[int]:
        """Out-of-range numbers removed from the text, in first-seen order."""
        return list(self._dropped)

    def feed(self, delta: str) -> str:
        """Add a streamed delta; return the text that is safe to show now."""
        self._pending += delta
        return self._drain(final=False)

    def finish(self) -> str:
        """Flush the held-back tail at the end of the stream (an unfinished ``[3`` is shown as is)."""
        return self._drain(final=True)

    def _drain(self, *, final: bool) -> str:
        buf = self._pending
        out: list[str] = []
        pos = 0
        while True:
            open_at = buf.find("[", pos)
            if open_at < 0:
                break
            marker = _MARKER.match(buf, open_at)
            if marker:
                out.append(buf[pos:open_at])
                out.append(self._render(marker.group(0), out))
                pos = marker.end()
                continue
            if not final and _may_become_marker(buf[open_at:]):
                # Hold back the bracket and the whitespace before it, which goes if the marker is dropped.
                held_from = len(buf[:open_at].rstrip())
                held_from = max(held_from, pos)
                out.append(buf[pos:held_from])
                self._pending = buf[held_from:]
                return "".join(out)
            out.append(buf[pos : open_at + 1])
            pos = open_at + 1
        tail = buf[pos:]
        if final:
            out.append(tail)
            self._pending = ""
        else:
            # Trailing whitespace waits for the next delta: a dropped marker may follow it.
            keep = len(tail.rstrip())
            out.append(tail[:keep])
            self._pending = tail[keep:]
        return "".join(out)

    def _render(self, marker: str, out: list[str]) -> str:
        numbers = [int(n) for n in re.findall(r"\d+", marker)]
        valid: list[int] = []
        for n in numbers:
            if 1 <= n <= self.num_sources:
                valid.append(n)
                if n not in self._cited:
                    self._cited.append(n)
            else:
                if n not in self._dropped:
                    self._dropped.append(n)
                logger.warning(
                    "dropped citation marker [%d]: the answer had %d source(s)", n, self.num_sources
                )
        if not valid:
            _strip_trailing_space(out)
            return ""
        return "".join(f"[{n}]" for n in valid)


def _may_become_marker(tail: str) -> bool:
    if len(tail) > _MAX_PENDING_MARKER:
        return False
    match = _OPEN_PREFIX.match(tail)
    return match is not None and match.end() == len(tail)


def _strip_trailing_space(out: list[str]) -> None:
    while out:
        stripped = out[-1].rstrip(" \t")
        if stripped:
            out[-1] = stripped
            return
        out.pop()


def strip_citations(text: str, num_sources: int) -> tuple[str, list[int], list[int]]:
    """Parse a complete answer at once: ``(visible_text, cited, dropped)``."""
    parser = CitationStreamParser(num_sources)
    visible = parser.feed(text) + parser.finish()
    return visible, parser.cited, parser.dropped
