"""The BM25 encoder: language detection, per-language analysis, exact names, CJK bigrams, BM25 weights."""

from __future__ import annotations

import pytest

from ragbot.encoders.lexical import (
    AVG_DOC_TOKENS,
    K1,
    UNDETERMINED,
    B,
    Bm25Encoder,
    detect_language,
    language_candidates,
    normalise_language,
    term_id,
)

ENCODER = Bm25Encoder()


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Wie kann ich meine Bestellung stornieren und das Geld zurückbekommen?", "de"),
        ("¿Cómo puedo cancelar mi pedido y recuperar el dinero de la compra?", "es"),
        ("ما هي سياسة الاسترداد في المتجر", "ar"),  # langid splits it between ar, ary and arz: folded
        ("How do I cancel my order and get the money back for it?", "en"),
    ],
)
def test_detects_the_language_of_a_sentence(text: str, language: str) -> None:
    assert detect_language(text) == language


def test_too_little_text_is_undetermined() -> None:
    assert detect_language("XR-200") == UNDETERMINED
    assert detect_language("") == UNDETERMINED
    assert language_candidates("") == []
    assert language_candidates("refund policy") == []  # no language is plausible enough
    assert ENCODER.query_languages("refund policy") == ["en"]  # so the default analyses it
    assert detect_language("退款政策是什么") == "zh"  # a Han character counts as two letters


def test_language_tags_are_normalised() -> None:
    assert [normalise_language(t) for t in ("de-DE", "pt_BR", "EN", "arz")] == ["de", "pt", "en", "ar"]


def test_names_keep_their_whole_form_and_their_parts() -> None:
    terms = ENCODER.terms("Zorvex KT-4471, error ERR_CONN_42 in v2.3.1 of the XR200", "en")
    for whole in ("kt4471", "errconn42", "v231", "xr200"):
        assert whole in terms
    for part in ("kt", "4471", "err", "conn", "42", "xr", "200"):
        assert part in terms
    # Written apart, hyphenated or joined: the same name meets on its whole form or its parts.
    assert set(ENCODER.query_terms("XR 200")) <= set(ENCODER.terms("the XR-200 kettle", "en"))
    assert "xr200" in ENCODER.query_terms("xr-200")


def test_words_are_stemmed_in_their_language() -> None:
    assert ENCODER.terms("refunds refunding", "en") == ["refund", "refund"]
    assert ENCODER.terms("Bestellungen", "de") == ENCODER.terms("Bestellung", "de")
    assert ENCODER.terms("pedidos", "es") == ENCODER.terms("pedido", "es")
    assert ENCODER.terms("kettles", "xx") == ["kettles"]  # no stemmer: words as they are


def test_unspaced_scripts_become_character_bigrams() -> None:
    assert ENCODER.terms("退款政策", "zh") == ["退款", "款政", "政策"]
    assert ENCODER.terms("退", "zh") == ["退"]
    assert "ราคา" not in ENCODER.terms("ราคาสินค้า", "th")  # Thai has no spaces: bigrams too
    assert ENCODER.terms("ราคา", "th") == ["รา", "าค", "คา"]


def test_stop_words_leave_queries_but_not_documents() -> None:
    assert ENCODER.query_terms("the refund policy of the shop") == ["refund", "polici", "shop"]
    assert "the" in ENCODER.terms("the refund policy", "en")
    assert ENCODER.query_terms("to be or not") == ["to", "be", "or", "not"]  # nothing else left: kept
    # stopwordsiso's English list holds "buy" and "mg"; the English query list is the short Lucene one.
    assert ENCODER.query_terms("buy 500 mg tablets") == ["buy", "500", "mg", "tablet"]


def test_document_weights_are_saturated_term_frequencies() -> None:
    text = "kettle kettle kettle water"
    vector = ENCODER.encode_document(text, "en")
    weights = vector.as_dict()
    dl = 4
    norm = K1 * (1 - B + B * dl / AVG_DOC_TOKENS)
    assert weights[term_id("kettl")] == pytest.approx(3 * (K1 + 1) / (3 + norm))
    assert weights[term_id("water")] == pytest.approx(1 * (K1 + 1) / (1 + norm))
    assert list(vector.indices) == sorted(vector.indices)
    assert ENCODER.encode_document("", "en").indices == ()
    # A longer document lowers the weight of the same term frequency (length normalisation).
    longer = ENCODER.encode_document("kettle " + " ".join(f"w{i}" for i in range(200)), "en")
    assert (
        longer.as_dict()[term_id("kettl")]
        < ENCODER.encode_document("kettle", "en").as_dict()[term_id("kettl")]
    )


def test_query_weights_are_one_per_unique_term() -> None:
    vector = ENCODER.encode_query("kettle kettles KT-4471")
    assert set(vector.values) == {1.0}
    assert set(vector.indices) == {term_id(t) for t in ("kettl", "kt4471", "kt", "4471")}


def test_term_ids_are_stable_31_bit_hashes() -> None:
    assert term_id("refund") == term_id("refund")
    assert 0 <= term_id("refund") < 2**31
    assert term_id("refund") == 1529615448  # CRC-32: the same in every process and release


def test_documents_are_detected_per_text_unless_told() -> None:
    german = "Sie können Ihre Bestellung innerhalb von dreißig Tagen kostenlos zurückgeben."
    [detected] = ENCODER.encode_documents([german])
    [told] = ENCODER.encode_documents([german], ["de"])
    assert detected == told
    assert ENCODER.encode_documents([german], ["en"]) != [told]
    with pytest.raises(ValueError, match="languages for"):
        ENCODER.encode_documents([german], [])
