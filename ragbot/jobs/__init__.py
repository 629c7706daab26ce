"""Work off the request path: a durable job queue in the application's own database.

Ingest jobs (crawls and uploads from the API), sources' scheduled re-syncs and webhook deliveries are
rows in the database; any number of workers (``ragbot worker`` processes, and ``ragbot serve`` itself in
the embedded default, where Qdrant Edge belongs to one process) take them under leases, so a worker that
is killed loses nothing: its lease runs out and another worker runs the job again. Delivery is at least
once and the handlers are idempotent (see ``ragbot.services.ingest``).

Why no queue library. The issue asks for a well-kept library over PostgreSQL or Redis that needs no
extra server in the embedded default (SQLite). Evaluated, November 2026:

- DBOS (``dbos`` 3.4, durable workflows and queues on SQLite or PostgreSQL) installs cleanly beside our
  pins, but it recovers a crashed executor's workflows only when an executor with the same id restarts,
  or through its hosted control plane (Conductor) or an admin endpoint someone calls: with several
  workers, a SIGKILLed one's job would wait for that process to come back. It is also one global
  ``DBOS`` instance per process that registers workflows at import time and runs its own engine and
  threads, against our one lazily built ``Runtime`` per process (and many per test session).
- procrastinate and pgqueuer: PostgreSQL only (LISTEN/NOTIFY, ``SKIP LOCKED``); nothing for SQLite.
- huey: Redis, SQLite or files, not PostgreSQL, and it removes a task before running it, so a killed
  consumer loses it (at most once).
- dramatiq: RabbitMQ or Redis brokers only: an extra server in the embedded default.

So the queue generalises the lease pattern the webhook outbox already used (``ragbot.db.webhooks``):
``ragbot.db.jobs`` holds the SQL (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, compare-and-set on both),
``ragbot.services.jobs`` the worker loop, ``ragbot.jobs.schedules`` the per-source schedules.
"""
