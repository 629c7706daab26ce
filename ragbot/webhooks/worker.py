"""The delivery loop: sends what the outbox holds, with retries, until each event is accepted or given up.

Delivery is at least once. A delivery is claimed under a lease (see ``ragbot.db.webhooks``), signed
afresh, POSTed, and its outcome recorded: a 2xx marks it delivered; anything else (another status, a
timeout, a refused or unreachable address) schedules a retry after ``webhook_backoff_s`` doubled per
attempt plus jitter, until ``webhook_max_attempts`` attempts have been made and it is marked failed
(replayable). State lives only in the database, so a restarted or second worker carries on where the
last one stopped; a send that outlives its lease may reach the receiver twice, with the same
``webhook-id`` receivers de-duplicate on.

Every send re-checks the target with the crawler's SSRF policy and dials the vetted address itself (the
host name travels in ``Host`` and as the TLS server name), so a DNS answer that changed since the
subscription was made cannot point the request at an internal address.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

import httpx
from sqlalchemy.orm import Session, sessionmaker

from connectors.net import FetchError, Resolver, SafeHttpClient
from ragbot import __version__
from ragbot.config import Settings
from ragbot.db import webhooks as sql
from ragbot.db.models import utcnow
from ragbot.db.session import session_scope
from ragbot.observability import metrics
from ragbot.observability.context import bound_request_id
from ragbot.webhooks.service import refusal_message, webhook_http_client
from ragbot.webhooks.signing import encode_body, signed_headers

__all__ = ["AttemptResult", "WebhookWorker", "lease_for", "retry_delay"]

log = logging.getLogger(__name__)

#: No retry waits longer than this, however many attempts a deployment allows.
MAX_RETRY_DELAY_S = 6 * 3600.0
#: How much of a failed response's body is kept in ``last_error``.
_ERROR_BODY_CHARS = 300


def retry_delay(
    attempt: int, base_s: float, *, jitter: float = 0.2, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based): ``base_s`` doubled per attempt,
    plus up to ``jitter`` of it at random so receivers that recover are not hit by every retry at once."""
    delay = min(base_s * 2.0 ** min(max(attempt - 1, 0), 40), MAX_RETRY_DELAY_S)
    return delay * (1.0 + jitter * rand())


def lease_for(timeout_s: float) -> float:
    """Seconds a claimed delivery stays a worker's: one batch is sent in parallel, so a claim waits for at
    most one send (the connect, write and read timeouts each, plus DNS and the database). Past it another
    worker may send the delivery again; a killed worker's claims are due again after it."""
    return 4 * timeout_s + 30


@dataclass(frozen=True, slots=True)
class AttemptResult:
    ok: bool
    status_code: int | None
    error: str | None


@dataclass(frozen=True, slots=True)
class _Io:
    """What a worker holds open while it runs: released by ``stop()``, opened again on the next use."""

    vetting: SafeHttpClient
    client: httpx.Client
    pool: ThreadPoolExecutor

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.client.close()
        self.vetting.close()


class WebhookWorker:
    """Sends due deliveries: ``run_once()`` one batch (tests, the CLI), ``start()`` a daemon thread that
    polls until ``stop()``. ``transport`` replaces httpx's network layer (tests); ``resolver`` and
    ``allowed_networks`` are the SSRF seams, as in ``WebhookService``."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        settings: Settings,
        *,
        transport: httpx.BaseTransport | None = None,
        resolver: Resolver | None = None,
        allowed_networks: Iterable[str] = (),
        concurrency: int = 4,
        poll_s: float = 1.0,
        lease_s: float | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._sessions = session_factory
        self._settings = settings
        self._concurrency = concurrency
        self._poll_s = poll_s
        lease_s = lease_s if lease_s is not None else lease_for(settings.webhook_timeout_s)
        self._lease = timedelta(seconds=lease_s)
        self._transport = transport
        self._resolver = resolver
        self._allowed_networks = tuple(allowed_networks)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._io: _Io | None = None

    # ------------------------------------------------------------------ the loop

    def start(self) -> None:
        """Deliver in a background daemon thread until ``stop()``; a stopped worker can start again."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="webhook-worker", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop polling, let the sends in flight finish (within ``timeout_s``), release connections.
        A send cut short is not lost: its lease runs out and the next worker retries it."""
        self._stop.set()
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout_s)
        with self._lock:
            io, self._io = self._io, None
        if io is not None:
            io.close()

    def _open(self) -> _Io:
        with self._lock:
            if self._io is None:
                self._io = _Io(
                    vetting=webhook_http_client(
                        self._settings, resolver=self._resolver, allowed_networks=self._allowed_networks
                    ),
                    # trust_env=False: a proxy from the environment would dial hosts that were never vetted.
                    client=httpx.Client(
                        timeout=httpx.Timeout(self._settings.webhook_timeout_s),
                        follow_redirects=False,
                        trust_env=False,
                        transport=self._transport,
                        headers={"User-Agent": f"ragbot-webhooks/{__version__}"},
                        limits=httpx.Limits(
                            max_connections=self._concurrency, max_keepalive_connections=self._concurrency
                        ),
                    ),
                    pool=ThreadPoolExecutor(max_workers=self._concurrency, thread_name_prefix="webhook-send"),
                )
            return self._io

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                sent = self.run_once()
            except Exception:
                # The database is down or busy: nothing is lost (the rows stay due), try again later.
                log.exception("webhook delivery round failed")
                sent = 0
            if not sent:
                self._stop.wait(self._poll_s)

    def run_once(self) -> int:
        """Claim up to ``concurrency`` due deliveries, send them in parallel, record the outcomes; how many
        were attempted (0: nothing was due)."""
        io = self._open()  # before claiming: the lease is for sending, not for building clients
        claims = self._claim()
        if not claims:
            return 0
        results = list(io.pool.map(lambda claim: self._attempt_safely(io, claim), claims))
        for claim, result in zip(claims, results, strict=True):
            self._record(claim, result)
        return len(claims)

    # ------------------------------------------------------------------ one attempt

    def _claim(self) -> list[sql.Claim]:
        now = utcnow()
        max_attempts = self._settings.webhook_max_attempts
        with session_scope(self._sessions) as s:
            given_up = sql.fail_exhausted(s, now=now, max_attempts=max_attempts)
            if given_up:
                log.warning("%d webhook deliveries failed: their last attempt never finished", given_up)
            return sql.claim_due(
                s, now=now, lease_until=now + self._lease, limit=self._concurrency, max_attempts=max_attempts
            )

    def _attempt_safely(self, io: _Io, claim: sql.Claim) -> AttemptResult:
        """One attempt whatever happens: a bug in one send must not lose the outcomes of the batch. Its
        log lines carry the id of the request that caused the event."""
        try:
            with bound_request_id(claim.request_id):
                return self._attempt(io, claim)
        except Exception as exc:
            log.exception("webhook %s: sending failed unexpectedly", claim.delivery_id)
            return AttemptResult(False, None, f"internal error: {type(exc).__name__}: {exc}"[:500])

    def _attempt(self, io: _Io, claim: sql.Claim) -> AttemptResult:
        try:
            target, ip = io.vetting.vet(claim.url)
        except FetchError as exc:
            return AttemptResult(False, None, refusal_message(exc))
        body = encode_body(claim.payload)
        headers = {
            **signed_headers(claim.secret, claim.delivery_id, body, now=utcnow()),
            "Content-Type": "application/json",
            "Host": target.netloc.decode("ascii"),
        }
        request = io.client.build_request(
            "POST",
            target.copy_with(host=str(ip)),
            content=body.encode("utf-8"),
            headers=headers,
            extensions={"sni_hostname": target.host} if target.scheme == "https" else {},
        )
        try:
            response = io.client.send(request, stream=True)
        except httpx.TimeoutException:
            return AttemptResult(False, None, f"timed out after {self._settings.webhook_timeout_s:g}s")
        except httpx.HTTPError as exc:
            return AttemptResult(False, None, f"{type(exc).__name__}: {exc}"[:500])
        try:
            if 200 <= response.status_code < 300:
                return AttemptResult(True, response.status_code, None)
            return AttemptResult(False, response.status_code, _describe(response))
        finally:
            response.close()

    def _record(self, claim: sql.Claim, result: AttemptResult) -> None:
        now = utcnow()
        if result.ok:
            status, next_at = sql.DELIVERED, now
        elif claim.attempt >= self._settings.webhook_max_attempts:
            status, next_at = sql.FAILED, now
        else:
            status = sql.PENDING
            next_at = now + timedelta(seconds=retry_delay(claim.attempt, self._settings.webhook_backoff_s))
        with session_scope(self._sessions) as s:
            kept = sql.finish(
                s,
                claim,
                status=status,
                next_attempt_at=next_at,
                status_code=result.status_code,
                error=result.error,
                delivered_at=now if result.ok else None,
            )
        if kept:
            metrics.webhook_attempt(
                "delivered" if result.ok else "failed" if status == sql.FAILED else "retry"
            )
        if not kept:
            log.info("webhook %s: the claim was lost while sending; outcome not recorded", claim.delivery_id)
        elif status == sql.FAILED:
            log.warning(
                "webhook %s (%s) failed after %d attempts: %s",
                claim.delivery_id,
                claim.event_type,
                claim.attempt,
                result.error,
            )

    @property
    def lease(self) -> timedelta:
        return self._lease


def _describe(response: httpx.Response) -> str:
    """``HTTP 500: <start of the body>``: enough for an operator to see why the receiver said no."""
    snippet = ""
    try:
        for chunk in response.iter_text():
            snippet += chunk
            if len(snippet) >= _ERROR_BODY_CHARS:
                break
    except httpx.HTTPError:
        pass
    snippet = " ".join(snippet[:_ERROR_BODY_CHARS].split())
    status = f"HTTP {response.status_code}"
    location = response.headers.get("location")
    if response.is_redirect and location:
        status += f" (redirects to {location[:200]}; webhooks do not follow redirects)"
    return status + (f": {snippet}" if snippet else "")
