"""``evaluate`` on a small BEIR folder, through the real encoders, Qdrant Edge, SQLite and retriever."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragbot.config import Settings
from ragbot.evaluation.runner import MODES, evaluate, format_table

pytestmark = pytest.mark.integration

TOPICS = {
    "volcano": ("Volcanoes", "Magma rises through the crust and erupts as lava, ash and volcanic gas."),
    "bees": ("Honey bees", "Worker bees collect nectar from flowers and turn it into honey inside the hive."),
    "chess": ("Chess openings", "The Sicilian Defence answers white's king pawn with the c5 pawn move."),
    "tides": ("Ocean tides", "The gravitational pull of the moon raises tides twice a day along coasts."),
    "bread": ("Sourdough", "A sourdough starter of wild yeast and lactobacilli leavens the bread dough."),
    "comets": ("Comets", "A comet's icy nucleus sublimates near the sun, growing a glowing tail."),
    "violin": ("Violins", "A violin has four strings tuned in fifths and is played with a horsehair bow."),
    "rust": ("Corrosion", "Iron exposed to water and oxygen oxidises into reddish-brown rust."),
    "glacier": (
        "Glaciers",
        "Compacted snow becomes glacial ice that flows slowly downhill under its weight.",
    ),
    "vaccine": ("Vaccines", "A vaccine trains the immune system to recognise a pathogen before infection."),
    "tea": ("Green tea", "Green tea leaves are steamed or pan-fired soon after picking to stop oxidation."),
    "bridge": (
        "Suspension bridges",
        "Main cables hung between towers carry the deck of a suspension bridge.",
    ),
}
QUERIES = {
    "q-bees": ("how do bees make honey from nectar", "bees"),
    "q-rust": ("why does iron turn into rust", "rust"),
    "q-violin": ("how many strings does a violin have", "violin"),
}


@pytest.fixture(scope="module")
def beir_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("beir") / "tiny"
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as fh:
        for doc_id, (title, text) in TOPICS.items():
            fh.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
        fh.write(json.dumps({"_id": "blank", "title": "", "text": "  "}) + "\n")  # skipped, not a failure
    with (folder / "queries.jsonl").open("w") as fh:
        for qid, (text, _) in QUERIES.items():
            fh.write(json.dumps({"_id": qid, "text": text}) + "\n")
    rows = "".join(f"{qid}\t{doc}\t1\n" for qid, (_, doc) in QUERIES.items())
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows)
    return folder


def test_every_mode_ranks_the_obvious_document_first(beir_folder: Path, tmp_path: Path) -> None:
    user_dir = tmp_path / "user-data"
    settings = Settings(data_dir=user_dir, fusion="zscore")
    events: list[object] = []
    results = evaluate(beir_folder, settings=settings, progress=events.append)

    assert list(results) == list(MODES)
    for mode, metrics in results.items():
        assert set(metrics) == {"ndcg@10", "recall@100", "mrr@10"}
        assert metrics["mrr@10"] == 1.0, mode  # the matching document is first for every query
        assert metrics["ndcg@10"] == 1.0, mode
        assert metrics["recall@100"] == 1.0, mode
    assert events, "ingest progress was not forwarded"
    assert not user_dir.exists(), "evaluation must index into a temporary folder, never the user's data_dir"
    table = format_table(results)
    assert table.splitlines()[0].split() == ["mode", "ndcg@10", "recall@100", "mrr@10"]
    assert len(table.splitlines()) == 2 + len(MODES)


def test_a_subset_of_modes_and_bad_modes(beir_folder: Path, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    # bm25 is the product's own BM25 on the index; bm25s the external reference, run only when asked for.
    both = evaluate(beir_folder, modes=("bm25", "bm25s"), settings=settings)
    assert list(both) == ["bm25", "bm25s"]
    assert both["bm25"]["mrr@10"] == both["bm25s"]["mrr@10"] == 1.0
    with pytest.raises(ValueError, match="unknown evaluation mode"):
        evaluate(beir_folder, modes=("colbert",), settings=settings)
