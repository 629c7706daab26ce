"""Read a BEIR-format folder: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``.

BEIR folders found in the wild differ in small ways (a header line or none, three columns or TREC's four,
titles present or not), so the reader accepts each variant and fails with the file and line on anything else.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Qrels = dict[str, dict[str, int]]

_SPLIT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class BeirFormatError(ValueError):
    """The folder is not a readable BEIR dataset; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class CorpusDoc:
    id: str
    title: str
    text: str


@dataclass(frozen=True, slots=True)
class BeirDataset:
    """A corpus, the queries that have at least one relevant judgment, and graded judgments."""

    name: str
    corpus: tuple[CorpusDoc, ...]
    queries: dict[str, str]
    qrels: Qrels


def load_beir(path: Path, split: str = "test") -> BeirDataset:
    """Load a BEIR folder; only queries with a positive judgment are kept: metrics average over those."""
    path = Path(path)
    if not path.is_dir():
        raise BeirFormatError(f"{path}: not a directory")
    if not _SPLIT.fullmatch(split):
        raise BeirFormatError(f"split {split!r}: expected a plain name such as test or dev")
    qrels_path = path / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():  # before the corpus is read: the cheap mistake is reported first
        found = sorted(p.stem for p in (path / "qrels").glob("*.tsv"))
        hint = f"; this folder has {', '.join(found)} (choose with --split)" if found else ""
        raise BeirFormatError(f"{qrels_path}: missing qrels file{hint}")
    corpus = tuple(_read_corpus(path / "corpus.jsonl"))
    if not corpus:
        raise BeirFormatError(f"{path / 'corpus.jsonl'}: no documents")
    seen: set[str] = set()
    for doc in corpus:
        if doc.id in seen:
            raise BeirFormatError(f"{path / 'corpus.jsonl'}: duplicate _id {doc.id!r}")
        seen.add(doc.id)
    queries = dict(_read_queries(path / "queries.jsonl"))
    qrels = read_qrels(qrels_path)
    judged = {
        qid: docs for qid, docs in qrels.items() if qid in queries and any(g > 0 for g in docs.values())
    }
    if not judged:
        raise BeirFormatError(
            f"{path}: no query in queries.jsonl has a positive judgment in qrels/{split}.tsv"
        )
    return BeirDataset(
        name=path.name,
        corpus=corpus,
        queries={qid: queries[qid] for qid in judged},
        qrels=judged,
    )


def read_qrels(path: Path) -> Qrels:
    """``query-id corpus-id score`` (BEIR) or ``query-id iter corpus-id score`` (TREC); header optional."""
    if not path.is_file():
        raise BeirFormatError(f"{path}: missing qrels file")
    qrels: Qrels = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) == 3:
                qid, doc_id, grade = fields
            elif len(fields) == 4:
                qid, _, doc_id, grade = fields
            else:
                raise BeirFormatError(f"{path}:{lineno}: expected 3 or 4 columns, got {len(fields)}")
            try:
                value = int(float(grade))
            except ValueError:
                if lineno == 1:
                    continue  # header line such as "query-id corpus-id score"
                raise BeirFormatError(f"{path}:{lineno}: relevance {grade!r} is not a number") from None
            qrels.setdefault(qid, {})[doc_id] = value
    return qrels


def _read_corpus(path: Path) -> Iterator[CorpusDoc]:
    for lineno, row in _jsonl(path):
        doc_id = _id(row, path, lineno)
        text = row.get("text")
        if not isinstance(text, str):
            raise BeirFormatError(f"{path}:{lineno}: 'text' must be a string")
        title = row.get("title") or ""
        if not isinstance(title, str):
            raise BeirFormatError(f"{path}:{lineno}: 'title' must be a string")
        yield CorpusDoc(id=doc_id, title=title, text=text)


def _read_queries(path: Path) -> Iterator[tuple[str, str]]:
    for lineno, row in _jsonl(path):
        text = row.get("text")
        if not isinstance(text, str) or not text.strip():
            raise BeirFormatError(f"{path}:{lineno}: 'text' must be a non-empty string")
        yield _id(row, path, lineno), text


def _id(row: dict[str, Any], path: Path, lineno: int) -> str:
    value = row.get("_id")
    if not isinstance(value, str | int) or isinstance(value, bool) or str(value) == "":
        raise BeirFormatError(f"{path}:{lineno}: missing '_id'")
    return str(value)


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise BeirFormatError(f"{path}: missing file")
    with path.open("rb") as fh:  # decoded line by line, so a bad byte is reported on its own line
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")  # a BOM is not JSON
            except UnicodeDecodeError as exc:
                raise BeirFormatError(f"{path}:{lineno}: not UTF-8 ({exc.reason})") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BeirFormatError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise BeirFormatError(f"{path}:{lineno}: expected a JSON object")
            yield lineno, row
