"""all-MiniLM-L6-v2 from its package: dimension, unit norm, the sentence-transformers computation (golden
values and a plain reference), neighbours, prefixes and token counts."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from ragbot.config import PACKAGED_DENSE, Settings
from ragbot.encoders import DenseEncoder, load_dense_encoder
from ragbot.encoders.dense import TransformerDenseEncoder, sentence_transformers_pooling
from ragbot.encoders.packaged import resolve_model_path
from ragbot.encoders.precision import int8_weights_available

pytestmark = pytest.mark.integration

GOLDEN = json.loads((Path(__file__).parents[1] / "golden" / "encoders.json").read_text(encoding="utf-8"))

TEXTS = [
    "How do I reset my password?",
    "",
    "To reset your password, open Settings, choose Security and click 'Forgot password'.",
    "Ünïcödé façade — naïve café, 東京 🚀",
    "The quarterly revenue grew by twelve percent thanks to strong subscription sales. " * 8,
]


def dot(a: Sequence[float], b: Sequence[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def reference_embeddings(texts: Sequence[str], max_length: int) -> torch.Tensor:
    """sentence-transformers' computation for this model, written out: one padded batch, mean, L2."""
    model_dir = resolve_model_path(PACKAGED_DENSE)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.inference_mode():
        batch = tokenizer(
            list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


@pytest.fixture(scope="module")
def encoder() -> TransformerDenseEncoder:
    return TransformerDenseEncoder(PACKAGED_DENSE, max_length=128, batch_size=2)


def test_dimension_and_unit_norm(encoder: TransformerDenseEncoder) -> None:
    assert encoder.dim == 384
    assert encoder.pooling == "mean"
    for vector in encoder.encode_documents(TEXTS):
        assert len(vector) == 384
        assert math.sqrt(dot(vector, vector)) == pytest.approx(1.0, abs=1e-5)


def test_matches_the_sentence_transformers_computation(encoder: TransformerDenseEncoder) -> None:
    expected = reference_embeddings(TEXTS, max_length=128)
    got = torch.tensor(encoder.encode_documents(TEXTS))
    assert float((got - expected).abs().max()) <= 1e-5


def test_golden_first_dimensions(encoder: TransformerDenseEncoder) -> None:
    vector = encoder.encode_documents([GOLDEN["sentence"]])[0]
    assert list(vector[:8]) == pytest.approx(GOLDEN["all_minilm_l6_v2"]["first_dims"], abs=1e-4)


def test_similar_sentences_are_closer_than_unrelated_ones(encoder: TransformerDenseEncoder) -> None:
    query = encoder.encode_query("I forgot my password, how can I change it?")
    related, unrelated = encoder.encode_documents([TEXTS[2], TEXTS[4]])
    assert dot(query, related) > dot(query, unrelated) + 0.2


def test_prefixes_go_to_their_own_calls(encoder: TransformerDenseEncoder) -> None:
    prefixed = TransformerDenseEncoder(
        PACKAGED_DENSE, max_length=128, query_prefix="query: ", document_prefix="passage: "
    )
    text = "opening hours of the library"
    assert prefixed.encode_query(text) == pytest.approx(
        encoder.encode_documents(["query: " + text])[0], abs=1e-6
    )
    assert prefixed.encode_documents([text])[0] == pytest.approx(
        encoder.encode_documents(["passage: " + text])[0], abs=1e-6
    )
    assert encoder.encode_query(text) == pytest.approx(encoder.encode_documents([text])[0], abs=1e-6)


def test_bad_input_and_empty_batches(encoder: TransformerDenseEncoder) -> None:
    assert encoder.encode_documents([]) == []
    with pytest.raises(TypeError, match="single str"):
        encoder.encode_documents("a string")
    with pytest.raises(TypeError, match="query must be str"):
        encoder.encode_query(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pooling"):
        TransformerDenseEncoder(PACKAGED_DENSE, pooling="max")  # type: ignore[arg-type]


def test_count_tokens(encoder: TransformerDenseEncoder) -> None:
    assert encoder.count_tokens("hello world") == 2
    assert encoder.count_tokens("word " * 600) == 600


def test_pooling_is_read_from_the_sentence_transformers_folder(tmp_path: Path) -> None:
    assert sentence_transformers_pooling(resolve_model_path(PACKAGED_DENSE)) == "mean"
    assert sentence_transformers_pooling(str(tmp_path)) is None
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text('{"pooling_mode_cls_token": true}')
    assert sentence_transformers_pooling(str(tmp_path)) == "cls"


def test_loader_follows_settings() -> None:
    settings = Settings(dense_max_length=64, encode_batch_size=7, dense_query_prefix="q: ")
    encoder: Any = load_dense_encoder(settings)
    assert isinstance(encoder, DenseEncoder)
    assert (encoder.max_length, encoder.batch_size, encoder.query_prefix) == (64, 7, "q: ")


def test_bf16_linears_stay_within_cosine_0_9999_of_fp32(encoder: TransformerDenseEncoder) -> None:
    fast = TransformerDenseEncoder(
        PACKAGED_DENSE, max_length=128, batch_size=2, precision="bf16", query_precision="bf16"
    )
    assert (fast.precision, fast.query_precision) == ("bf16", "bf16")
    exact = torch.tensor(encoder.encode_documents(TEXTS))
    approx = torch.tensor(fast.encode_documents(TEXTS))
    cosines = (exact * approx).sum(dim=1)
    assert float(cosines.min()) >= 0.9999
    query = "I forgot my password, how can I change it?"
    assert dot(fast.encode_query(query), encoder.encode_query(query)) >= 0.9999


@pytest.mark.skipif(
    not int8_weights_available(torch.device("cpu")), reason="this torch build has no int8 weight-only product"
)
def test_int8_queries_stay_within_cosine_0_999_of_fp32_and_documents_keep_bf16(
    encoder: TransformerDenseEncoder,
) -> None:
    fast = TransformerDenseEncoder(
        PACKAGED_DENSE, max_length=128, batch_size=2, precision="bf16", query_precision="int8"
    )
    assert (fast.precision, fast.query_precision) == ("bf16", "int8")
    for query in ("I forgot my password, how can I change it?", "refund policy", TEXTS[2]):
        assert dot(fast.encode_query(query), encoder.encode_query(query)) >= 0.999
    # Documents do not go through the int8 copy, and the copy shares the embedding tables.
    exact = torch.tensor(encoder.encode_documents(TEXTS))
    assert float((exact * torch.tensor(fast.encode_documents(TEXTS))).sum(dim=1).min()) >= 0.9999
    embeddings = fast._model.get_input_embeddings().weight
    assert fast._query_model.get_input_embeddings().weight is embeddings
    assert fast._query_model is not fast._model


def test_auto_query_precision_follows_exact_documents() -> None:
    exact = TransformerDenseEncoder(PACKAGED_DENSE, max_length=64, precision="fp32")
    assert (exact.precision, exact.query_precision) == ("fp32", "fp32")
    assert exact._query_model is exact._model


def test_settings_choose_the_precision() -> None:
    exact = load_dense_encoder(Settings(dense_precision="fp32"))
    assert isinstance(exact, TransformerDenseEncoder)
    assert exact.precision == "fp32"
    auto = load_dense_encoder(Settings())
    assert isinstance(auto, TransformerDenseEncoder)
    assert auto.precision in ("fp32", "bf16")  # bf16 exactly where the CPU multiplies bf16 natively


def test_traced_queries_equal_the_eager_model(encoder: TransformerDenseEncoder) -> None:
    eager = TransformerDenseEncoder(PACKAGED_DENSE, max_length=128, batch_size=2, trace_queries=False)
    for query in ("How do I reset my password?", "a", TEXTS[3], TEXTS[4]):
        traced = encoder.encode_query(query)
        assert float(torch.tensor(traced).sub(torch.tensor(eager.encode_query(query))).abs().max()) <= 1e-5
        # and a query is encoded like the same text as a one-document batch
        [as_document] = encoder.encode_documents([query])
        assert dot(traced, as_document) >= 1 - 1e-5
    assert encoder._query_graph is not None
    assert encoder._query_graph.traced
