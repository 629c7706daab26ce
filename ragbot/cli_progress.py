"""A rich progress bar fed by the ingest service's progress callbacks."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class IngestProgress:
    def __init__(self, enabled: bool) -> None:
        self._progress: Progress | None = None
        self._task: Any = None
        if enabled:
            self._progress = Progress(
                TextColumn("[bold]ingest"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                transient=True,
            )

    def __enter__(self) -> IngestProgress:
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task("ingest", total=None, rate="")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, event: Any) -> None:
        """Accepts the ingest service's progress event (duck-typed: done, total, rate)."""
        if self._progress is None:
            return
        done = getattr(event, "done", None)
        total = getattr(event, "total", None)
        rate = getattr(event, "pages_per_s", None) or getattr(event, "rate", None)
        self._progress.update(
            self._task, completed=done or 0, total=total, rate=f"{rate:.1f} docs/s" if rate else ""
        )
