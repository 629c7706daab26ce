"""Grounded or declined: how well does the bot decide what it can answer? (issue 11)

Two held-in sets, each of answerable and out-of-scope questions over the SAME content:

* ``sample``: ``ragbot/sample_content`` (the quickstart's documents) with questions written for it:
  answerable ones name facts in it; out-of-scope ones are about other topics, many of them *near* the
  topic (another product feature it does not document, prices, SSO, ...).
* ``msmarco``: ``/work/shared/data/beir/msmarco-5k``: its judged queries are answerable; the out-of-scope
  ones are software-support questions about ragbot itself, a domain the web passages do not hold.

The same rule runs on every set. Positive = declined; a decline is right for an out-of-scope question.
``old`` is today's rule before this issue (a fixed 0.20 floor on the top hit's dense cosine); ``new`` is
the per-bot floor calibrated on off-topic null questions (``ragbot.retrieval.scope``).

The retrieval-only part needs no LLM (the decline-before-LLM decision). ``--answers N`` then asks N
answerable and N out-of-scope questions per set through the real chat service with the configured LLM
(by default the packaged SmolLM2 through LiteLLM), once with grounding ``off`` and the old floor and once
with ``verify``, and prints decline precision/recall, grounded share, answer kinds and words per answer.

    python benchmarks/grounding.py                      # retrieval-only decision, both sets
    python benchmarks/grounding.py --answers 8          # plus answers from the embedded model
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ragbot.config import Settings  # noqa: E402

SAMPLE = ROOT / "ragbot" / "sample_content"
MSMARCO = Path("/work/shared/data/beir/msmarco-5k")
OLD_FLOOR = 0.20

SAMPLE_ANSWERABLE = [
    "What is ragbot?",
    "Which Python version does ragbot need?",
    "How do I install ragbot?",
    "What does make quickstart do?",
    "How do I run the tests?",
    "Which port does ragbot serve use?",
    "Where is the interactive API documentation served?",
    "Which endpoint sends a chat message?",
    "What events does the streaming chat answer send?",
    "What status code does an unknown conversation id return?",
    "How do I ingest a URL through the API?",
    "What does the healthz endpoint report?",
    "How are citations shown in an answer?",
    "Does a citation record the page number of a PDF?",
    "What happens to a citation marker that points to no source?",
    "Where are citations stored?",
    "Which environment variable sets the database URL?",
    "What is the default data folder?",
    "How do I use a Qdrant server instead of the embedded engine?",
    "What should I use in production for the database?",
    "Which file formats does the file connector read?",
    "Does the website connector obey robots.txt?",
    "What happens when I ingest the same folder again?",
    "What does the ingest report count?",
    "What does the bot do when it cannot find a relevant passage?",
    "What owner modes can a conversation have?",
    "Does the bot talk while a human agent owns the conversation?",
    "Why does ragbot use two retrievers?",
    "How does reciprocal rank fusion score a passage?",
    "What is SPLADE?",
    "What are SPLADE expansion terms?",
    "How are sparse vectors stored?",
    "How many vocabulary terms does a SPLADE vector cover?",
    "What is the pipeline every answer travels?",
    "Who uses ragbot?",
]
SAMPLE_OUT_OF_SCOPE = [
    # near the topic: things a support bot for this product gets asked that its pages do not say
    "How much does the ragbot enterprise plan cost per month?",
    "Does ragbot support SAML single sign-on?",
    "Can ragbot transcribe phone calls in real time?",
    "Is there a ragbot mobile app for iOS?",
    "What is the SLA uptime guarantee for the hosted service?",
    "How do I reset my ragbot account password?",
    "Does ragbot integrate with Salesforce?",
    "Which GPUs does ragbot recommend for training its own language model?",
    "Can I export conversations to Microsoft Excel?",
    "Who is the CEO of the company behind ragbot?",
    "Is ragbot HIPAA compliant?",
    "How do I cancel my subscription and get a refund?",
    "What is the phone number of ragbot customer support?",
    "Does ragbot work with Elasticsearch instead of Qdrant?",
    "How do I translate the widget into Japanese?",
    # other topics
    "What is the best recipe for lasagna?",
    "Who won the Champions League in 2019?",
    "How tall is the Eiffel Tower?",
    "What is the capital of Canada?",
    "How do I change a flat tyre on my car?",
    "What are the symptoms of the flu?",
    "When did World War One start?",
    "How do I train my puppy to sit?",
    "What is the boiling point of water at altitude?",
    "Which planets have rings?",
    "How do I knit a scarf?",
    "What is a good stretching routine for back pain?",
    "Wie spät ist es in Berlin?",
    "¿Dónde puedo comprar entradas para el museo del Prado?",
    "Quel temps fera-t-il demain à Lyon ?",
]
# Out-of-scope for the msmarco bot: support questions about a software product its web passages lack.
MSMARCO_OUT_OF_SCOPE = [
    *SAMPLE_ANSWERABLE[:25],
    "How do I rotate the public widget key of my ragbot bot?",
    "Which RAGBOT_ variable points the bot at a Qdrant cluster?",
    "How do I hand a widget conversation over to a human agent in ragbot?",
    "Why does my ragbot ingest report failed documents?",
    "How do I set the accent colour of the chat widget?",
]


def _log_quiet() -> None:
    logging.basicConfig(level=logging.WARNING)
    for name in ("httpx", "LiteLLM", "litellm"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _runtime(data_dir: Path, **overrides: Any) -> Any:
    from ragbot.runtime import Runtime

    settings = Settings(data_dir=data_dir, database_url=None, qdrant_url=None, **overrides)
    return Runtime(settings)


def _ensure_content(runtime: Any, bot_id: str, connector: Any, expected: int) -> None:
    """Ingest once; an interrupted ingest is finished by a re-sync (unchanged documents are skipped)."""
    from sqlalchemy import func, select

    from ragbot.db.models import DocumentRow

    runtime.bots.ensure(bot_id)
    with runtime.session_factory() as s:
        docs = s.scalar(select(func.count(DocumentRow.id)).where(DocumentRow.bot_id == bot_id)) or 0
    if docs >= expected:
        return
    started = time.perf_counter()
    report = runtime.ingest_service.ingest(bot_id, connector)
    print(
        f"# ingested {bot_id}: {report.added} documents in {time.perf_counter() - started:.0f} s", flush=True
    )


def _msmarco(per_query: int) -> Any:
    """msmarco-5k, or (``per_query`` > 0) the subset of each judged query's ``per_query`` best-graded
    passages: on two shared CPU cores the whole corpus takes most of an hour to encode."""
    import dataclasses

    from ragbot.evaluation.beir import load_beir

    dataset = load_beir(MSMARCO)
    if per_query <= 0:
        return dataset
    keep: set[str] = set()
    for judged in dataset.qrels.values():
        best = sorted(judged.items(), key=lambda item: (-item[1], item[0]))
        keep.update(doc for doc, grade in best[:per_query] if grade > 0)
    corpus = tuple(d for d in dataset.corpus if d.id in keep)
    return dataclasses.replace(dataset, name=f"{dataset.name}-top{per_query}", corpus=corpus)


def _sets(runtime: Any, limit: int | None, per_query: int) -> dict[str, tuple[str, list[str], list[str]]]:
    from connectors.files import FileConnector
    from ragbot.evaluation.runner import BeirConnector

    files = len(list(SAMPLE.glob("*.md")))
    _ensure_content(runtime, "bench-sample", FileConnector(str(SAMPLE), max_bytes=1 << 20), files)
    sets = {"sample": ("bench-sample", SAMPLE_ANSWERABLE, SAMPLE_OUT_OF_SCOPE)}
    if MSMARCO.is_dir():
        dataset = _msmarco(per_query)
        print(f"# msmarco corpus: {len(dataset.corpus)} passages, {len(dataset.queries)} queries", flush=True)
        _ensure_content(runtime, "bench-msmarco", BeirConnector(dataset), len(dataset.corpus))
        judged = list(dataset.queries.values())  # load_beir keeps only queries with a judgment
        sets["msmarco"] = ("bench-msmarco", judged, MSMARCO_OUT_OF_SCOPE)
    if limit:
        sets = {k: (b, a[:limit], o[:limit]) for k, (b, a, o) in sets.items()}
    return sets


def _pr(declined: Sequence[bool], should: Sequence[bool]) -> tuple[float, float, int, int]:
    tp = sum(d and s for d, s in zip(declined, should, strict=True))
    fp = sum(d and not s for d, s in zip(declined, should, strict=True))
    fn = sum(s and not d for d, s in zip(declined, should, strict=True))
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return precision, recall, tp + fp, len(declined)


def retrieval_only(runtime: Any, sets: dict[str, tuple[str, list[str], list[str]]]) -> dict[str, Any]:
    """The decline-before-LLM decision, old rule vs new, on every set."""
    from ragbot.retrieval.scope import hit_signals

    floors = runtime.chat_service.floors
    out: dict[str, Any] = {}
    for name, (bot_id, answerable, oos) in sets.items():
        started = time.perf_counter()
        model = floors.model(bot_id, wait_s=3600)
        calibrate_s = time.perf_counter() - started
        questions = [(q, False) for q in answerable] + [(q, True) for q in oos]
        old: list[bool] = []
        new: list[bool] = []
        evidence: list[tuple[float, bool, str]] = []
        for question, out_of_scope in questions:
            hits = runtime.retriever.retrieve(bot_id, question, runtime.settings.top_k)
            top = hits[0] if hits else None
            dense = None if top is None else (top.dense_score if top.dense_score is not None else top.score)
            old.append(dense is None or dense < OLD_FLOOR)
            new.append(not hits or not model.in_scope(hit_signals(hits)))
            strength = model.evidence(hit_signals(hits)) if hits else float("-inf")
            evidence.append((strength, out_of_scope, question))
        should = [s for _, s in questions]
        row = {
            "answerable": len(answerable),
            "out_of_scope": len(oos),
            "calibration_s": round(calibrate_s, 1),
            "floor": model.describe(),
        }
        for rule, declined in (("old", old), ("new", new)):
            p, r, n_declined, n = _pr(declined, should)
            row[rule] = {"precision": round(p, 3), "recall": round(r, 3), "declined": n_declined, "asked": n}
        out[name] = row
        misses = [(round(ev, 2), q) for (ev, oos_q, q), d in zip(evidence, new, strict=True) if d != oos_q]
        row["new_mistakes"] = misses[:12]
    return out


def answers(
    data_dir: Path,
    sets: dict[str, tuple[str, list[str], list[str]]],
    n: int,
    seed: int,
    modes: Sequence[str] = ("old", "new"),
) -> dict[str, Any]:
    """Ask through the real chat service: old behaviour (no verification, fixed floor) vs grounded."""
    rng = random.Random(seed)
    picked = {
        name: (bot_id, rng.sample(a, min(n, len(a))), rng.sample(o, min(n, len(o))))
        for name, (bot_id, a, o) in sets.items()
    }
    results: dict[str, Any] = {}
    configs: dict[str, dict[str, Any]] = {
        "old": {"grounding": "off", "min_relevance": OLD_FLOOR},
        "new": {"grounding": "verify", "relevance_calibration_wait_s": 3600.0},
    }
    for mode, overrides in ((m, configs[m]) for m in modes):
        runtime = _runtime(data_dir, **overrides)
        try:
            for name, (bot_id, answerable, oos) in picked.items():
                kinds: Counter[str] = Counter()
                declined: list[bool] = []
                should: list[bool] = []
                words: list[int] = []
                grounded = 0
                first_ms: list[float] = []
                samples: list[dict[str, Any]] = []
                for question, out_of_scope in [(q, False) for q in answerable] + [(q, True) for q in oos]:
                    started = time.perf_counter()
                    try:
                        result = runtime.chat_service.ask(bot_id, question)
                    except Exception as exc:  # a failed turn is counted, not fatal to the run
                        print(f"# failed turn ({mode}, {name}): {exc}", flush=True)
                        kinds["failed"] += 1
                        declined.append(False)
                        should.append(out_of_scope)
                        continue
                    elapsed = time.perf_counter() - started
                    kind = result.answer_kind or ("declined" if result.status == "refused" else "generated")
                    kinds[kind] += 1
                    declined.append(result.status == "refused")
                    should.append(out_of_scope)
                    grounded += bool(result.grounded)
                    if result.status != "refused":
                        words.append(len(result.answer.split()))
                    first_ms.append(elapsed * 1000)
                    if len(samples) < 4 or (out_of_scope and result.status != "refused" and len(samples) < 8):
                        samples.append({"q": question, "kind": kind, "answer": result.answer[:300]})
                p, r, n_declined, n_all = _pr(declined, should)
                results.setdefault(name, {})[mode] = {
                    "decline_precision": round(p, 3),
                    "decline_recall": round(r, 3),
                    "declined": n_declined,
                    "asked": n_all,
                    "grounded_share": round(grounded / n_all, 3),
                    "kinds": dict(kinds),
                    "words_per_answer_p50": statistics.median(words) if words else 0,
                    "words_per_answer_mean": round(statistics.fmean(words), 1) if words else 0,
                    "turn_s_p50": round(statistics.median(first_ms) / 1000, 2),
                    "samples": samples,
                }
                row = {k: v for k, v in results[name][mode].items() if k != "samples"}
                print(f"# answers {mode} {name}: {json.dumps(row)}", flush=True)
        finally:
            runtime.close()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/ragbot-grounding-bench"))
    parser.add_argument("--limit", type=int, default=None, help="At most this many questions per side.")
    parser.add_argument("--answers", type=int, default=0, help="Questions per side asked to the LLM.")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--msmarco-per-query",
        type=int,
        default=0,
        help="Index only each query's best-graded N judged passages (0: the whole 5k corpus).",
    )
    parser.add_argument("--modes", default="old,new", help="Answer modes to run: old, new or both.")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    _log_quiet()
    runtime = _runtime(args.data_dir, relevance_calibration_wait_s=3600.0)
    try:
        sets = _sets(runtime, args.limit, args.msmarco_per_query)
        decision = retrieval_only(runtime, sets)
    finally:
        runtime.close()
    report: dict[str, Any] = {"retrieval_only": decision}
    print("## decline before the LLM (positive = declined; right when out of scope)")
    print(f"{'set':10} {'rule':5} {'precision':>9} {'recall':>7} {'declined':>9}")
    for name, row in decision.items():
        for rule in ("old", "new"):
            r = row[rule]
            print(
                f"{name:10} {rule:5} {r['precision']:9.3f} {r['recall']:7.3f} {r['declined']:>4}/{r['asked']}"
            )
    if args.answers:
        modes = [m for m in args.modes.split(",") if m]
        report["answers"] = answers(args.data_dir, sets, args.answers, args.seed, modes)
        print("## answers through the chat service (LLM: the configured one)")
        print(
            f"{'set':10} {'mode':5} {'precision':>9} {'recall':>7} {'grounded':>8} {'gen':>4} {'extr':>4} "
            f"{'decl':>4} {'words p50':>9}"
        )
        for name, modes in report["answers"].items():
            for mode, r in modes.items():
                k = r["kinds"]
                print(
                    f"{name:10} {mode:5} {r['decline_precision']:9.3f} {r['decline_recall']:7.3f} "
                    f"{r['grounded_share']:8.3f} {k.get('generated', 0):>4} {k.get('extractive', 0):>4} "
                    f"{k.get('declined', 0):>4} {r['words_per_answer_p50']:>9}"
                )
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
