"""``ragbot worker`` as real processes: one killed with SIGKILL in the middle of an ingest leaves its job
to the next, which finishes it with no duplicate and no orphan point or row; SIGTERM hands a job back;
a due re-sync runs once with several workers; a ``--no-jobs`` worker beside the process that owns the
shard sends every webhook through a SIGKILL. On SQLite and PostgreSQL, with the real encoders and an
embedded Qdrant Edge shard (no Qdrant server runs here: each worker owns its data folder's shard)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

import pytest
from fixtures.database import migrated_sessions
from fixtures.site import FixtureSite
from fixtures.webhook_receiver import Receiver
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook

from ragbot.config import Settings
from ragbot.db import jobs as sql
from ragbot.db import repositories as repo
from ragbot.db.models import DocumentRow, IngestJob, Source, WebhookDelivery, utcnow
from ragbot.db.session import make_engine, make_session_factory, migrate, session_scope
from ragbot.index import open_index
from ragbot.webhooks.outbox import enqueue
from ragbot.webhooks.service import WebhookService

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BOT = "ragbot"  # the deployment's bot, which `ragbot worker` ingests for by default
LEASE_S = 4


def _write_corpus(folder: Path, documents: int) -> None:
    """Small documents of about two chunks each: enough encoder batches to be killed between."""
    folder.mkdir(parents=True)
    places = ["harbour", "orchard", "library", "foundry"]
    for n in range(documents):
        paragraphs = [
            f"Document {n}, part {p}: the {places[p % 4]} of town {n}. "
            + " ".join(f"It keeps record {n}-{p}-{w} of ledger {w * n % 97}." for w in range(12))
            for p in range(2)
        ]
        (folder / f"doc{n:03d}.txt").write_text("\n\n".join(paragraphs), encoding="utf-8")


class Worker:
    """A ``ragbot worker`` process with its own data folder (its Edge shard), logging to a file."""

    def __init__(self, data_dir: Path, database_url: str, log: Path, *args: str, **settings: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAGBOT_")}
        env.update(
            {
                "RAGBOT_DATA_DIR": str(data_dir),
                "RAGBOT_DATABASE_URL": database_url,
                "RAGBOT_JOB_LEASE_S": str(LEASE_S),
                "RAGBOT_JOB_POLL_S": "0.2",
                "RAGBOT_ENCODE_BATCH_SIZE": "4",
                "RAGBOT_LOG_FORMAT": "text",
                "RAGBOT_LOG_LEVEL": "INFO",
                **{f"RAGBOT_{k.upper()}": v for k, v in settings.items()},
            }
        )
        self.log_path = log
        self._log: IO[str] = log.open("a", encoding="utf-8")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from ragbot.cli import main; main()", "worker", *args],
            env=env,
            cwd=data_dir.parent,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout_s: float = 60) -> int:
        try:
            return self.proc.wait(timeout_s)
        finally:
            self._log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait()

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    with migrated_sessions(database_url, BOT) as factory:
        yield factory


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for w in started:
        w.stop()


def _until(condition: Callable[[], Any], timeout_s: float, what: str, worker: Worker | None = None) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if worker is not None and worker.proc.poll() is not None:
            raise AssertionError(
                f"the worker exited ({worker.proc.returncode}) before {what}:\n{worker.log()}"
            )
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}" + (f":\n{worker.log()}" if worker else ""))


def _job(sessions: sessionmaker[Session], job_id: str) -> IngestJob:
    with sessions() as s:
        return s.get_one(IngestJob, job_id)


def _documents(sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        return int(s.scalar(select(func.count()).select_from(DocumentRow)) or 0)


def _enqueue(sessions: sessionmaker[Session], target: Path | str, **options: Any) -> str:
    with session_scope(sessions) as s:
        spec = {"options": options}
        return sql.enqueue(s, bot_id=BOT, target=str(target), spec=spec, now=utcnow()).id


def _assert_index_matches_rows(data_dir: Path, sessions: sessionmaker[Session], documents: int) -> None:
    """Every document row has exactly its chunks in the index, and the index holds nothing else."""
    with sessions() as s:
        rows = {r.id: r for r in s.scalars(select(DocumentRow).where(DocumentRow.bot_id == BOT))}
    index = open_index(Settings(data_dir=data_dir))
    try:
        chunks = [item.chunk for batch in index.export() for item in batch if item.chunk.bot_id == BOT]
    finally:
        index.close()
    assert len(rows) == documents  # no document missing (and the table's unique key allows no duplicate)
    ids = Counter(c.id for c in chunks)
    assert not [i for i, n in ids.items() if n > 1], "duplicate points"
    per_document = Counter(c.source_id for c in chunks)
    assert set(per_document) == set(rows), "points without a row (orphans) or rows without points"
    for doc_id, row in rows.items():
        positions = sorted(c.chunk_index for c in chunks if c.source_id == doc_id)
        assert positions == list(range(row.chunk_count)), (
            f"{row.uri}: {positions} vs {row.chunk_count} chunks"
        )
    assert len(chunks) == sum(r.chunk_count for r in rows.values())


def _kill_mid_job_then_resume(
    tmp_path: Path,
    database_url: str,
    sessions: sessionmaker[Session],
    workers: list[Worker],
    job_id: str,
    documents: int,
) -> None:
    """SIGKILL the first worker once some documents are stored, let a second finish, check everything."""
    data = tmp_path / "data"
    first = Worker(data, database_url, tmp_path / "worker1.log")
    workers.append(first)
    _until(lambda: _documents(sessions) >= 2, 240, "the first documents to be stored", first)
    first.signal(signal.SIGKILL)
    assert first.wait() == -signal.SIGKILL
    assert _documents(sessions) < documents, "the worker finished before it was killed: give it more"
    cut_off = _job(sessions, job_id)
    assert (cut_off.status, cut_off.attempts) == ("running", 1)  # held by a dead worker's lease

    second = Worker(data, database_url, tmp_path / "worker2.log")
    workers.append(second)
    done = _until(
        lambda: (job := _job(sessions, job_id)).status in ("succeeded", "failed") and job,
        300,
        "the job",
        second,
    )
    assert done.status == "succeeded", done.error
    assert done.attempts == 2
    assert done.report["added"] + done.report["unchanged"] == documents
    second.signal(signal.SIGTERM)
    assert second.wait() == 0, second.log()

    _assert_index_matches_rows(data, sessions, documents)


def test_a_worker_killed_mid_ingest_leaves_its_job_to_the_next_with_nothing_duplicated_or_orphaned(
    tmp_path: Path, database_url: str, sessions: sessionmaker[Session], workers: list[Worker]
) -> None:
    documents = 30
    corpus = tmp_path / "corpus"
    _write_corpus(corpus, documents)
    job_id = _enqueue(sessions, corpus)
    _kill_mid_job_then_resume(tmp_path, database_url, sessions, workers, job_id, documents)
    assert _job(sessions, job_id).report["failed"] == 0


def test_a_worker_killed_mid_crawl_leaves_its_job_to_the_next(
    tmp_path: Path, scratch_database: Any, workers: list[Worker]
) -> None:
    with scratch_database("sqlite") as url, FixtureSite(topics=3, articles_per_topic=10, sections=1) as site:
        migrate(url)
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        try:
            with session_scope(sessions) as s:
                repo.ensure_bot(s, BOT)
            job_id = _enqueue(sessions, site.url("/"), allow_private=True)  # the site is on loopback
            pages = len(site.expected_urls())
            _kill_mid_job_then_resume(tmp_path, url, sessions, workers, job_id, pages)
        finally:
            engine.dispose()


def test_sigterm_hands_the_running_job_back(
    tmp_path: Path, scratch_database: Any, workers: list[Worker]
) -> None:
    with scratch_database("sqlite") as url:
        migrate(url)
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        try:
            with session_scope(sessions) as s:
                repo.ensure_bot(s, BOT)
            corpus = tmp_path / "corpus"
            _write_corpus(corpus, 30)
            job_id = _enqueue(sessions, corpus)
            worker = Worker(tmp_path / "data", url, tmp_path / "worker.log")
            workers.append(worker)
            _until(lambda: _documents(sessions) >= 2, 240, "the first documents to be stored", worker)
            worker.signal(signal.SIGTERM)
            assert worker.wait(60) == 0, worker.log()
            job = _job(sessions, job_id)
            assert (job.status, job.attempts, job.lease_token) == ("queued", 0, None), worker.log()
            assert "handed back unfinished" in worker.log()
        finally:
            engine.dispose()


@pytest.mark.postgres
def test_a_due_resync_runs_once_with_three_workers(
    tmp_path: Path, scratch_database: Any, workers: list[Worker]
) -> None:
    with scratch_database("postgresql") as url:
        migrate(url)
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        try:
            corpus = tmp_path / "corpus"
            _write_corpus(corpus, 3)
            with session_scope(sessions) as s:
                source = repo.get_or_create_source(s, BOT, "files", str(corpus))
                source.every_s = 3600
                source.next_sync_at = utcnow() - timedelta(seconds=1)  # the slot is due now
                source_id = source.id
            for n in range(3):
                w = Worker(tmp_path / f"data{n}", url, tmp_path / f"worker{n}.log", schedule_check_s="0.2")
                workers.append(w)

            def resyncs() -> list[IngestJob]:
                with sessions() as s:
                    return list(s.scalars(select(IngestJob).where(IngestJob.source_id == source_id)))

            _until(lambda: [j for j in resyncs() if j.status == "succeeded"], 240, "the re-sync")
            time.sleep(2.0)  # every worker has looked at the schedule several times since
            jobs = resyncs()
            assert len(jobs) == 1, [(j.id, j.worker, j.scheduled_for) for j in jobs]
            assert jobs[0].report["added"] == 3
            with sessions() as s:
                assert s.get_one(Source, source_id).next_sync_at > utcnow() + timedelta(minutes=59)
            for w in workers:
                w.signal(signal.SIGTERM)
            assert [w.wait(60) for w in workers] == [0, 0, 0]
        finally:
            engine.dispose()


def test_a_worker_beside_a_process_holding_the_embedded_shard_says_what_to_do(
    tmp_path: Path, workers: list[Worker]
) -> None:
    """With Qdrant Edge, `ragbot serve` runs the jobs: a worker started beside it stops at once."""
    data = tmp_path / "data"
    held = open_index(Settings(data_dir=data))  # this process stands in for a running `ragbot serve`
    try:
        worker = Worker(data, f"sqlite:///{data / 'ragbot.db'}", tmp_path / "worker.log")
        workers.append(worker)
        assert worker.wait(120) == 2
        log = worker.log()
        assert "is open in another process" in log and "RAGBOT_QDRANT_URL" in log, log
        assert "ragbot worker --no-jobs" in log, log
    finally:
        held.close()


def test_a_worker_without_jobs_beside_the_shard_owner_delivers_webhooks_through_a_sigkill(
    tmp_path: Path, database_url: str, sessions: sessionmaker[Session], workers: list[Worker]
) -> None:
    """`ragbot worker --no-jobs` runs beside the process that owns the embedded shard (`ragbot serve` with
    RAGBOT_API_SENDS_WEBHOOKS=false). Killed with SIGKILL while its sends hang at the receiver, it loses
    nothing: the next worker sends what was waiting at once and what the dead one held once its lease
    runs out, each event under its own webhook-id, signed, until every one is accepted."""
    data = tmp_path / "data"
    held = open_index(Settings(data_dir=data))  # stands in for `ragbot serve`
    hanging = {"on": True}
    receiver = Receiver(lambda _id, _n: "timeout" if hanging["on"] else 200, hang_s=5.0).start()
    try:
        settings = Settings(data_dir=data, database_url=database_url, webhook_allow_private=True)
        service = WebhookService(sessions, settings)
        secret, _ = service.create(BOT, receiver.url, ["message.created"])
        service.close()
        with session_scope(sessions) as s:
            ids = [i for n in range(6) for i in enqueue(s, BOT, "message.created", {"n": n})]
        options = {"webhook_allow_private": "true", "webhook_timeout_s": "2", "webhook_backoff_s": "0.2"}
        first = Worker(data, database_url, tmp_path / "worker1.log", "--no-jobs", **options)
        workers.append(first)
        _until(lambda: receiver.requests, 120, "the first send", first)
        first.signal(signal.SIGKILL)
        assert first.wait() == -signal.SIGKILL
        cut_short = {r.msg_id for r in receiver.requests}
        hanging["on"] = False
        second = Worker(data, database_url, tmp_path / "worker2.log", "--no-jobs", **options)
        workers.append(second)

        def delivered() -> bool:
            with sessions() as s:
                rows = s.scalars(select(WebhookDelivery).where(WebhookDelivery.id.in_(ids))).all()
                return len(rows) == len(ids) and all(r.status == "delivered" for r in rows)

        _until(delivered, 120, "every delivery accepted", second)  # the lease: 4 x 2 s + 30 s
        accepted = receiver.accepted()
        assert {r.msg_id for r in accepted} == set(ids)  # none lost
        assert all(Webhook(secret).verify(r.body, r.headers) for r in accepted)
        assert cut_short and all(len(receiver.of(i)) >= 2 for i in cut_short)  # sent again, same id
        second.signal(signal.SIGTERM)
        assert second.wait(60) == 0
    finally:
        receiver.stop()
        held.close()
