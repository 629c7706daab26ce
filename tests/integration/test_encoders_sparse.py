"""SPLADE-tiny from its package: the fast encoder against the textbook full-logits computation, golden
values, expansion terms, query vs document calls and token counts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer, BertConfig, BertForMaskedLM

from ragbot.config import PACKAGED_SPARSE, Settings
from ragbot.encoders import SparseEncoder, load_sparse_encoder
from ragbot.encoders.packaged import resolve_model_path
from ragbot.encoders.sparse import SpladeEncoder
from ragbot.types import SparseVector

pytestmark = pytest.mark.integration

GOLDEN = json.loads((Path(__file__).parents[1] / "golden" / "encoders.json").read_text(encoding="utf-8"))

TEXTS = [
    "What is the boiling point of water at sea level?",
    "",
    "SPLADE",
    "Ünïcödé façade — naïve café, 東京 and emoji 🚀 survive tokenization.",
    "The mitochondria is the powerhouse of the cell; it produces ATP through oxidative phosphorylation. " * 3,
    "word " * 400,  # longer than max_length: truncated, like the reference
    "Qdrant stores sparse vectors as index/value pairs with strictly increasing indices.",
]


def naive_splade(model_dir: str, texts: Sequence[str], max_length: int) -> torch.Tensor:
    """The textbook computation: one padded batch, full fp32 logits, log1p(relu), mask, max."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForMaskedLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.inference_mode():
        batch = tokenizer(
            list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        activated = torch.log1p(torch.relu(model(**batch).logits)) * batch["attention_mask"].unsqueeze(-1)
        return activated.amax(dim=1)


def densify(vectors: Sequence[SparseVector], vocab_size: int) -> torch.Tensor:
    dense = torch.zeros(len(vectors), vocab_size)
    for row, vector in enumerate(vectors):
        dense[row, list(vector.indices)] = torch.tensor(vector.values)
    return dense


@pytest.fixture(scope="module")
def encoder() -> SpladeEncoder:
    # A batch size smaller than the text count: results must come back in input order across batches.
    return SpladeEncoder(PACKAGED_SPARSE, max_length=128, batch_size=3)


def test_vectors_equal_the_full_logits_reference(encoder: SpladeEncoder) -> None:
    assert encoder.uses_fast_head
    expected = naive_splade(resolve_model_path(PACKAGED_SPARSE), TEXTS, max_length=128)
    vectors = encoder.encode_documents(TEXTS)
    got = densify(vectors, encoder.vocab_size)
    assert float((got - expected).abs().max()) <= 1e-4
    assert torch.equal(got > 0, expected > 0)
    for vector in vectors:
        assert all(a < b for a, b in zip(vector.indices, vector.indices[1:], strict=False))
        assert all(v > 0 for v in vector.values)


def test_golden_top_terms(encoder: SpladeEncoder) -> None:
    golden = GOLDEN["splade_tiny"]
    weights = encoder.encode_documents([GOLDEN["sentence"]])[0].as_dict()
    assert len(weights) == golden["nonzero_terms"]
    for term in golden["top_terms"]:
        assert encoder.vocabulary_term(term["id"]) == term["term"]
        assert weights[term["id"]] == pytest.approx(term["weight"], abs=1e-3), term["term"]


def test_expansion_terms_absent_from_the_text_get_weight(encoder: SpladeEncoder) -> None:
    text = GOLDEN["sentence"]
    own_ids = set(AutoTokenizer.from_pretrained(resolve_model_path(PACKAGED_SPARSE))(text)["input_ids"])
    vector = encoder.encode_documents([text])[0]
    expansions = [encoder.vocabulary_term(i) for i in vector.indices if i not in own_ids]
    assert expansions, "SPLADE should add vocabulary terms that are not in the text"
    assert "france" in expansions  # the model's best guess for an unstated fact about Paris


def test_query_and_document_calls(encoder: SpladeEncoder) -> None:
    query = encoder.encode_query("boiling point of water")
    assert query == encoder.encode_documents(["boiling point of water"])[0]  # one shared model
    terms = {encoder.vocabulary_term(i) for i in query.indices}
    assert {"boiling", "water"} <= terms
    with pytest.raises(TypeError, match="single str"):
        encoder.encode_documents("not a list")
    with pytest.raises(TypeError, match="query must be str"):
        encoder.encode_query(["a", "list"])  # type: ignore[arg-type]
    assert encoder.encode_documents([]) == []


def test_count_tokens_excludes_special_tokens_and_does_not_truncate(encoder: SpladeEncoder) -> None:
    assert encoder.count_tokens("hello world") == 2
    assert encoder.count_tokens("") == 0
    assert encoder.count_tokens("word " * 1000) == 1000


def test_token_counts_stay_exact_while_another_thread_encodes(encoder: SpladeEncoder) -> None:
    """The tokenizer's truncation setting is shared state: a count must never see an encode's truncation."""
    long_text = "word " * 1000
    with ThreadPoolExecutor(max_workers=2) as pool:
        encoding = pool.submit(lambda: [encoder.encode_documents(TEXTS) for _ in range(3)])
        counts = pool.submit(lambda: {encoder.count_tokens(long_text) for _ in range(300)})
        assert counts.result() == {1000}
        assert len(encoding.result()) == 3


def test_vocabulary_term_bounds(encoder: SpladeEncoder) -> None:
    assert encoder.vocabulary_term(101) == "[CLS]"
    with pytest.raises(IndexError):
        encoder.vocabulary_term(encoder.vocab_size)
    with pytest.raises(IndexError):
        encoder.vocabulary_term(-1)


def test_full_logits_path_gives_the_same_vectors(encoder: SpladeEncoder) -> None:
    plain = SpladeEncoder(PACKAGED_SPARSE, max_length=128, batch_size=3, fast_head=False)
    assert not plain.uses_fast_head
    fast, slow = encoder.encode_documents(TEXTS), plain.encode_documents(TEXTS)
    assert float((densify(fast, encoder.vocab_size) - densify(slow, encoder.vocab_size)).abs().max()) <= 1e-4


def test_any_local_masked_lm_checkpoint_loads_and_stays_exact(tmp_path: Path) -> None:
    """A different (random) BERT saved to disk: the HF loading path and the fast head's bound, on logits
    spread unlike SPLADE-tiny's."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(PACKAGED_SPARSE))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=48, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=96, max_position_embeddings=64,
    )  # fmt: skip
    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    local = SpladeEncoder(str(tmp_path), max_length=64, batch_size=4)
    assert local.uses_fast_head
    expected = naive_splade(str(tmp_path), TEXTS, max_length=64)
    got = densify(local.encode_documents(TEXTS), local.vocab_size)
    assert float((got - expected).abs().max()) <= 1e-4
    assert torch.equal(got > 0, expected > 0)


def test_loader_follows_settings() -> None:
    settings = Settings(sparse_max_length=64, encode_batch_size=5)
    encoder: Any = load_sparse_encoder(settings)
    assert isinstance(encoder, SparseEncoder)
    assert (encoder.max_length, encoder.batch_size) == (64, 5)


def test_traced_queries_equal_the_reference(encoder: SpladeEncoder) -> None:
    plain = SpladeEncoder(PACKAGED_SPARSE, max_length=128, batch_size=3, fast_head=False)
    queries = ["How do I reset my password?", "x", TEXTS[-1]]
    got = densify([encoder.encode_query(q) for q in queries], encoder.vocab_size)
    expected = densify([plain.encode_query(q) for q in queries], plain.vocab_size)
    assert float((got - expected).abs().max()) <= 1e-4
    assert encoder._query_graph is not None
    assert encoder._query_graph.traced
    assert plain._query_graph is None  # full logits: nothing to gain from a trace
