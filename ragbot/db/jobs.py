"""SQL for the durable job queue: ingest jobs, their uploaded files, and sources' re-sync schedules.

The ``ingest_jobs`` rows are the queue (see ``ragbot.jobs`` for why no queue library): a worker claims a
due row by setting a lease (``lease_until``) and a fresh ``lease_token``, renews the lease while it runs,
and writes progress and the outcome only while the row still holds its token. A worker that dies (even
by SIGKILL) stops renewing; when the lease runs out the row is due again and the next worker runs the job
afresh, which the ingest makes idempotent (deterministic chunk ids, index written before rows).

PostgreSQL takes candidates with ``FOR UPDATE SKIP LOCKED`` so concurrent workers pick disjoint rows
without waiting; SQLite has no row locks (the clause is dropped) and every claim is a compare-and-set
UPDATE that matches only while the row is still due, so two workers never both win it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, or_, select, update
from sqlalchemy.orm import Session

from ragbot.db.models import IngestJob, JobFile, JobOutput, Source

__all__ = [
    "ACTIVE",
    "FAILED",
    "QUEUED",
    "RUNNING",
    "SUCCEEDED",
    "Claim",
    "StoredFile",
    "claim_next",
    "clear_schedule",
    "enqueue",
    "enqueue_due_resyncs",
    "fail_exhausted",
    "finish",
    "load_files",
    "next_slot",
    "release",
    "remember_options",
    "renew",
    "retry_later",
    "save_progress",
    "set_schedule",
]

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
ACTIVE = (QUEUED, RUNNING)


@dataclass(frozen=True, slots=True)
class StoredFile:
    filename: str
    content_type: str | None
    data: bytes


@dataclass(frozen=True, slots=True)
class Claim:
    """A job a worker holds while ``token`` is still the row's ``lease_token``."""

    job_id: str
    bot_id: str
    target: str
    spec: dict[str, Any]
    attempt: int  # 1 for the first run
    token: str


def enqueue(
    session: Session,
    *,
    bot_id: str,
    target: str,
    spec: dict[str, Any],
    now: datetime,
    files: Sequence[StoredFile] = (),
    source_id: str | None = None,
    scheduled_for: datetime | None = None,
) -> IngestJob:
    """Add a queued job (and its files); due at once. Committed by the caller, files and job together."""
    row = IngestJob(
        bot_id=bot_id,
        target=target,
        status=QUEUED,
        processed=0,
        report={},
        spec=spec,
        attempts=0,
        run_after=now,
        source_id=source_id,
        scheduled_for=scheduled_for,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    for position, f in enumerate(files):
        session.add(
            JobFile(
                bot_id=bot_id,
                job_id=row.id,
                position=position,
                filename=f.filename,
                content_type=f.content_type,
                data=f.data,
            )
        )
    session.flush()
    return row


def _due(now: datetime, max_attempts: int) -> ColumnElement[bool]:
    """Queued and due, or running under a lease that ran out (its worker died) with attempts left."""
    return or_(
        and_(IngestJob.status == QUEUED, IngestJob.run_after <= now),
        and_(
            IngestJob.status == RUNNING,
            IngestJob.lease_until < now,
            IngestJob.attempts < max_attempts,
        ),
    )


def claim_next(
    session: Session, *, now: datetime, lease_s: float, worker: str, max_attempts: int
) -> Claim | None:
    """Take the oldest due job under a fresh lease, counting the attempt; None when nothing is due."""
    candidates = session.scalars(
        select(IngestJob.id)
        .where(_due(now, max_attempts))
        .order_by(IngestJob.run_after, IngestJob.created_at, IngestJob.id)
        .limit(5)
        .with_for_update(skip_locked=True)
    ).all()
    for job_id in candidates:
        token = str(uuid.uuid4())
        taken = session.execute(
            update(IngestJob)
            .where(IngestJob.id == job_id, _due(now, max_attempts))
            .values(
                status=RUNNING,
                attempts=IngestJob.attempts + 1,
                lease_until=now + timedelta(seconds=lease_s),
                lease_token=token,
                worker=worker[:200],
                error=None,
                updated_at=now,
            )
            .returning(IngestJob.bot_id, IngestJob.target, IngestJob.spec, IngestJob.attempts)
            .execution_options(synchronize_session=False)
        ).one_or_none()
        if taken is None:
            continue  # another worker got there first
        bot_id, target, spec, attempts = taken
        return Claim(job_id, bot_id, target, dict(spec or {}), int(attempts), token)
    return None


def _held(claim: Claim) -> ColumnElement[bool]:
    return and_(IngestJob.id == claim.job_id, IngestJob.lease_token == claim.token)


def renew(session: Session, claim: Claim, *, now: datetime, lease_s: float) -> bool:
    """Extend the lease; False when it was lost (it ran out and another worker took the job)."""
    result = session.execute(
        update(IngestJob)
        .where(_held(claim), IngestJob.status == RUNNING)
        .values(lease_until=now + timedelta(seconds=lease_s))
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) > 0


def save_progress(
    session: Session, claim: Claim, *, processed: int, report: dict[str, Any], now: datetime
) -> bool:
    result = session.execute(
        update(IngestJob)
        .where(_held(claim), IngestJob.status == RUNNING)
        .values(processed=processed, report=report, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) > 0


def finish(
    session: Session,
    claim: Claim,
    *,
    status: str,
    processed: int | None,
    report: dict[str, Any] | None,
    error: str | None,
    now: datetime,
    output: StoredFile | None = None,
) -> bool:
    """Record the outcome (succeeded or failed), keep ``output`` (what the job produced, for download)
    and drop the job's input files; False (nothing written) when the claim was lost meanwhile."""
    values: dict[str, Any] = {
        "status": status,
        "error": error,
        "lease_until": None,
        "lease_token": None,
        "updated_at": now,
    }
    if processed is not None:
        values["processed"] = processed
    if report is not None:
        values["report"] = report
    result = session.execute(
        update(IngestJob)
        .where(_held(claim), IngestJob.status == RUNNING)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if _rowcount(result) == 0:
        return False
    session.execute(delete(JobFile).where(JobFile.job_id == claim.job_id))
    if output is not None:
        session.execute(delete(JobOutput).where(JobOutput.job_id == claim.job_id))  # one, however many runs
        session.add(
            JobOutput(
                job_id=claim.job_id,
                bot_id=claim.bot_id,
                filename=output.filename,
                content_type=output.content_type or "application/octet-stream",
                data=output.data,
                created_at=now,
            )
        )
    return True


def load_output(session: Session, bot_id: str, job_id: str) -> StoredFile | None:
    """What the job produced, if it finished with an output (scoped to its bot)."""
    row = session.get(JobOutput, job_id)
    if row is None or row.bot_id != bot_id:
        return None
    return StoredFile(row.filename, row.content_type, row.data)


def retry_later(session: Session, claim: Claim, *, run_after: datetime, error: str, now: datetime) -> bool:
    """Queue the job again after a failed run, keeping the error visible until the next run."""
    result = session.execute(
        update(IngestJob)
        .where(_held(claim), IngestJob.status == RUNNING)
        .values(
            status=QUEUED,
            run_after=run_after,
            error=error,
            lease_until=None,
            lease_token=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) > 0


def release(session: Session, claim: Claim, *, now: datetime) -> bool:
    """Hand a job back unfinished (the worker is shutting down): due at once, the attempt not counted."""
    result = session.execute(
        update(IngestJob)
        .where(_held(claim), IngestJob.status == RUNNING)
        .values(
            status=QUEUED,
            run_after=now,
            attempts=IngestJob.attempts - 1,
            lease_until=None,
            lease_token=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) > 0


def fail_exhausted(session: Session, *, now: datetime, max_attempts: int) -> int:
    """Give up on jobs whose worker died during their last allowed attempt (a job that kills its worker
    every time must not crash-loop the fleet). Reads first, so the usual round takes no write lock."""
    exhausted = (
        IngestJob.status == RUNNING,
        IngestJob.lease_until < now,
        IngestJob.attempts >= max_attempts,
    )
    ids = list(session.scalars(select(IngestJob.id).where(*exhausted).limit(100)))
    if not ids:
        return 0
    result = session.execute(
        update(IngestJob)
        .where(IngestJob.id.in_(ids), *exhausted)
        .values(
            status=FAILED,
            error=f"gave up after {max_attempts} attempts: the worker running it stopped each time",
            lease_until=None,
            lease_token=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    session.execute(delete(JobFile).where(JobFile.job_id.in_(ids)))
    return _rowcount(result)


def load_files(session: Session, job_id: str) -> list[StoredFile]:
    rows = session.scalars(select(JobFile).where(JobFile.job_id == job_id).order_by(JobFile.position))
    return [StoredFile(r.filename, r.content_type, bytes(r.data)) for r in rows]


# --------------------------------------------------------------------------- schedules


def next_slot(slot: datetime, every_s: int, now: datetime) -> datetime:
    """The first slot after ``now`` on the grid ``slot + k * every_s``: a worker that was down for a day
    runs one catch-up re-sync, not one per missed slot."""
    step = timedelta(seconds=every_s)
    if slot > now:
        return slot
    missed = int((now - slot) / step) + 1
    return slot + missed * step


def set_schedule(
    session: Session, bot_id: str, source_id: str, *, every_s: int, now: datetime
) -> Source | None:
    """Re-sync the source every ``every_s`` seconds, the first one ``every_s`` from now."""
    source = session.get(Source, source_id)
    if source is None or source.bot_id != bot_id:
        return None
    source.every_s = every_s
    source.next_sync_at = now + timedelta(seconds=every_s)
    session.flush()
    return source


def clear_schedule(session: Session, bot_id: str, source_id: str) -> Source | None:
    source = session.get(Source, source_id)
    if source is None or source.bot_id != bot_id:
        return None
    source.every_s = None
    source.next_sync_at = None
    session.flush()
    return source


def enqueue_due_resyncs(session: Session, *, now: datetime, limit: int = 20) -> list[str]:
    """Queue one re-sync for each source whose slot is due; the ids of the jobs queued.

    Exactly once per slot, however many workers run this at the same moment: the slot is moved on with
    a compare-and-set UPDATE in the same transaction as the job's INSERT, so only the worker whose UPDATE
    matched queues it (on PostgreSQL the others' UPDATE waits for that commit and then matches nothing),
    and the unique (source_id, scheduled_for) constraint would refuse a second job for the slot anyway.
    A source whose previous re-sync is still queued or running skips the slot instead of piling up.
    """
    due = session.execute(
        select(Source.id, Source.bot_id, Source.scope, Source.kind, Source.options, Source.every_s)
        .add_columns(Source.next_sync_at)
        .where(Source.every_s.is_not(None), Source.next_sync_at <= now)
        .order_by(Source.next_sync_at, Source.id)
        .limit(limit)
    ).all()
    queued: list[str] = []
    for source_id, bot_id, scope, kind, options, every_s, slot in due:
        moved = session.execute(
            update(Source)
            .where(Source.id == source_id, Source.next_sync_at == slot)
            .values(next_sync_at=next_slot(slot, int(every_s), now))
            .execution_options(synchronize_session=False)
        )
        if _rowcount(moved) == 0:
            continue  # another worker took this slot
        busy = session.scalar(
            select(IngestJob.id)
            .where(IngestJob.source_id == source_id, IngestJob.status.in_(ACTIVE))
            .limit(1)
        )
        if busy is not None:
            continue
        spec = {"kind": kind, "options": dict(options or {}), "scheduled": True}
        row = enqueue(
            session,
            bot_id=bot_id,
            target=scope,
            spec=spec,
            now=now,
            source_id=source_id,
            scheduled_for=slot,
        )
        queued.append(row.id)
    return queued


def remember_options(session: Session, bot_id: str, scope: str, options: dict[str, Any]) -> None:
    """The connector options a source was last ingested with through a job, for its re-syncs."""
    session.execute(
        update(Source)
        .where(Source.bot_id == bot_id, Source.scope == scope)
        .values(options=options)
        .execution_options(synchronize_session=False)
    )


def _rowcount(result: Any) -> int:
    return int(result.rowcount or 0)
