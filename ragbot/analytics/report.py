"""The analytics report: one self-contained HTML file (charts as inline SVG, no script, nothing fetched at
view time) with the window's summary, activity, top questions, content gaps and sources.

Charts are matplotlib (SVG). The agent inbox opens the report from a blob: URL, and such a page inherits
the inbox's Content-Security-Policy (``style-src 'self'``: no ``<style>`` blocks, no ``style``
attributes). So the SVG is rewritten to carry its colours and fonts as presentation attributes, which are
not styles; the page's CSS is inlined for the file and, in reports the API serves, also linked from the
API's own origin (``stylesheet``); and tables carry HTML's ``border``/``cellpadding`` so the report stays
readable with no CSS at all. Namespace URIs, the DOCTYPE and the RDF metadata matplotlib writes are
dropped, so the only URLs in a ``ragbot report`` file are the links to conversations and cited web pages.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from markupsafe import Markup

from ragbot import __version__
from ragbot.analytics import views
from ragbot.analytics.topics import analyse, content_gaps_of, top_questions_of
from ragbot.analytics.windows import Window
from ragbot.db.models import utcnow

if TYPE_CHECKING:
    import jinja2
    from matplotlib.figure import Figure

    from ragbot.runtime import Runtime

__all__ = ["build_report", "collect", "conversation_link", "render", "stylesheet", "svg_for_html"]

TEMPLATES = Path(__file__).resolve().parent / "templates"
#: The report's colours: answered, not grounded, failed, handed to a person (colour-blind safe).
COLORS = {"answered": "#1b7837", "ungrounded": "#d95f02", "failed": "#b2182b", "other": "#7570b3"}
_INK = "#1f2937"
_GRID = "#e5e7eb"
_PRESENTATION = frozenset(
    {
        "fill",
        "fill-opacity",
        "fill-rule",
        "stroke",
        "stroke-width",
        "stroke-opacity",
        "stroke-linejoin",
        "stroke-linecap",
        "stroke-dasharray",
        "stroke-dashoffset",
        "stroke-miterlimit",
        "opacity",
        "font-family",
        "font-size",
        "font-weight",
        "font-style",
        "text-anchor",
        "dominant-baseline",
        "clip-path",
        "visibility",
        "display",
    }
)


# ------------------------------------------------------------------------------------------ data


def collect(runtime: Runtime, bot_id: str, window: Window, *, limit: int = 20) -> dict[str, Any]:
    """Everything the report shows, as plain data (the summary, series and sources views of
    ``ragbot.analytics.views``, and the topic views, computed once)."""
    sessions = runtime.session_factory
    bot = runtime.bots.get(bot_id) or {}
    analysis = analyse(runtime, bot_id, window.since, window.until)
    return {
        "bot": {"id": bot_id, "name": bot.get("name") or bot_id},
        "since": window.since,
        "until": window.until,
        "bucket": window.bucket,
        "summary": views.summary(sessions, bot_id, window),
        "timeseries": views.timeseries(sessions, bot_id, window),
        "sources": views.sources(sessions, bot_id, window),
        "top_questions": top_questions_of(analysis, limit),
        "content_gaps": content_gaps_of(analysis, limit),
        "questions": len(analysis.questions),
        "truncated": analysis.truncated,
    }


def build_report(
    runtime: Runtime,
    bot_id: str,
    window: Window,
    *,
    base_url: str | None = None,
    stylesheet_href: str | None = None,
    limit: int = 20,
    now: datetime | None = None,
) -> str:
    """The report as one HTML document. ``base_url``: where ragbot serves the agent inbox, for the
    links to conversations (None: conversation ids are shown without links). ``stylesheet_href``: also
    link the report's stylesheet from there (see ``stylesheet``)."""
    data = collect(runtime, bot_id, window, limit=limit)
    return render(data, base_url=base_url, stylesheet_href=stylesheet_href, now=now)


def stylesheet() -> str:
    """The report's CSS, inlined in every report. The API also serves it, and its reports link it: the
    inbox opens them from a blob: URL under its own CSP, which allows same-origin stylesheets only."""
    return (TEMPLATES / "report.css").read_text(encoding="utf-8")


def render(
    data: dict[str, Any],
    *,
    base_url: str | None = None,
    stylesheet_href: str | None = None,
    now: datetime | None = None,
) -> str:
    """``collect``'s data as HTML (pure apart from matplotlib; charts are drawn here)."""
    charts = {
        "activity": _chart(_activity_chart, data["timeseries"], "activity"),
        "top_questions": _chart(_top_questions_chart, data["top_questions"], "top-questions"),
        "content_gaps": _chart(_gaps_chart, data["content_gaps"], "content-gaps"),
        "sources": _chart(_sources_chart, data["sources"], "sources"),
    }
    template = _environment().get_template("report.html.j2")
    base = base_url.rstrip("/") if base_url else None
    return template.render(
        **data,
        charts=charts,
        stylesheet_href=stylesheet_href,
        generated_at=(now or utcnow()).strftime("%Y-%m-%d %H:%M UTC"),
        version=__version__,
        link=lambda conversation_id: conversation_link(base, conversation_id),
        source_href=_source_href,
        pct=_pct,
        day=_day,
    )


def conversation_link(base_url: str | None, conversation_id: str) -> str | None:
    """Where a conversation opens: the agent inbox, which reads ``#conversation=ID``."""
    if not base_url:
        return None
    return f"{base_url}/agent#conversation={quote(conversation_id, safe='')}"


def _source_href(url: str | None) -> str | None:
    """Only http(s) URLs become links; a file path is shown as text."""
    if not url:
        return None
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return None
    return url if scheme in ("http", "https") else None


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.0f}%"


def _day(iso: str) -> str:
    return iso[:16].replace("T", " ")


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


# ------------------------------------------------------------------------------------------ charts


@contextmanager
def _style(salt: str) -> Iterator[None]:
    """matplotlib settings for drawing and saving one chart. A fixed salt per chart keeps the SVG ids
    stable between runs and distinct between the charts of one page."""
    from matplotlib import rc_context

    with rc_context(
        {
            "svg.fonttype": "none",  # text stays text: smaller, selectable, searchable
            "svg.hashsalt": f"ragbot-{salt}",
            "font.size": 9,
            "axes.edgecolor": _GRID,
            "axes.labelcolor": _INK,
            "xtick.color": _INK,
            "ytick.color": _INK,
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    ):
        yield


def _figure(height: float) -> Figure:
    # A Figure, never pyplot: no global state, no GUI backend, safe in the API's worker threads; it
    # renders with the Agg-family SVG canvas.
    from matplotlib.figure import Figure

    return Figure(figsize=(8.0, height), layout="constrained")


def _chart(draw: Callable[[Any], Figure | None], data: Any, salt: str) -> Markup | None:
    with _style(salt):
        figure = draw(data)
        if figure is None:
            return None
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    return Markup(svg_for_html(buffer.getvalue()))  # noqa: S704 - our own SVG, rewritten by lxml


def svg_for_html(svg: str) -> str:
    """matplotlib's SVG as an inline ``<svg>`` element: no XML prolog, DOCTYPE, metadata, namespace
    declarations or ``<style>``; styles become presentation attributes (see the module docstring); the
    chart scales to the page's width."""
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    root = etree.fromstring(svg.encode(), parser)
    for element in list(root.iter()):
        if not isinstance(element.tag, str):  # comments, processing instructions
            element.getparent().remove(element)
            continue
        name = etree.QName(element).localname
        if name in ("metadata", "style"):
            element.getparent().remove(element)
            continue
        element.tag = name
        for attribute in list(element.attrib):
            local = etree.QName(attribute).localname
            if attribute != local:  # xlink:href -> href (SVG 2), other namespaced ones dropped
                value = element.attrib.pop(attribute)
                if local == "href":
                    element.set("href", value)
        style = element.attrib.pop("style", None)
        if style:
            kept = []
            for declaration in style.split(";"):
                prop, _, value = declaration.partition(":")
                prop, value = prop.strip(), value.strip()
                if prop in _PRESENTATION and value:
                    element.set(prop, value)
                elif prop and value:
                    kept.append(f"{prop}: {value}")
            if kept:
                element.set("style", "; ".join(kept))
    for defs in root.iter("defs"):
        if len(defs) == 0:
            defs.getparent().remove(defs)
    etree.cleanup_namespaces(root)
    # what matplotlib's <style> said for every element
    root.set("stroke-linejoin", "round")
    root.set("stroke-linecap", "butt")
    root.set("width", "100%")
    root.attrib.pop("height", None)
    root.set("role", "img")
    root.attrib.pop("version", None)
    text = etree.tostring(root, encoding="unicode")
    return re.sub(r"\s*\n\s*", "\n", text)


def _wrap(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def _activity_chart(series: dict[str, Any]) -> Figure | None:
    points = series.get("points") or []
    if not points or not any(p["answers"] for p in points):
        return None
    hourly = series.get("bucket") == "hour"
    labels = [p["t"][:13].replace("T", " ") + "h" if hourly else p["t"][:10] for p in points]
    stacks = [
        ("answered", [p["answered"] for p in points], COLORS["answered"]),
        (
            "not grounded",
            [p["ungrounded"] + p.get("partial_uncited", 0) for p in points],
            COLORS["ungrounded"],
        ),
        ("failed", [p["failed"] for p in points], COLORS["failed"]),
    ]
    from matplotlib.ticker import MaxNLocator

    fig = _figure(2.8)
    ax = fig.subplots()
    bottom = [0] * len(points)
    xs = list(range(len(points)))
    for label, values, color in stacks:
        ax.bar(xs, values, bottom=bottom, color=color, label=label, width=0.8)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    handed = [p["handed_off"] for p in points]
    if any(handed):
        ax.plot(xs, handed, color=COLORS["other"], marker="o", linewidth=1.5, label="handed to a person")
    step = max(1, len(xs) // 12)
    ax.set_xticks(xs[::step], [labels[i] for i in xs[::step]], rotation=30, ha="right")
    ax.set_ylabel("answers")
    ax.grid(axis="y", color=_GRID)
    ax.set_axisbelow(True)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(frameon=False, ncols=4, loc="lower left", bbox_to_anchor=(0, 1))
    return fig


def _horizontal(
    labels: Sequence[str], parts: Sequence[tuple[str, Sequence[float], str]], xlabel: str
) -> Figure:
    from matplotlib.ticker import MaxNLocator

    fig = _figure(0.9 + 0.32 * len(labels))
    ax = fig.subplots()
    ys = list(range(len(labels)))
    left = [0.0] * len(labels)
    for label, values, color in parts:
        ax.barh(ys, values, left=left, color=color, label=label, height=0.7)
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.set_yticks(ys, [_wrap(t) for t in labels])
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", color=_GRID)
    ax.set_axisbelow(True)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(frameon=False, ncols=len(parts), loc="lower right", bbox_to_anchor=(1, 1))
    return fig


def _top_questions_chart(items: list[dict[str, Any]]) -> Figure | None:
    if not items:
        return None
    shown = items[:15]
    return _horizontal(
        [i["representative"] for i in shown],
        [
            ("answered", [i["answered"] for i in shown], COLORS["answered"]),
            ("not answered", [i["count"] - i["answered"] for i in shown], COLORS["ungrounded"]),
        ],
        "questions asked",
    )


def _gaps_chart(items: list[dict[str, Any]]) -> Figure | None:
    if not items:
        return None
    shown = items[:15]
    return _horizontal(
        [i["representative"] for i in shown],
        [
            ("failed", [i["failed"] for i in shown], COLORS["failed"]),
            ("answered", [i["count"] - i["failed"] for i in shown], COLORS["answered"]),
        ],
        "questions asked (score = failed)",
    )


def _sources_chart(data: dict[str, Any]) -> Figure | None:
    documents = [d for d in data.get("documents", []) if d["retrieved"] or d["cited"]][:12]
    if not documents:
        return None
    return _horizontal(
        [d["title"] or d["uri"] for d in documents],
        [
            ("cited", [d["cited"] for d in documents], COLORS["answered"]),
            ("retrieved, not cited", [d["retrieved"] - d["cited"] for d in documents], "#9ca3af"),
        ],
        "answers",
    )
