"""The embedded LLM: load time (cold GGUF conversion vs the safetensors cache), first-token latency and
decode speed, measured through LiteLLM exactly as the chat service calls it.

Loads run in fresh subprocesses so that nothing is already imported or cached in memory; the cold run
gets an empty cache folder. The grounded prompt is built by ``PromptLibrary`` from the sample content's
own text (three sources, the README's question), so its size is what a real turn sends.

    python benchmarks/llm.py                      # cold + warm load, 3 generations of 64 tokens
    python benchmarks/llm.py --skip-cold --runs 5 --model ragbot-local/smollm2-135m-instruct
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "ragbot" / "sample_content"
QUESTION = "How does ragbot combine sparse and dense retrieval?"

_LOAD_SNIPPET = """
import json, sys, time
from pathlib import Path
started = time.perf_counter()
import torch, transformers  # noqa: F401  (library import time is reported apart from the load)
from ragbot.generation.local_provider import load_local_model
imported = time.perf_counter()
model = load_local_model(sys.argv[1], Path(sys.argv[2]))
done = time.perf_counter()
report = {"import_s": imported - started, "load_s": done - imported, "from_cache": model.loaded_from_cache}
print(json.dumps(report))
"""


def measure_load(model: str, cache_dir: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", _LOAD_SNIPPET, model.split("/", 1)[1], str(cache_dir)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def sample_hits() -> list[object]:
    """Three sample-content paragraphs about retrieval, shaped as hits (no index needed)."""
    from ragbot.types import Chunk, Hit

    paragraphs: list[tuple[str, str]] = []
    for name in ("hybrid-retrieval.md", "splade.md", "overview.md"):
        text = (SAMPLE / name).read_text(encoding="utf-8")
        title = text.splitlines()[0].lstrip("# ").strip()
        body = [p for p in text.split("\n\n")[1:] if p.strip() and not p.startswith("#")]
        paragraphs.append((title, body[0] if body else text))
    return [
        Hit(
            chunk=Chunk(
                id=str(i),
                bot_id="bench",
                source_id=str(i),
                uri=f"sample/{i}.md",
                title=title,
                text=text,
                chunk_index=0,
            ),
            score=1.0,
        )
        for i, (title, text) in enumerate(paragraphs)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="a ragbot-local/... model (default: the packaged one)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--skip-cold", action="store_true", help="skip the cold GGUF conversion run")
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="the data folder (default: RAGBOT_DATA_DIR)"
    )
    args = parser.parse_args()

    from ragbot.config import PACKAGED_LLM, Settings

    base = Settings() if args.data_dir is None else Settings(data_dir=args.data_dir)
    model = args.model or PACKAGED_LLM
    if not model.startswith("ragbot-local/"):
        raise SystemExit("this benchmark measures the embedded model: pass a ragbot-local/... model")
    cache_dir = base.model_cache_dir  # the shared per-user cache the product uses
    report: dict[str, object] = {"model": model, "threads": os.cpu_count()}

    if not args.skip_cold:
        with tempfile.TemporaryDirectory(prefix="ragbot-llm-cold-") as cold:
            report["cold_load"] = measure_load(model, Path(cold))
    measure_load(model, cache_dir)  # make sure the warm cache exists
    report["warm_load"] = measure_load(model, cache_dir)

    from ragbot.generation import build_llm
    from ragbot.generation.prompts import PromptLibrary

    settings = base.model_copy(
        update={
            "llm_model": model,
            "llm_fallbacks": [],
            "llm_max_tokens": args.max_tokens,
            "llm_temperature": 0.0,
        }
    )
    llm = build_llm(settings)
    messages = PromptLibrary(settings.prompts_dir).answer_messages(
        QUESTION,
        sample_hits(),  # type: ignore[arg-type]
        [],
        persona="",
        context_window=settings.llm_context_window,
        max_answer_tokens=args.max_tokens,
        count_tokens=llm.count_tokens,
    )
    prompt_tokens = sum(llm.count_tokens(m["content"]) for m in messages)
    llm.complete(messages)  # warm-up: first call pays LiteLLM's lazy imports and torch's kernel setup
    first_token, decode_rate, totals = [], [], []
    answer = ""
    for _ in range(args.runs):
        started = time.perf_counter()
        first: float | None = None
        pieces: list[str] = []
        for delta in llm.stream(messages):
            if first is None:
                first = time.perf_counter()
            pieces.append(delta)
        ended = time.perf_counter()
        answer = "".join(pieces)
        tokens = llm.count_tokens(answer)
        first_token.append((first or ended) - started)
        totals.append(ended - started)
        if first is not None and ended > first and tokens > 1:
            decode_rate.append((tokens - 1) / (ended - first))
    report.update(
        prompt_tokens=prompt_tokens,
        first_token_s_median=round(statistics.median(first_token), 3),
        decode_tokens_per_s_median=round(statistics.median(decode_rate), 1) if decode_rate else None,
        total_s_median=round(statistics.median(totals), 2),
        answer_tokens=llm.count_tokens(answer),
        answer=answer,
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
