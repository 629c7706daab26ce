"""Content in languages the packaged SPLADE and MiniLM do not know: German and Spanish help pages beside
English ones. A question in either language finds its passage (the language gate sends it to BM25, which
stems it in its own language); an English question still gets the full hybrid."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fixtures.retrieval_stack import Documents, Stack, open_stack

from ragbot.types import Segment, SourceDocument

pytestmark = pytest.mark.integration

PAGES = {
    "de/rueckgabe": (
        "Rückgabe und Erstattung",
        "Sie können Ihre Bestellung innerhalb von dreißig Tagen kostenlos zurückschicken. Der Kaufpreis wird "
        "nach Eingang der Ware auf Ihr ursprüngliches Zahlungsmittel erstattet.",
    ),
    "de/lieferung": (
        "Lieferzeiten",
        "Bestellungen, die bis 14 Uhr eingehen, verlassen unser Lager am selben Werktag. Die Zustellung "
        "innerhalb Deutschlands dauert in der Regel zwei bis drei Werktage.",
    ),
    "de/garantie": (
        "Garantie",
        "Auf alle Geräte gewähren wir zwei Jahre Garantie. Defekte Geräte reparieren oder ersetzen wir "
        "kostenlos, sofern der Schaden nicht durch unsachgemäße Nutzung entstanden ist.",
    ),
    "de/konto": (
        "Kundenkonto",
        "Ihr Passwort ändern Sie in den Kontoeinstellungen. Wenn Sie es vergessen haben, senden wir Ihnen "
        "einen Link zum Zurücksetzen an Ihre E-Mail-Adresse.",
    ),
    "es/devoluciones": (
        "Devoluciones",
        "Puede devolver cualquier artículo en un plazo de treinta días. Le reembolsaremos el importe en la "
        "misma tarjeta con la que pagó, una vez recibido el paquete en nuestro almacén.",
    ),
    "es/envios": (
        "Envíos",
        "Los pedidos realizados antes de las dos de la tarde se envían el mismo día laborable. La entrega en "
        "la península tarda entre dos y cuatro días.",
    ),
    "es/garantia": (
        "Garantía",
        "Todos los aparatos tienen una garantía de dos años. Reparamos o sustituimos gratuitamente los "
        "aparatos averiados, salvo que el daño se deba a un uso indebido.",
    ),
    "es/cuenta": (
        "Mi cuenta",
        "Puede cambiar su contraseña en la configuración de la cuenta. Si la ha olvidado, le enviaremos un "
        "enlace para restablecerla a su correo electrónico.",
    ),
    "en/returns": (
        "Returns and refunds",
        "You can send your order back free of charge within thirty days. We refund the purchase price to "
        "your original payment method once the goods arrive.",
    ),
    "en/delivery": (
        "Delivery times",
        "Orders placed before 2 pm leave our warehouse the same working day; delivery takes two to three "
        "working days.",
    ),
}

QUESTIONS = [
    ("Wie lange kann ich meine Bestellung kostenlos zurückschicken?", "de/rueckgabe"),
    ("Wann wird meine Bestellung zugestellt und wie lange dauert die Lieferung?", "de/lieferung"),
    ("Wie lange gilt die Garantie auf defekte Geräte?", "de/garantie"),
    ("Ich habe mein Passwort vergessen, was kann ich tun?", "de/konto"),
    ("¿En cuántos días puedo devolver un artículo y recibir el reembolso?", "es/devoluciones"),
    ("¿Cuánto tarda la entrega de mi pedido?", "es/envios"),
    ("¿Cuántos años de garantía tienen los aparatos?", "es/garantia"),
    ("He olvidado mi contraseña, ¿cómo la cambio?", "es/cuenta"),
]


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, real_sparse_encoder: Any, real_dense_encoder: Any
) -> Iterator[Stack]:
    built = open_stack(tmp_path_factory.mktemp("languages"), real_sparse_encoder, real_dense_encoder)
    documents = [
        SourceDocument(uri=f"https://help.example/{path}", title=title, segments=(Segment(text),))
        for path, (title, text) in PAGES.items()
    ]
    assert built.service.ingest("help", Documents(documents)).added == len(PAGES)
    yield built
    built.close()


def test_questions_in_german_and_spanish_find_their_passage(stack: Stack) -> None:
    found = {
        question: stack.retriever.retrieve("help", question, 1)[0].chunk.uri.rsplit("/", 2)[-2:]
        for question, _ in QUESTIONS
    }
    wrong = {
        q: "/".join(got)
        for (q, path), got in zip(QUESTIONS, found.values(), strict=True)
        if "/".join(got) != path
    }
    assert wrong == {}


def test_the_language_gate_serves_other_languages_by_bm25_alone(stack: Stack) -> None:
    german, _ = QUESTIONS[0]
    assert stack.retriever.outside_neural_languages(german)
    hits = stack.retriever.retrieve("help", german, 3)
    assert all(h.sparse_score is None and h.dense_score is None for h in hits)
    assert hits[0].bm25_rank == 1
    assert hits[0].matched_terms  # explained by the words it shares with the question
    english = "How long do I have to send my order back?"
    assert not stack.retriever.outside_neural_languages(english)
    [hit] = stack.retriever.retrieve("help", english, 1)
    assert hit.chunk.uri.endswith("en/returns")
    assert hit.dense_score is not None and hit.bm25_score is not None  # all three signals


def test_a_question_too_short_to_detect_takes_the_language_of_its_matches(stack: Stack) -> None:
    short = "Wie lange Garantie?"  # undetermined by detection: too few letters
    assert not stack.retriever.outside_neural_languages(short)
    hits = stack.retriever.retrieve("help", short, 3)
    assert hits[0].chunk.uri.endswith("de/garantie")
    assert all(h.sparse_score is None and h.dense_score is None for h in hits)  # BM25 alone: German matches
