"""CSV for every analytics view: flat rows, one header, cells a spreadsheet shows as text.

Visitors write questions, comments and (through crawled pages) titles, so text cells go through the
leads export's ``spreadsheet_safe`` (a leading ``=``/``+``/``-``/``@`` would run as a formula); numbers
the server computed are written as they are, so ``-0.5`` stays a number.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

from ragbot.feedback.service import EXPORT_COLUMNS
from ragbot.feedback.service import _csv_row as feedback_row  # one format for both feedback exports
from ragbot.leads.service import csv_chunks

__all__ = ["feedback_csv", "flat_rows", "sources_csv", "summary_csv", "table_csv", "timeseries_csv"]

_NUMBER = (int, float)


def _flat(value: Any) -> Any:
    """A cell for any JSON value: lists joined with `` | ``, objects as JSON."""
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, list | tuple):
        return " | ".join(str(_flat(v)) for v in value)
    return value


def table_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> Iterator[str]:
    """``rows`` as CSV; ``columns`` default to every key in first-seen order. A column whose values are
    all numbers (or empty) is written verbatim, every other cell is spreadsheet-safe."""
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    flat = [{name: _flat(row.get(name)) for name in columns} for row in rows]
    trusted = {
        name for name in columns if all(row[name] is None or isinstance(row[name], _NUMBER) for row in flat)
    }
    return csv_chunks(list(columns), flat, trusted=trusted)


def summary_csv(data: Mapping[str, Any]) -> Iterator[str]:
    """The summary as one row."""
    return table_csv([data])


def timeseries_csv(data: Mapping[str, Any]) -> Iterator[str]:
    """One row per bucket, ``t`` (its start) first."""
    return table_csv(data["points"])


def sources_csv(data: Mapping[str, Any], level: Literal["document", "source"] = "document") -> Iterator[str]:
    """One row per document (never-retrieved ones have ``retrieved`` 0), or per source."""
    return table_csv(data["documents"] if level == "document" else data["sources"])


def feedback_csv(items: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """The feedback export's own CSV format (``FeedbackService.export_csv``) for any rows of it."""
    return csv_chunks(list(EXPORT_COLUMNS), (feedback_row(dict(item)) for item in items))


def flat_rows(data: Any) -> list[Mapping[str, Any]]:
    """The rows of a view whose shape this module does not know (top questions, content gaps): a list
    of records, or the first list of records in an object."""
    if isinstance(data, list):
        return [r if isinstance(r, Mapping) else {"value": r} for r in data]
    if isinstance(data, Mapping):
        for value in data.values():
            if isinstance(value, list) and all(isinstance(v, Mapping) for v in value):
                return list(value)
        return [data]
    return [{"value": data}]
