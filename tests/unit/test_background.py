"""What a process runs in the background follows its settings: ``ragbot serve`` may leave webhook
deliveries (and ingest jobs) to ``ragbot worker`` processes."""

from __future__ import annotations

from typing import Any, cast

from ragbot.services.background import Background


class _Loop:
    """Counts starts and stops, like the webhook worker and the job runner do their threads."""

    def __init__(self) -> None:
        self.starts = 0
        self.stops = 0

    def start(self) -> None:
        self.starts += 1

    def stop(self) -> None:
        self.stops += 1

    def sweep_unclaimed(self) -> int:
        return 0


def _background(**options: Any) -> tuple[Background, _Loop, _Loop]:
    webhooks, jobs = _Loop(), _Loop()
    background = Background(
        cast(Any, webhooks), cast(Any, _Loop()), jobs=lambda: cast(Any, jobs), sweep_every_s=60, **options
    )
    return background, webhooks, jobs


def test_an_api_that_leaves_webhooks_to_workers_never_starts_its_sender() -> None:
    background, webhooks, jobs = _background(send_webhooks=False, run_jobs=False)
    background.start()
    background.stop()
    assert (webhooks.starts, webhooks.stops, jobs.starts) == (0, 0, 0)


def test_a_worker_sends_webhooks_whatever_the_api_settings_and_runs_jobs_unless_told_not_to() -> None:
    background, webhooks, jobs = _background(send_webhooks=False, run_jobs=False)
    background.start(jobs=False, webhooks=True)  # `ragbot worker --no-jobs`
    background.stop()
    assert (webhooks.starts, webhooks.stops, jobs.starts) == (1, 1, 0)
    background.start(jobs=True, webhooks=True)  # `ragbot worker`
    background.stop()
    assert (webhooks.starts, jobs.starts, jobs.stops) == (2, 1, 1)


def test_by_default_the_api_process_runs_everything() -> None:
    background, webhooks, jobs = _background()
    background.start()
    background.stop()
    assert (webhooks.starts, jobs.starts) == (1, 1)
