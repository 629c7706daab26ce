"""File and upload connectors over a temporary folder: change detection, removals, per-file failures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fixtures.documents import make_pdf

from connectors.base import Failed, Fetched, Gone, KnownDocument, Unchanged
from connectors.files import FileConnector, Upload, UploadConnector, upload_uri

pytestmark = pytest.mark.unit


def by_type(results: list) -> dict[str, set[str]]:
    grouped: dict[str, set[str]] = {}
    for r in results:
        uri = r.document.uri if isinstance(r, Fetched) else r.uri
        grouped.setdefault(type(r).__name__, set()).add(Path(uri).name)
    return grouped


def known_from(results: list) -> dict[str, KnownDocument]:
    return {
        r.document.uri: KnownDocument(r.document.uri, "hash", r.document.etag, r.document.last_modified)
        for r in results
        if isinstance(r, Fetched)
    }


def test_folder_sync_detects_unchanged_changed_removed_and_bad_files(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# A\nalpha")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("beta")
    (tmp_path / "sub" / "c.pdf").write_bytes(make_pdf(["gamma page"]))
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.7 garbage")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "big.txt").write_text("x" * 5000)
    (tmp_path / "image.png").write_bytes(b"\x89PNG")  # unsupported: ignored in a folder
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "secret.md").write_text("nope")

    connector = FileConnector(tmp_path, max_bytes=1000)
    first = list(connector.fetch({}))
    assert by_type(first) == {
        "Fetched": {"a.md", "b.txt", "c.pdf"},
        "Failed": {"broken.pdf", "empty.txt", "big.txt"},
    }
    reasons = {Path(r.uri).name: r.reason for r in first if isinstance(r, Failed)}
    assert "malformed PDF" in reasons["broken.pdf"]
    assert reasons["empty.txt"] == "empty file"
    assert "over the 1000-byte limit" in reasons["big.txt"]
    assert connector.expected_total == 6
    assert connector.scope == str(tmp_path.resolve())

    known = known_from(first)
    b = tmp_path / "sub" / "b.txt"
    b.write_text("beta, edited")
    os.utime(b, ns=(b.stat().st_atime_ns, b.stat().st_mtime_ns + 10_000_000))
    (tmp_path / "a.md").unlink()
    second = list(FileConnector(tmp_path, max_bytes=1000).fetch(known))
    grouped = by_type(second)
    assert grouped["Unchanged"] == {"c.pdf"}
    assert grouped["Fetched"] == {"b.txt"}
    assert grouped["Gone"] == {"a.md"}
    assert all(isinstance(r, Unchanged | Fetched | Gone | Failed) for r in second)


def test_single_file_and_missing_paths(tmp_path: Path) -> None:
    target = tmp_path / "notes.md"
    target.write_text("# Notes\nhello")
    (result,) = FileConnector(target, max_bytes=1000).fetch({})
    assert isinstance(result, Fetched)
    assert result.document.title == "Notes"
    assert result.document.uri == str(target.resolve())
    (tmp_path / "tool.exe").write_bytes(b"MZ")
    (failed,) = FileConnector(tmp_path / "tool.exe", max_bytes=1000).fetch({})
    assert isinstance(failed, Failed)
    assert "unsupported file type" in failed.reason
    with pytest.raises(FileNotFoundError):
        FileConnector(tmp_path / "nope", max_bytes=1000)


def test_uploads_parse_by_name_and_fail_per_file() -> None:
    connector = UploadConnector(
        [
            Upload("../../etc/handbook.pdf", make_pdf(["page one", "page two"])),
            Upload("C:\\Users\\me\\notes.md", b"# Notes\nhello"),
            Upload("huge.txt", b"x" * 2000),
            Upload("bad.docx", b"not a zip"),
        ],
        max_bytes=1500,
    )
    results = list(connector.fetch({}))
    assert [type(r).__name__ for r in results] == ["Fetched", "Fetched", "Failed", "Failed"]
    assert results[0].document.uri == "upload:handbook.pdf"
    assert [s.page for s in results[0].document.segments] == [1, 2]
    assert results[1].document.uri == "upload:notes.md"
    assert upload_uri("") == "upload:upload"
