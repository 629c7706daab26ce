"""Calibrate ``RAGBOT_MIN_RELEVANCE``: the floor on the top hit's dense cosine below which the bot says it
does not know (without an LLM call).

Answerable questions: the standalone first turns of ``tests/data/multiturn.jsonl`` over the sample content.
Unanswerable: the MS MARCO queries of a BEIR folder (web-search questions about anything else) over the
same content. Prints both distributions and, per candidate floor, the share of answerable questions kept
and of off-topic ones refused.

    .venv/bin/python benchmarks/calibrate_refusal.py ../shared/data/beir/msmarco-5k
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

from ragbot.config import Settings
from ragbot.quiet import quiet_third_party
from ragbot.runtime import Runtime

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    quiet_third_party()
    beir = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared/data/beir/msmarco-5k"
    answerable = []
    for line in (ROOT / "tests/data/multiturn.jsonl").read_text().splitlines():
        if line.strip():
            turns = json.loads(line)["turns"]
            answerable.append(turns[0]["question"] if isinstance(turns[0], dict) else turns[0])
    off_topic = [
        json.loads(x)["text"] for x in (beir / "queries.jsonl").read_text().splitlines() if x.strip()
    ]
    with tempfile.TemporaryDirectory() as tmp:
        from connectors.files import FileConnector

        runtime = Runtime(Settings(data_dir=Path(tmp)))
        runtime.ingest_service.ingest(
            "cal", FileConnector(str(ROOT / "ragbot/sample_content"), max_bytes=1 << 20)
        )

        def top(q: str) -> float:
            hits = runtime.retriever.retrieve("cal", q, 1)
            return hits[0].dense_score or 0.0 if hits else 0.0

        pos = sorted(top(q) for q in answerable)
        neg = sorted(top(q) for q in off_topic)
        runtime.close()
    print(f"answerable ({len(pos)}): min {pos[0]:.3f} median {statistics.median(pos):.3f}")
    print(f"off-topic  ({len(neg)}): max {neg[-1]:.3f} median {statistics.median(neg):.3f}")
    for floor in (0.10, 0.15, 0.20, 0.25, 0.30, 0.35):
        kept = sum(s >= floor for s in pos) / len(pos)
        refused = sum(s < floor for s in neg) / len(neg)
        print(f"floor {floor:.2f}: answerable kept {kept:.0%}, off-topic refused {refused:.0%}")


if __name__ == "__main__":
    main()
