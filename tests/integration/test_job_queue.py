"""The durable job queue's SQL on SQLite and PostgreSQL: leases, claim tokens, retries, giving up, and
schedules that queue one re-sync per slot however many workers look at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from fixtures.database import migrated_sessions
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ragbot.db import jobs as sql
from ragbot.db import repositories as repo
from ragbot.db.models import IngestJob, JobFile, JobOutput, Source, utcnow
from ragbot.db.session import session_scope
from ragbot.jobs.schedules import NotSchedulableError, SourceSchedules

pytestmark = pytest.mark.integration

BOT = "bot-queue"
LEASE_S = 30.0


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    with migrated_sessions(database_url, BOT) as factory:
        yield factory


def _enqueue(sessions: sessionmaker[Session], now: datetime, **kw: Any) -> str:
    with session_scope(sessions) as s:
        return sql.enqueue(s, bot_id=BOT, target="/docs", spec={"options": {}}, now=now, **kw).id


def _claim(sessions: sessionmaker[Session], now: datetime, worker: str = "w1", max_attempts: int = 3) -> Any:
    with session_scope(sessions) as s:
        return sql.claim_next(s, now=now, lease_s=LEASE_S, worker=worker, max_attempts=max_attempts)


def _job(sessions: sessionmaker[Session], job_id: str) -> IngestJob:
    with sessions() as s:
        return s.get_one(IngestJob, job_id)


def test_a_dead_workers_job_is_taken_over_and_its_late_writes_are_ignored(
    sessions: sessionmaker[Session],
) -> None:
    t0 = utcnow()
    files = [sql.StoredFile("a.txt", "text/plain", b"alpha"), sql.StoredFile("b.md", None, b"# beta")]
    job_id = _enqueue(sessions, t0, files=files)
    first = _claim(sessions, t0)
    assert first is not None and first.job_id == job_id and first.attempt == 1
    assert _claim(sessions, t0 + timedelta(seconds=1), worker="w2") is None  # held: nobody else gets it
    with session_scope(sessions) as s:
        assert sql.renew(s, first, now=t0 + timedelta(seconds=20), lease_s=LEASE_S)
    assert _claim(sessions, t0 + timedelta(seconds=40), worker="w2") is None  # the renewal counted

    # w1 stops renewing (SIGKILL): once the lease runs out, w2 takes the job as attempt 2.
    later = t0 + timedelta(seconds=20 + LEASE_S + 1)
    second = _claim(sessions, later, worker="w2")
    assert second is not None and second.job_id == job_id and second.attempt == 2
    assert second.token != first.token
    with session_scope(sessions) as s:
        assert not sql.save_progress(s, first, processed=5, report={"late": True}, now=later)
        assert not sql.finish(s, first, status=sql.SUCCEEDED, processed=5, report={}, error=None, now=later)
        assert not sql.renew(s, first, now=later, lease_s=LEASE_S)
        assert [f.filename for f in sql.load_files(s, job_id)] == ["a.txt", "b.md"]
        assert sql.save_progress(s, second, processed=1, report={"added": 1}, now=later)
        assert sql.finish(
            s, second, status=sql.SUCCEEDED, processed=2, report={"added": 2}, error=None, now=later
        )
    row = _job(sessions, job_id)
    assert (row.status, row.processed, row.report, row.attempts, row.worker) == (
        "succeeded",
        2,
        {"added": 2},
        2,
        "w2",
    )
    assert row.lease_token is None
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(JobFile)) == 0  # files go with a finished job


def test_a_report_jobs_output_is_kept_once_and_only_for_its_bot(sessions: sessionmaker[Session]) -> None:
    t0 = utcnow()
    job_id = _enqueue(sessions, t0)
    first = _claim(sessions, t0)
    later = t0 + timedelta(seconds=LEASE_S + 1)
    second = _claim(sessions, later, worker="w2")  # the first worker died building the report
    html = sql.StoredFile("report.html", "text/html; charset=utf-8", "<html>é</html>".encode())
    with session_scope(sessions) as s:
        assert not sql.finish(
            s, first, status=sql.SUCCEEDED, processed=1, report={}, error=None, now=later, output=html
        )
        assert sql.finish(
            s, second, status=sql.SUCCEEDED, processed=1, report={}, error=None, now=later, output=html
        )
    with sessions() as s:
        assert sql.load_output(s, BOT, job_id) == html
        assert sql.load_output(s, "another-bot", job_id) is None
        assert sql.load_output(s, BOT, "no-such-job") is None
        assert s.scalar(select(func.count()).select_from(JobOutput)) == 1


def test_retry_release_and_giving_up(sessions: sessionmaker[Session]) -> None:
    t0 = utcnow()
    job_id = _enqueue(sessions, t0)
    claim = _claim(sessions, t0)
    with session_scope(sessions) as s:
        assert sql.retry_later(s, claim, run_after=t0 + timedelta(seconds=10), error="boom", now=t0)
    assert _job(sessions, job_id).status == "queued" and _job(sessions, job_id).error == "boom"
    assert _claim(sessions, t0 + timedelta(seconds=5)) is None  # not due yet
    claim = _claim(sessions, t0 + timedelta(seconds=11))
    assert claim is not None and claim.attempt == 2
    assert _job(sessions, job_id).error is None  # a new run clears the last error

    # A stopping worker hands the job back without spending the attempt.
    with session_scope(sessions) as s:
        assert sql.release(s, claim, now=t0 + timedelta(seconds=12))
    assert (_job(sessions, job_id).status, _job(sessions, job_id).attempts) == ("queued", 1)

    # Workers that die on every attempt: after the last one the job fails instead of looping forever.
    now = t0 + timedelta(seconds=13)
    for attempt in (2, 3):
        claim = _claim(sessions, now)
        assert claim is not None and claim.attempt == attempt
        now += timedelta(seconds=LEASE_S + 1)
    assert _claim(sessions, now) is None
    with session_scope(sessions) as s:
        assert sql.fail_exhausted(s, now=now, max_attempts=3) == 1
    row = _job(sessions, job_id)
    assert row.status == "failed" and "gave up after 3 attempts" in (row.error or "")


def test_concurrent_workers_take_each_job_once(sessions: sessionmaker[Session]) -> None:
    t0 = utcnow()
    ids = {_enqueue(sessions, t0) for _ in range(24)}
    taken: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(6)

    def worker(name: str) -> None:
        start.wait()
        while True:
            claim = _claim(sessions, t0 + timedelta(seconds=1), worker=name)
            if claim is None:
                return
            with lock:
                taken.append(claim.job_id)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(taken) == sorted(ids)  # every job once, none twice


def _source(sessions: sessionmaker[Session], scope: str = "/srv/docs", kind: str = "files") -> str:
    with session_scope(sessions) as s:
        return repo.get_or_create_source(s, BOT, kind, scope, options={"max_pages": 5}).id


def test_a_due_slot_queues_one_resync_however_many_workers_look(sessions: sessionmaker[Session]) -> None:
    t0 = utcnow()
    source_id = _source(sessions)
    schedules = SourceSchedules(sessions, clock=lambda: t0)
    info = schedules.schedule(BOT, source_id, 3600)
    assert info is not None and info.every == "1h" and info.next_sync_at == t0 + timedelta(hours=1)
    with session_scope(sessions) as s:
        assert sql.enqueue_due_resyncs(s, now=t0 + timedelta(minutes=59)) == []

    due_at = t0 + timedelta(hours=1, seconds=5)
    queued: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def tick() -> None:
        start.wait()
        try:
            with session_scope(sessions) as s:
                got = sql.enqueue_due_resyncs(s, now=due_at)
        except Exception:  # SQLite may refuse a racing writer outright: it queued nothing then
            got = []
        with lock:
            queued.extend(got)

    threads = [threading.Thread(target=tick) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(queued) == 1
    with sessions() as s:
        jobs = s.scalars(select(IngestJob).where(IngestJob.source_id == source_id)).all()
        source = s.get_one(Source, source_id)
    assert [j.id for j in jobs] == queued
    assert jobs[0].scheduled_for == t0 + timedelta(hours=1)
    assert jobs[0].spec == {"kind": "files", "options": {"max_pages": 5}, "scheduled": True}
    assert jobs[0].target == "/srv/docs"
    assert source.next_sync_at == t0 + timedelta(hours=2)

    # The next slot comes while that re-sync is still queued: skipped, not piled up behind it.
    with session_scope(sessions) as s:
        assert sql.enqueue_due_resyncs(s, now=t0 + timedelta(hours=2, seconds=1)) == []
        assert s.get_one(Source, source_id).next_sync_at == t0 + timedelta(hours=3)

    # A worker that was down for a day catches up with one re-sync, not 24.
    with session_scope(sessions) as s:
        s.get_one(IngestJob, queued[0]).status = "succeeded"
    with session_scope(sessions) as s:
        assert len(sql.enqueue_due_resyncs(s, now=t0 + timedelta(hours=27, seconds=1))) == 1
        assert s.get_one(Source, source_id).next_sync_at == t0 + timedelta(hours=28)

    assert schedules.unschedule(BOT, source_id) is not None
    with session_scope(sessions) as s:
        assert sql.enqueue_due_resyncs(s, now=t0 + timedelta(days=9)) == []


def test_schedules_are_per_bot_and_uploads_have_none(sessions: sessionmaker[Session]) -> None:
    schedules = SourceSchedules(sessions)
    files = _source(sessions)
    uploads = _source(sessions, scope="uploads", kind="upload")
    assert schedules.schedule("another-bot", files, 3600) is None
    with pytest.raises(NotSchedulableError):
        schedules.schedule(BOT, uploads, 3600)
    with pytest.raises(ValueError):
        schedules.schedule(BOT, files, 5)
    assert [s.id for s in schedules.sources(BOT)] == [files, uploads]
    assert schedules.sources("another-bot") == []
