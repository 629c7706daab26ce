"""Bots and admin API keys over the real HTTP API, on SQLite and PostgreSQL.

CRUD tests build a Runtime that never loads a model (a Runtime only builds what a request touches); one
test ingests the sample content with the real encoders, into a Qdrant Edge shard in a temporary folder,
and chats through a real OpenAI-compatible server (llm-katan) to show a bot's settings are read per turn.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fixtures.auth import admin_headers
from integration.katan import KatanServer

from ragbot.api.app import create_app
from ragbot.config import Settings
from ragbot.runtime import Runtime

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).resolve().parents[2] / "ragbot" / "sample_content"
MODEL = "openai/katan-echo"
NOT_LLM = "http://127.0.0.1:9/v1"  # CRUD never calls the model; nothing listens on loopback port 9


def _settings(data_dir: Path, database_url: str, llm_base: str = NOT_LLM, **extra: Any) -> Settings:
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        llm_model=MODEL,
        llm_api_base=llm_base,
        llm_api_key="sk-test",
        llm_max_retries=0,
        api_path_roots=[SAMPLE.parent, data_dir],
        **extra,
    )


class Deployment:
    """One running API over one database; ``client()`` opens another client (another caller)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.app = create_app(runtime=runtime, warmup=False)

    def client(self, headers: dict[str, str] | None = None) -> TestClient:
        return TestClient(self.app, headers=headers if headers is not None else admin_headers(self.runtime))


@pytest.fixture
def deployment(tmp_path: Path, database_url: str) -> Iterator[Deployment]:
    runtime = Runtime(_settings(tmp_path / "data", database_url))
    yield Deployment(runtime)
    runtime.close()


@pytest.fixture
def admin(deployment: Deployment) -> Iterator[TestClient]:
    with deployment.client() as client:
        yield client


def _create(client: TestClient, name: str = "Acme Support", **fields: Any) -> dict[str, Any]:
    response = client.post("/v1/bots", json={"name": name, **fields})
    assert response.status_code == 201, response.text
    bot: dict[str, Any] = response.json()
    return bot


def _error(response: Any) -> str:
    code: str = response.json()["error"]["code"]
    return code


def _actor(client: TestClient, deployment: Deployment) -> str:
    """How the audit trail names the key this client sends."""
    key = client.headers["Authorization"].removeprefix("Bearer ")
    principal = deployment.runtime.api_keys.authenticate(key)
    assert principal is not None
    return principal.actor


# --------------------------------------------------------------------------- bots


def test_a_bot_is_created_read_listed_and_deleted(admin: TestClient, deployment: Deployment) -> None:
    bot = _create(admin, allowed_origins=["HTTPS://www.Acme.test/"], welcome_message="Hi!")
    assert bot["id"].startswith("acme-support-")
    assert bot["public_key"].startswith("pk_")
    assert bot["name"] == "Acme Support"
    assert bot["allowed_origins"] == ["https://www.acme.test"]
    assert bot["welcome_message"] == "Hi!"
    assert bot["llm_model"] is None and bot["min_relevance"] is None  # the deployment's defaults apply
    assert bot["updated_by"] == _actor(admin, deployment) and bot["updated_at"]

    read = admin.get(f"/v1/bots/{bot['id']}")
    assert read.status_code == 200 and read.json() == bot
    other = _create(admin, "Other")
    assert other["id"] != bot["id"] and other["public_key"] != bot["public_key"]
    listed = [b["id"] for b in admin.get("/v1/bots").json()]
    assert bot["id"] in listed and other["id"] in listed

    deleted = admin.delete(f"/v1/bots/{bot['id']}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["deleted"] is True and deleted.json()["removed"]["bots"] == 1
    gone = admin.get(f"/v1/bots/{bot['id']}")
    assert gone.status_code == 404 and _error(gone) == "bot_not_found"
    assert admin.delete(f"/v1/bots/{bot['id']}").status_code == 404
    assert admin.patch(f"/v1/bots/{bot['id']}", json={"title": "x"}).status_code == 404
    assert [b["id"] for b in admin.get("/v1/bots").json()].count(other["id"]) == 1
    assert bot["id"] not in [b["id"] for b in admin.get("/v1/bots").json()]


INVALID_BOTS: list[dict[str, Any]] = [
    {},
    {"name": ""},
    {"name": "A", "allowed_origins": ["www.acme.test"]},
    {"name": "A", "allowed_origins": ["https://*.test"]},
    {"name": "A", "starter_questions": [f"q{i}" for i in range(7)]},
    {"name": "A", "accent_color": "blue"},
    {"name": "A", "public_key": "pk_mine"},
]


def test_an_invalid_bot_is_not_created(admin: TestClient) -> None:
    for body in INVALID_BOTS:
        response = admin.post("/v1/bots", json=body)
        assert response.status_code == 422, (body, response.text)
        assert _error(response) == "invalid_request"
    assert admin.get("/v1/bots").json() == []


def test_patch_changes_only_the_fields_given(admin: TestClient) -> None:
    bot = _create(admin, welcome_message="Hi!", persona="formal", starter_questions=["Pricing?"])
    response = admin.patch(f"/v1/bots/{bot['id']}", json={"welcome_message": "Hello again"})
    assert response.status_code == 200, response.text
    changed = response.json()
    assert changed["welcome_message"] == "Hello again"
    unchanged = {k: v for k, v in changed.items() if k not in ("welcome_message", "updated_at")}
    assert unchanged == {k: v for k, v in bot.items() if k not in ("welcome_message", "updated_at")}
    assert admin.get(f"/v1/bots/{bot['id']}").json() == changed


def test_null_restores_the_deployments_default(admin: TestClient) -> None:
    bot = _create(
        admin,
        persona="formal",
        title="Acme help",
        accent_color="#FF0000",
        language_policy="de",
        llm_model=MODEL,
        min_relevance=0.5,
        rate_visitor_per_minute=3,
        daily_message_budget=0,
        allowed_origins=["https://www.acme.test"],
        starter_questions=["Pricing?"],
    )
    assert (bot["accent_color"], bot["daily_message_budget"]) == ("#ff0000", 0)
    fields = [
        "persona",
        "title",
        "accent_color",
        "language_policy",
        "llm_model",
        "min_relevance",
        "rate_visitor_per_minute",
        "daily_message_budget",
        "allowed_origins",
        "starter_questions",
    ]
    response = admin.patch(f"/v1/bots/{bot['id']}", json=dict.fromkeys(fields))
    assert response.status_code == 200, response.text
    reset = response.json()
    assert {f: reset[f] for f in fields} == {
        "persona": "",
        "title": "",
        "accent_color": "#2563eb",
        "language_policy": "match",
        "llm_model": None,
        "min_relevance": None,
        "rate_visitor_per_minute": None,
        "daily_message_budget": None,
        "allowed_origins": [],
        "starter_questions": [],
    }
    assert reset["name"] == "Acme Support"


REFUSED_PATCHES: list[tuple[dict[str, Any], str]] = [
    ({"welcome": "typo"}, "invalid_request"),
    ({"public_key": "pk_mine"}, "invalid_request"),
    ({"accent_color": "#12345g"}, "invalid_request"),
    ({"accent_color": "#2563eb\n"}, "invalid_request"),
    ({"language_policy": "English"}, "invalid_request"),
    ({"min_relevance": 2}, "invalid_request"),
    ({"allowed_origins": ["https://ok.acme.test", "ftp://acme.test"]}, "invalid_request"),
    ({"name": None}, "invalid_setting"),
    ({"llm_model": "openai/gpt-unlisted"}, "invalid_setting"),
    ({"llm_fallbacks": [MODEL, "anthropic/unlisted"]}, "invalid_setting"),
]


def test_a_refused_patch_changes_nothing(admin: TestClient) -> None:
    """Unknown fields, invalid values and models the deployment does not allow are all 422, and leave
    neither a change nor an audit entry behind."""
    bot = _create(admin, allowed_origins=["https://www.acme.test"])
    for body, code in REFUSED_PATCHES:
        response = admin.patch(f"/v1/bots/{bot['id']}", json=body)
        assert response.status_code == 422, (body, response.text)
        assert _error(response) == code, body
    assert admin.get(f"/v1/bots/{bot['id']}").json() == bot
    assert [e["action"] for e in admin.get(f"/v1/bots/{bot['id']}/audit").json()] == ["create"]


def test_a_model_outside_the_allowlist_is_refused_and_allowed_once_listed(
    tmp_path: Path, database_url: str, admin: TestClient, deployment: Deployment
) -> None:
    bot = _create(admin)
    refused = admin.patch(f"/v1/bots/{bot['id']}", json={"llm_model": "openai/gpt-4o-mini"})
    assert refused.status_code == 422 and _error(refused) == "invalid_setting"
    assert "openai/gpt-4o-mini" in refused.json()["error"]["message"]
    assert admin.post("/v1/bots", json={"name": "B", "llm_model": "openai/gpt-4o-mini"}).status_code == 422
    # the deployment's own model is always allowed
    assert admin.patch(f"/v1/bots/{bot['id']}", json={"llm_model": MODEL}).status_code == 200

    listed = _settings(
        deployment.runtime.settings.data_dir, database_url, allowed_llm_models=["openai/gpt-4o-mini"]
    )
    operator = Runtime(listed)
    try:
        with Deployment(operator).client() as client:
            response = client.patch(
                f"/v1/bots/{bot['id']}",
                json={"llm_model": "openai/gpt-4o-mini", "llm_fallbacks": [MODEL]},
            )
            assert response.status_code == 200, response.text
            assert response.json()["llm_model"] == "openai/gpt-4o-mini"
            assert response.json()["llm_fallbacks"] == [MODEL]
            created = client.post("/v1/bots", json={"name": "B", "llm_model": "openai/gpt-4o-mini"})
            assert created.status_code == 201 and created.json()["llm_model"] == "openai/gpt-4o-mini"
    finally:
        operator.close()


def test_every_change_is_audited_with_its_actor(admin: TestClient, deployment: Deployment) -> None:
    bot = _create(admin, welcome_message="Hi!")
    actor = _actor(admin, deployment)
    assert actor.startswith("key:rb_") and actor.endswith("(tests)")

    with deployment.client(admin_headers(deployment.runtime, name="ops")) as ops:
        ops_actor = _actor(ops, deployment)
        changed = ops.patch(
            f"/v1/bots/{bot['id']}", json={"welcome_message": "Hello", "min_relevance": 0.3}
        ).json()
        assert changed["updated_by"] == ops_actor != actor
        assert changed["updated_at"] > bot["updated_at"]
        same = ops.patch(f"/v1/bots/{bot['id']}", json={"welcome_message": "Hello"}).json()
        assert same["updated_at"] == changed["updated_at"]  # nothing changed: no new entry, no new stamp
    rotated = admin.post(f"/v1/bots/{bot['id']}/rotate-key").json()

    audit = admin.get(f"/v1/bots/{bot['id']}/audit")
    assert audit.status_code == 200, audit.text
    entries = audit.json()
    assert [(e["action"], e["actor"]) for e in entries] == [
        ("rotate_key", actor),
        ("update", ops_actor),
        ("create", actor),
    ]
    assert entries[1]["changes"] == {"welcome_message": ["Hi!", "Hello"], "min_relevance": [None, 0.3]}
    assert entries[2]["changes"]["name"] == "Acme Support"
    assert entries[2]["changes"]["welcome_message"] == "Hi!"
    assert rotated["public_key"] not in str(entries)  # the audit trail does not leak the widget key
    assert rotated["updated_by"] == actor


def test_rotating_the_key_gives_a_new_public_key(admin: TestClient) -> None:
    bot = _create(admin)
    response = admin.post(f"/v1/bots/{bot['id']}/rotate-key")
    assert response.status_code == 200, response.text
    rotated = response.json()
    assert rotated["public_key"].startswith("pk_") and rotated["public_key"] != bot["public_key"]
    assert admin.get(f"/v1/bots/{bot['id']}").json()["public_key"] == rotated["public_key"]
    assert admin.post("/v1/bots/no-such-bot/rotate-key").status_code == 404


def test_unknown_bots_are_not_found(admin: TestClient) -> None:
    for response in (
        admin.get("/v1/bots/no-such-bot"),
        admin.patch("/v1/bots/no-such-bot", json={"title": "x"}),
        admin.delete("/v1/bots/no-such-bot"),
        admin.get("/v1/bots/no-such-bot/audit"),
    ):
        assert response.status_code == 404, response.text
        assert _error(response) == "bot_not_found"


def test_admin_routes_need_a_working_admin_key(deployment: Deployment, admin: TestClient) -> None:
    bot = _create(admin)
    for headers, status, code in [
        ({}, 401, "unauthorized"),
        ({"Authorization": "Bearer rb_not-a-real-key"}, 401, "invalid_api_key"),
        ({"Authorization": f"Bearer {bot['public_key']}"}, 403, "forbidden"),
    ]:
        with deployment.client(headers) as client:
            response = client.get("/v1/bots")
            assert response.status_code == status, response.text
            assert _error(response) == code
            assert client.post("/v1/bots", json={"name": "x"}).status_code == status
    assert [b["id"] for b in admin.get("/v1/bots").json()] == [bot["id"]]


# --------------------------------------------------------------------------- keys


def test_a_key_is_shown_once_and_listed_without_its_secret(admin: TestClient) -> None:
    response = admin.post("/v1/keys", json={"name": "ci"})
    assert response.status_code == 201, response.text
    created = response.json()
    key = created["key"]
    assert key.startswith("rb_") and created["prefix"] == key[:10]
    assert created["name"] == "ci" and created["bot_id"] is None and created["active"] is True

    listing = admin.get("/v1/keys")
    assert listing.status_code == 200
    assert key not in listing.text and key[10:] not in listing.text
    row = next(k for k in listing.json() if k["id"] == created["id"])
    assert "key" not in row and "key_hash" not in row
    assert row == {k: v for k, v in created.items() if k != "key"}


def test_a_revoked_key_is_refused_on_its_next_call(deployment: Deployment, admin: TestClient) -> None:
    created = admin.post("/v1/keys", json={"name": "leaked"}).json()
    with deployment.client({"Authorization": f"Bearer {created['key']}"}) as leaked:
        assert leaked.get("/v1/bots").status_code == 200
        revoked = admin.delete(f"/v1/keys/{created['id']}")
        assert revoked.status_code == 200, revoked.text
        assert revoked.json()["active"] is False and revoked.json()["revoked_at"]
        response = leaked.get("/v1/bots")
        assert response.status_code == 401 and _error(response) == "invalid_api_key"
        assert response.headers["WWW-Authenticate"] == "Bearer"
    listed = next(k for k in admin.get("/v1/keys").json() if k["id"] == created["id"])
    assert listed["active"] is False  # kept in the list, marked revoked
    assert admin.delete("/v1/keys/no-such-key").status_code == 404


def test_a_key_with_a_lifetime_expires(admin: TestClient) -> None:
    created = admin.post("/v1/keys", json={"expires_in_days": 1}).json()
    assert created["expires_at"] and created["active"] is True
    for days in (0, -1, 10000):
        assert admin.post("/v1/keys", json={"expires_in_days": days}).status_code == 422


def test_a_scoped_key_sees_and_changes_only_its_bot(deployment: Deployment, admin: TestClient) -> None:
    mine, other = _create(admin, "Mine"), _create(admin, "Other")
    missing = admin.post("/v1/keys", json={"bot_id": "no-such-bot"})
    assert missing.status_code == 404 and _error(missing) == "bot_not_found"

    created = admin.post("/v1/keys", json={"name": "mine", "bot_id": mine["id"]})
    assert created.status_code == 201 and created.json()["bot_id"] == mine["id"]
    with deployment.client({"Authorization": f"Bearer {created.json()['key']}"}) as scoped:
        assert [b["id"] for b in scoped.get("/v1/bots").json()] == [mine["id"]]
        assert scoped.get(f"/v1/bots/{mine['id']}").status_code == 200
        assert scoped.patch(f"/v1/bots/{mine['id']}", json={"title": "Mine!"}).status_code == 200
        for response in (
            scoped.get(f"/v1/bots/{other['id']}"),
            scoped.patch(f"/v1/bots/{other['id']}", json={"title": "pwned"}),
            scoped.delete(f"/v1/bots/{other['id']}"),
            scoped.post("/v1/bots", json={"name": "New"}),
            scoped.post("/v1/keys", json={"name": "unscoped"}),
            scoped.post("/v1/keys", json={"bot_id": other["id"]}),
        ):
            assert response.status_code == 403, response.text
        assert {k["bot_id"] for k in scoped.get("/v1/keys").json()} == {mine["id"]}
        assert scoped.delete(f"/v1/keys/{admin.get('/v1/keys').json()[0]['id']}").status_code == 404
    assert admin.get(f"/v1/bots/{other['id']}").json()["title"] == ""


def test_deleting_a_bot_revokes_its_scoped_keys(deployment: Deployment, admin: TestClient) -> None:
    bot = _create(admin)
    key = admin.post("/v1/keys", json={"bot_id": bot["id"]}).json()["key"]
    assert admin.delete(f"/v1/bots/{bot['id']}").status_code == 200
    with deployment.client({"Authorization": f"Bearer {key}"}) as scoped:
        assert scoped.get("/v1/bots").status_code == 401
    assert all(k["bot_id"] != bot["id"] for k in admin.get("/v1/keys").json())


# --------------------------------------------------------------------------- settings read per turn


def test_a_bots_settings_apply_from_the_next_turn(
    tmp_path: Path,
    database_url: str,
    katan_echo: KatanServer,
    real_sparse_encoder: Any,
    real_dense_encoder: Any,
) -> None:
    """No restart, no cache to clear: a PATCH is what the very next chat turn answers with."""
    from connectors.files import FileConnector

    settings = _settings(tmp_path / "data", database_url, katan_echo.base_url)
    runtime = Runtime(settings, sparse_encoder=real_sparse_encoder, dense_encoder=real_dense_encoder)
    try:
        with Deployment(runtime).client() as client:
            bot = _create(client, "Docs")
            report = runtime.ingest_service.ingest(
                bot["id"],
                FileConnector(str(SAMPLE / "hybrid-retrieval.md"), max_bytes=settings.max_upload_bytes),
            )
            assert (report.added, report.failed) == (1, 0)
            question = {
                "message": "How does hybrid retrieval fuse sparse and dense lists?",
                "bot_id": bot["id"],
            }

            answered = client.post("/v1/chat", json=question)
            assert answered.status_code == 200, answered.text
            assert answered.json()["status"] == "complete" and answered.json()["citations"]

            decline = "I can only help with Acme questions. Email help@acme.test."
            patched = client.patch(
                f"/v1/bots/{bot['id']}", json={"min_relevance": 1.0, "decline_message": decline}
            )
            assert patched.status_code == 200, patched.text
            refused = client.post("/v1/chat", json=question).json()
            assert (refused["status"], refused["answer"], refused["citations"]) == ("refused", decline, [])

            other = client.patch(f"/v1/bots/{bot['id']}", json={"decline_message": "Ask a human, please."})
            assert other.status_code == 200
            assert client.post("/v1/chat", json=question).json()["answer"] == "Ask a human, please."

            default_text = client.patch(f"/v1/bots/{bot['id']}", json={"decline_message": None})
            assert default_text.json()["decline_message"] == ""
            fallback = client.post("/v1/chat", json=question).json()
            assert fallback["status"] == "refused" and fallback["answer"].strip()
            assert fallback["answer"] != "Ask a human, please."

            client.patch(f"/v1/bots/{bot['id']}", json={"min_relevance": None})  # the deployment's floor
            again = client.post("/v1/chat", json=question).json()
            assert again["status"] == "complete" and again["citations"]

            assert runtime.index.count(bot["id"]) > 0
            assert client.delete(f"/v1/bots/{bot['id']}").status_code == 200
            assert runtime.index.count(bot["id"]) == 0  # its vectors went with it
            gone = client.post("/v1/chat", json=question)
            assert gone.status_code == 404 and _error(gone) == "bot_not_found"
    finally:
        runtime.close()
