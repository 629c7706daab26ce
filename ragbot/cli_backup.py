"""``ragbot backup PATH``, ``ragbot restore PATH`` (see ``ragbot.ops.backup`` for what and why) and
``ragbot migrate``, the one-shot schema upgrade a deployment runs before its API and workers start."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from ragbot.config import get_settings

PathArg = Annotated[Path, typer.Argument(help="The archive file.", dir_okay=False, resolve_path=True)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def _fail(message: str, code: int) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _open() -> Any:
    """The runtime with its database and index opened; a refusal for an Edge shard another process holds."""
    from ragbot.index.lock import ShardInUseError
    from ragbot.runtime import Runtime

    runtime = Runtime(get_settings())
    try:
        _ = runtime.engine, runtime.index
    except ShardInUseError as exc:
        runtime.close()
        _fail(f"{exc} A backup or restore of the embedded index needs it: stop `ragbot serve` first.", 3)
    except Exception as exc:
        runtime.close()
        _fail(f"cannot open the database or the vector index: {type(exc).__name__}: {exc}", 1)
    return runtime


def backup_command(path: PathArg, as_json: JsonOpt = False) -> None:
    """Write the database and the vector index to one archive file, consistent with each other. The file
    must not exist. With the embedded index, stop `ragbot serve` first; with a Qdrant server and
    PostgreSQL it runs beside live traffic."""
    from ragbot.ops.backup import TargetExistsError, backup

    if path.exists():
        _fail(f"{path} exists: a backup never overwrites a file; choose a new path", 2)
    runtime = _open()
    try:
        manifest = backup(
            path, engine=runtime.engine, index=runtime.index, collection=runtime.settings.qdrant_collection
        )
    except TargetExistsError as exc:
        _fail(str(exc), 2)
    except Exception as exc:  # a database or index that fails mid-way: say so plainly, no traceback
        _fail(f"backup failed, no archive written: {type(exc).__name__}: {exc}", 1)
    finally:
        runtime.close()
    summary = {
        "path": str(path),
        "bytes": path.stat().st_size,
        "schema_revision": manifest.schema_revision,
        "rows": sum(manifest.tables.values()),
        "tables": manifest.tables,
        "points": manifest.points,
    }
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        typer.echo(f"wrote {path}: {summary['rows']} rows, {manifest.points} points, {summary['bytes']} B")


def restore_command(path: PathArg, as_json: JsonOpt = False) -> None:
    """Load an archive made by `ragbot backup` into an empty database and an empty vector collection (the
    ones the settings name). Refuses a damaged archive, one from another schema revision, or a target
    that already holds data, before writing anything."""
    from ragbot.ops.backup import ArchiveError, SchemaMismatchError, TargetNotEmptyError, restore

    if not path.is_file():
        _fail(f"{path} is not a file", 2)
    runtime = _open()
    try:
        report = restore(path, engine=runtime.engine, index=runtime.index)
    except (ArchiveError, SchemaMismatchError, TargetNotEmptyError) as exc:
        _fail(str(exc), 2)
    except Exception as exc:
        _fail(
            f"restore failed, the database was rolled back: {type(exc).__name__}: {exc}. If the vector "
            "collection now holds points, empty it before trying again",
            1,
        )
    finally:
        runtime.close()
    if as_json:
        sys.stdout.write(
            json.dumps(
                {
                    "path": str(path),
                    "rows": sum(report.tables.values()),
                    "tables": report.tables,
                    "points": report.points,
                    "documents_marked_for_repair": report.documents_marked_for_repair,
                    "points_without_document": report.points_without_document,
                },
                indent=2,
            )
            + "\n"
        )
        return
    typer.echo(f"restored {path}: {sum(report.tables.values())} rows, {report.points} points")
    if report.documents_marked_for_repair:
        typer.echo(
            f"{len(report.documents_marked_for_repair)} documents changed while the backup ran; the next "
            "re-sync re-encodes them",
            err=True,
        )


def migrate_command() -> None:
    """Create or upgrade the database schema, then exit. Run it once before starting the API processes
    and workers (docker-compose.yml does); they would also do it on first use, one at a time."""
    from ragbot.db.session import SchemaTooNewError, make_engine, migrate
    from ragbot.ops.sqldump import schema_heads

    engine = make_engine(get_settings().resolved_database_url)
    try:
        migrate(engine)
        with engine.connect() as connection:
            heads = schema_heads(connection)
    except SchemaTooNewError as exc:
        _fail(str(exc), 2)
    finally:
        engine.dispose()
    typer.echo(f"database schema at {', '.join(heads)}")
