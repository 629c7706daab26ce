"""Background jobs: the API queues a crawl, an upload or an analytics report, answers with a job id at once,
and clients poll it; workers run the queue.

A job is a row of ``ingest_jobs`` holding what to run (the target and connector options; uploaded files
wait in ``job_files``), so any worker can run it: ``ragbot worker`` processes, and in the embedded default
``ragbot serve`` itself (``api_runs_jobs``), whose runner thread wakes as soon as a job is queued. Each
process runs one job at a time (jobs share the encoders and the index, and each is CPU-bound already).

Delivery is at least once (``ragbot.db.jobs``): a worker holds its job under a lease it renews from a
heartbeat thread. Killed, even by SIGKILL, it stops renewing and the next worker runs the job again once
the lease runs out; the ingest is idempotent, so the re-run adds what was missing and finds the rest
unchanged. A job that raises is retried after ``job_retry_backoff_s`` until ``job_max_attempts``. Asked to
stop (SIGTERM), a worker hands its job back at the next document instead of finishing a long crawl, and
another worker resumes it. Progress is written at most every ``progress_interval_s``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ragbot.db import jobs as sql
from ragbot.db import repositories as repo
from ragbot.db.jobs import FAILED, QUEUED, RUNNING, SUCCEEDED
from ragbot.db.models import IngestJob, utcnow
from ragbot.db.session import session_scope
from ragbot.observability import metrics
from ragbot.observability.context import bound_request_id, current_request_id
from ragbot.services.ingest import IngestService, ProgressEvent

if TYPE_CHECKING:
    from connectors.base import Connector
    from connectors.files import Upload
    from ragbot.config import Settings
    from ragbot.jobs.schedules import SourceSchedules

logger = logging.getLogger(__name__)

__all__ = [
    "FAILED",
    "QUEUED",
    "REPORT",
    "RUNNING",
    "SUCCEEDED",
    "IngestJobs",
    "JobInterruptedError",
    "JobStatus",
]

#: The ``spec["kind"]`` of an analytics report job (ingest jobs have None or "upload").
REPORT = "report"


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
    attempts: int = 0
    kind: str = "ingest"  # ingest | upload | report

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
        attempts=row.attempts or 0,
        kind=str((row.spec or {}).get("kind") or "ingest"),
    )


class JobInterruptedError(Exception):
    """Raised from the progress callback to stop an ingest: the worker is stopping or lost its lease."""


def default_worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class IngestJobs:
    """Queue (``submit``), read (``get``, ``recent``, ``wait``) and run (``start``/``stop``, ``run_once``)
    ingest jobs. ``service`` builds the ingest service on first use, so a process that only queues jobs
    never loads the encoders or opens the index."""

    def __init__(
        self,
        service: Callable[[], IngestService],
        session_factory: sessionmaker[Session],
        settings: Settings,
        *,
        schedules: SourceSchedules | None = None,
        reports: Callable[[str, Mapping[str, Any]], str] | None = None,
        run_locally: bool = True,
        progress_interval_s: float = 1.0,
        worker_name: str | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._service = service
        self._sessions = session_factory
        self._settings = settings
        self._schedules = schedules
        self._reports = reports
        self._run_locally = run_locally
        self._interval = progress_interval_s
        self._worker = worker_name or default_worker_name()
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._persistent = False  # start() was called: keep polling (else run until the queue is empty)

    # --- queueing and reading ----------------------------------------------------------------------

    def submit(
        self,
        bot_id: str,
        target: str,
        *,
        options: Mapping[str, Any] | None = None,
        uploads: Sequence[Upload] = (),
    ) -> JobStatus:
        """Queue a job and return at once: ``options`` are ``connector_for``'s (``max_pages``...), or
        ``uploads`` the files to ingest. A local runner (``run_locally``) starts on it right away."""
        spec: dict[str, Any] = {
            "kind": "upload" if uploads else None,
            "options": dict(options or {}),
            "request_id": current_request_id(),  # the job's log lines carry the submitting request's id
        }
        files = [sql.StoredFile(u.filename, u.content_type, u.data) for u in uploads]
        return self._enqueue(bot_id, target, spec, files)

    def submit_report(
        self, bot_id: str, since: datetime, until: datetime, *, limit: int = 20, base_url: str | None = None
    ) -> JobStatus:
        """Queue an analytics report (``ragbot.analytics.report``) over ``[since, until)``: it encodes
        and clusters every question of the window, too much work for a request. The HTML is the job's
        output (``output``) once it succeeded."""
        spec: dict[str, Any] = {
            "kind": REPORT,
            "since": since.isoformat(),
            "until": until.isoformat(),
            "limit": limit,
            "base_url": base_url,
            "request_id": current_request_id(),
        }
        target = f"analytics report {since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC"
        return self._enqueue(bot_id, target, spec, [])

    def output(self, bot_id: str, job_id: str) -> sql.StoredFile | None:
        """What a finished job produced (a report's HTML), or None."""
        with self._sessions() as session:
            return sql.load_output(session, bot_id, job_id)

    def _enqueue(
        self, bot_id: str, target: str, spec: dict[str, Any], files: list[sql.StoredFile]
    ) -> JobStatus:
        with session_scope(self._sessions) as session:
            repo.ensure_bot(session, bot_id)  # insert-or-ignore: two first jobs of a new bot do not collide
            row = sql.enqueue(
                session, bot_id=bot_id, target=target, spec=spec, now=self._clock(), files=files
            )
            status = _status(row)
        if self._run_locally:
            self._kick()
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
                .order_by(IngestJob.created_at.desc(), IngestJob.id)
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

    # --- the runner --------------------------------------------------------------------------------

    def start(self) -> None:
        """Run queued jobs (and queue due re-syncs) on a daemon thread until ``stop()``."""
        with self._lock:
            self._persistent = True
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="ragbot-jobs", daemon=True)
            self._thread.start()

    def _kick(self) -> None:
        """Wake the runner for a job just queued, or start one that runs until the queue is empty (an
        API process that was never ``start()``-ed: tests, embedding applications)."""
        with self._lock:
            self._wake.set()
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="ragbot-jobs", daemon=True)
            self._thread.start()

    def _idle(self) -> bool:
        """After a round with nothing to run: True when a runner started by ``_kick`` should end."""
        with self._lock:
            if self._persistent or self._wake.is_set():
                return False
            self._thread = None
            return True

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop taking jobs; the job in hand is handed back at its next document (or finishes first)."""
        self._stop.set()
        self._wake.set()
        with self._lock:
            self._persistent = False
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    def shutdown(self, wait: bool = True) -> None:
        self.stop(timeout_s=30.0 if wait else 0.0)

    def _loop(self) -> None:
        next_check = 0.0
        while not self._stop.is_set():
            self._wake.clear()
            ran = False
            try:
                if self._persistent and self._schedules is not None and time.monotonic() >= next_check:
                    next_check = time.monotonic() + self._settings.schedule_check_s
                    queued = self._schedules.enqueue_due()
                    if queued:
                        logger.info("queued %d scheduled re-syncs", len(queued))
                ran = self.run_once()
            except Exception:  # the database may be restarting: nothing is lost, try again later
                logger.warning("job round failed; retrying", exc_info=True)
            if not ran:
                if self._idle():
                    return
                self._wake.wait(self._settings.job_poll_s)

    def run_once(self) -> bool:
        """Claim one due job and run it to its end; False when nothing was due."""
        settings = self._settings
        with session_scope(self._sessions) as session:
            now = self._clock()
            given_up = sql.fail_exhausted(session, now=now, max_attempts=settings.job_max_attempts)
            claim = sql.claim_next(
                session,
                now=now,
                lease_s=settings.job_lease_s,
                worker=self._worker,
                max_attempts=settings.job_max_attempts,
            )
        for _ in range(given_up):
            metrics.job_finished("ingest", "failed")
        if given_up:
            logger.warning("%d ingest jobs failed: their worker stopped during every attempt", given_up)
        if claim is None:
            return False
        self._run(claim)
        return True

    # --- one job -----------------------------------------------------------------------------------

    def _run(self, claim: sql.Claim) -> None:
        with bound_request_id(claim.spec.get("request_id")):
            self._run_claimed(claim)

    def _run_claimed(self, claim: sql.Claim) -> None:
        if claim.spec.get("kind") == REPORT:
            self._run_report(claim)
            return
        if claim.attempt > 1:
            logger.info("ingest job %s: attempt %d", claim.job_id, claim.attempt)
        with self._leased(claim) as lost:
            started = last_write = time.monotonic()

            def on_progress(event: ProgressEvent) -> None:
                nonlocal last_write
                if lost.is_set():
                    raise JobInterruptedError("lost the job's lease")
                if self._stop.is_set():
                    raise JobInterruptedError("the worker is stopping")
                now = time.monotonic()
                if now - last_write < self._interval:
                    return
                last_write = now
                report = _progress_report(event)
                if not self._write(sql.save_progress, claim, processed=event.done, report=report):
                    lost.set()

            connector: Connector | None = None
            try:
                connector = self._connector(claim)
                kind = "upload" if claim.spec.get("kind") == "upload" else None
                report = self._service().ingest(claim.bot_id, connector, kind=kind, progress=on_progress)
            except JobInterruptedError as exc:
                self._interrupted(claim, lost, str(exc))
                return
            except Exception as exc:
                self._failed(claim, exc)
                return
        count = report.added + report.updated + report.unchanged + report.removed + report.failed
        elapsed = time.monotonic() - started
        final = ProgressEvent(count, count, elapsed, count / elapsed if elapsed > 0 else 0.0, report)
        kept = self._write(
            sql.finish,
            claim,
            status=SUCCEEDED,
            processed=count,
            report=_progress_report(final),
            error=None,
        )
        if not kept:
            logger.warning(
                "ingest job %s finished after losing its lease; another run records it", claim.job_id
            )
            return
        metrics.job_finished("ingest", "succeeded")
        if claim.spec.get("kind") != "upload" and not claim.spec.get("scheduled") and connector is not None:
            self._remember_options(claim, connector.scope)

    def _run_report(self, claim: sql.Claim) -> None:
        """Build the report and store it with the job's success, in one transaction: a worker killed on
        the way leaves the job to the next one, which builds it again (one output either way)."""
        if self._reports is None:
            self._failed(claim, RuntimeError("this process cannot build analytics reports"), kind=REPORT)
            return
        started = time.monotonic()
        with self._leased(claim):
            try:
                html = self._reports(claim.bot_id, claim.spec)
            except Exception as exc:
                self._failed(claim, exc, kind=REPORT)
                return
        data = html.encode("utf-8")
        day = claim.spec.get("until", "")[:10]
        output = sql.StoredFile(f"ragbot-report-{claim.bot_id}-{day}.html", "text/html; charset=utf-8", data)
        summary = {"bytes": len(data), "elapsed_s": round(time.monotonic() - started, 3)}
        if self._write(
            sql.finish, claim, status=SUCCEEDED, processed=1, report=summary, error=None, output=output
        ):
            metrics.job_finished(REPORT, "succeeded")
        else:
            logger.warning(
                "report job %s finished after losing its lease; another run records it", claim.job_id
            )

    def _connector(self, claim: sql.Claim) -> Connector:
        from connectors.files import Upload, UploadConnector
        from ragbot.services.ingest import connector_for

        if claim.spec.get("kind") == "upload":
            with self._sessions() as session:
                files = sql.load_files(session, claim.job_id)
            uploads = [Upload(filename=f.filename, data=f.data, content_type=f.content_type) for f in files]
            return UploadConnector(uploads, max_bytes=self._settings.max_upload_bytes)
        return connector_for(claim.target, self._settings, **dict(claim.spec.get("options") or {}))

    def _interrupted(self, claim: sql.Claim, lost: threading.Event, reason: str) -> None:
        if lost.is_set():
            logger.warning(
                "ingest job %s: %s; the worker that took it over finishes it", claim.job_id, reason
            )
            return
        if self._write(sql.release, claim):
            metrics.job_finished("ingest", "released")
            logger.info("ingest job %s handed back unfinished: %s", claim.job_id, reason)

    def _failed(self, claim: sql.Claim, exc: Exception, kind: str = "ingest") -> None:
        error = f"{type(exc).__name__}: {exc}"[:2000]
        if claim.attempt < self._settings.job_max_attempts:
            delay = self._settings.job_retry_backoff_s * claim.attempt
            logger.warning(
                "%s job %s failed (attempt %d), retrying in %.0fs: %s",
                kind,
                claim.job_id,
                claim.attempt,
                delay,
                error,
            )
            if self._write(
                sql.retry_later, claim, run_after=self._clock() + timedelta(seconds=delay), error=error
            ):
                metrics.job_finished(kind, "retry")
            return
        logger.error("%s job %s failed after %d attempts", kind, claim.job_id, claim.attempt, exc_info=exc)
        if self._write(sql.finish, claim, status=FAILED, processed=None, report=None, error=error):
            metrics.job_finished(kind, "failed")

    def _write(self, op: Callable[..., bool], claim: sql.Claim, **values: Any) -> bool:
        """One claim-guarded write in its own transaction; False when the claim is no longer ours."""
        with session_scope(self._sessions) as session:
            return op(session, claim, now=self._clock(), **values)

    @contextmanager
    def _leased(self, claim: sql.Claim) -> Iterator[threading.Event]:
        """Run a block while a heartbeat thread renews the claim's lease; the event yielded is set once
        the lease was lost (another worker took the job over)."""
        lost, done = threading.Event(), threading.Event()
        beat = threading.Thread(
            target=self._heartbeat, args=(claim, lost, done), name="ragbot-job-lease", daemon=True
        )
        beat.start()
        try:
            yield lost
        finally:
            done.set()
            beat.join()

    def _heartbeat(self, claim: sql.Claim, lost: threading.Event, done: threading.Event) -> None:
        """Renew the lease every third of it while the job runs; note when it was lost."""
        lease_s = self._settings.job_lease_s
        while not done.wait(lease_s / 3):
            try:
                with session_scope(self._sessions) as session:
                    held = sql.renew(session, claim, now=self._clock(), lease_s=lease_s)
            except Exception:  # the database is away: keep trying until the lease would run out
                logger.warning("ingest job %s: cannot renew its lease", claim.job_id, exc_info=True)
                continue
            if not held:
                lost.set()
                return

    def _remember_options(self, claim: sql.Claim, scope: str) -> None:
        """Keep the connector options on the source, so its scheduled re-syncs crawl the same way."""
        options = dict(claim.spec.get("options") or {})
        try:
            with session_scope(self._sessions) as session:
                sql.remember_options(session, claim.bot_id, scope, options)
        except Exception:
            logger.warning("cannot store the options of source %s", scope, exc_info=True)


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
