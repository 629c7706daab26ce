"""Document parsers on real files built in memory: structure, page/time metadata, and clear failures."""

from __future__ import annotations

import pytest
from fixtures.documents import encrypt_pdf, make_docx, make_pdf

from connectors.documents import DocumentError, DocumentFormat, detect_format, parse_document, parse_html

pytestmark = pytest.mark.unit

PAGE = b"""<!doctype html><html lang="en-GB"><head><title>Widget Pricing | ACME</title><base href="/docs/">
<link rel="canonical" href="/pricing"></head>
<body><nav><a href="/">Home</a> <a href="about.html#team">About</a> <a href="mailto:x@y.z">Mail</a>
<a rel="nofollow" href="/login">Login</a> <a href="https://other.test/x">Elsewhere</a></nav>
<main><h1>Widget Pricing</h1><p>The blue widget costs 42 euros per month and includes unlimited sprockets.</p>
<h2>Enterprise plan</h2><p>Enterprise customers get a dedicated sprocket manager and single sign-on.</p>
<ul><li>First item</li><li>Second item</li></ul><h3>Billing</h3><p>Invoices are sent monthly.</p>
<table><tr><td>Plan</td><td>Price</td></tr><tr><td>Basic</td><td>10</td></tr></table></main>
<footer>Copyright ACME</footer></body></html>"""


def test_html_main_content_sections_and_crawl_metadata() -> None:
    page = parse_html(PAGE, uri="https://acme.test/docs/pricing?ref=1", fallback_title="pricing")
    doc = page.document
    assert doc.title == "Widget Pricing"
    assert doc.language == "en"
    assert page.canonical == "https://acme.test/pricing"
    assert page.links == ("https://acme.test/", "https://acme.test/docs/about.html", "https://other.test/x")
    assert [s.heading_path for s in doc.segments] == [
        ("Widget Pricing",),
        ("Widget Pricing", "Enterprise plan"),
        ("Widget Pricing", "Enterprise plan", "Billing"),
    ]
    assert "- Second item" in doc.segments[1].text
    assert "Basic | 10" in doc.segments[2].text
    assert "Copyright" not in doc.text  # boilerplate dropped
    assert not page.noindex


def test_html_robots_meta_directives() -> None:
    page = parse_html(
        PAGE.replace(b"</head>", b'<meta name="robots" content="noindex, nofollow"></head>'),
        uri="https://acme.test/docs/pricing",
        fallback_title="pricing",
    )
    assert page.noindex
    assert page.nofollow
    assert page.links == ()


def test_html_declared_charset_is_used() -> None:
    html = "<html><head><title>Café</title></head><body><p>Réponse déjà là.</p></body></html>"
    doc = parse_document(
        html.encode("latin-1"), uri="/c.html", name="c.html", content_type="text/html; charset=ISO-8859-1"
    )
    assert doc.text == "Réponse déjà là."
    assert doc.title == "Café"


def test_pdf_pages_and_outline_headings() -> None:
    data = make_pdf(
        ["Harbor lanterns glow.", "", "Copper sprockets spin.", "Quartz ledgers balance."],
        title="Handbook",
        bookmarks=["Intro", "", "", "Appendix"],
    )
    doc = parse_document(data, uri="/h.pdf", name="h.pdf")
    assert doc.title == "Handbook"
    assert doc.mime_type == DocumentFormat.PDF.value
    assert [(s.page, s.heading_path) for s in doc.segments] == [
        (1, ("Intro",)),
        (3, ("Intro",)),
        (4, ("Appendix",)),
    ]  # the blank page 2 has no text, and page numbers keep counting
    assert doc.segments[1].text == "Copper sprockets spin."


def test_docx_headings_and_tables() -> None:
    data = make_docx(
        [
            ("title", "Guide"),
            ("p", "Intro paragraph."),
            ("h1", "Setup"),
            ("p", "Install it."),
            ("h2", "Linux"),
            ("table", "os,command;debian,apt install"),
            ("h1", "Usage"),
            ("p", "Run it."),
        ]
    )
    doc = parse_document(data, uri="/g.docx", name="g.docx")
    assert doc.title == "Guide"
    assert [s.heading_path for s in doc.segments] == [
        ("Guide",),
        ("Guide", "Setup"),
        ("Guide", "Setup", "Linux"),
        ("Guide", "Usage"),
    ]
    assert "debian | apt install" in doc.segments[2].text


def test_markdown_heading_path_front_matter_and_code_fences() -> None:
    text = (
        b"---\ntitle: My Doc\n---\n# Top\nintro\n\n```\n# not a heading\n```\n"
        b"## Sub\ntext\n### Deep\nmore\n## Next\nend\n"
    )
    doc = parse_document(text, uri="/m.md", name="m.md")
    assert doc.title == "My Doc"
    assert [s.heading_path for s in doc.segments] == [
        ("Top",),
        ("Top", "Sub"),
        ("Top", "Sub", "Deep"),
        ("Top", "Next"),
    ]
    assert "# not a heading" in doc.segments[0].text


def test_vtt_cues_carry_timestamps_and_speakers() -> None:
    vtt = (
        b"WEBVTT\n\n00:00:01.000 --> 00:00:04.500\n<v Alice>Hello there\n\n"
        b"01:02:03.250 --> 01:02:05.000\nline one\nline two\n"
    )
    doc = parse_document(vtt, uri="/talk.vtt", name="talk.vtt")
    assert [(s.start_s, s.end_s, s.text) for s in doc.segments] == [
        (1.0, 4.5, "Alice: Hello there"),
        (3723.25, 3725.0, "line one line two"),
    ]


def test_srt_in_a_legacy_encoding() -> None:
    srt = "1\n00:00:01,000 --> 00:00:02,000\nBonjour à tous\n\n2\n00:00:03,500 --> 00:00:07,000\nDeuxième\n"
    doc = parse_document(srt.encode("cp1252"), uri="/fr.srt", name="fr.srt")
    assert [(s.start_s, s.end_s, s.text) for s in doc.segments] == [
        (1.0, 2.0, "Bonjour à tous"),
        (3.5, 7.0, "Deuxième"),
    ]


@pytest.mark.parametrize(
    ("raw", "encoding"),
    [
        ("Grüße aus München, schöne Größe und süße Äpfel.", "cp1252"),
        ("Привет мир, это тестовый текст на русском языке.", "cp1251"),
        ("Zażółć gęślą jaźń, to jest polski tekst.", "utf-8"),
        ("Plain ascii text.", "utf-16"),
    ],
)
def test_plain_text_encoding_detection(raw: str, encoding: str) -> None:
    data = raw.encode(encoding) if encoding != "utf-16" else raw.encode("utf-16")  # utf-16 writes a BOM
    assert parse_document(data, uri="/t.txt", name="t.txt").text == raw


@pytest.mark.parametrize(
    ("data", "name", "reason"),
    [
        (b"", "empty.txt", "empty file"),
        (b"  \n\t ", "blank.md", "empty file"),
        (b"\x00\x01\x02\x03 binary", "bin.txt", "binary content"),
        (b"not a transcript", "x.vtt", "malformed VTT"),
        (b"%PDF-1.4 truncated", "t.pdf", "malformed PDF"),
        (b"PK\x03\x04 truncated zip", "t.docx", "malformed DOCX"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100, "enc.docx", "encrypted DOCX"),
        (b"MZ\x90\x00", "tool.exe", "unsupported file type"),
        (b"<html><body><script>x()</script></body></html>", "empty.html", "no readable text"),
    ],
)
def test_bad_files_fail_with_a_clear_reason(data: bytes, name: str, reason: str) -> None:
    with pytest.raises(DocumentError, match=reason):
        parse_document(data, uri=f"/{name}", name=name)


def test_encrypted_and_image_only_pdfs_fail_clearly() -> None:
    with pytest.raises(DocumentError, match="encrypted PDF"):
        parse_document(encrypt_pdf(make_pdf(["secret"])), uri="/e.pdf", name="e.pdf")
    with pytest.raises(DocumentError, match="no extractable text"):
        parse_document(make_pdf(["", ""]), uri="/scan.pdf", name="scan.pdf")


def test_format_detection_prefers_a_specific_content_type() -> None:
    assert detect_format("page", "text/html; charset=utf-8") is DocumentFormat.HTML
    assert detect_format("notes.md", "text/plain") is DocumentFormat.MARKDOWN
    assert detect_format("subs.srt", "application/octet-stream") is DocumentFormat.SRT
    assert detect_format("report.pdf", None) is DocumentFormat.PDF
    assert detect_format("archive.zip", None) is None


def test_html_links_read_backslashes_as_a_browser_does() -> None:
    """A web link's backslashes are path slashes (the URL standard for http and https), so ``href="\\"``
    is the site root, not a page named ``%5C`` that 404s; in the query they stay as written."""
    page = parse_html(
        b'<html><body><main><p>Some text here.</p><a href="\\">Top</a> <a href="a\\b.html?q=x\\y">B</a>'
        b"</main></body></html>",
        uri="https://acme.test/docs/page.html",
        fallback_title="page",
    )
    assert page.links == ("https://acme.test/", "https://acme.test/docs/a/b.html?q=x\\y")
