"""Does rewriting follow-up questions help retrieval? hit@1, hit@k and MRR of the expected source.

The multi-turn set (``tests/data/multiturn.jsonl``) holds conversations over the sample content whose
follow-ups lean on the history ("Does it add words...?", "And for videos?"). Every follow-up is
retrieved three ways with the real retriever over the ingested sample content:

* ``raw``:       the follow-up as typed (what a system without conversation memory retrieves with);
* ``concat-1``:  the previous user turn + the follow-up;
* ``concat``:    the previous two user turns + the follow-up (``RAGBOT_CONDENSE=concat``, also the fallback
                 for a rejected rewrite);
* ``condensed``: ``condense_question`` with the configured LLM (``RAGBOT_LLM_MODEL``).

Ranks are per source document (a document's best chunk), so the figures say whether the right page
would be cited. First turns are reported as the ceiling: the same questions asked standalone.

    python benchmarks/condense_eval.py                 # embedded model, fresh temporary index
    python benchmarks/condense_eval.py --k 3 --show    # print every rewrite
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT / "tests" / "data" / "multiturn.jsonl"
SAMPLE = ROOT / "ragbot" / "sample_content"
BOT = "condense-eval"


@dataclass
class Scores:
    ranks: list[int | None] = field(default_factory=list)

    def add(self, rank: int | None) -> None:
        self.ranks.append(rank)

    def hit(self, k: int) -> float:
        return sum(1 for r in self.ranks if r is not None and r <= k) / len(self.ranks)

    def mrr(self) -> float:
        return statistics.fmean(1.0 / r if r else 0.0 for r in self.ranks)


def document_rank(hits: list[object], source: str) -> int | None:
    seen: list[str] = []
    for hit in hits:
        name = Path(hit.chunk.uri).name  # type: ignore[attr-defined]
        if name not in seen:
            seen.append(name)
        if name == source:
            return seen.index(name) + 1
    return None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="index folder (default: a temporary one)")
    parser.add_argument("--k", type=int, default=3, help="cut-off for hit@k")
    parser.add_argument("--top-k", type=int, default=10, help="chunks retrieved per query")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N conversations")
    parser.add_argument("--show", action="store_true", help="print each follow-up and its rewrites")
    parser.add_argument("--no-llm", action="store_true", help="skip the LLM rewrite (the concat rows only)")
    args = parser.parse_args()

    from ragbot.config import Settings
    from ragbot.generation import build_llm
    from ragbot.generation.base import ChatMessage
    from ragbot.generation.condense import condense_question, fallback_query
    from ragbot.runtime import Runtime
    from ragbot.services.ingest import connector_for

    conversations = [json.loads(line) for line in DATASET.read_text(encoding="utf-8").splitlines() if line]
    if args.limit:
        conversations = conversations[: args.limit]

    with tempfile.TemporaryDirectory(prefix="ragbot-condense-") as scratch:
        settings = Settings(data_dir=args.data_dir or Path(scratch), bot_id=BOT)
        runtime = Runtime(settings)
        try:
            report = runtime.ingest_service.ingest(BOT, connector_for(str(SAMPLE), settings))
            print(f"ingested sample content: {report.as_dict()}")
            retriever, prompts = runtime.retriever, runtime.prompts
            # The model's converted-weights cache lives in the default data folder, shared with real use.
            llm = build_llm(Settings())

            def rank(query: str, source: str) -> int | None:
                return document_rank(retriever.retrieve(BOT, query, args.top_k), source)  # type: ignore[arg-type]

            first, raw, concat1, concat, condensed = Scores(), Scores(), Scores(), Scores(), Scores()
            fell_back, seconds = 0, []
            for conversation in conversations:
                turns = conversation["turns"]
                first.add(rank(turns[0]["question"], turns[0]["source"]))
                history: list[ChatMessage] = []
                for previous, turn in itertools.pairwise(turns):
                    history += [
                        ChatMessage(role="user", content=previous["question"]),
                        ChatMessage(role="assistant", content=previous["answer"]),
                    ]
                    question, source = turn["question"], turn["source"]
                    heuristic = fallback_query(history, question)
                    started = time.perf_counter()
                    rewrite = heuristic if args.no_llm else condense_question(llm, prompts, history, question)
                    seconds.append(time.perf_counter() - started)
                    fell_back += rewrite == heuristic
                    ranks = (
                        rank(question, source),
                        rank(fallback_query(history, question, turns=1), source),
                        rank(heuristic, source),
                        rank(rewrite, source),
                    )
                    for scores, r in zip((raw, concat1, concat, condensed), ranks, strict=True):
                        scores.add(r)
                    if args.show:
                        print(
                            f"[{conversation['id']}] {question!r} -> {rewrite!r}  "
                            f"ranks raw/concat-1/concat/llm={ranks}"
                        )
        finally:
            runtime.close()

    k = args.k
    rows = [
        ("first turns (ceiling)", first),
        ("raw follow-up", raw),
        ("concat-1 (last turn)", concat1),
        ("concat (last 2 turns)", concat),
        *([] if args.no_llm else [("condensed", condensed)]),
    ]
    print(f"\nmodel: {llm.model_name}; {len(conversations)} conversations, {len(raw.ranks)} follow-ups")
    print(f"{'queries':<24}{'hit@1':>8}{f'hit@{k}':>8}{'MRR':>8}")
    for name, scores in rows:
        print(f"{name:<24}{scores.hit(1):>8.3f}{scores.hit(k):>8.3f}{scores.mrr():>8.3f}")
    if args.no_llm:
        return
    print(
        f"\ncondensed vs raw: hit@{k} {condensed.hit(k) - raw.hit(k):+.3f}, "
        f"MRR {condensed.mrr() - raw.mrr():+.3f}; "
        f"LLM rewrites rejected for the concat fallback: {fell_back}/{len(raw.ranks)}; "
        f"median condensation time {statistics.median(seconds):.2f} s"
    )


if __name__ == "__main__":
    main()
