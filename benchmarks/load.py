"""Many visitors at once: ``ragbot serve`` under concurrent SSE chats, with the LLM outside ragbot.

N visitors each open a widget session and send a message every ``--interval`` seconds for ``--duration``
seconds (a new conversation, then ``--follow-ups`` follow-ups in it, then a new one), reading each answer
as server-sent events. ``--interval 0`` sends again as soon as an answer ends: the stack's capacity.

Real parts only: ``ragbot serve`` in a subprocess on a loopback port, after ``ragbot ingest`` of the
sample content; the LLM is llm-katan (an OpenAI-compatible server, echo backend) with ``--ttft-ms`` and
``--chunk-delay-ms`` as its own first-token delay and pace; clients are httpx (async). Embedded by default
(SQLite, Qdrant Edge); ``--database-url postgresql+psycopg://...`` runs on a fresh schema of that server,
dropped afterwards.

A few warm-up turns go first (a fresh deployment loads models and calibrates its relevance floor on its
first questions). After the run ragbot is stopped with SIGTERM (a graceful shutdown) and the database is
read. Printed: messages sent / stored (found in the database) / answered / failed with a clear error (an
``error`` event or an HTTP error with a code) / lost (neither: a stream cut, a timeout, a message the
database does not have); time to first token p50/p95/p99 as the client sees it, for first messages and
follow-ups, split into the LLM's share (the wait for the LLM before the first token, condensing a
follow-up included, as the ``done`` event's ``timings`` report it) and ragbot's own (the rest); beside
it, the LLM asked directly once a second during the run (its own first token on this machine under this
load); answers per second. ``--json PATH`` keeps the figures and every turn.

Where ragbot's own share goes is split as the ``done`` event's ``timings`` report it: storing the visitor's
message, retrieval, and the time the grounding gate held the LLM's text (``--grounding verify``: a sentence is
shown once its citations support it; llm-katan's echo never reads as a supported sentence, so there the whole
answer is held and an extractive answer follows). ``ragbot serve``'s CPU use is printed beside.

Faults: ``--fault-stop CMD`` runs a shell command ``--fault-at`` seconds in (default: half-way) and
``--fault-start CMD`` ``--fault-down`` seconds later; turns sent before, during and after are counted apart
(after it cleared, every turn should be answered again without restarting ragbot). ``--webhooks`` subscribes a
receiver on loopback to ``message.created`` and leaves the sending to a ``ragbot worker --no-jobs`` process
(``RAGBOT_API_SENDS_WEBHOOKS=false``); after the run it waits until the outbox is empty and prints the
deliveries queued / accepted / sent again / missing. ``--kill-worker`` is the fault of a worker killed with
SIGKILL at ``--fault-at`` and a new one started ``--fault-down`` later. ``--repeat N`` runs N times
(a fresh ragbot each) and prints the medians; ``--side-by-side`` alternates embedded and ``--database-url``.

    python benchmarks/load.py --visitors 50 --interval 10 --duration 90
    python benchmarks/load.py --visitors 50 --interval 10 --duration 90 --repeat 3 --side-by-side \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test
    python benchmarks/load.py --visitors 16 --interval 0 --duration 40      # capacity
    python benchmarks/load.py ... --database-url ... --fault-stop 'pg_ctlcluster 15 main restart'
    python benchmarks/load.py ... --redis-url redis://127.0.0.1:6379/0 \\
        --fault-stop 'redis-cli shutdown nosave' --fault-down 5 \\
        --fault-start "redis-server --bind 127.0.0.1 --port 6379 --daemonize yes --save '' --dir /tmp"
    python benchmarks/load.py ... --llm-error-rate 0.15 --llm-hang-rate 0.15  # 30% of LLM calls fail
    python benchmarks/load.py ... --database-url ... --kill-worker        # the webhook worker SIGKILLed
    python benchmarks/load.py ... --py-spy /tmp/pyspy/bin/py-spy --profile-out load.svg
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from sqlalchemy import Connection

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fixtures.flaky_llm import FlakyLLM  # noqa: E402
from fixtures.webhook_receiver import Receiver  # noqa: E402
from integration.katan import LOOPBACK, KatanServer, free_port  # noqa: E402

SAMPLE = ROOT / "ragbot" / "sample_content"

QUESTIONS = [
    "How does ragbot combine sparse and dense retrieval?",
    "What is SPLADE?",
    "How do I install ragbot?",
    "Which file formats can I ingest?",
    "How are citations shown?",
    "How do I start the HTTP API?",
    "What does the handoff to a human do?",
    "Which settings choose the LLM?",
    "How do I crawl a website?",
    "What database does ragbot use by default?",
    "Can I use a Qdrant server?",
    "How do follow-up questions work?",
]
FOLLOW_UPS = [
    "How do I change it?",
    "What are the defaults for that?",
    "Can you say more about the second point?",
    "Does that work on PostgreSQL too?",
]
#: Parts of ragbot's own share the ``done`` event's ``timings`` report: storing the visitor's message,
#: retrieval, and the grounding gate holding text until a sentence is verified.
PHASES = ("setup_ms", "retrieval_ms", "held_ms")
#: The webhook sender's timeout under ``--webhooks``: short, so a killed worker's claims are due again
#: soon (after ``ragbot.webhooks.worker.lease_for`` of it).
WEBHOOK_TIMEOUT_S = 2.0
#: ``done`` statuses that are an answer the visitor got (a decline is an answer too).
ANSWERED = {"complete", "refused", "forwarded"}


@dataclass
class Turn:
    visitor: int
    follow_up: bool
    sent_at: float
    http_status: int | None = None
    conversation_id: str | None = None
    visitor_message_id: str | None = None
    message_id: str | None = None
    first_token_s: float | None = None
    ended_at: float | None = None
    status: str | None = None  # the done event's
    error_code: str | None = None  # an error event's, or an HTTP error's
    llm_wait_ms: float | None = None  # the done event's timings
    phases: dict[str, float] = field(default_factory=dict)  # the done event's other timings
    failure: str | None = None  # what went wrong on the client's side (a lost turn)

    @property
    def outcome(self) -> str:
        if self.error_code is not None:
            return "failed_clear"
        if self.status in ANSWERED:
            return "answered"
        return "lost"


@dataclass
class Plan:
    visitors: int
    interval_s: float
    duration_s: float
    follow_ups: int
    turn_timeout_s: float
    base_url: str
    public_key: str
    turns: list[Turn] = field(default_factory=list)


# --- the stack -----------------------------------------------------------------------------------------


def katan_pacing(first_token_ms: int, chunk_delay_ms: int) -> list[str]:
    """llm-katan flags for an LLM whose own first token comes after ``first_token_ms``.

    llm-katan 0.22's echo backend serves one request at a time unless told otherwise (``--max-concurrent``
    1: a 5-requests-a-second ceiling that is the test server's, not ragbot's), and on a streamed request
    it waits ``--ttft-ms`` twice (in the backend, then before the first chunk) and a chunk delay before
    the first chunk too. So: many concurrent requests, and half the remaining first-token time.
    """
    ttft = max(0, (first_token_ms - chunk_delay_ms) // 2)
    return ["--max-concurrent", "10000", "--ttft-ms", str(ttft), "--chunk-delay-ms", str(chunk_delay_ms)]


def _ragbot_command() -> list[str]:
    beside = Path(sys.executable).with_name("ragbot")
    return [str(beside)] if beside.exists() else [sys.executable, "-c", "from ragbot.cli import app; app()"]


def _env(
    data_dir: Path, database_url: str | None, katan: KatanServer, llm_url: str, args: argparse.Namespace
) -> dict[str, str]:
    """ragbot's settings for a run; ``llm_url`` is llm-katan's, or the fault proxy's in front of it."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "RAGBOT_DATA_DIR": str(data_dir),
        "RAGBOT_LLM_MODEL": f"openai/{katan.served_model}",
        "RAGBOT_LLM_API_BASE": llm_url,
        "RAGBOT_LLM_API_KEY": "sk-load-test",
        "RAGBOT_LLM_FALLBACKS": "[]",
        "RAGBOT_GROUNDING": args.grounding,
        # every visitor comes from 127.0.0.1: the per-IP limits would see one visitor with many tabs
        "RAGBOT_RATE_IP_PER_MINUTE": "1000000",
        "RAGBOT_RATE_SESSIONS_PER_IP_MINUTE": "1000000",
        # a capacity run (--interval 0) sends far past a visitor's 20 a minute: the limiter still runs
        "RAGBOT_RATE_VISITOR_PER_MINUTE": "1000000",
        "RAGBOT_LOG_LEVEL": args.log_level,
    }
    if database_url:
        env["RAGBOT_DATABASE_URL"] = database_url
    if args.redis_url:
        env["RAGBOT_REDIS_URL"] = args.redis_url
    if args.llm_hang_rate:
        env["RAGBOT_LLM_FIRST_TOKEN_TIMEOUT_S"] = str(args.llm_timeout_s)
    if args.webhooks:
        env["RAGBOT_API_SENDS_WEBHOOKS"] = "false"  # `ragbot worker --no-jobs` sends them
        env["RAGBOT_WEBHOOK_ALLOW_PRIVATE"] = "true"  # the receiver is on loopback
        env["RAGBOT_WEBHOOK_TIMEOUT_S"] = str(WEBHOOK_TIMEOUT_S)
    return env


@contextmanager
def postgres_schema(server_url: str) -> Iterator[str]:
    """A fresh schema on ``server_url`` (selected through search_path), dropped afterwards."""
    from sqlalchemy import create_engine, make_url, text
    from sqlalchemy.pool import NullPool

    schema = f"ragbot_load_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server_url, poolclass=NullPool)  # no pooled connection to lose in a restart
    try:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = make_url(server_url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


class Serve:
    """``ragbot serve`` in a subprocess; its log goes to a file, the bot's public key is read from it."""

    def __init__(self, env: dict[str, str], log_path: Path, workers: int = 1) -> None:
        self.port = free_port()
        self.base_url = f"http://{LOOPBACK}:{self.port}"
        self.log_path = log_path
        command = [*_ragbot_command(), "serve", "--host", LOOPBACK, "--port", str(self.port)]
        if workers > 1:
            command += ["--workers", str(workers)]
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    def wait_ready(self, timeout_s: float = 180.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ragbot serve exited early:\n{self.log_tail()}")
            match = re.search(r'data-bot="(pk_[^"]+)"', self.log_path.read_text(errors="replace"))
            if match:
                try:
                    if httpx.get(f"{self.base_url}/readyz", timeout=2, trust_env=False).status_code == 200:
                        return match.group(1)
                except httpx.HTTPError:
                    pass
            time.sleep(0.2)
        raise RuntimeError(f"ragbot serve not ready within {timeout_s} s:\n{self.log_tail()}")

    def admin_key(self) -> str:
        """The admin API key ``ragbot serve`` printed on its first start."""
        match = re.search(r"admin API key \(shown once, store it now\): (\S+)", self.log_path.read_text())
        if match is None:
            raise RuntimeError(f"ragbot serve printed no admin key:\n{self.log_tail()}")
        return match.group(1)

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM (a graceful shutdown: streams in flight end first), then SIGKILL if it hangs."""
        return _terminate(self.proc, timeout_s)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


class WorkerProcess:
    """``ragbot worker --no-jobs`` in a subprocess (the ingest jobs stay with ``ragbot serve``, which owns
    an embedded shard): it sends the webhooks. Its log is appended to a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*_ragbot_command(), "worker", "--no-jobs"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
            )

    def kill(self) -> str:
        self.proc.kill()
        self.proc.wait(timeout=30)
        return f"SIGKILL ragbot worker (pid {self.proc.pid}) -> {self.proc.returncode}"

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM (webhook sends in flight finish), then SIGKILL if it hangs."""
        return _terminate(self.proc, timeout_s)


@dataclass
class Webhooks:
    """A receiver on loopback subscribed (through the admin API) to every ``message.created``, and the
    ``ragbot worker`` process sending to it; ``--kill-worker`` replaces the process mid-run."""

    receiver: Receiver
    secret: str
    env: dict[str, str]
    log_dir: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    @classmethod
    def start(cls, serve: Serve, env: dict[str, str], log_dir: Path) -> Webhooks:
        receiver = Receiver(lambda _id, _n: 200).start()
        response = httpx.post(
            f"{serve.base_url}/v1/webhooks",
            json={"url": receiver.url, "events": ["message.created"]},
            headers={"Authorization": f"Bearer {serve.admin_key()}"},
            timeout=30,
            trust_env=False,
        )
        response.raise_for_status()
        hooks = cls(receiver, response.json()["secret"], env, log_dir)
        hooks.start_worker()
        return hooks

    def start_worker(self) -> str:
        self.workers.append(WorkerProcess(self.env, self.log_dir / "worker.log"))
        return f"started ragbot worker --no-jobs (pid {self.workers[-1].proc.pid})"

    def kill_worker(self) -> str:
        return self.workers[-1].kill()

    def drain(self, database_url: str) -> float | None:
        """Wait until every queued delivery is delivered (or failed), up to a minute past a killed worker's
        lease; the seconds it took, None if not."""
        from ragbot.webhooks.worker import lease_for

        timeout_s = lease_for(WEBHOOK_TIMEOUT_S) + 60
        began = time.perf_counter()
        from sqlalchemy import func, select

        from ragbot.db.models import WebhookDelivery

        pending = select(func.count()).where(WebhookDelivery.status == "pending")
        with _reading(database_url) as connection:
            while time.perf_counter() - began < timeout_s:
                if not connection.scalar(pending):
                    return time.perf_counter() - began
                connection.rollback()  # the next look sees what the worker committed since
                time.sleep(0.5)
        return None

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.receiver.stop()

    def figures(self, database_url: str, drained_s: float | None) -> dict[str, Any]:
        """Deliveries queued and their outcomes in the outbox, against what the receiver accepted."""
        from standardwebhooks import Webhook

        rows = outbox(database_url)
        accepted = self.receiver.accepted()
        unique = {r.msg_id for r in accepted}
        verifier = Webhook(self.secret)
        forged = 0
        for request in accepted:
            try:
                verifier.verify(request.body, request.headers)
            except Exception:
                forged += 1
        return {
            "messages": rows["messages"],
            "messages_without_delivery": rows["messages_without_delivery"],
            "queued": rows["queued"],
            "delivered": rows["delivered"],
            "pending": rows["pending"],
            "failed": rows["failed"],
            "received": len(unique),
            "sent_again": len(accepted) - len(unique),
            "missing": len(set(rows["ids"]) - unique),
            "unverified": forged,
            "drained_s": drained_s,
        }


def outbox(database_url: str) -> dict[str, Any]:
    """The outbox's deliveries by status and their ids; the stored messages no delivery carries."""
    from sqlalchemy import select

    from ragbot.db.models import Message, WebhookDelivery

    with _reading(database_url) as connection:
        rows = connection.execute(
            select(WebhookDelivery.id, WebhookDelivery.status, WebhookDelivery.payload)
        ).all()
        messages = connection.execute(select(Message.id, Message.sender_type)).all()
    statuses = _count(status for _, status, _ in rows)
    carried = {(((payload or {}).get("data") or {}).get("message") or {}).get("id") for _, _, payload in rows}
    return {
        "ids": [i for i, _, _ in rows],
        "queued": len(rows),
        "messages": len(messages),
        "messages_without_delivery": _count(kind for i, kind in messages if i not in carried),
        **{name: statuses.get(name, 0) for name in ("pending", "delivered", "failed")},
    }


def _terminate(proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    """SIGTERM, then SIGKILL if the process has not exited within ``timeout_s``; its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return int(proc.returncode)


def ingest(env: dict[str, str], log_dir: Path) -> None:
    done = subprocess.run(
        [*_ragbot_command(), "ingest", str(SAMPLE)], env=env, cwd=ROOT, capture_output=True, text=True
    )
    (log_dir / "ingest.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"ragbot ingest failed:\n{done.stderr[-3000:]}")


# --- visitors ----------------------------------------------------------------------------------------


async def _read_turn(response: httpx.Response, turn: Turn) -> None:
    event = ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
            if event == "start":
                turn.conversation_id = data.get("conversation_id")
                turn.visitor_message_id = data.get("visitor_message_id")
            elif event == "delta" and turn.first_token_s is None:
                turn.first_token_s = time.perf_counter() - turn.sent_at
            elif event == "error":
                turn.error_code = str(data.get("code") or "error")
            elif event == "done":
                turn.status = data.get("status")
                turn.message_id = data.get("message_id")
                timings = data.get("timings") or {}
                turn.llm_wait_ms = timings.get("llm_wait_ms")
                turn.phases = {k: float(v) for k, v in timings.items() if k in PHASES and v is not None}
                return


async def chat_turn(
    client: httpx.AsyncClient, plan: Plan, headers: dict[str, str], turn: Turn, message: str, conv: str | None
) -> None:
    body: dict[str, Any] = {"message": message, "stream": True, "conversation_id": conv}
    try:
        async with asyncio.timeout(plan.turn_timeout_s):
            async with client.stream("POST", f"{plan.base_url}/v1/chat", json=body, headers=headers) as r:
                turn.http_status = r.status_code
                if r.status_code != 200:
                    raw = await r.aread()
                    try:
                        turn.error_code = str(json.loads(raw)["error"]["code"])
                    except (ValueError, KeyError, TypeError):
                        turn.failure = f"HTTP {r.status_code} without an error code"
                    return
                await _read_turn(r, turn)
                if turn.status is None:
                    turn.failure = "the stream ended without a done event"
    except TimeoutError:
        turn.failure = f"no done event within {plan.turn_timeout_s:g} s"
    except httpx.HTTPError as exc:
        turn.failure = f"{type(exc).__name__}: {exc}"
    finally:
        turn.ended_at = time.perf_counter()


async def visitor(
    number: int, client: httpx.AsyncClient, plan: Plan, started: float, rng: random.Random
) -> None:
    origin = {"Origin": plan.base_url}
    try:
        r = await client.post(
            f"{plan.base_url}/v1/widget/session", json={"public_key": plan.public_key}, headers=origin
        )
        r.raise_for_status()
    except httpx.HTTPError as exc:
        turn = Turn(number, False, time.perf_counter(), failure=f"no session: {exc}")
        plan.turns.append(turn)
        return
    headers = {**origin, "Authorization": f"Bearer {r.json()['token']}"}
    stop_at = started + plan.duration_s
    next_at = started + rng.uniform(0, plan.interval_s or 0.5)  # visitors arrive spread over one interval
    conv: str | None = None
    in_conv = 0
    while True:
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        if time.perf_counter() >= stop_at:
            return
        follow_up = conv is not None and in_conv <= plan.follow_ups
        if not follow_up:
            conv, in_conv = None, 0
        message = rng.choice(FOLLOW_UPS if follow_up else QUESTIONS)
        turn = Turn(number, follow_up, time.perf_counter())
        plan.turns.append(turn)
        await chat_turn(client, plan, headers, turn, message, conv)
        in_conv += 1
        conv = turn.conversation_id or conv
        next_at = (
            max(next_at + plan.interval_s, time.perf_counter()) if plan.interval_s else time.perf_counter()
        )


async def warm_up(plan: Plan, turns: int) -> None:
    """A few turns before the clock starts: the first queries of a fresh deployment load models and
    calibrate the relevance floor (cached on disk after), which is start-up, not load."""
    if turns <= 0:
        return
    warm = Plan(1, 0.0, 3600.0, max(0, turns - 1), plan.turn_timeout_s, plan.base_url, plan.public_key)
    async with httpx.AsyncClient(timeout=plan.turn_timeout_s, trust_env=False) as client:
        task = asyncio.ensure_future(visitor(0, client, warm, time.perf_counter(), random.Random(0)))
        while len([t for t in warm.turns if t.ended_at is not None]) < turns and not task.done():
            await asyncio.sleep(0.1)
        task.cancel()
    bad = [t for t in warm.turns if t.outcome != "answered" and t.ended_at is not None]
    if bad:
        raise RuntimeError(f"warm-up turn failed: {bad[0]}")


Step = Callable[[], Awaitable[str]]  # one side of a fault; what it did, for the log


def shell_step(command: str) -> Step:
    """A shell command as a fault step (``pg_ctlcluster 15 main restart``); one that fails stops the run."""

    async def step() -> str:
        proc = await asyncio.create_subprocess_shell(
            command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await proc.communicate()
        line = f"$ {command} -> {proc.returncode} {out.decode(errors='replace').strip()[:300]}"
        if proc.returncode != 0:
            raise RuntimeError(f"fault command failed: {line}")
        return line

    return step


def call_step(action: Callable[[], str]) -> Step:
    """A blocking call (kill a process, start one) as a fault step, off the visitors' event loop."""

    async def step() -> str:
        return await asyncio.to_thread(action)

    return step


@dataclass
class Fault:
    """A fault injected while the visitors run: ``stop`` at ``at_s`` into the run, then ``start``
    ``down_s`` later (if given); ``began``/``cleared`` are when the steps returned."""

    stop: Step
    start: Step | None
    at_s: float
    down_s: float
    began: float | None = None
    cleared: float | None = None
    log: list[str] = field(default_factory=list)

    async def run(self, started: float) -> None:
        await asyncio.sleep(max(0.0, started + self.at_s - time.perf_counter()))
        self.began = time.perf_counter()
        self.log.append(await self.stop())
        if self.start:
            await asyncio.sleep(self.down_s)
            self.log.append(await self.start())
        self.cleared = time.perf_counter()


async def run_visitors(
    plan: Plan, seed: int, katan: KatanServer, fault: Fault | None = None
) -> tuple[float, list[float]]:
    """The visitors, and the LLM probed directly beside them; when they started, the probe's figures."""
    rng = random.Random(seed)
    limits = httpx.Limits(max_connections=plan.visitors * 2, max_keepalive_connections=plan.visitors * 2)
    timeout = httpx.Timeout(plan.turn_timeout_s, connect=10.0)
    started = time.perf_counter()
    probe = asyncio.ensure_future(probe_llm(katan.base_url, katan.served_model, started + plan.duration_s))
    injected = asyncio.ensure_future(fault.run(started)) if fault is not None else None
    async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as client:
        await asyncio.gather(
            *(visitor(n, client, plan, started, random.Random(rng.random())) for n in range(plan.visitors))
        )
    if injected is not None:
        await injected
    return started, await probe


def fault_figures(turns: Sequence[Turn], stored: set[str], fault: Fault, started: float) -> dict[str, Any]:
    """Outcomes of the turns sent before the fault, while it lasted, and after it cleared: after, every
    turn should be answered again (service resumed without restarting ragbot)."""
    if fault.began is None or fault.cleared is None:
        raise RuntimeError("the fault never ran: the run ended before --fault-at")
    windows: dict[str, list[Turn]] = {"before": [], "during": [], "after": []}
    for t in turns:
        if t.sent_at < fault.began:
            windows["before"].append(t)
        elif t.sent_at < fault.cleared:
            windows["during"].append(t)
        else:
            windows["after"].append(t)
    out: dict[str, Any] = {
        "began_s": fault.began - started,
        "cleared_s": fault.cleared - started,
        "commands": fault.log,
    }
    for name, window in windows.items():
        outcomes = {"answered": 0, "failed_clear": 0, "lost": 0}
        for t in window:
            lost = t.visitor_message_id is not None and t.visitor_message_id not in stored
            outcomes["lost" if lost else t.outcome] += 1
        out[name] = {
            "sent": len(window),
            **outcomes,
            "error_codes": _count(t.error_code for t in window if t.error_code),
        }
    return out


async def probe_llm(base_url: str, model: str, stop_at: float, every_s: float = 1.0) -> list[float]:
    """The LLM alone, asked directly once a second while the run goes on (same machine, same load):
    its time to first token as the load client sees it, to set ragbot's share against."""
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": QUESTIONS[0]}]}
    headers = {"Authorization": "Bearer sk-load-test"}
    seen: list[float] = []
    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
        while time.perf_counter() < stop_at:
            sent = time.perf_counter()
            try:
                async with client.stream(
                    "POST", f"{base_url}/chat/completions", json=body, headers=headers
                ) as r:
                    async for line in r.aiter_lines():
                        if '"content"' in line:
                            seen.append((time.perf_counter() - sent) * 1000)
                            break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(max(0.0, every_s - (time.perf_counter() - sent)))
    return seen


# --- after the run -----------------------------------------------------------------------------------


def stored_ids(database_url: str, ids: Sequence[str]) -> set[str]:
    """Which of these message ids the database has (read after ragbot stopped)."""
    from sqlalchemy import select

    from ragbot.db.models import Message

    found: set[str] = set()
    with _reading(database_url) as connection:
        for start in range(0, len(ids), 500):
            batch = list(ids[start : start + 500])
            found.update(connection.scalars(select(Message.id).where(Message.id.in_(batch))))
    return found


@contextmanager
def _reading(database_url: str) -> Iterator[Connection]:
    """A connection to the run's database from outside ragbot, its engine disposed afterwards."""
    from sqlalchemy import create_engine

    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "n": 0}
    if len(values) == 1:
        return {"p50": values[0], "p95": values[0], "p99": values[0], "n": 1}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": cuts[49], "p95": cuts[94], "p99": cuts[98], "n": len(values)}


def summarise(turns: Sequence[Turn], stored: set[str], started: float) -> dict[str, Any]:
    sent = len([t for t in turns if not (t.failure or "").startswith("no session")])
    by_outcome = {"answered": 0, "failed_clear": 0, "lost": 0}
    for t in turns:
        outcome = t.outcome
        if t.visitor_message_id is not None and t.visitor_message_id not in stored:
            outcome = "lost"  # the client was told it was saved; the database does not have it
        by_outcome[outcome] += 1
    ttft = [t.first_token_s * 1000 for t in turns if t.first_token_s is not None and t.outcome == "answered"]
    llm = [t.llm_wait_ms for t in turns if t.llm_wait_ms is not None and t.first_token_s is not None]
    own = [
        t.first_token_s * 1000 - t.llm_wait_ms
        for t in turns
        if t.llm_wait_ms is not None and t.first_token_s is not None and t.outcome == "answered"
    ]
    answered = [t.ended_at for t in turns if t.outcome == "answered" and t.ended_at is not None]
    span = max(answered, default=started) - started
    replies = [t.message_id for t in turns if t.message_id]
    return {
        "sent": sent,
        "stored": sum(1 for t in turns if t.visitor_message_id in stored),
        "replies_stored": sum(1 for m in replies if m in stored),
        "replies_reported": len(replies),
        **by_outcome,
        "statuses": _count(t.status or "-" for t in turns),
        "error_codes": _count(t.error_code for t in turns if t.error_code),
        "failures": _count(t.failure for t in turns if t.failure),
        "ttft_ms": percentiles(ttft),
        "ttft_first_ms": percentiles(
            [t.first_token_s * 1000 for t in turns if t.first_token_s and not t.follow_up]
        ),
        "ttft_follow_up_ms": percentiles(
            [t.first_token_s * 1000 for t in turns if t.first_token_s and t.follow_up]
        ),
        "llm_wait_ms": percentiles(llm),
        "ragbot_ms": percentiles(own),
        **{
            f"phase_{name}": percentiles(
                [t.phases[name] for t in turns if name in t.phases and t.outcome == "answered"]
            )
            for name in PHASES
        },
        "answers_per_s": len(answered) / span if span > 0 else 0.0,
        "span_s": span,
    }


def _count(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return out


def _fmt(p: dict[str, float | None]) -> str:
    if not p["n"]:
        return "n/a"
    return f"p50 {p['p50']:.0f} ms  p95 {p['p95']:.0f} ms  p99 {p['p99']:.0f} ms  (n={p['n']})"


def print_report(summary: dict[str, Any], title: str) -> None:
    s = summary
    print(title)
    print(
        f"messages sent {s['sent']} | stored {s['stored']} | answered {s['answered']} | "
        f"failed with a clear error {s['failed_clear']} | lost {s['lost']}"
    )
    replies = f"bot replies reported {s['replies_reported']}, stored {s['replies_stored']}"
    print(f"{replies}; statuses {s['statuses']}")
    if s["error_codes"]:
        print(f"error codes: {s['error_codes']}")
    if s["failures"]:
        print(f"client-side failures: {s['failures']}")
    print(f"time to first token:       {_fmt(s['ttft_ms'])}")
    print(f"  first messages:          {_fmt(s['ttft_first_ms'])}")
    print(f"  follow-ups:              {_fmt(s['ttft_follow_up_ms'])}")
    print(f"  the LLM's share:         {_fmt(s['llm_wait_ms'])}")
    print(f"    (the LLM asked alone:  {_fmt(s['llm_alone_ttft_ms'])})")
    print(f"  ragbot's own share:      {_fmt(s['ragbot_ms'])}")
    for name, label in zip(PHASES, ("storing the message", "retrieval", "held by grounding"), strict=True):
        print(f"    {label + ':':<23}{_fmt(s['phase_' + name])}")
    print(f"answers per second: {s['answers_per_s']:.2f} (over {s['span_s']:.1f} s)")
    if "llm_faults" in s:
        print(f"LLM calls through the fault proxy: {s['llm_faults']}")
    if "fault" in s:
        f = s["fault"]
        print(f"fault from {f['began_s']:.1f} s to {f['cleared_s']:.1f} s: {'; '.join(f['commands'])}")
        for name in ("before", "during", "after"):
            w = f[name]
            print(
                f"  turns sent {name + ':':<8}{w['sent']:>5} | answered {w['answered']} | failed with a "
                f"clear error {w['failed_clear']} {w['error_codes'] or ''}| lost {w['lost']}"
            )
    if "webhooks" in s:
        w = s["webhooks"]
        drained = "never" if w["drained_s"] is None else f"{w['drained_s']:.1f} s after ragbot stopped"
        print(
            f"webhooks: messages {w['messages']} | deliveries queued {w['queued']} | "
            f"delivered {w['delivered']} | pending {w['pending']} | failed {w['failed']} | "
            f"accepted by the receiver {w['received']} "
            f"(sent again {w['sent_again']}, signature failures {w['unverified']}) | missing {w['missing']}; "
            f"outbox empty {drained}"
        )
    if "serve_cpu_cores" in s:
        print(f"ragbot serve used {s['serve_cpu_cores']:.2f} of {s['machine_cores']} cores (CPU / wall time)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--visitors", type=int, default=50)
    parser.add_argument(
        "--interval", type=float, default=10.0, help="Seconds between a visitor's messages (0: at once)."
    )
    parser.add_argument("--duration", type=float, default=90.0, help="Seconds visitors keep sending.")
    parser.add_argument(
        "--follow-ups", type=int, default=2, help="Follow-ups per conversation before a new one."
    )
    parser.add_argument(
        "--turn-timeout", type=float, default=120.0, help="A turn with no done by then is lost."
    )
    parser.add_argument(
        "--database-url", default=None, help="PostgreSQL server (a fresh schema is used); default SQLite."
    )
    parser.add_argument(
        "--ttft-ms", type=int, default=200, help="The LLM's own time to its first token (llm-katan paced so)."
    )
    parser.add_argument(
        "--chunk-delay-ms",
        type=int,
        default=20,
        help="llm-katan's delay between chunks (its echo, ~40 chunks: ~1 s an answer).",
    )
    parser.add_argument(
        "--katan-flag",
        action="append",
        default=[],
        help="More llm-katan flags, e.g. --katan-flag=--error-rate=0.3",
    )
    parser.add_argument(
        "--llm-error-rate",
        type=float,
        default=0.0,
        help="Share of LLM calls answered HTTP 500 by a fault proxy in front of llm-katan (whole run).",
    )
    parser.add_argument(
        "--llm-hang-rate",
        type=float,
        default=0.0,
        help="Share of LLM calls that hang without a byte (a provider timeout), through the same proxy.",
    )
    parser.add_argument(
        "--llm-timeout-s",
        type=float,
        default=3.0,
        help="ragbot's first-token deadline per LLM attempt while calls hang "
        "(RAGBOT_LLM_FIRST_TOKEN_TIMEOUT_S).",
    )
    parser.add_argument(
        "--redis-url", default=None, help="Rate limits and the events bus in this Redis (default: memory)."
    )
    parser.add_argument(
        "--fault-stop",
        default=None,
        help="A shell command run mid-run: 'pg_ctlcluster 15 main restart', 'redis-cli shutdown nosave'",
    )
    parser.add_argument("--fault-start", default=None, help="A shell command run --fault-down s after it.")
    parser.add_argument("--fault-at", type=float, default=None, help="Seconds into the run (default: half).")
    parser.add_argument("--fault-down", type=float, default=5.0, help="Seconds between the two commands.")
    parser.add_argument(
        "--webhooks",
        action="store_true",
        help="Subscribe a loopback receiver to message.created; a `ragbot worker --no-jobs` sends them.",
    )
    parser.add_argument(
        "--kill-worker",
        action="store_true",
        help="The fault: SIGKILL the webhook worker at --fault-at, start a new one --fault-down later.",
    )
    parser.add_argument("--grounding", default="verify", choices=["verify", "off"])
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--warm-up", type=int, default=3, help="Turns sent (and not counted) before the run.")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument(
        "--json", type=Path, default=None, help="Also write the figures (and every turn) here."
    )
    parser.add_argument(
        "--py-spy", default=None, help="A py-spy executable: profile ragbot serve during the run."
    )
    parser.add_argument("--profile-out", type=Path, default=Path("load-profile.txt"))
    parser.add_argument("--repeat", type=int, default=1, help="Runs (a fresh ragbot each); medians printed.")
    parser.add_argument(
        "--side-by-side",
        action="store_true",
        help="Alternate embedded and --database-url runs (each --repeat times) and compare their medians.",
    )
    args = parser.parse_args(argv)
    if args.side_by_side and not args.database_url:
        parser.error("--side-by-side needs --database-url (the PostgreSQL server to compare with)")
    if args.kill_worker and args.fault_stop:
        parser.error("--kill-worker is the fault: leave out --fault-stop")
    args.webhooks = args.webhooks or args.kill_worker

    servers: list[str | None] = [None, args.database_url] if args.side_by_side else [args.database_url]
    runs: list[dict[str, Any]] = []
    for round_ in range(args.repeat):
        for server in servers:  # interleaved, so a noisy minute on a shared machine hits both alike
            if args.repeat > 1:
                print(f"--- run {round_ + 1} of {args.repeat}", flush=True)
            runs.append(run_once(args, server))
    if args.repeat > 1 or len(servers) > 1:
        print_medians(runs)
    if args.json:
        document = runs[0] if len(runs) == 1 else {"runs": runs, "medians": medians(runs)}
        args.json.write_text(json.dumps(document, indent=1))
    return 0 if all(run["lost"] == 0 and not run.get("webhooks_missing") for run in runs) else 1


def run_once(args: argparse.Namespace, server: str | None) -> dict[str, Any]:
    """One run against a fresh ``ragbot serve``: embedded, or on a fresh schema of ``server``."""
    work = Path(tempfile.mkdtemp(prefix="ragbot-load-"))
    katan_flags = [*katan_pacing(args.ttft_ms, args.chunk_delay_ms), *args.katan_flag]
    with (
        KatanServer(*katan_flags, log_dir=work) as katan,
        _flaky(katan, args) as flaky,
        _database(server, work) as database_url,
    ):
        llm_url = flaky.base_url if flaky is not None else katan.base_url
        env = _env(work / "data", database_url if server else None, katan, llm_url, args)
        ingest(env, work)
        serve = Serve(env, work / "serve.log")
        profiler: subprocess.Popen[bytes] | None = None
        hooks: Webhooks | None = None
        drained_s: float | None = None
        try:
            public_key = serve.wait_ready()
            if args.webhooks:
                hooks = Webhooks.start(serve, env, work)
            plan = Plan(
                args.visitors, args.interval, args.duration, args.follow_ups, args.turn_timeout,
                serve.base_url, public_key,
            )  # fmt: skip
            asyncio.run(warm_up(plan, args.warm_up))
            if args.py_spy:
                profiler = _start_profiler(args.py_spy, serve.proc.pid, args.duration, args.profile_out)
            cpu_before, wall_before = _cpu_seconds(serve.proc.pid), time.perf_counter()
            fault = _fault(args, hooks)
            started, llm_alone = asyncio.run(run_visitors(plan, args.seed, katan, fault))
            serve_cpu = (_cpu_seconds(serve.proc.pid) - cpu_before) / (time.perf_counter() - wall_before)
        finally:
            if profiler is not None:
                profiler.wait(timeout=args.duration + 60)
            code = serve.stop()
            if hooks is not None:  # the worker sends what the run queued, a killed one's after its lease
                drained_s = hooks.drain(database_url)
                hooks.stop()
        if code not in (0, -signal.SIGTERM):  # uvicorn re-raises the SIGTERM it handled
            print(f"ragbot serve exited with {code}:\n{serve.log_tail()}", file=sys.stderr)
        ids = [i for t in plan.turns for i in (t.visitor_message_id, t.message_id) if i]
        stored = stored_ids(database_url, ids)
        webhooks = hooks.figures(database_url, drained_s) if hooks is not None else None
    summary = summarise(plan.turns, stored, started)
    summary["llm_alone_ttft_ms"] = percentiles(llm_alone)
    if flaky is not None:
        summary["llm_faults"] = dict(flaky.counts)
    summary["serve_cpu_cores"] = serve_cpu
    if fault is not None:
        summary["fault"] = fault_figures(plan.turns, stored, fault, started)
    if webhooks is not None:
        summary["webhooks"] = webhooks
        summary["webhooks_missing"] = webhooks["missing"]
        summary["webhooks_sent_again"] = webhooks["sent_again"]
    summary["machine_cores"] = os.cpu_count()
    summary["backend"] = "PostgreSQL" if server else "SQLite + Qdrant Edge"
    title = (
        f"ragbot load: {args.visitors} visitors, a message every {args.interval:g} s each "
        f"for {args.duration:g} s "
        f"({args.follow_ups} follow-ups a conversation), {summary['backend']}, grounding {args.grounding}; "
        f"llm-katan echo, first token {args.ttft_ms} ms, {args.chunk_delay_ms} ms between chunks "
        f"{' '.join(args.katan_flag)}"
    )
    if flaky is not None:
        title += (
            f"; LLM calls failing on purpose: {args.llm_error_rate:.0%} HTTP 500, {args.llm_hang_rate:.0%} "
            f"hanging (ragbot's first-token timeout {args.llm_timeout_s:g} s)"
        )
    print_report(summary, title)
    print(f"logs: {work}", flush=True)
    return {"title": title, **summary, "turns": [asdict(t) for t in plan.turns]}


@contextmanager
def _flaky(katan: KatanServer, args: argparse.Namespace) -> Iterator[FlakyLLM | None]:
    """The fault proxy in front of llm-katan when the run injects LLM failures, else None."""
    if not (args.llm_error_rate or args.llm_hang_rate):
        yield None
        return
    with FlakyLLM(
        katan.base_url, error_rate=args.llm_error_rate, hang_rate=args.llm_hang_rate, seed=args.seed
    ) as flaky:
        yield flaky


def _fault(args: argparse.Namespace, hooks: Webhooks | None) -> Fault | None:
    at_s = args.fault_at or args.duration / 2
    if args.kill_worker:
        assert hooks is not None
        return Fault(call_step(hooks.kill_worker), call_step(hooks.start_worker), at_s, args.fault_down)
    if args.fault_stop:
        start = shell_step(args.fault_start) if args.fault_start else None
        return Fault(shell_step(args.fault_stop), start, at_s, args.fault_down)
    return None


#: The figures ``print_medians`` sets side by side: (label, key in the summary, percentile or None).
MEDIAN_ROWS = (
    ("messages sent", "sent", None),
    ("stored", "stored", None),
    ("answered", "answered", None),
    ("failed with a clear error", "failed_clear", None),
    ("lost", "lost", None),
    ("time to first token p50 (ms)", "ttft_ms", "p50"),
    ("time to first token p95 (ms)", "ttft_ms", "p95"),
    ("time to first token p99 (ms)", "ttft_ms", "p99"),
    ("  the LLM's share p50 (ms)", "llm_wait_ms", "p50"),
    ("  ragbot's own share p50 (ms)", "ragbot_ms", "p50"),
    ("  ragbot's own share p99 (ms)", "ragbot_ms", "p99"),
    ("    storing the message p50 (ms)", "phase_setup_ms", "p50"),
    ("    retrieval p50 (ms)", "phase_retrieval_ms", "p50"),
    ("    held by grounding p50 (ms)", "phase_held_ms", "p50"),
    ("answers per second", "answers_per_s", None),
    ("ragbot serve CPU (cores)", "serve_cpu_cores", None),
    ("webhooks missing (--webhooks)", "webhooks_missing", None),
    ("webhooks sent again (--webhooks)", "webhooks_sent_again", None),
)


def _figure(run: dict[str, Any], key: str, pct: str | None) -> float | None:
    value = run.get(key)
    if pct is not None:
        value = value.get(pct) if isinstance(value, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


def medians(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Per backend, the median over its runs of each ``MEDIAN_ROWS`` figure."""
    out: dict[str, dict[str, float | None]] = {}
    for backend in dict.fromkeys(run["backend"] for run in runs):
        mine = [run for run in runs if run["backend"] == backend]
        out[backend] = {}
        for label, key, pct in MEDIAN_ROWS:
            values = [v for v in (_figure(run, key, pct) for run in mine) if v is not None]
            out[backend][label.strip()] = statistics.median(values) if values else None
    return out


def print_medians(runs: Sequence[dict[str, Any]]) -> None:
    table = medians(runs)
    backends = list(table)
    counts = {b: sum(1 for run in runs if run["backend"] == b) for b in backends}
    print(f"\nmedians ({', '.join(f'{b}: {counts[b]} runs' for b in backends)})")
    print(f"{'':<36}" + "".join(f"{b:>22}" for b in backends))
    for label, _, _ in MEDIAN_ROWS:
        cells = []
        for b in backends:
            v = table[b][label.strip()]
            cells.append(f"{'n/a' if v is None else (f'{v:.2f}' if abs(v) < 10 else f'{v:.0f}'):>22}")
        print(f"{label:<36}" + "".join(cells))


@contextmanager
def _database(server_url: str | None, work: Path) -> Iterator[str]:
    if server_url:
        with postgres_schema(server_url) as url:
            yield url
    else:
        yield f"sqlite:///{work / 'data' / 'ragbot.db'}"


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start_profiler(py_spy: str, pid: int, duration: float, out: Path) -> subprocess.Popen[bytes]:
    fmt = "flamegraph" if out.suffix == ".svg" else "raw"
    command = [py_spy, "record", "--pid", str(pid), "--duration", str(int(duration)), "--rate", "50",
               "--format", fmt, "--output", str(out), "--nonblocking"]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    raise SystemExit(main())
