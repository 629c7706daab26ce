"""The backup archive: one uncompressed tar holding ``manifest.json`` first, then gzip-compressed JSON-lines
members (``sql/<table>.jsonl.gz``, ``index/points.jsonl.gz``).

Why this shape: a tar is one file an operator can copy anywhere; the manifest comes first so a restore
refuses a wrong archive (format, schema revision) before it reads the data; each member's SHA-256 is in the
manifest, so a truncated or altered archive is refused before anything is written. Members are read
straight from the tar, never extracted to disk, so names inside it cannot point outside a directory.
The archive is written beside its final path and renamed into place only when complete, so a crash never
leaves a half archive under the name an operator will restore from.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, Any

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "ArchiveError",
    "ArchiveReader",
    "ArchiveWriter",
    "Manifest",
    "TargetExistsError",
]

FORMAT = "ragbot-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_CHUNK = 1 << 20


class ArchiveError(ValueError):
    """The file is not a complete ragbot backup archive; the message says what is wrong."""


class TargetExistsError(FileExistsError):
    """A backup never overwrites a file."""


@dataclass(slots=True)
class Manifest:
    """What the archive holds and what made it; ``files`` maps member name to its SHA-256 and size."""

    created_at: str
    ragbot_version: str
    schema_revision: list[str]
    database_backend: str
    tables: dict[str, int]
    index_backend: str
    collection: str
    points: int
    dense_dim: int | None
    bm25: bool
    files: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> bytes:
        body = {"format": FORMAT, "format_version": FORMAT_VERSION}
        body.update({f.name: getattr(self, f.name) for f in fields(self)})
        return json.dumps(body, indent=2, sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise ArchiveError(f"{MANIFEST} is not JSON: {exc}") from None
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            raise ArchiveError(f"{MANIFEST} does not describe a {FORMAT} archive")
        if body.get("format_version") != FORMAT_VERSION:
            raise ArchiveError(
                f"archive format version {body.get('format_version')!r}; this ragbot reads version "
                f"{FORMAT_VERSION}: restore it with the ragbot version that wrote it"
            )
        try:
            return cls(**{f.name: body[f.name] for f in fields(cls)})
        except (KeyError, TypeError) as exc:
            raise ArchiveError(f"{MANIFEST} lacks or mistypes {exc}") from None


class ArchiveWriter:
    """Stage members in a directory beside ``path``, then ``commit`` the tar; ``abort`` removes the stage."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if self.path.exists():
            raise TargetExistsError(f"{self.path} exists: a backup never overwrites a file; pick a new path")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._stage = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        self._members: list[str] = []

    @property
    def stage(self) -> Path:
        """A scratch directory on the same disk as the archive (for a database copy, say)."""
        return self._stage

    @contextmanager
    def lines(self, name: str) -> Iterator[IO[str]]:
        """Write one gzip-compressed text member, a line at a time."""
        target = self._stage / "members" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(target, "wt", encoding="utf-8", compresslevel=6) as out:
            yield out
        self._members.append(name)

    def commit(self, manifest: Manifest) -> None:
        """Checksum the members into ``manifest``, write the tar beside ``path``, fsync, rename into place."""
        for name in self._members:
            manifest.files[name] = _digest(self._stage / "members" / name)
        partial = self._stage / "archive.tar"
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            raw = manifest.to_json()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mtime, info.mode = len(raw), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(raw))
            for name in self._members:
                tar.add(self._stage / "members" / name, arcname=name, recursive=False)
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        if self.path.exists():  # appeared while we worked: still never overwrite
            raise TargetExistsError(f"{self.path} appeared during the backup; the archive was not written")
        os.replace(partial, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a crash
        finally:
            os.close(directory)
        self.abort()

    def abort(self) -> None:
        shutil.rmtree(self._stage, ignore_errors=True)


class ArchiveReader:
    """An archive opened for restore: the manifest read and every member's checksum verified up front."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ArchiveError(f"{self.path} is not a file")
        try:
            self._tar = tarfile.open(self.path, "r:")  # noqa: SIM115 - closed by close()
        except (tarfile.TarError, OSError) as exc:
            raise ArchiveError(f"{self.path} is not a ragbot backup archive (not a tar: {exc})") from None
        try:
            self.manifest = self._read_manifest()
            self._verify()
        except BaseException:
            self._tar.close()
            raise

    def _read_manifest(self) -> Manifest:
        members = {m.name: m for m in self._tar.getmembers()}
        if MANIFEST not in members:
            raise ArchiveError(f"{self.path} has no {MANIFEST}: not a ragbot backup archive")
        manifest = Manifest.from_json(self._read(members[MANIFEST]).read())
        unexpected = set(members) - set(manifest.files) - {MANIFEST}
        missing = set(manifest.files) - set(members)
        if missing or unexpected:
            raise ArchiveError(
                f"{self.path} does not match its manifest (missing {sorted(missing)}, "
                f"unexpected {sorted(unexpected)}): the archive is incomplete or was altered"
            )
        self._members = members
        return manifest

    def _verify(self) -> None:
        for name, expected in self.manifest.files.items():
            digest = hashlib.sha256()
            size = 0
            source = self._read(self._members[name])
            while block := source.read(_CHUNK):
                digest.update(block)
                size += len(block)
            if digest.hexdigest() != expected.get("sha256") or size != expected.get("bytes"):
                raise ArchiveError(
                    f"{self.path}: member {name} fails its checksum: the archive is damaged or was altered"
                )

    def _read(self, member: tarfile.TarInfo) -> IO[bytes]:
        if not member.isfile():
            raise ArchiveError(f"{self.path}: member {member.name} is not a regular file")
        source = self._tar.extractfile(member)
        if source is None:  # pragma: no cover - isfile() members always have a body
            raise ArchiveError(f"{self.path}: member {member.name} cannot be read")
        return source

    def has(self, name: str) -> bool:
        return name in self.manifest.files

    def lines(self, name: str) -> Iterator[str]:
        """The lines of a gzip member (verified when the archive was opened)."""
        try:
            with gzip.open(self._read(self._members[name]), "rt", encoding="utf-8") as text:
                for line in text:
                    if line.strip():
                        yield line
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise ArchiveError(f"{self.path}: member {name} is not gzip-compressed text: {exc}") from None

    def close(self) -> None:
        self._tar.close()

    def __enter__(self) -> ArchiveReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _digest(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return {"sha256": digest.hexdigest(), "bytes": path.stat().st_size}
