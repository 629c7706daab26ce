"""Local files and folders, and files uploaded through the API.

A file's identity is its absolute path. Size + mtime stand in for an ETag, so an untouched file is
``Unchanged`` without being read; a known file that is no longer in the folder is ``Gone``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path, PurePosixPath, PureWindowsPath

from connectors.base import Failed, Fetched, FetchResult, Gone, KnownDocument, Unchanged
from connectors.documents import EXTENSIONS, DocumentError, parse_document


def _too_large(size: int, limit: int) -> str:
    return f"file is {size} bytes, over the {limit}-byte limit"


class FileConnector:
    """A file or a folder (recursive; hidden files and folders skipped, unsupported types ignored)."""

    kind = "files"

    def __init__(self, path: str | Path, *, max_bytes: int) -> None:
        root = Path(path).expanduser()
        if not root.exists():
            raise FileNotFoundError(f"no such file or folder: {path}")
        self.root = root.resolve()
        self.max_bytes = max_bytes
        self._total: int | None = None

    @property
    def scope(self) -> str:
        return str(self.root)

    @property
    def expected_total(self) -> int | None:
        return self._total

    def _candidates(self) -> list[Path]:
        if self.root.is_file():
            return [self.root]
        found = []
        for folder, dirs, files in os.walk(self.root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if not name.startswith(".") and PurePosixPath(name).suffix.lower() in EXTENSIONS:
                    found.append(Path(folder) / name)
        return found

    def fetch(self, known: Mapping[str, KnownDocument]) -> Iterator[FetchResult]:
        candidates = self._candidates()
        self._total = len(candidates)
        seen: set[str] = set()
        for path in candidates:
            uri = str(path)
            seen.add(uri)
            yield self._fetch_one(path, uri, known.get(uri))
        prefix = str(self.root) + os.sep
        for uri in known:
            if uri not in seen and (uri == str(self.root) or uri.startswith(prefix)):
                yield Gone(
                    uri, "file no longer exists" if not Path(uri).exists() else "file no longer ingested"
                )

    def _fetch_one(self, path: Path, uri: str, known: KnownDocument | None) -> FetchResult:
        try:
            stat = path.stat()
            if stat.st_size > self.max_bytes:
                return Failed(uri, _too_large(stat.st_size, self.max_bytes))
            stamp = f"{stat.st_size}-{stat.st_mtime_ns}"
            if known is not None and known.etag == stamp:
                return Unchanged(uri)
            data = path.read_bytes()
        except OSError as exc:
            return Failed(uri, f"cannot read file: {exc.strerror or exc}")
        try:
            document = parse_document(data, uri=uri, name=path.name)
        except DocumentError as exc:
            return Failed(uri, str(exc))
        modified = format_datetime(datetime.fromtimestamp(stat.st_mtime, UTC), usegmt=True)
        return Fetched(replace(document, etag=stamp, last_modified=modified))


@dataclass(frozen=True, slots=True)
class Upload:
    filename: str
    data: bytes
    content_type: str | None = None


def upload_uri(filename: str) -> str:
    """``upload:<name>``: uploading a file with the same name again replaces it (a re-sync of that file)."""
    name = PureWindowsPath(PurePosixPath(filename).name).name.strip() or "upload"
    return f"upload:{name}"


class UploadConnector:
    """Files posted to the API. Never reports ``Gone``: earlier uploads stay until deleted explicitly."""

    kind = "upload"

    def __init__(self, uploads: Sequence[Upload], *, max_bytes: int, scope: str = "uploads") -> None:
        self.uploads = tuple(uploads)
        self.max_bytes = max_bytes
        self._scope = scope

    @property
    def scope(self) -> str:
        return self._scope

    @property
    def expected_total(self) -> int | None:
        return len(self.uploads)

    def fetch(self, known: Mapping[str, KnownDocument]) -> Iterator[FetchResult]:
        for upload in self.uploads:
            uri = upload_uri(upload.filename)
            if len(upload.data) > self.max_bytes:
                yield Failed(uri, _too_large(len(upload.data), self.max_bytes))
                continue
            try:
                document = parse_document(
                    upload.data, uri=uri, name=uri.removeprefix("upload:"), content_type=upload.content_type
                )
            except DocumentError as exc:
                yield Failed(uri, str(exc))
                continue
            yield Fetched(document)
