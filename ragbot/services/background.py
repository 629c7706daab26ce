"""What runs beside the API in every process, and alone in ``ragbot worker``: the ingest job runner
(queued crawls and uploads, and due scheduled re-syncs), the webhook delivery worker, the handoff timers
(offering the lead form where nobody claimed a conversation in time) and the hourly retention purge. All
read their work from the database, so any number of processes can run them side by side."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ragbot.handoff.service import HandoffService
    from ragbot.services.jobs import IngestJobs
    from ragbot.webhooks.worker import WebhookWorker

log = logging.getLogger(__name__)

__all__ = ["Background"]


class Background:
    def __init__(
        self,
        webhooks: WebhookWorker,
        handoff: HandoffService,
        purge: Callable[[], dict[str, dict[str, int]]] | None = None,
        *,
        jobs: Callable[[], IngestJobs] | None = None,
        run_jobs: bool = True,
        send_webhooks: bool = True,
        sweep_every_s: float = 15.0,
        purge_every_s: float = 3600.0,
    ) -> None:
        """``jobs`` builds the job runner when it is first started; ``run_jobs`` and ``send_webhooks`` are
        ``start()``'s defaults (``api_runs_jobs`` and ``api_sends_webhooks`` for ``ragbot serve``)."""
        self._jobs = jobs
        self._run_jobs = run_jobs
        self._send_webhooks = send_webhooks
        self._webhooks_started = False
        self._jobs_started: IngestJobs | None = None
        self._webhooks = webhooks
        self._handoff = handoff
        self._purge = purge
        self._sweep_every_s = sweep_every_s
        self._purge_every_s = purge_every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, *, jobs: bool | None = None, webhooks: bool | None = None) -> None:
        """Start everything; ``jobs`` and ``webhooks`` override whether ingest jobs run and webhook
        deliveries go out here (``ragbot worker``: webhooks always, jobs unless ``--no-jobs``)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        if self._jobs is not None and (self._run_jobs if jobs is None else jobs):
            self._jobs_started = self._jobs()
            self._jobs_started.start()
        self._webhooks_started = self._send_webhooks if webhooks is None else webhooks
        if self._webhooks_started:
            self._webhooks.start()
        self._thread = threading.Thread(target=self._timers, name="ragbot-handoff-timers", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop every loop: the job in hand is handed back (or finishes), sends in flight finish."""
        self._stop.set()
        runner, self._jobs_started = self._jobs_started, None
        if runner is not None:
            runner.stop()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._webhooks_started:
            self._webhooks.stop()
            self._webhooks_started = False

    def _timers(self) -> None:
        next_purge = time.monotonic()
        while not self._stop.wait(self._sweep_every_s):
            try:
                offered = self._handoff.sweep_unclaimed()
                if offered:
                    log.info("offered the lead form in %d unclaimed conversations", offered)
            except Exception:  # the database may be restarting: try again at the next tick
                log.warning("handoff timers failed; retrying", exc_info=True)
            if self._purge is not None and time.monotonic() >= next_purge:
                next_purge = time.monotonic() + self._purge_every_s
                try:
                    purged = self._purge()
                    if purged:
                        log.info("retention purge removed %s", purged)
                except Exception:
                    log.warning("retention purge failed; retrying next hour", exc_info=True)
