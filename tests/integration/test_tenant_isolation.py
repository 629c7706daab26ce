"""Two bots with different content never answer from each other's: questions to bot A that only bot B's
pages answer get no citation from B, over the API (admin key) and the widget path (visitor session), on
SQLite and PostgreSQL and on both index backends. Deleting a bot removes everything it owned and nothing
of the other's.

The echo LLM (llm-katan) repeats the visitor's message, so a question ending in " [1] [2] [3]" cites every
passage retrieval handed it: a leaked passage would show up as a citation. ``min_relevance`` and
``grounding`` are off, so retrieval always hands over the bot's best passages and the answer is shown as
written: an answer with no citation at all proves nothing and fails the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fixtures.sse import sse_events
from integration import test_api
from integration.katan import KatanServer
from integration.test_api import Stack
from integration.test_api_auth import bearer, error_of, owned_rows
from sqlalchemy import select

from ragbot.api.app import create_app
from ragbot.db.models import Base
from ragbot.runtime import Runtime
from ragbot.tenancy.bots import BotChanges

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:Payload indexes have no effect in the local Qdrant"),
    pytest.mark.filterwarnings("ignore:Local mode performs exact"),
]

CITE_ALL = " [1] [2] [3]"

#: Bot A: a made-up kitchen-appliance manual; bot B: a made-up spacecraft maintenance guide.
PAGES: dict[str, dict[str, str]] = {
    "A": {
        "kettle.md": "# Brightline KT-200 electric kettle\n\nFill the KT-200 kettle between the MIN mark and "
        "the 1.7 litre MAX line. Descale the kettle every four weeks with a sachet of citric acid dissolved "
        "in half a litre of warm water. Boil-dry protection switches the heating element off when the jug "
        "is empty.\n",
        "toaster.md": "# Brightline TS-4 toaster\n\nThe browning dial goes from 1 (pale) to 7 (dark). Bagel "
        "mode heats only the inner elements so the cut side toasts and the crust stays soft. Slide the crumb "
        "tray out to the left and empty it once a week.\n",
        "blender.md": "# Brightline BL-900 blender\n\nThe BL-900 blender has a pulse button and an ice "
        "crush program that runs the blades in short bursts. Never run the blender empty, and twist the lid "
        "until it clicks or the motor will not start.\n",
        "dishwasher.md": "# Brightline DW-60 dishwasher\n\nThe eco program washes at 50 degrees. Refill "
        "the rinse aid when the indicator lights up. The coarse filter sits under the lower spray arm: "
        "twist it anticlockwise, rinse it under the tap and lock it back in.\n",
        "oven.md": "# Brightline OV-5 oven\n\nThe fan-assisted OV-5 oven preheats to 180 degrees in eight "
        "minutes. Pyrolytic self-cleaning heats the cavity to 480 degrees for three hours and locks the "
        "door until it has cooled; wipe the ash away afterwards.\n",
        "fridge.md": "# Brightline FR-300 refrigerator\n\nSet the FR-300 fridge to 4 degrees. The crisper "
        "drawer has a humidity slider: closed for leafy vegetables, open for fruit. Defrost the freezer "
        "compartment when the ice layer is thicker than five millimetres.\n",
    },
    "B": {
        "thrusters.md": "# Reaction control thrusters\n\nInspect the hydrazine injector valves of every "
        "reaction control thruster after forty orbits. The catalyst bed heater must warm the iridium "
        "catalyst bed to 120 degrees before a thruster firing, or the hydrazine decomposes unevenly.\n",
        "life-support.md": "# Life support\n\nThe oxygen generation assembly splits water by electrolysis "
        "into oxygen for the cabin and hydrogen vented overboard. Replace the lithium hydroxide carbon "
        "dioxide scrubber canisters every 72 hours of crewed operation.\n",
        "heat-shield.md": "# Heat shield\n\nInspect the ablative heat shield tiles for micrometeoroid "
        "pitting after each re-entry. A pitted tile is cut out and replaced, and the gaps between tiles are "
        "packed with ceramic gap filler.\n",
        "solar-arrays.md": "# Solar arrays\n\nThe solar array drive assembly rotates each wing to track "
        "the sun. Lubricate the gimbal bearings with vacuum-rated grease every 500 orbits and log the "
        "degradation of the photovoltaic cells from the telemetry.\n",
        "docking.md": "# Docking port\n\nThe androgynous docking mechanism closes twelve latch hooks. "
        "After latching, leak-check the docking port seals by pressurising the vestibule and watching "
        "the pressure decay for thirty minutes.\n",
        "reaction-wheels.md": "# Reaction wheels\n\nFour reaction wheels control the vessel's attitude. "
        "Momentum desaturation fires the thrusters to unload the wheels when they approach their speed "
        "limit; rising bearing friction in the telemetry means a wheel needs service.\n",
    },
}

#: Questions only the other bot's pages answer, with the page that answers them.
QUESTIONS: dict[str, list[tuple[str, str]]] = {
    "B": [
        (
            "How often are the hydrazine injector valves of the reaction control thrusters inspected?",
            "thrusters.md",
        ),
        ("When are the lithium hydroxide carbon dioxide scrubber canisters replaced?", "life-support.md"),
        ("How is micrometeoroid pitting on the ablative heat shield tiles repaired?", "heat-shield.md"),
        ("How do I lubricate the gimbal bearings of the solar array drive?", "solar-arrays.md"),
        ("How are the docking port seals leak-checked after latching?", "docking.md"),
        ("What is momentum desaturation of the reaction wheels?", "reaction-wheels.md"),
        ("What temperature must the catalyst bed heater reach before a thruster firing?", "thrusters.md"),
        ("How does the oxygen generation assembly produce oxygen by electrolysis?", "life-support.md"),
    ],
    "A": [
        ("How often should the KT-200 kettle be descaled with citric acid?", "kettle.md"),
        ("What does bagel mode do on the TS-4 toaster?", "toaster.md"),
        ("Can the BL-900 blender crush ice?", "blender.md"),
        ("Where is the coarse filter of the DW-60 dishwasher?", "dishwasher.md"),
        ("How long does pyrolytic self-cleaning of the OV-5 oven take?", "oven.md"),
        ("What temperature should the FR-300 refrigerator be set to?", "fridge.md"),
        ("How do I empty the crumb tray of the toaster?", "toaster.md"),
        ("How much water fits in the electric kettle?", "kettle.md"),
    ],
}
OTHER = {"A": "B", "B": "A"}


@dataclass
class Tenants:
    stack: Stack
    runtime: Runtime
    app: FastAPI
    admin_key: str
    bots: dict[str, dict[str, Any]]  # "A", "B" -> the bot
    keys: dict[str, str]  # admin keys scoped to each bot
    docs: dict[str, Path]  # each bot's content folder

    def id(self, name: str) -> str:
        return str(self.bots[name]["id"])

    def origin(self, name: str) -> str:
        return f"https://{name.lower()}.tenants.example"

    def client(self) -> TestClient:
        return TestClient(self.app)


@pytest.fixture(scope="module", params=test_api.COMBOS)
def tenants(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    scratch_database: Callable[[str], AbstractContextManager[str]],
    real_sparse_encoder: Any,
    real_dense_encoder: Any,
) -> Iterator[Tenants]:
    db_kind, index_kind = request.param
    data_dir = tmp_path_factory.mktemp(f"tenants-{db_kind}-{index_kind}")
    katan = KatanServer(log_dir=data_dir).start()
    try:
        with scratch_database(db_kind) as url:
            index = test_api._make_index(index_kind, data_dir)
            settings = test_api._settings(data_dir, url, katan.base_url, min_relevance=None, grounding="off")
            stack = Stack(settings, index, real_sparse_encoder, real_dense_encoder)
            runtime = stack.runtime()
            admin_key, _ = runtime.api_keys.create(name="tenants-admin")
            built = Tenants(stack, runtime, create_app(runtime=runtime, warmup=False), admin_key, {}, {}, {})
            with built.client() as client:
                for name, title in (("A", "Brightline kitchen"), ("B", "Orbital maintenance")):
                    bot = runtime.bots.create(
                        title, BotChanges(allowed_origins=[built.origin(name)]), actor="tests"
                    )
                    built.bots[name] = bot
                    built.keys[name], _ = runtime.api_keys.create(name=f"key-{name}", bot_id=bot["id"])
                    folder = data_dir / f"content-{name}"
                    folder.mkdir()
                    for page, content in PAGES[name].items():
                        (folder / page).write_text(content, encoding="utf-8")
                    built.docs[name] = folder
                    job = client.post(
                        "/v1/sources?wait=180",
                        json={"target": str(folder), "bot_id": bot["id"]},
                        headers=bearer(admin_key),
                    )
                    assert job.status_code == 200 and job.json()["status"] == "succeeded", job.text
                    assert job.json()["report"]["added"] == len(PAGES[name]), job.json()
            yield built
            runtime.close()
            index.close()
    finally:
        katan.stop()


# --- asking ---------------------------------------------------------------------------------------------


def ask_with_key(client: TestClient, key: str, question: str) -> dict[str, Any]:
    """Server to server: an admin key scoped to the bot, JSON answer."""
    response = client.post("/v1/chat", json={"message": question + CITE_ALL}, headers=bearer(key))
    assert response.status_code == 200, response.text
    return dict(response.json())


def ask_as_visitor(client: TestClient, t: Tenants, name: str, question: str) -> dict[str, Any]:
    """The widget's way: a visitor session from an allowed page, the answer streamed as SSE."""
    origin = t.origin(name)
    session = client.post(
        "/v1/widget/session", json={"public_key": t.bots[name]["public_key"]}, headers={"Origin": origin}
    )
    assert session.status_code == 200, session.text
    response = client.post(
        "/v1/chat",
        json={"message": question + CITE_ALL, "stream": True},
        headers={**bearer(session.json()["token"]), "Origin": origin},
    )
    assert response.status_code == 200, response.text
    events = sse_events(response.text)
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "start" and kinds[-1] == "done", kinds
    done = events[-1][1]
    streamed = [data for kind, data in events if kind == "citation"]
    assert [c["chunk_id"] for c in streamed] == [c["chunk_id"] for c in done["citations"]]
    return {**done, "token": session.json()["token"], "origin": origin}


def check_own_citations(t: Tenants, name: str, citations: list[dict[str, Any]], question: str) -> None:
    """Every citation is one of ``name``'s passages: in its index, from its pages, none of the other's."""
    other = OTHER[name]
    assert citations, f"bot {name} cited nothing for {question!r}: retrieval handed over no passage"
    ids = [c["chunk_id"] for c in citations]
    assert set(t.runtime.index.chunks(t.id(name), ids)) == set(ids), (question, citations)
    assert t.runtime.index.chunks(t.id(other), ids) == {}, (question, citations)
    for citation in citations:
        path = Path(citation["path"])
        assert path.name in PAGES[name] and path.name not in PAGES[other], (question, citation)
        assert str(t.docs[other]) not in str(citation["path"]), (question, citation)


def retrieved_uris(t: Tenants, name: str) -> set[str]:
    """Every passage ever handed to the LLM for this bot's answers (the retrieval log)."""
    table = Base.metadata.tables["retrieval_logs"]
    with t.runtime.engine.connect() as conn:
        return set(conn.scalars(select(table.c.uri).where(table.c.bot_id == t.id(name))))


def document_uris(t: Tenants, name: str) -> set[str]:
    table = Base.metadata.tables["documents"]
    with t.runtime.engine.connect() as conn:
        return set(conn.scalars(select(table.c.uri).where(table.c.bot_id == t.id(name))))


# --- isolation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("asked", ["A", "B"])
def test_a_bot_never_cites_the_other_bots_content(tenants: Tenants, asked: str) -> None:
    """``asked`` gets the questions only the other bot's pages answer, by key and by widget."""
    t, other = tenants, OTHER[asked]
    with t.client() as client:
        for question, _ in QUESTIONS[other]:
            by_key = ask_with_key(client, t.keys[asked], question)
            check_own_citations(t, asked, by_key["citations"], question)
            stored = client.get(
                f"/v1/conversations/{by_key['conversation_id']}", headers=bearer(t.keys[asked])
            )
            assert stored.status_code == 200 and stored.json()["bot_id"] == t.id(asked)
            check_own_citations(t, asked, stored.json()["messages"][-1]["citations"], question)

            by_widget = ask_as_visitor(client, t, asked, question)
            check_own_citations(t, asked, by_widget["citations"], question)
            mine = client.get(
                f"/v1/conversations/{by_widget['conversation_id']}",
                headers={**bearer(by_widget["token"]), "Origin": by_widget["origin"]},
            )
            assert mine.status_code == 200, mine.text
            check_own_citations(t, asked, mine.json()["messages"][-1]["citations"], question)
    logged = retrieved_uris(t, asked)
    assert logged and logged <= document_uris(t, asked), logged - document_uris(t, asked)
    assert not logged & document_uris(t, other)


@pytest.mark.parametrize("asked", ["A", "B"])
def test_the_questions_are_answered_by_the_bot_that_has_the_content(tenants: Tenants, asked: str) -> None:
    """The control: each question finds its page in the bot that has it, so the isolation test above
    asks questions retrieval would have answered from the other bot, had it been able to see it."""
    t = tenants
    with t.client() as client:
        for question, page in QUESTIONS[asked]:
            answer = ask_with_key(client, t.keys[asked], question)
            check_own_citations(t, asked, answer["citations"], question)
            assert page in {Path(c["path"]).name for c in answer["citations"]}, (
                question,
                answer["citations"],
            )


def test_a_key_or_visitor_of_one_bot_cannot_ask_the_other(tenants: Tenants) -> None:
    t = tenants
    question = QUESTIONS["B"][0][0]
    with t.client() as client:
        body = {"message": question + CITE_ALL, "bot_id": t.id("B")}
        error_of(client.post("/v1/chat", json=body, headers=bearer(t.keys["A"])), 403, code="forbidden")
        visitor = client.post(
            "/v1/widget/session",
            json={"public_key": t.bots["A"]["public_key"]},
            headers={"Origin": t.origin("A")},
        ).json()
        headers = {**bearer(visitor["token"]), "Origin": t.origin("A")}
        error_of(client.post("/v1/chat", json=body, headers=headers), 403, code="forbidden")
        # bot B's widget is not allowed on bot A's site
        opened = client.post(
            "/v1/widget/session",
            json={"public_key": t.bots["B"]["public_key"]},
            headers={"Origin": t.origin("A")},
        )
        error_of(opened, 403, code="origin_not_allowed")


# --- deleting a bot (last: it deletes bot B) -----------------------------------------------------------

#: Tables that must hold rows of bot B before it is deleted, so their emptiness afterwards means something.
B_MUST_OWN = (
    "conversations",
    "messages",
    "citations",
    "retrieval_logs",
    "documents",
    "sources",
    "ingest_jobs",
    "api_keys",
    "fusion_calibrations",
    "bots",
)


def test_deleting_a_bot_removes_what_it_owned_and_leaves_the_other_intact(tenants: Tenants) -> None:
    t = tenants
    a, b = t.id("A"), t.id("B")
    with t.client() as client:
        a_question, a_page = QUESTIONS["A"][0]
        a_conversation = ask_with_key(client, t.keys["A"], a_question)["conversation_id"]
        for question, _ in QUESTIONS["B"][:3]:
            ask_with_key(client, t.keys["B"], question)
        b_visitor = ask_as_visitor(client, t, "B", QUESTIONS["B"][3][0])
        # B's few passages give lists too short to learn fusion weights from: one observation of
        # full-length lists stands for a bot with more content
        ranked = [1.0 - 0.02 * i for i in range(50)]
        t.runtime.retriever.calibration.observe(b, ranked, ranked, ranked)
        t.runtime.retriever.calibration.flush()  # the learned fusion weights reach the database

        before_a, vectors_a = owned_rows(t.runtime, a), t.runtime.index.count(a)
        a_stored = client.get(f"/v1/conversations/{a_conversation}", headers=bearer(t.keys["A"])).json()
        before_b = owned_rows(t.runtime, b)
        assert all(before_b[table] > 0 for table in B_MUST_OWN), before_b
        assert t.runtime.index.count(b) > 0 and t.runtime.retriever.calibration.queries(b) > 0

        deleted = client.delete(f"/v1/bots/{b}", headers=bearer(t.admin_key))
        assert deleted.status_code == 200, deleted.text
        assert deleted.json()["deleted"] is True and deleted.json()["removed"]["conversations"] > 0

        assert t.runtime.index.count(b) == 0
        after_b = owned_rows(t.runtime, b)
        assert {table: n for table, n in after_b.items() if n and table != "bot_audit"} == {}
        assert after_b["bot_audit"] > 0
        assert "delete" in [entry["action"] for entry in t.runtime.bots.audit(b)]
        assert t.runtime.retriever.calibration.queries(b) == 0  # this process forgot it too

        assert owned_rows(t.runtime, a) == before_a
        assert t.runtime.index.count(a) == vectors_a
        again = client.get(f"/v1/conversations/{a_conversation}", headers=bearer(t.keys["A"]))
        assert again.status_code == 200 and again.json() == a_stored
        answer = ask_with_key(client, t.keys["A"], a_question)
        check_own_citations(t, "A", answer["citations"], a_question)
        assert a_page in {Path(c["path"]).name for c in answer["citations"]}

        # bot B's credentials died with it
        error_of(client.get(f"/v1/bots/{b}", headers=bearer(t.admin_key)), 404, code="bot_not_found")
        error_of(client.post("/v1/chat", json={"message": "hi"}, headers=bearer(t.keys["B"])), 401)
        gone: httpx.Response = client.post(
            "/v1/chat",
            json={"message": "hi"},
            headers={**bearer(b_visitor["token"]), "Origin": b_visitor["origin"]},
        )
        error_of(gone, 401, code="invalid_session")
        reopened = client.post(
            "/v1/widget/session",
            json={"public_key": t.bots["B"]["public_key"]},
            headers={"Origin": t.origin("B")},
        )
        error_of(reopened, 404, code="bot_not_found")
