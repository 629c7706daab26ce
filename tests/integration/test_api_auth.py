"""Who may call what, over HTTP, on the real stacks of ``test_api.py`` (SQLite and PostgreSQL with Qdrant
Edge, real encoders, llm-katan).

The sweep is built from ``app.openapi()`` itself: every operation is called without a key, with broken,
revoked and expired keys, with a public widget key, with an admin key of another bot and with a visitor
session of another bot, its path filled with real ids of bot A's objects and its body naming bot A. None may
read or change what it should not, so a route added later is swept without anyone remembering to.
Then: key scoping, revocation, expiry and storage; visitor sessions (origins, ownership, key rotation,
renewal, tampering); rate limits answered as 429 with ``Retry-After``, shared through Redis.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from integration import test_api, test_ratelimit_redis
from integration.test_api import Stack
from sqlalchemy import func, select, text, update
from typer.testing import CliRunner

import ragbot.tenancy.sessions as sessions_module
from ragbot.api.app import create_app
from ragbot.config import get_settings
from ragbot.db.models import ApiKey, Base, utcnow
from ragbot.runtime import Runtime
from ragbot.tenancy.bots import BotChanges
from ragbot.tenancy.sessions import VisitorSessions

#: The deployments of ``test_api.py`` (the sample docs in the default bot), on both databases: who may call
#: what is decided in SQL and the API, the same on either index backend (``test_tenant_isolation.py`` runs
#: every database x index combination).
stack = test_api.stack
COMBOS = [combo for combo in test_api.COMBOS if combo.id in ("sqlite-edge", "postgresql-edge")]
#: The Redis test server (skipped when unreachable, failed under CI).
redis_url = test_ratelimit_redis.redis_url

pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("stack", COMBOS, indirect=True, scope="module"),
]

ORIGIN_A = "https://a.example.org"
ORIGIN_B = "https://b.example.org"
#: A public address (no name to resolve); nothing is ever sent: the test app runs no delivery worker.
WEBHOOK_URL = "https://93.184.215.14/ragbot-hook"

#: Operations of the spec that take no credential: health probes, and opening a visitor session (it takes a
#: public key in the body and checks the Origin against the bot's allowlist instead).
PUBLIC_OPERATIONS = {
    ("GET", "/healthz"),
    ("GET", "/livez"),
    ("GET", "/readyz"),
    ("POST", "/v1/widget/session"),
}
#: Routes outside the spec (``include_in_schema=False`` and FastAPI's own pages): served without a key,
#: none reads or changes anything private.
UNLISTED_ROUTES = {
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/widget.js",
    "/demo",
    "/widget/embed/{public_key}",
    "/agent",
    "/agent/agent.js",
    "/agent/agent.css",
    "/v1/analytics/report.css",  # the report's stylesheet: no data, so no key
}
#: Stands for an id no fixture object provides (see ``test_every_path_parameter_names_a_real_object``).
PLACEHOLDER_ID = "00000000-0000-4000-8000-000000000000"

#: Bodies where a schema-made minimal one would prove nothing: a bot update must try to change something.
BODY_OVERRIDES: dict[tuple[str, str], dict[str, Any]] = {
    ("PATCH", "/v1/bots/{bot_id}"): {
        "title": "changed by the auth sweep",
        "allowed_origins": ["https://evil.example"],
        "welcome_message": "pwned",
    },
    ("PUT", "/v1/sources/{source_id}/schedule"): {"every": "1h"},
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_of(response: httpx.Response, *statuses: int, code: str | None = None) -> dict[str, Any]:
    """The response's ``{"error": {"code", "message"}}`` after checking its status (and code)."""
    where = f"{response.request.method} {response.request.url.path}"
    assert response.status_code in statuses, f"{where}: {response.status_code} {response.text[:300]}"
    error = response.json()["error"]
    assert isinstance(error["code"], str) and error["code"], (where, error)
    assert isinstance(error["message"], str) and error["message"], (where, error)
    if code is not None:
        assert error["code"] == code, (where, error)
    if response.status_code == 401:
        assert response.headers.get("www-authenticate", "").startswith("Bearer"), (where, response.headers)
    return dict(error)


# --- the deployment under test -------------------------------------------------------------------------


@dataclass
class World:
    """Two bots, A and B, on one deployment; A has a conversation, an ingest job and keys."""

    stack: Stack
    runtime: Runtime
    app: FastAPI
    bot_a: dict[str, Any]
    bot_b: dict[str, Any]
    admin_key: str  # unscoped
    key_a: str
    key_a_id: str
    key_b: str
    conversation_a: str  # started with bot A's admin key
    answer_a: str  # the bot's answer in it
    waiting_a: str  # a visitor's, waiting for a person: in bot A's agent queue
    job_a: str
    source_a: str  # the folder that job ingested
    webhook_a: str  # a webhook subscription of bot A
    delivery_a: str  # one of its deliveries (the handoff's event)
    docs_a: Path
    revoked_key: str  # unscoped, revoked
    expired_key: str  # unscoped, expired
    runtimes: list[Runtime] = field(default_factory=list)

    @property
    def a(self) -> str:
        return str(self.bot_a["id"])

    @property
    def b(self) -> str:
        return str(self.bot_b["id"])

    def client(self) -> TestClient:
        """A client with no credential of its own: each request names the one it tests."""
        return TestClient(self.app)

    def other_app(self, **settings: Any) -> FastAPI:
        """Another API process on the same database and index (optionally with other settings)."""
        runtime = self.stack.runtime(settings=self.stack.settings.model_copy(update=settings))
        self.runtimes.append(runtime)
        return create_app(runtime=runtime, warmup=False)

    def new_bot(self, name: str, **changes: Any) -> dict[str, Any]:
        return self.runtime.bots.create(name, BotChanges(**changes), actor="tests")


def open_session(
    client: TestClient, public_key: str, origin: str | None, token: str | None = None
) -> httpx.Response:
    body: dict[str, Any] = {"public_key": public_key}
    if token is not None:
        body["token"] = token
    return client.post("/v1/widget/session", json=body, headers={"Origin": origin} if origin else {})


def visitor(client: TestClient, public_key: str, origin: str) -> dict[str, Any]:
    response = open_session(client, public_key, origin)
    assert response.status_code == 200, response.text
    return dict(response.json())


def visitor_headers(session: dict[str, Any], origin: str) -> dict[str, str]:
    return {**bearer(session["token"]), "Origin": origin}


def expire_key(runtime: Runtime, key_id: str) -> None:
    """Moves a key's expiry into the past through SQL, as if its lifetime had run out."""
    with runtime.session_factory() as s:
        s.execute(
            update(ApiKey).where(ApiKey.id == key_id).values(expires_at=utcnow() - timedelta(seconds=5))
        )
        s.commit()


@pytest.fixture(scope="module")
def world(stack: Stack) -> Iterator[World]:
    runtime = stack.runtime()
    app = create_app(runtime=runtime, warmup=False)
    bot_a = runtime.bots.create("Kettle shop", BotChanges(allowed_origins=[ORIGIN_A]), actor="tests")
    bot_b = runtime.bots.create("Rival shop", BotChanges(allowed_origins=[ORIGIN_B]), actor="tests")
    admin_key, _ = runtime.api_keys.create(name="auth-admin")
    key_a, row_a = runtime.api_keys.create(name="auth-a", bot_id=bot_a["id"])
    key_b, _ = runtime.api_keys.create(name="auth-b", bot_id=bot_b["id"])
    revoked_key, revoked = runtime.api_keys.create(name="auth-revoked")
    runtime.api_keys.revoke(revoked["id"])
    expired_key, expired = runtime.api_keys.create(name="auth-expired")
    expire_key(runtime, expired["id"])

    docs_a = stack.settings.data_dir / f"auth-docs-{bot_a['id']}"
    docs_a.mkdir()
    (docs_a / "kettle.md").write_text(
        "# Brewmaster kettle care\n\nDescale the Brewmaster kettle every four weeks with citric acid. "
        "Never immerse the base in water; wipe it with a damp cloth.\n",
        encoding="utf-8",
    )
    _, webhook = runtime.webhooks.create(bot_a["id"], WEBHOOK_URL, ["handoff.requested"])
    with TestClient(app) as client:
        job = client.post(
            "/v1/sources?wait=120",
            json={"target": str(docs_a), "bot_id": bot_a["id"]},
            headers=bearer(admin_key),
        )
        assert job.status_code == 200 and job.json()["status"] == "succeeded", job.text
        chat = client.post(
            "/v1/chat",
            json={"message": "How often is the Brewmaster kettle descaled? [1]"},
            headers=bearer(key_a),
        )
        assert chat.status_code == 200, chat.text
        assert chat.json()["citations"], chat.json()
        session = visitor(client, bot_a["public_key"], ORIGIN_A)
        asked = client.post(
            "/v1/chat", json={"message": "A person, please"}, headers=visitor_headers(session, ORIGIN_A)
        )
        assert asked.status_code == 200, asked.text
        waiting = asked.json()["conversation_id"]
        handoff = client.post(
            f"/v1/conversations/{waiting}/handoff", headers=visitor_headers(session, ORIGIN_A)
        )
        assert handoff.status_code == 200 and handoff.json()["owner_mode"] == "pending_human", handoff.text
    built = World(
        stack=stack,
        runtime=runtime,
        app=app,
        bot_a=bot_a,
        bot_b=bot_b,
        admin_key=admin_key,
        key_a=key_a,
        key_a_id=row_a["id"],
        key_b=key_b,
        conversation_a=chat.json()["conversation_id"],
        answer_a=chat.json()["message_id"],
        waiting_a=waiting,
        job_a=job.json()["id"],
        source_a=runtime.schedules.sources(bot_a["id"])[0].id,
        webhook_a=webhook["id"],
        delivery_a=runtime.webhooks.deliveries(webhook["id"])[0]["id"],
        docs_a=docs_a,
        revoked_key=revoked_key,
        expired_key=expired_key,
    )
    yield built
    for other in built.runtimes:
        other.close()
    runtime.close()


# --- the operations of the spec, filled with bot A's objects ---------------------------------------------


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # the spec's template
    url: str  # filled with bot A's ids
    params: dict[str, str]
    body: dict[str, Any] | None
    names_a_bot: bool  # the caller names the bot (path, query or body), so another bot's key must fail

    def send(self, client: TestClient, headers: dict[str, str]) -> httpx.Response:
        return client.request(self.method, self.url, params=self.params, json=self.body, headers=headers)

    def without_bot(self) -> Operation | None:
        """The same read naming no bot (a key then means its own): None where that changes nothing."""
        if self.method != "GET" or "bot_id" not in self.params or "{bot_id}" in self.path:
            return None
        params = {k: v for k, v in self.params.items() if k != "bot_id"}
        return Operation(self.method, self.path, self.url, params, self.body, names_a_bot=False)


def path_values(world: World) -> dict[str, str]:
    """Real ids of bot A's objects, by the parameter names the routes use."""
    return {
        "bot_id": world.a,
        "conversation_id": world.conversation_a,
        "job_id": world.job_a,
        "source_id": world.source_a,
        "key_id": world.key_a_id,
        "public_key": str(world.bot_a["public_key"]),
        "message_id": world.answer_a,
        "subscription_id": world.webhook_a,
        "delivery_id": world.delivery_a,
    }


def body_values(world: World) -> dict[str, Any]:
    """What a minimal body carries for fields of these names (bot A's, where a field names an object)."""
    return {
        **path_values(world),
        "message": "How do I descale the kettle? [1]",
        "query": "How do I descale the Brewmaster kettle?",
        "target": str(world.docs_a),
        "name": "auth sweep",
    }


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/components/schemas/"), ref
        schema = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return schema


def example(schema: dict[str, Any], spec: dict[str, Any], values: dict[str, Any], name: str = "") -> Any:
    """A minimal valid value for ``schema``: required fields only, plus any field that names one of bot A's
    objects (``values``), so the request is about bot A."""
    if name in values:
        return values[name]
    schema = _resolve(schema, spec)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [s for s in schema[key] if _resolve(s, spec).get("type") != "null"]
            return example(options[0], spec, values, name)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        required = set(schema.get("required", ()))
        return {
            key: example(sub, spec, values, key)
            for key, sub in schema.get("properties", {}).items()
            if key in required or key in values
        }
    if kind == "string":
        return "x" * max(1, int(schema.get("minLength", 1)))
    if kind in ("integer", "number"):
        return schema.get("minimum", 1)
    if kind == "boolean":
        return False
    if kind == "array":
        return [example(schema.get("items", {}), spec, values)] * int(schema.get("minItems", 0))
    return "x"


def operations(world: World) -> list[Operation]:
    spec = world.app.openapi()
    ids, values = path_values(world), body_values(world)
    found: list[Operation] = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            method = method.upper()
            if (method, path) in PUBLIC_OPERATIONS:
                continue
            url = re.sub(r"\{(\w+)\}", lambda m: ids.get(m.group(1), PLACEHOLDER_ID), path)
            params: dict[str, str] = {}
            names_bot = "{bot_id}" in path
            for param in op.get("parameters", []):
                if param["in"] != "query":
                    continue
                if param["name"] in ids:
                    params[param["name"]] = ids[param["name"]]
                    names_bot = names_bot or param["name"] == "bot_id"
                elif param.get("required"):
                    params[param["name"]] = str(example(param["schema"], spec, values, param["name"]))
            body = None
            schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if schema is not None:
                body = example(schema, spec, values)
                body.update(BODY_OVERRIDES.get((method, path), {}))
                names_bot = names_bot or "bot_id" in body
            found.append(Operation(method, path, url, params, body, names_bot))
    return found


def served_routes(routes: list[Any]) -> Iterator[tuple[str, bool]]:
    """Every route the app answers, as (path, listed in the spec); walks included routers of any depth."""
    for route in routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if callable(contexts):  # FastAPI >= 0.165 keeps included routers as nodes
            yield from served_routes(list(contexts()))
        elif hasattr(route, "path"):
            yield route.path, bool(getattr(route, "include_in_schema", False))


# --- bot A before and after ------------------------------------------------------------------------------


def _owner_column(table: Any) -> Any:
    return table.c.id if table.name == "bots" else table.c.get("bot_id")


def owned_rows(runtime: Runtime, bot_id: str) -> dict[str, int]:
    """How many rows each table holds for the bot (every table with a ``bot_id``: new ones count too)."""
    counts: dict[str, int] = {}
    with runtime.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            if (column := _owner_column(table)) is not None:
                query = select(func.count()).select_from(table).where(column == bot_id)
                counts[table.name] = int(conn.execute(query).scalar_one())
    return counts


def owned_data(runtime: Runtime, bot_id: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table the bot owns, every column: settings, keys, conversations and their
    owner mode, messages, webhooks and deliveries, leads, audit trail..."""
    data: dict[str, list[tuple[Any, ...]]] = {}
    with runtime.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            if (column := _owner_column(table)) is not None:
                query = select(table).where(column == bot_id).order_by(*table.primary_key.columns)
                data[table.name] = [tuple(row) for row in conn.execute(query)]
    return data


def snapshot(world: World) -> dict[str, Any]:
    """Everything of bot A a request could change: its rows in every table, and its vectors."""
    return {"rows": owned_data(world.runtime, world.a), "vectors": world.runtime.index.count(world.a)}


# --- the sweep -------------------------------------------------------------------------------------------

CREDENTIALS = [
    "none",
    "wrong_scheme",
    "empty_bearer",
    "unknown_key",
    "garbage",
    "revoked_key",
    "expired_key",
    "public_key",
    "other_bot_key",
    "other_bot_visitor",
]


def credential_headers(kind: str, world: World, client: TestClient) -> dict[str, str]:
    if kind == "none":
        return {}
    if kind == "wrong_scheme":
        return {"Authorization": f"Basic {base64.b64encode(world.admin_key.encode()).decode()}"}
    if kind == "empty_bearer":
        return {"Authorization": "Bearer "}
    if kind == "unknown_key":
        return bearer("rb_" + secrets.token_urlsafe(32))
    if kind == "garbage":
        return bearer("not-a-key")
    if kind == "revoked_key":
        return bearer(world.revoked_key)
    if kind == "expired_key":
        return bearer(world.expired_key)
    if kind == "public_key":
        return bearer(str(world.bot_a["public_key"]))
    if kind == "other_bot_key":
        return bearer(world.key_b)
    if kind == "other_bot_visitor":
        return visitor_headers(visitor(client, str(world.bot_b["public_key"]), ORIGIN_B), ORIGIN_B)
    raise AssertionError(kind)


def a_mentions(world: World) -> list[str]:
    """Strings that only something of bot A's contains."""
    return [
        world.a,
        str(world.bot_a["public_key"]),
        world.conversation_a,
        world.waiting_a,
        world.job_a,
        world.key_a_id,
        world.answer_a,
        world.webhook_a,
        world.delivery_a,
    ]


def check_refused(kind: str, op: Operation, response: httpx.Response, world: World) -> None:
    where = f"{kind}: {op.method} {op.path}"
    if kind in (
        "none",
        "wrong_scheme",
        "empty_bearer",
        "unknown_key",
        "garbage",
        "revoked_key",
        "expired_key",
    ):
        error_of(response, 401)
    elif kind == "public_key":
        error_of(response, 401, 403)
    elif kind == "other_bot_visitor":
        error_of(response, 403, 404)
    elif kind == "other_bot_key":
        if response.is_success:
            # Only a listing of the key's own bot may answer: a GET naming no bot at all.
            assert op.method == "GET" and not op.names_a_bot, (
                f"{where}: {response.status_code} {response.text}"
            )
            leaked = [m for m in a_mentions(world) if m in response.text]
            assert not leaked, f"{where} shows bot A's {leaked}: {response.text[:300]}"
        else:
            assert response.status_code != 422, (
                f"{where}: the sweep's body is invalid, add one to BODY_OVERRIDES"
            )
            error_of(response, 403, 404)
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize("kind", CREDENTIALS)
def test_no_route_serves_a_caller_it_should_not(world: World, kind: str) -> None:
    ops = operations(world)
    must_cover = {
        ("POST", "/v1/chat"),
        ("POST", "/v1/search"),
        ("DELETE", "/v1/bots/{bot_id}"),
        ("GET", "/v1/keys"),
    }
    assert must_cover <= {(o.method, o.path) for o in ops}, "the sweep lost routes it must cover"
    before = snapshot(world)
    with world.client() as client:
        headers = credential_headers(kind, world, client)
        for op in ops:
            check_refused(kind, op, op.send(client, headers), world)
            unnamed = op.without_bot() if kind == "other_bot_key" else None
            if unnamed is not None:
                check_refused(kind, unnamed, unnamed.send(client, headers), world)
    assert snapshot(world) == before, "a refused request changed bot A"


def test_the_spec_declares_the_bearer_scheme_on_every_private_operation(world: World) -> None:
    spec = world.app.openapi()
    for path, item in spec["paths"].items():
        for method, op in item.items():
            declared = bool(op.get("security"))
            assert declared != ((method.upper(), path) in PUBLIC_OPERATIONS), (
                method,
                path,
                op.get("security"),
            )


def test_routes_outside_the_spec_are_only_the_known_public_pages(world: World) -> None:
    unlisted = {path for path, listed in served_routes(list(world.app.routes)) if not listed}
    assert unlisted == UNLISTED_ROUTES
    with world.client() as client:
        for path in ("/openapi.json", "/docs", "/redoc", "/widget.js", "/demo", "/agent", "/agent/agent.js"):
            page = client.get(path)
            assert page.status_code == 200, path
            assert world.admin_key not in page.text and world.conversation_a not in page.text, path
        embed = client.get(f"/widget/embed/{world.bot_a['public_key']}")
        assert embed.status_code == 200 and ORIGIN_A in embed.headers["content-security-policy"]
        assert client.get("/healthz").status_code == 200


def test_every_path_parameter_names_a_real_object(world: World) -> None:
    """The sweep fills path parameters with bot A's ids; a route whose parameter has none would only be
    checked against a made-up id: give the fixture such an object and add it to ``path_values``."""
    unknown = {
        (op.method, op.path)
        for op in operations(world)
        for name in re.findall(r"\{(\w+)\}", op.path)
        if name not in path_values(world)
    }
    assert not unknown, f"no real object for the path parameters of {sorted(unknown)}"


# --- admin keys: scope, revocation, expiry, storage -----------------------------------------------------


def test_a_scoped_key_works_within_its_bot_only(world: World) -> None:
    headers = bearer(world.key_a)
    with world.client() as client:
        own = client.post(
            "/v1/chat", json={"message": "How often is the kettle descaled? [1]"}, headers=headers
        )
        assert own.status_code == 200, own.text
        conversation = client.get(f"/v1/conversations/{own.json()['conversation_id']}", headers=headers)
        assert conversation.status_code == 200 and conversation.json()["bot_id"] == world.a
        named = client.post("/v1/chat", json={"message": "Kettle base?", "bot_id": world.a}, headers=headers)
        assert named.status_code == 200, named.text
        assert client.get(f"/v1/conversations/{world.conversation_a}", headers=headers).status_code == 200

        more = world.docs_a.parent / f"auth-more-{world.a}"
        more.mkdir(exist_ok=True)
        (more / "toaster.md").write_text(
            "# Toaster\n\nThe crumb tray slides out to the left.\n", encoding="utf-8"
        )
        job = client.post("/v1/sources?wait=120", json={"target": str(more)}, headers=headers)
        assert job.status_code == 200 and job.json()["status"] == "succeeded", job.text
        assert job.json()["bot_id"] == world.a
        assert client.get(f"/v1/sources/jobs/{job.json()['id']}", headers=headers).status_code == 200
        upload = client.post(
            "/v1/sources?wait=120",
            files={"file": ("grill.md", b"# Grill\n\nPreheat for five minutes.")},
            headers=headers,
        )
        assert upload.status_code == 200 and upload.json()["bot_id"] == world.a, upload.text
        error_of(
            client.post(
                "/v1/sources",
                files={"file": ("x.md", b"# X\n\ny")},
                data={"bot_id": world.b},
                headers=headers,
            ),
            403,
            code="forbidden",
        )

        read = client.get(f"/v1/bots/{world.a}", headers=headers)
        assert read.status_code == 200 and read.json()["id"] == world.a
        changed = client.patch(f"/v1/bots/{world.a}", json={"welcome_message": "Hello!"}, headers=headers)
        assert changed.status_code == 200 and changed.json()["welcome_message"] == "Hello!"
        assert world.runtime.bots.audit(world.a)[0]["actor"].startswith("key:rb_")

        assert [b["id"] for b in client.get("/v1/bots", headers=headers).json()] == [world.a]
        error_of(client.get(f"/v1/bots/{world.b}", headers=headers), 403, code="forbidden")
        error_of(client.post("/v1/bots", json={"name": "Mine now"}, headers=headers), 403, code="forbidden")
        error_of(client.post("/v1/chat", json={"message": "hi", "bot_id": world.b}, headers=headers), 403)
        error_of(client.post("/v1/chat", json={"message": "hi", "bot_id": "default"}, headers=headers), 403)
        error_of(
            client.get(f"/v1/conversations/{world.conversation_a}?bot_id={world.b}", headers=headers), 403
        )

        queue = client.get("/v1/agent/conversations", headers=headers)
        assert queue.status_code == 200 and world.waiting_a in {c["id"] for c in queue.json()}, queue.text
        others = client.get("/v1/agent/conversations", headers=bearer(world.key_b))
        assert others.status_code == 200 and world.waiting_a not in others.text
        detail = client.get(f"/v1/agent/conversations/{world.waiting_a}", headers=headers)
        assert detail.status_code == 200, detail.text
        error_of(client.get(f"/v1/agent/conversations/{world.waiting_a}", headers=bearer(world.key_b)), 404)

        listed = client.get("/v1/keys", headers=headers).json()
        assert listed and {k["bot_id"] for k in listed} == {world.a}
        error_of(client.post("/v1/keys", json={"name": "unscoped"}, headers=headers), 403, code="forbidden")
        error_of(client.post("/v1/keys", json={"bot_id": world.b}, headers=headers), 403, code="forbidden")
        created = client.post("/v1/keys", json={"name": "colleague", "bot_id": world.a}, headers=headers)
        assert created.status_code == 201 and created.json()["bot_id"] == world.a


def test_revoking_a_key_takes_effect_at_once_everywhere(world: World) -> None:
    other_process = world.other_app()
    with world.client() as client, TestClient(other_process) as other:
        created = client.post(
            "/v1/keys", json={"name": "to revoke", "bot_id": world.a}, headers=bearer(world.admin_key)
        )
        assert created.status_code == 201, created.text
        key, key_id = created.json()["key"], created.json()["id"]
        assert client.get(f"/v1/bots/{world.a}", headers=bearer(key)).status_code == 200
        assert other.get(f"/v1/bots/{world.a}", headers=bearer(key)).status_code == 200
        revoked = client.delete(f"/v1/keys/{key_id}", headers=bearer(world.admin_key))
        assert revoked.status_code == 200 and revoked.json()["revoked_at"] and not revoked.json()["active"]
        error_of(client.get(f"/v1/bots/{world.a}", headers=bearer(key)), 401, code="invalid_api_key")
        error_of(other.get(f"/v1/bots/{world.a}", headers=bearer(key)), 401, code="invalid_api_key")
        error_of(other.post("/v1/chat", json={"message": "hi"}, headers=bearer(key)), 401)


def test_a_scoped_key_revokes_its_own_bots_keys_only(world: World) -> None:
    _, other_b = world.runtime.api_keys.create(name="b-colleague", bot_id=world.b)
    own_key, own = world.runtime.api_keys.create(name="a-colleague", bot_id=world.a)
    with world.client() as client:
        error_of(client.delete(f"/v1/keys/{other_b['id']}", headers=bearer(world.key_a)), 404)
        assert world.runtime.api_keys.get(other_b["id"])["active"]
        assert client.delete(f"/v1/keys/{own['id']}", headers=bearer(world.key_a)).status_code == 200
        error_of(client.get(f"/v1/bots/{world.a}", headers=bearer(own_key)), 401)


def test_an_expired_key_is_a_401(world: World) -> None:
    key, row = world.runtime.api_keys.create(name="short-lived", bot_id=world.a)
    with world.client() as client:
        assert client.get(f"/v1/bots/{world.a}", headers=bearer(key)).status_code == 200
        expire_key(world.runtime, row["id"])
        error_of(client.get(f"/v1/bots/{world.a}", headers=bearer(key)), 401, code="invalid_api_key")
        error_of(client.post("/v1/chat", json={"message": "hi"}, headers=bearer(key)), 401)
        listed = {k["id"]: k for k in client.get("/v1/keys", headers=bearer(world.admin_key)).json()}
    assert listed[row["id"]]["active"] is False and listed[row["id"]]["revoked_at"] is None


def test_keys_are_stored_as_sha256_and_never_listed(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from ragbot.cli_admin import keys_app

    with world.client() as client:
        created = client.post(
            "/v1/keys", json={"name": "stored", "bot_id": world.a}, headers=bearer(world.admin_key)
        )
        assert created.status_code == 201, created.text
        key, key_id = created.json()["key"], created.json()["id"]
        digest = hashlib.sha256(key.encode()).hexdigest()
        for listing in (
            client.get("/v1/keys", headers=bearer(world.admin_key)),
            client.get("/v1/keys", headers=bearer(world.key_a)),
        ):
            assert listing.status_code == 200
            assert key not in listing.text and digest not in listing.text
            assert key[3:] not in listing.text  # not even the secret part without its prefix
            entry = next(k for k in listing.json() if k["id"] == key_id)
            assert "key" not in entry and "key_hash" not in entry
    assert all(
        "key_hash" not in k and key not in json.dumps(k, default=str)
        for k in world.runtime.api_keys.list_keys()
    )

    # ``ragbot keys list`` on the same database
    monkeypatch.setenv("RAGBOT_DATA_DIR", str(world.stack.settings.data_dir))
    monkeypatch.setenv("RAGBOT_DATABASE_URL", world.stack.settings.resolved_database_url)
    get_settings.cache_clear()
    try:
        for args in (["list"], ["list", "--json"], ["list", "--bot", world.a]):
            result = CliRunner().invoke(keys_app, args)
            assert result.exit_code == 0, result.output
            assert key_id in result.output, (args, result.output)
            assert key not in result.output and digest not in result.output and key[3:] not in result.output
    finally:
        get_settings.cache_clear()

    with world.runtime.engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM api_keys WHERE id = :id"), {"id": key_id}).mappings().one()
    assert row["key_hash"] == digest
    dumped = " ".join(str(v) for v in row.values())
    assert key not in dumped and key[3:] not in dumped


# --- visitor sessions -------------------------------------------------------------------------------------


def test_a_session_opens_only_from_an_allowed_origin(world: World) -> None:
    empty = world.new_bot("No sites yet")
    wildcard = world.new_bot("Subdomains", allowed_origins=["https://*.example.com"])
    with world.client() as client:
        opened = open_session(client, str(world.bot_a["public_key"]), ORIGIN_A)
        assert opened.status_code == 200, opened.text
        body = opened.json()
        assert body["token"] and body["visitor_id"] and body["expires_at"] and body["bot"]["id"] == world.a
        assert opened.headers["access-control-allow-origin"] == ORIGIN_A

        for origin in (
            ORIGIN_B,
            "https://a.example.org.evil.io",
            "http://a.example.org",
            "null",
            "not a url",
        ):
            error_of(
                open_session(client, str(world.bot_a["public_key"]), origin), 403, code="origin_not_allowed"
            )
        error_of(open_session(client, str(world.bot_a["public_key"]), None), 403, code="origin_not_allowed")
        error_of(open_session(client, "pk_no-such-key", ORIGIN_A), 404, code="bot_not_found")
        error_of(open_session(client, world.admin_key, ORIGIN_A), 404, code="bot_not_found")

        for origin in (ORIGIN_A, ORIGIN_B, "https://example.com", "http://127.0.0.1:8000"):
            error_of(open_session(client, empty["public_key"], origin), 403, code="origin_not_allowed")

        for origin in ("https://shop.example.com", "https://eu.shop.example.com"):
            assert open_session(client, wildcard["public_key"], origin).status_code == 200, origin
        for origin in (
            "https://example.com",
            "https://example.com.evil.io",
            "https://shop.example.com.evil.io",
            "https://evilexample.com",
            "http://shop.example.com",
            "https://shop.example.com:8443",
        ):
            error_of(open_session(client, wildcard["public_key"], origin), 403, code="origin_not_allowed")


def test_a_visitor_reads_and_continues_only_its_own_conversations(world: World) -> None:
    pk_a = str(world.bot_a["public_key"])
    with world.client() as client:
        first = visitor(client, pk_a, ORIGIN_A)
        second = visitor(client, pk_a, ORIGIN_A)
        assert first["visitor_id"] != second["visitor_id"]
        mine = client.post(
            "/v1/chat", json={"message": "Kettle descaling? [1]"}, headers=visitor_headers(first, ORIGIN_A)
        )
        assert mine.status_code == 200, mine.text
        conversation_id = mine.json()["conversation_id"]
        read = client.get(f"/v1/conversations/{conversation_id}", headers=visitor_headers(first, ORIGIN_A))
        assert read.status_code == 200 and read.json()["visitor_id"] == first["visitor_id"]

        theirs = visitor_headers(second, ORIGIN_A)
        error_of(
            client.get(f"/v1/conversations/{conversation_id}", headers=theirs),
            404,
            code="conversation_not_found",
        )
        hijack = {"message": "and now?", "conversation_id": conversation_id}
        error_of(client.post("/v1/chat", json=hijack, headers=theirs), 404, code="conversation_not_found")
        error_of(client.post("/v1/chat", json={**hijack, "stream": True}, headers=theirs), 404)
        # a conversation of the same bot started with an admin key belongs to no visitor
        error_of(client.get(f"/v1/conversations/{world.conversation_a}", headers=theirs), 404)

        other_bot = client.post(
            "/v1/chat", json={"message": "hello", "bot_id": world.b}, headers=bearer(world.admin_key)
        ).json()["conversation_id"]
        for url in (f"/v1/conversations/{other_bot}", f"/v1/conversations/{other_bot}?bot_id={world.b}"):
            error_of(client.get(url, headers=visitor_headers(first, ORIGIN_A)), 404)
        error_of(
            client.post(
                "/v1/chat",
                json={"message": "hi", "bot_id": world.b},
                headers=visitor_headers(first, ORIGIN_A),
            ),
            403,
            code="forbidden",
        )
        own_named = client.post(
            "/v1/chat", json={"message": "hi", "bot_id": world.a}, headers=visitor_headers(first, ORIGIN_A)
        )
        assert own_named.status_code == 200, own_named.text
        # the token from a page the bot does not allow: refused, as a session would be
        error_of(
            client.get(f"/v1/conversations/{conversation_id}", headers=visitor_headers(first, ORIGIN_B)), 403
        )
        after = world.runtime.bots.get(world.a)
    assert after is not None and after["public_key"] == world.bot_a["public_key"]


def test_rotating_the_public_key_ends_its_sessions(world: World) -> None:
    origin = "https://rotate.example.org"
    bot = world.new_bot("Rotating", allowed_origins=[origin])
    with world.client() as client:
        session = visitor(client, bot["public_key"], origin)
        ok = client.post("/v1/chat", json={"message": "hello"}, headers=visitor_headers(session, origin))
        assert ok.status_code == 200, ok.text
        rotated = client.post(f"/v1/bots/{bot['id']}/rotate-key", headers=bearer(world.admin_key))
        assert rotated.status_code == 200 and rotated.json()["public_key"] != bot["public_key"]
        error_of(
            client.post("/v1/chat", json={"message": "again"}, headers=visitor_headers(session, origin)),
            401,
            code="invalid_session",
        )
        url = f"/v1/conversations/{ok.json()['conversation_id']}"
        error_of(client.get(url, headers=visitor_headers(session, origin)), 401, code="invalid_session")
        error_of(open_session(client, bot["public_key"], origin), 404, code="bot_not_found")
        renewed = open_session(client, rotated.json()["public_key"], origin, token=session["token"])
        assert renewed.status_code == 200, renewed.text
        assert client.get(url, headers=visitor_headers(renewed.json(), origin)).status_code == 200


@contextmanager
def clock_back(monkeypatch: pytest.MonkeyPatch, seconds: float) -> Iterator[None]:
    """The session module (only it) believes it is ``seconds`` earlier: the real route issues old tokens."""
    with monkeypatch.context() as patch:
        patch.setattr(sessions_module, "time", types.SimpleNamespace(time=lambda: time.time() - seconds))
        yield


def test_an_expired_token_renews_as_the_same_visitor(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    pk_a = str(world.bot_a["public_key"])
    ttl = world.stack.settings.visitor_token_ttl_s
    with world.client() as client:
        session = visitor(client, pk_a, ORIGIN_A)
        chat = client.post(
            "/v1/chat", json={"message": "Kettle? [1]"}, headers=visitor_headers(session, ORIGIN_A)
        )
        assert chat.status_code == 200, chat.text
        url = f"/v1/conversations/{chat.json()['conversation_id']}"
        with clock_back(monkeypatch, ttl + 60):  # the route issues a token that ran out a minute ago
            expired = open_session(client, pk_a, ORIGIN_A, token=session["token"]).json()
        assert expired["visitor_id"] == session["visitor_id"]
        error = error_of(
            client.get(url, headers=visitor_headers(expired, ORIGIN_A)), 401, code="invalid_session"
        )
        assert "expired" in error["message"]
        error_of(
            client.post("/v1/chat", json={"message": "hi"}, headers=visitor_headers(expired, ORIGIN_A)), 401
        )

        renewed = open_session(client, pk_a, ORIGIN_A, token=expired["token"])
        assert renewed.status_code == 200 and renewed.json()["visitor_id"] == session["visitor_id"]
        assert client.get(url, headers=visitor_headers(renewed.json(), ORIGIN_A)).status_code == 200

        renew_window = world.stack.settings.visitor_renew_days * 86400
        with clock_back(monkeypatch, renew_window + 3600):
            ancient = open_session(client, pk_a, ORIGIN_A, token=session["token"]).json()
        fresh = open_session(client, pk_a, ORIGIN_A, token=ancient["token"]).json()
        assert fresh["visitor_id"] != session["visitor_id"]  # too old to renew: a new visitor
        b_session = visitor(client, str(world.bot_b["public_key"]), ORIGIN_B)
        crossed = open_session(client, pk_a, ORIGIN_A, token=b_session["token"]).json()
        assert crossed["visitor_id"] != b_session["visitor_id"]  # another bot's visitor does not carry over
        error_of(client.get(url, headers=visitor_headers(fresh, ORIGIN_A)), 404)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def test_a_tampered_or_foreign_token_is_a_401(world: World) -> None:
    pk_a = str(world.bot_a["public_key"])
    with world.client() as client:
        session = visitor(client, pk_a, ORIGIN_A)
        chat = client.post(
            "/v1/chat", json={"message": "Kettle?"}, headers=visitor_headers(session, ORIGIN_A)
        )
        url = f"/v1/conversations/{chat.json()['conversation_id']}"
        header, payload, signature = session["token"].split(".")
        claims = _claims(session["token"])
        other = visitor(client, pk_a, ORIGIN_A)
        forged = {
            "other visitor": {**claims, "sub": other["visitor_id"]},
            "other bot": {**claims, "bot": world.b},
            "longer life": {**claims, "exp": claims["exp"] + 86400},
        }
        tokens = [f"{header}.{_b64(json.dumps(c).encode())}.{signature}" for c in forged.values()]
        flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
        tokens.append(f"{header}.{payload}.{flipped}")
        none_header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        tokens.append(f"{none_header}.{payload}.")
        foreign, _ = VisitorSessions("another deployment's secret, 32+ characters long").issue(
            world.a, pk_a, session["visitor_id"]
        )
        tokens.append(foreign)
        for token in tokens:
            headers = {**bearer(token), "Origin": ORIGIN_A}
            error_of(client.get(url, headers=headers), 401, code="invalid_session")
            error_of(
                client.post("/v1/chat", json={"message": "hi"}, headers=headers), 401, code="invalid_session"
            )
        assert client.get(url, headers=visitor_headers(session, ORIGIN_A)).status_code == 200


@pytest.mark.parametrize(
    "field_name", ["model", "temperature", "system_prompt", "prompt", "llm_model", "persona"]
)
def test_the_body_cannot_choose_model_temperature_or_prompt(world: World, field_name: str) -> None:
    with world.client() as client:
        session = visitor(client, str(world.bot_a["public_key"]), ORIGIN_A)
        body = {"message": "hello", field_name: "x"}
        for headers in (visitor_headers(session, ORIGIN_A), bearer(world.key_a), bearer(world.admin_key)):
            for stream in (False, True):
                error_of(client.post("/v1/chat", json={**body, "stream": stream}, headers=headers), 422)


# --- rate limits ------------------------------------------------------------------------------------------


def assert_rate_limited(response: httpx.Response, scope: str, longest_s: int) -> None:
    error = error_of(response, 429, code="rate_limited")
    assert response.json().get("limit") == scope, response.json()
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit() and 1 <= int(retry_after) <= longest_s, retry_after
    assert error["message"]


def test_a_visitor_over_the_per_minute_limit_gets_a_429(world: World) -> None:
    origin = "https://busy.example.org"
    bot = world.new_bot("Busy", allowed_origins=[origin], rate_visitor_per_minute=2)
    with world.client() as client:
        session = visitor(client, bot["public_key"], origin)
        for n in range(2):
            response = client.post(
                "/v1/chat", json={"message": f"hello {n}"}, headers=visitor_headers(session, origin)
            )
            assert response.status_code == 200, response.text
        third = client.post("/v1/chat", json={"message": "hello 3"}, headers=visitor_headers(session, origin))
        assert_rate_limited(third, "visitor", 60)
        streamed = client.post(
            "/v1/chat", json={"message": "hello 4", "stream": True}, headers=visitor_headers(session, origin)
        )
        assert_rate_limited(streamed, "visitor", 60)
        neighbour = visitor(client, bot["public_key"], origin)  # the limit is per visitor
        ok = client.post("/v1/chat", json={"message": "hi"}, headers=visitor_headers(neighbour, origin))
        assert ok.status_code == 200, ok.text


def test_the_daily_budget_is_a_429_for_everyone(world: World) -> None:
    origin = "https://thrifty.example.org"
    bot = world.new_bot("Thrifty", allowed_origins=[origin], daily_message_budget=1)
    with world.client() as client:
        first = client.post(
            "/v1/chat", json={"message": "hello", "bot_id": bot["id"]}, headers=bearer(world.admin_key)
        )
        assert first.status_code == 200, first.text
        again = client.post(
            "/v1/chat", json={"message": "again", "bot_id": bot["id"]}, headers=bearer(world.admin_key)
        )
        assert_rate_limited(again, "bot_daily", 86400)
        session = visitor(client, bot["public_key"], origin)
        refused = client.post(
            "/v1/chat", json={"message": "me too"}, headers=visitor_headers(session, origin)
        )
        assert_rate_limited(refused, "bot_daily", 86400)
        # another bot's budget is its own
        assert client.post("/v1/chat", json={"message": "hi"}, headers=bearer(world.key_a)).status_code == 200


def test_two_processes_share_the_counts_through_redis(world: World, redis_url: str) -> None:
    import redis

    origin = "https://shared.example.org"
    bot = world.new_bot("Shared", allowed_origins=[origin], rate_visitor_per_minute=2)
    first_app, second_app = world.other_app(redis_url=redis_url), world.other_app(redis_url=redis_url)
    try:
        with TestClient(first_app) as one, TestClient(second_app) as two:
            session = visitor(one, bot["public_key"], origin)
            headers = visitor_headers(session, origin)
            assert one.post("/v1/chat", json={"message": "one"}, headers=headers).status_code == 200
            assert two.post("/v1/chat", json={"message": "two"}, headers=headers).status_code == 200
            assert_rate_limited(
                one.post("/v1/chat", json={"message": "three"}, headers=headers), "visitor", 60
            )
            assert_rate_limited(
                two.post("/v1/chat", json={"message": "four"}, headers=headers), "visitor", 60
            )
    finally:
        raw = redis.Redis.from_url(redis_url)
        leftovers = list(raw.scan_iter(match=f"*{bot['id']}*"))
        if leftovers:
            raw.delete(*leftovers)
        raw.close()
