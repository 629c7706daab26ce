"""Background ingest jobs: the API starts a crawl, answers with a job id at once, and clients poll it.

Jobs run one at a time on a worker thread (they share the encoders and the index, and each is CPU-bound
already) and live in the ``ingest_jobs`` table: status, documents handled so far, and the report, which
holds partial counts and progress while running and the final report once done. Progress is written at
most every ``progress_interval_s`` so a fast crawl does not turn into a stream of commits. A job found
queued or running when the process starts again was cut off: ``recover_interrupted`` marks it failed.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from connectors.base import Connector
from ragbot.db import repositories as repo
from ragbot.db.models import IngestJob
from ragbot.observability import metrics
from ragbot.services.ingest import IngestService, ProgressEvent

logger = logging.getLogger(__name__)

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"


@dataclass(frozen=True, slots=True)
class JobStatus:
    id: str
    bot_id: str
    target: str
    status: str
    processed: int
    report: dict[str, Any]
    error: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def finished(self) -> bool:
        return self.status in (SUCCEEDED, FAILED)


def _status(row: IngestJob) -> JobStatus:
    return JobStatus(
        id=row.id,
        bot_id=row.bot_id,
        target=row.target,
        status=row.status,
        processed=row.processed,
        report=dict(row.report or {}),
        error=row.error,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class IngestJobs:
    def __init__(
        self,
        service: IngestService,
        session_factory: Callable[[], Session],
        *,
        progress_interval_s: float = 1.0,
    ) -> None:
        self._service = service
        self._sessions = session_factory
        self._interval = progress_interval_s
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragbot-ingest-job")

    def submit(self, bot_id: str, target: str, connector: Connector, *, kind: str | None = None) -> JobStatus:
        """Record a queued job and start it in the background; returns at once."""
        with self._sessions() as session:
            repo.ensure_bot(session, bot_id)  # insert-or-ignore: two first jobs of a new bot do not collide
            row = IngestJob(bot_id=bot_id, target=target, status=QUEUED, processed=0, report={})
            session.add(row)
            session.commit()
            status = _status(row)
        # The job's log lines keep the submitting request's id (a context copy runs in the pool thread).
        self._pool.submit(contextvars.copy_context().run, self._run, status.id, bot_id, connector, kind)
        return status

    def get(self, bot_id: str, job_id: str) -> JobStatus | None:
        with self._sessions() as session:
            row = repo.get_ingest_job(session, bot_id, job_id)
            return _status(row) if row is not None else None

    def recent(self, bot_id: str, limit: int = 50) -> list[JobStatus]:
        with self._sessions() as session:
            rows = session.scalars(
                select(IngestJob)
                .where(IngestJob.bot_id == bot_id)
                .order_by(IngestJob.created_at.desc())
                .limit(limit)
            )
            return [_status(row) for row in rows]

    def wait(self, bot_id: str, job_id: str, timeout_s: float, poll_s: float = 0.1) -> JobStatus | None:
        """Poll until the job finishes or ``timeout_s`` passes (for the CLI and tests)."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.get(bot_id, job_id)
            if status is None or status.finished or time.monotonic() >= deadline:
                return status
            time.sleep(poll_s)

    def recover_interrupted(self) -> int:
        """Mark jobs left queued or running by a previous process as failed; returns how many."""
        with self._sessions() as session:
            rows = session.scalars(select(IngestJob).where(IngestJob.status.in_((QUEUED, RUNNING)))).all()
            for row in rows:
                row.status = FAILED
                row.error = (
                    "interrupted: the server stopped before the job finished; start it again to resume"
                )
            session.commit()
            return len(rows)

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=not wait)

    # --- worker thread -----------------------------------------------------------------------------

    def _update(self, job_id: str, **values: Any) -> None:
        with self._sessions() as session:
            row = session.get(IngestJob, job_id)
            if row is None:
                return
            for key, value in values.items():
                setattr(row, key, value)
            session.commit()

    def _run(self, job_id: str, bot_id: str, connector: Connector, kind: str | None) -> None:
        self._update(job_id, status=RUNNING)
        started = last_write = time.monotonic()

        def on_progress(event: ProgressEvent) -> None:
            nonlocal last_write
            now = time.monotonic()
            if now - last_write < self._interval:
                return
            last_write = now
            self._update(job_id, processed=event.done, report=_progress_report(event))

        try:
            report = self._service.ingest(bot_id, connector, kind=kind, progress=on_progress)
        except Exception as exc:
            logger.exception("ingest job %s failed", job_id)
            self._update(job_id, status=FAILED, error=f"{type(exc).__name__}: {exc}")
            metrics.job_finished("ingest", "failed")
            return
        done = report.added + report.updated + report.unchanged + report.removed + report.failed
        elapsed = time.monotonic() - started
        final = ProgressEvent(done, done, elapsed, done / elapsed if elapsed > 0 else 0.0, report)
        self._update(job_id, status=SUCCEEDED, processed=done, report=_progress_report(final))
        metrics.job_finished("ingest", "succeeded")


def _progress_report(event: ProgressEvent) -> dict[str, Any]:
    """The report so far plus a ``progress`` block (done, total, elapsed_s, pages_per_s)."""
    return {
        **event.report.as_dict(),
        "progress": {
            "done": event.done,
            "total": event.total,
            "elapsed_s": round(event.elapsed_s, 3),
            "pages_per_s": round(event.pages_per_s, 2),
        },
    }
