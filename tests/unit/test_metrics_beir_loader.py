"""The BEIR reader accepts the variants found in public folders and names the file and line of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragbot.evaluation.beir import BeirFormatError, load_beir, read_qrels

pytestmark = pytest.mark.unit


def _write(
    folder: Path, corpus: list[dict[str, object]], queries: list[dict[str, object]], qrels: str
) -> Path:
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (folder / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    (folder / "qrels" / "test.tsv").write_text(qrels)
    return folder


def test_reads_titles_graded_qrels_and_keeps_only_judged_queries(tmp_path: Path) -> None:
    ds = load_beir(
        _write(
            tmp_path / "set",
            [{"_id": "d1", "title": "T", "text": "alpha"}, {"_id": 2, "text": "beta", "metadata": {}}],
            [{"_id": "q1", "text": "alpha?"}, {"_id": "q2", "text": "beta?"}, {"_id": "q3", "text": "none"}],
            "query-id\tcorpus-id\tscore\nq1\td1\t2\nq2\t2\t0\nq3\td1\t1\n",
        )
    )
    assert ds.name == "set"
    assert [(d.id, d.title, d.text) for d in ds.corpus] == [("d1", "T", "alpha"), ("2", "", "beta")]
    assert ds.queries == {"q1": "alpha?", "q3": "none"}  # q2 has no positive judgment
    assert ds.qrels == {"q1": {"d1": 2}, "q3": {"d1": 1}}


def test_qrels_without_header_and_in_trec_layout(tmp_path: Path) -> None:
    three = tmp_path / "a.tsv"
    three.write_text("1\t10\t1\n1\t11\t3\n")
    four = tmp_path / "b.tsv"
    four.write_text("1 0 10 1\n1 0 11 3\n")
    assert read_qrels(three) == read_qrels(four) == {"1": {"10": 1, "11": 3}}


@pytest.mark.parametrize(
    ("corpus_line", "message"),
    [
        ("{not json", "corpus.jsonl:2: invalid JSON"),
        ('{"text": "no id"}', "corpus.jsonl:2: missing '_id'"),
        ('{"_id": "d1", "text": "again"}', "duplicate _id 'd1'"),
        ('{"_id": "d9", "text": 5}', "corpus.jsonl:2: 'text' must be a string"),
    ],
)
def test_bad_corpus_lines_are_reported_with_file_and_line(
    tmp_path: Path, corpus_line: str, message: str
) -> None:
    folder = _write(
        tmp_path / "bad", [{"_id": "d1", "text": "ok"}], [{"_id": "q", "text": "ok"}], "q\td1\t1\n"
    )
    with (folder / "corpus.jsonl").open("a") as fh:
        fh.write(corpus_line + "\n")
    with pytest.raises(BeirFormatError, match=message):
        load_beir(folder)


def test_missing_files_and_unjudged_sets_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BeirFormatError, match="not a directory"):
        load_beir(tmp_path / "absent")
    folder = _write(tmp_path / "x", [{"_id": "d1", "text": "ok"}], [{"_id": "q", "text": "ok"}], "q\td1\t0\n")
    with pytest.raises(BeirFormatError, match=r"no query .* positive judgment"):
        load_beir(folder)
    (folder / "qrels" / "test.tsv").unlink()
    with pytest.raises(BeirFormatError, match="missing qrels file"):
        load_beir(folder)
    bad = tmp_path / "bad.tsv"
    bad.write_text("q d1 1\nq d2 high\n")
    with pytest.raises(BeirFormatError, match=r"bad.tsv:2: relevance 'high'"):
        read_qrels(bad)


def test_other_splits_are_read_and_a_missing_one_names_those_present(tmp_path: Path) -> None:
    folder = _write(tmp_path / "x", [{"_id": "d1", "text": "ok"}], [{"_id": "q", "text": "ok"}], "q\td1\t1\n")
    (folder / "qrels" / "test.tsv").rename(folder / "qrels" / "dev.tsv")
    assert load_beir(folder, split="dev").qrels == {"q": {"d1": 1}}
    with pytest.raises(BeirFormatError, match=r"test.tsv: missing qrels file; this folder has dev"):
        load_beir(folder)
    for hostile in ("../../etc/passwd", "", "dev/../dev", ".hidden"):
        with pytest.raises(BeirFormatError, match="plain name"):
            load_beir(folder, split=hostile)


def test_a_corpus_that_is_not_utf8_is_reported_with_its_line(tmp_path: Path) -> None:
    folder = _write(tmp_path / "x", [{"_id": "d1", "text": "ok"}], [{"_id": "q", "text": "ok"}], "q\td1\t1\n")
    with (folder / "corpus.jsonl").open("ab") as fh:
        fh.write(b'{"_id": "d2", "text": "caf\xe9"}\n')
    with pytest.raises(BeirFormatError, match=r"corpus.jsonl:2: not UTF-8"):
        load_beir(folder)


def test_a_byte_order_mark_does_not_break_the_first_line(tmp_path: Path) -> None:
    folder = _write(tmp_path / "x", [{"_id": "d1", "text": "ok"}], [{"_id": "q", "text": "ok"}], "q\td1\t1\n")
    body = (folder / "corpus.jsonl").read_bytes()
    (folder / "corpus.jsonl").write_bytes(b"\xef\xbb\xbf" + body)
    assert [d.id for d in load_beir(folder).corpus] == ["d1"]
