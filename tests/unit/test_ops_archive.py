"""The backup archive's format on its own: points as JSON lines, the tar with its manifest and checksums,
and every refusal a damaged or foreign file gets (``ragbot.ops.archive``, ``ragbot.ops.vectors``)."""

from __future__ import annotations

import io
import json
import math
import tarfile
from pathlib import Path

import pytest

from ragbot.ops.archive import (
    MANIFEST,
    ArchiveError,
    ArchiveReader,
    ArchiveWriter,
    Manifest,
    TargetExistsError,
)
from ragbot.ops.vectors import PointLineError, decode_point, encode_point
from ragbot.types import Chunk, EncodedChunk, SparseVector


def _point(bm25: bool = True) -> EncodedChunk:
    chunk = Chunk(
        id="c1",
        bot_id="bot-a",
        source_id="doc-1",
        uri="https://example.com/refunds",
        title="Refunds",
        text="Refunds are paid within 14 days. Ünïcode too.",
        chunk_index=2,
        heading_path=("Policies", "Refunds"),
        page=3,
        char_start=10,
        char_end=55,
    )
    dense = (0.1, -0.25, 1 / 3, math.pi)
    return EncodedChunk(
        chunk,
        SparseVector((7, 30521), (0.5, 1.25)),
        dense,
        SparseVector((4_000_000_000,), (2.0,)) if bm25 else None,
    )


def _f32(values: tuple[float, ...]) -> tuple[float, ...]:
    import struct

    return struct.unpack(f"{len(values)}f", struct.pack(f"{len(values)}f", *values))


@pytest.mark.parametrize("bm25", [True, False])
def test_a_point_survives_its_line_bit_for_bit_at_float32(bm25: bool) -> None:
    item = _point(bm25)
    back = decode_point(encode_point(item))
    assert back.chunk == item.chunk
    assert back.dense == _f32(item.dense)
    assert back.sparse == SparseVector(item.sparse.indices, _f32(item.sparse.values))
    assert (back.bm25 is None) == (not bm25)
    assert "\n" not in encode_point(item)


@pytest.mark.parametrize(
    "line",
    ["", "not json", "{}", '{"payload": {}, "dense": "", "sparse": null, "bm25": null}', "[1, 2]"],
)
def test_a_line_that_is_not_a_point_is_refused(line: str) -> None:
    with pytest.raises(PointLineError):
        decode_point(line)


def _manifest() -> Manifest:
    return Manifest(
        created_at="2026-01-01T00:00:00+00:00",
        ragbot_version="0.1.0",
        schema_revision=["0008"],
        database_backend="sqlite",
        tables={"bots": 1},
        index_backend="qdrant-edge",
        collection="ragbot",
        points=1,
        dense_dim=4,
        bm25=True,
    )


def _write(path: Path) -> Manifest:
    writer = ArchiveWriter(path)
    with writer.lines("sql/bots.jsonl.gz") as out:
        out.write('{"id": "bot-a"}\n')
    with writer.lines("index/points.jsonl.gz") as out:
        out.write(encode_point(_point()) + "\n")
    manifest = _manifest()
    writer.commit(manifest)
    return manifest


def test_an_archive_reads_back_with_its_manifest_first(tmp_path: Path) -> None:
    path = tmp_path / "b.tar"
    written = _write(path)
    with tarfile.open(path) as tar:
        assert tar.getnames()[0] == MANIFEST
    assert [p.name for p in tmp_path.iterdir()] == ["b.tar"]  # the staging directory is gone
    with ArchiveReader(path) as archive:
        assert archive.manifest == written
        assert list(archive.lines("sql/bots.jsonl.gz")) == ['{"id": "bot-a"}\n']
        assert decode_point(next(archive.lines("index/points.jsonl.gz"))).chunk.id == "c1"


def test_a_backup_never_overwrites_a_file(tmp_path: Path) -> None:
    path = tmp_path / "b.tar"
    path.write_text("precious")
    with pytest.raises(TargetExistsError, match="never overwrites"):
        ArchiveWriter(path)
    assert path.read_text() == "precious"


def _rewrite(source: Path, target: Path, change: dict[str, bytes | None]) -> None:
    """Copy a tar, replacing (bytes) or dropping (None) some members."""
    with tarfile.open(source) as tar, tarfile.open(target, "w") as out:
        for member in tar.getmembers():
            if member.name in change:
                body = change[member.name]
                if body is None:
                    continue
                member.size = len(body)
                out.addfile(member, io.BytesIO(body))
            else:
                out.addfile(member, tar.extractfile(member))


def _manifest_body(path: Path) -> dict[str, object]:
    with tarfile.open(path) as tar:
        member = tar.extractfile(MANIFEST)
        assert member is not None
        body: dict[str, object] = json.loads(member.read())
        return body


def test_damaged_or_foreign_files_are_refused_with_the_reason(tmp_path: Path) -> None:
    good = tmp_path / "good.tar"
    _write(good)
    manifest = _manifest_body(good)

    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"this is not a tar file at all" * 40)
    with pytest.raises(ArchiveError, match="not a tar"):
        ArchiveReader(garbage)

    with pytest.raises(ArchiveError, match="is not a file"):
        ArchiveReader(tmp_path / "missing.tar")

    cases: dict[str, tuple[dict[str, bytes | None], str]] = {
        "no-manifest": ({MANIFEST: None}, "no manifest.json"),
        "missing-member": ({"sql/bots.jsonl.gz": None}, "does not match its manifest"),
        "tampered": ({"sql/bots.jsonl.gz": b"\x1f\x8b tampered"}, "fails its checksum"),
        "not-json": ({MANIFEST: b"{nope"}, "not JSON"),
        "foreign": ({MANIFEST: json.dumps({"format": "other"}).encode()}, "does not describe"),
        "future": (
            {MANIFEST: json.dumps({**manifest, "format_version": 99}).encode()},
            "format version 99",
        ),
        "incomplete-manifest": (
            {MANIFEST: json.dumps({"format": "ragbot-backup", "format_version": 1}).encode()},
            "lacks or mistypes",
        ),
    }
    for name, (change, reason) in cases.items():
        bad = tmp_path / f"{name}.tar"
        _rewrite(good, bad, change)
        with pytest.raises(ArchiveError, match=reason):
            ArchiveReader(bad)
