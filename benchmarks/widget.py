"""The website widget as a visitor meets it: its size, and time to first token seen in the page.

ragbot serves on one loopback port, a host page on another embeds ``widget.js`` with the bot's public
key, and Debian's headless Chromium (through chromedriver) types each question into the real widget. The
time runs in the page itself, from the send click to the first answer text rendered inside the widget's
shadow root, so it includes the visitor session, CORS, the SSE stream through ``fetch`` and rendering.

Backends, side by side in one run: the embedded SmolLM2-135M (the quickstart default, through LiteLLM) and
a fast llm-katan echo server (an OpenAI-compatible HTTP server; ``--katan-ttft-ms`` sets its own first
token delay, 0 by default) so ragbot's own share shows apart from a model's.

    python benchmarks/widget.py                     # 20 questions per backend
    python benchmarks/widget.py --questions 5 --backends katan
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fixtures.browser import chrome, serve_static  # noqa: E402
from fixtures.live import LiveServer, free_port  # noqa: E402
from integration.katan import KatanServer  # noqa: E402

SAMPLE = ROOT / "ragbot" / "sample_content"
WIDGET = ROOT / "ragbot" / "widget" / "static" / "widget.js"

QUESTIONS = [
    "How does ragbot combine sparse and dense retrieval?",
    "What is SPLADE?",
    "How do I install ragbot?",
    "Which file formats can I ingest?",
    "How are citations shown?",
    "How do I start the HTTP API?",
    "What does the handoff to a human do?",
    "Which settings choose the LLM?",
    "How do I crawl a website?",
    "What database does ragbot use by default?",
    "How are results fused?",
    "Can I use a Qdrant server?",
    "How do I ingest a PDF?",
    "What is the relevance floor?",
    "How do follow-up questions work?",
    "Where are the prompts kept?",
    "How are video timestamps cited?",
    "What does ragbot explain show?",
    "How do I check that the service is healthy?",
    "Which embedding model is used?",
]

_MEASURE = """
const done = arguments[arguments.length - 1];
const question = arguments[0];
const root = document.querySelector('#ragbot-widget').shadowRoot;
const before = root.querySelectorAll('[data-testid="message-bot"]').length;
const input = root.querySelector('[data-testid="input"]');
input.value = question;
input.dispatchEvent(new Event('input', {bubbles: true}));
const t0 = performance.now();
root.querySelector('[data-testid="send"]').click();
let first = null;
const deadline = t0 + 120000;
(function poll() {
  const bots = root.querySelectorAll('[data-testid="message-bot"]');
  const now = performance.now();
  if (first === null && bots.length > before && bots[bots.length - 1].textContent.trim()) first = now - t0;
  const busy = root.querySelector('[aria-busy="true"]');
  if (first !== null && !busy) { done({first_ms: first, total_ms: now - t0}); return; }
  if (now > deadline) { done({first_ms: first, total_ms: null}); return; }
  requestAnimationFrame(poll);
})();
"""


def _host_page(directory: Path, base_url: str, public_key: str) -> None:
    (directory / "index.html").write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>host</title></head><body>"
        "<h1>Host site</h1>"
        f'<script src="{base_url}/widget.js" data-bot="{public_key}" async></script></body></html>',
        encoding="utf-8",
    )


def _open(driver: Any, url: str) -> None:
    """Load the host page and open the widget's panel."""
    driver.get(url)
    deadline = time.monotonic() + 30
    while not driver.execute_script(
        "const h = document.querySelector('#ragbot-widget');"
        "return !!(h && h.shadowRoot && h.shadowRoot.querySelector('[data-testid=launcher]'));"
    ):
        if time.monotonic() > deadline:
            raise RuntimeError("the widget did not mount")
        time.sleep(0.05)
    driver.execute_script(
        "const root = document.querySelector('#ragbot-widget').shadowRoot;"
        "if (root.querySelector('[data-testid=panel]').hidden)"
        " root.querySelector('[data-testid=launcher]').click();"
    )


def run_backend(
    name: str, questions: list[str], *, katan_ttft_ms: int, shared: dict[str, Any], fresh: bool = False
) -> dict[str, Any]:
    from connectors.files import FileConnector
    from ragbot.config import Settings
    from ragbot.index.edge import EdgeIndex
    from ragbot.runtime import Runtime
    from ragbot.tenancy.bots import BotChanges

    data = Path(tempfile.mkdtemp(prefix=f"ragbot-widget-{name}-"))
    katan = None
    llm: dict[str, Any] = {}
    if name == "katan":
        flags = ("--ttft-ms", str(katan_ttft_ms)) if katan_ttft_ms else ()
        katan = KatanServer(*flags, log_dir=data).start()
        llm = {"llm_model": "openai/katan-echo", "llm_api_base": katan.base_url, "llm_api_key": "sk-bench"}
    settings = Settings(data_dir=data, rate_visitor_per_minute=0, rate_ip_per_minute=0, **llm)
    runtime = Runtime(
        settings,
        index=EdgeIndex(data / "edge", "ragbot"),
        sparse_encoder=shared["sparse"],
        dense_encoder=shared["dense"],
    )
    host_port = free_port()
    bot = runtime.bots.create(
        "Bench", BotChanges(allowed_origins=[f"http://127.0.0.1:{host_port}"]), actor="benchmark"
    )
    runtime.ingest_service.ingest(bot["id"], FileConnector(str(SAMPLE), max_bytes=settings.max_upload_bytes))
    warm_up = getattr(runtime.llm, "warm_up", None)
    if callable(warm_up):
        warm_up()
    host_dir = data / "host"
    host_dir.mkdir()
    firsts: list[float] = []
    totals: list[float] = []
    with LiveServer(runtime) as base_url:
        _host_page(host_dir, base_url, bot["public_key"])
        host = serve_static(host_dir, host_port)
        driver = chrome(tempfile.mkdtemp(prefix="ragbot-bench-chrome-"), script_timeout_s=180)
        try:
            _open(driver, f"http://127.0.0.1:{host_port}/index.html")
            driver.execute_async_script(_MEASURE, "warm-up question")  # not counted: first fetch, JIT
            for question in questions:
                if fresh:  # a new visitor conversation each time: no follow-up condensation step
                    driver.execute_script("localStorage.clear()")
                    _open(driver, f"http://127.0.0.1:{host_port}/index.html")
                result = driver.execute_async_script(_MEASURE, question)
                if result["first_ms"] is not None:
                    firsts.append(float(result["first_ms"]))
                if result["total_ms"] is not None:
                    totals.append(float(result["total_ms"]))
        finally:
            driver.quit()
            host.shutdown()
    runtime.close()
    if katan is not None:
        katan.stop()
    return {"backend": name, "n": len(questions), "first": firsts, "total": totals}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--backends", default="embedded,katan")
    parser.add_argument("--katan-ttft-ms", type=int, default=0)
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="Each question in a new conversation (default: one conversation, so follow-ups are condensed).",
    )
    args = parser.parse_args()

    raw = WIDGET.read_bytes()
    print(f"widget.js: {len(raw)} bytes, {len(gzip.compress(raw, 9))} bytes gzipped (level 9)")

    from ragbot.config import Settings
    from ragbot.encoders import load_dense_encoder, load_sparse_encoder

    shared = {"sparse": load_sparse_encoder(Settings()), "dense": load_dense_encoder(Settings())}
    questions = (QUESTIONS * ((args.questions // len(QUESTIONS)) + 1))[: args.questions]
    print(f"{'backend':10} {'n':>3} {'first p50 ms':>13} {'first p95 ms':>13} {'answer p50 ms':>14}")
    for name in [b.strip() for b in args.backends.split(",") if b.strip()]:
        result = run_backend(
            name, questions, katan_ttft_ms=args.katan_ttft_ms, shared=shared, fresh=args.fresh
        )
        firsts, totals = result["first"], result["total"]
        if not firsts:
            print(f"{name:10} {result['n']:>3} no answer text seen")
            continue
        print(
            f"{name:10} {len(firsts):>3} {statistics.median(firsts):>13.0f} {_pct(firsts, 0.95):>13.0f} "
            f"{(statistics.median(totals) if totals else float('nan')):>14.0f}"
        )


if __name__ == "__main__":
    main()
