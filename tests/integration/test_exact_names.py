"""Questions that name an invented product model find that model's page, among 30 near-identical ones.

SPLADE-tiny and MiniLM split an invented name ("KT-4471") into word pieces that many similar names share;
the BM25 retriever keeps the whole name as one rare term, so the page that names it wins. The catalogue is
generated from a seed: 3 invented brands x 10 models of the same appliances, written from one template, so
only the model name tells the pages apart.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from fixtures.retrieval_stack import Documents, Stack, open_stack

from ragbot.retrieval.retriever import Retriever
from ragbot.types import Segment, SourceDocument

pytestmark = pytest.mark.integration

BRANDS = ("Zorvex", "Quellin", "Marbrook")
KINDS = ("kettle", "toaster", "blender", "coffee grinder", "hand mixer")
COLOURS = ("black", "white", "red", "steel", "sage green")


def catalogue(seed: int = 4471) -> tuple[list[SourceDocument], list[tuple[str, str]]]:
    """30 product pages and 12 (question, uri) pairs naming a model."""
    rng = random.Random(seed)
    pages: list[SourceDocument] = []
    models: list[tuple[str, str, str, str]] = []
    used: set[str] = set()
    for brand in BRANDS:
        prefix = brand[:1] + rng.choice("KTRMX")
        for _ in range(10):
            while (model := f"{prefix}-{rng.randint(1000, 9999)}") in used:
                pass
            used.add(model)
            kind = rng.choice(KINDS)
            watts, colour, warranty = (
                rng.choice((800, 1200, 1500, 2000, 2200)),
                rng.choice(COLOURS),
                rng.randint(1, 3),
            )
            uri = f"https://shop.example/products/{model.lower()}"
            text = (
                f"The {brand} {model} {kind} is part of the {brand} home range. It draws {watts} watts, "
                f"comes in {colour} and is covered by a {warranty}-year warranty. The {model} has a "
                "removable filter, an automatic shut-off and a cord store in the base. Spare parts for "
                f"the {model} are sold separately."
            )
            pages.append(SourceDocument(uri=uri, title=f"{brand} {model} {kind}", segments=(Segment(text),)))
            models.append((brand, model, kind, uri))
    asked = rng.sample(models, 12)
    templates = (
        "How many watts does the {model} draw?",
        "What warranty comes with the {brand} {model}?",
        "Which colours is the {model} {kind} available in?",
        "Where can I buy spare parts for {model}?",
    )
    questions = [
        (templates[i % len(templates)].format(brand=brand, model=model, kind=kind), uri)
        for i, (brand, model, kind, uri) in enumerate(asked)
    ]
    return pages, questions


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, real_sparse_encoder: Any, real_dense_encoder: Any
) -> Iterator[Stack]:
    built = open_stack(tmp_path_factory.mktemp("names"), real_sparse_encoder, real_dense_encoder)
    pages, _ = catalogue()
    report = built.service.ingest("shop", Documents(pages))
    assert report.added == 30
    yield built
    built.close()


def top_hits(retriever: Retriever, questions: list[tuple[str, str]]) -> int:
    return sum(retriever.retrieve("shop", q, 1)[0].chunk.uri == uri for q, uri in questions)


def test_every_question_naming_a_model_finds_its_page_first(stack: Stack) -> None:
    _, questions = catalogue()
    right = top_hits(stack.retriever, questions)
    two_signals = Retriever(
        stack.retriever._sparse,
        stack.retriever._dense,
        stack.index,
        prefetch_k=50,
        fusion="zscore_calibrated",
        rrf_k=60,
    )
    before = top_hits(two_signals, questions)
    print(f"\nexact names: hybrid with BM25 {right}/12, SPLADE + dense only {before}/12")
    assert right == 12


def test_the_exact_name_is_what_matched(stack: Stack) -> None:
    _, questions = catalogue()
    question, uri = questions[0]
    [hit] = stack.retriever.retrieve_mode("shop", question, 1, "bm25")
    assert hit.chunk.uri == uri
    model = uri.rsplit("/", 1)[1]
    assert any(t.term.lower() == model for t in hit.matched_terms)  # named as the page writes it
    assert hit.bm25_rank == 1
