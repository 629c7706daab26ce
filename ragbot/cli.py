"""The ``ragbot`` command: ingest, ask, explain, eval, serve.

Each command builds only what it needs through ``Runtime``, so ``ragbot --help`` stays instant.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ragbot.config import get_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Grounded chat on your own content.")


def _register_admin_commands() -> None:
    from ragbot.cli_admin import bots_app, keys_app, purge_command, visitors_app
    from ragbot.cli_backup import backup_command, migrate_command, restore_command
    from ragbot.cli_leads import leads_app
    from ragbot.cli_report import report_command
    from ragbot.cli_sources import sources_app

    app.add_typer(bots_app, name="bots")
    app.add_typer(keys_app, name="keys")
    app.add_typer(visitors_app, name="visitors")
    app.command("purge")(purge_command)
    app.add_typer(leads_app, name="leads")
    app.command("report")(report_command)
    app.add_typer(sources_app, name="sources")
    app.command("backup")(backup_command)
    app.command("restore")(restore_command)
    app.command("migrate")(migrate_command)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        from ragbot import __version__

        typer.echo(f"ragbot {__version__}")
        raise typer.Exit()


def _bot_for(runtime: Any, bot: str | None) -> str:
    """The bot a command works on: the deployment's own (created on first use) unless ``--bot`` names
    one that ``ragbot bots create`` made."""
    bot_id: str = bot or runtime.settings.bot_id
    if bot_id == runtime.settings.bot_id:
        runtime.bots.ensure(bot_id, actor="cli")
    elif runtime.bots.get(bot_id) is None:
        runtime.close()
        _fail(f"no bot with id {bot_id!r}; create one with `ragbot bots create NAME`", 2)
    return bot_id


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    from ragbot.quiet import quiet_third_party

    quiet_third_party()


@app.command()
def ingest(
    target: Annotated[str, typer.Argument(help="A file, a folder or an http(s) URL.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    max_pages: Annotated[int | None, typer.Option("--max-pages", help="Crawl at most N pages.")] = None,
    max_depth: Annotated[int | None, typer.Option("--max-depth", help="Follow links at most N deep.")] = None,
    include: Annotated[list[str] | None, typer.Option("--include", help="URL pattern to include.")] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="URL pattern to exclude.")] = None,
    allow_private: Annotated[
        bool, typer.Option("--allow-private", help="Allow private-network and loopback URLs (intranets).")
    ] = False,
    bot: Annotated[str | None, typer.Option("--bot", help="Bot id (default: the deployment's bot).")] = None,
) -> None:
    """Ingest (or re-sync) documents into the index.

    Exits 1 when documents failed and none was ingested or confirmed (a refused URL, an unreadable folder),
    so scripts notice; a crawl with some broken links among good pages still exits 0.
    """
    from ragbot.cli_progress import IngestProgress
    from ragbot.runtime import Runtime
    from ragbot.services.ingest import connector_for

    runtime = Runtime(get_settings())
    try:
        connector = connector_for(
            target,
            runtime.settings,
            max_pages=max_pages,
            max_depth=max_depth,
            include=include or [],
            exclude=exclude or [],
            allow_private=allow_private or runtime.settings.crawl_allow_private,
        )
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc), 2)
    bot_id = _bot_for(runtime, bot)
    try:
        with IngestProgress(enabled=not as_json and sys.stderr.isatty()) as progress:
            report = runtime.ingest_service.ingest(bot_id, connector, progress=progress.update)
    finally:
        runtime.close()
    nothing_usable = report.failed > 0 and report.added + report.updated + report.unchanged == 0
    if as_json:
        _print_json(report.as_dict())
    else:
        typer.echo(
            f"added {report.added}, updated {report.updated}, unchanged {report.unchanged}, "
            f"removed {report.removed}, failed {report.failed} ({report.chunks} chunks)"
        )
        for failure in report.failures:
            typer.echo(f"  failed: {failure.get('uri')}: {failure.get('reason')}", err=True)
    if nothing_usable:
        raise typer.Exit(1)


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    conversation: Annotated[
        str | None, typer.Option("--conversation", help="Continue this conversation.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")] = False,
    bot: Annotated[str | None, typer.Option("--bot", help="Bot id (default: the deployment's bot).")] = None,
) -> None:
    """Ask a question and print a grounded answer with its citations."""
    from ragbot.runtime import Runtime
    from ragbot.services.chat import AnswerFailedError, ConversationNotFoundError
    from ragbot.types import EventType

    runtime = Runtime(get_settings())
    bot_id = _bot_for(runtime, bot)
    done: dict[str, Any] = {}
    try:
        for event in runtime.chat_service.stream(bot_id, question, conversation):
            if event.type is EventType.DELTA and not as_json:
                typer.echo(event.data["text"], nl=False)
            elif event.type is EventType.DONE:
                done = event.data
    except ConversationNotFoundError:
        _fail(f"no conversation with id {conversation!r}", 2)
    except AnswerFailedError as exc:
        _fail(str(exc))
    finally:
        runtime.close()
    out = {
        "conversation_id": done.get("conversation_id"),
        "message_id": done.get("message_id"),
        "status": done.get("status"),
        "answer": done.get("answer", ""),
        "grounded": bool(done.get("grounded", False)),
        "answer_kind": done.get("answer_kind"),
        "handoff_offered": bool(done.get("handoff_offered", False)),
        "citations": [
            {
                k: c[k]
                for k in ("n", "title", "url", "path", "page", "start_s", "snippet", "score", "matched_terms")
            }
            for c in done.get("citations", [])
        ],
    }
    if as_json:
        _print_json(out)
    else:
        typer.echo("")
        for c in out["citations"]:
            where = c["url"] or c["path"]
            if c.get("page"):
                where = f"{where} (page {c['page']})"
            typer.echo(f"[{c['n']}] {c['title']} — {where}")
        typer.echo(f"(conversation {out['conversation_id']})", err=True)
    if done.get("status") == "failed":
        raise typer.Exit(1)


@app.command()
def explain(
    question: Annotated[str, typer.Argument(help="The question.")],
    top_k: Annotated[int, typer.Option("--top-k", "-k")] = 5,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    bot: Annotated[str | None, typer.Option("--bot", help="Bot id (default: the deployment's bot).")] = None,
) -> None:
    """Show what retrieval found and which vocabulary terms made each passage match."""
    from ragbot.runtime import Runtime

    runtime = Runtime(get_settings())
    bot_id = _bot_for(runtime, bot)  # before the retriever: an unknown bot is refused without loading models
    try:
        hits = runtime.retriever.retrieve(bot_id, question, top_k)
    finally:
        runtime.close()
    rows: list[dict[str, Any]] = [
        {
            "rank": i,
            "title": h.chunk.title,
            "uri": h.chunk.uri,
            "score": h.score,
            "sparse_score": h.sparse_score,
            "dense_score": h.dense_score,
            "matched_terms": [
                {"term": t.term, "contribution": round(t.contribution, 4), "in_text": t.in_text}
                for t in h.matched_terms
            ],
        }
        for i, h in enumerate(hits, start=1)
    ]
    if as_json:
        _print_json(rows)
        return
    for h, row in zip(hits, rows, strict=True):
        typer.echo(f"{row['rank']}. {h.chunk.title}  ({h.chunk.uri})  score={h.score:.4f}")
        terms = ", ".join(f"{t.term}{'' if t.in_text else '*'}={t.contribution:.3f}" for t in h.matched_terms)
        typer.echo(f"   terms: {terms}")
    typer.echo("(* = expansion term absent from the passage text)")


@app.command("eval")
def evaluate(
    directory: Annotated[
        Path, typer.Argument(help="A BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.")
    ],
    as_json: Annotated[bool, typer.Option("--json")] = False,
    modes: Annotated[
        str,
        typer.Option(
            "--modes",
            help="Comma-separated: bm25, sparse, dense, hybrid (the product's), bm25s (external reference).",
        ),
    ] = "bm25,sparse,dense,hybrid",
    split: Annotated[
        str, typer.Option("--split", help="Which qrels/<split>.tsv to score against (test, dev, ...).")
    ] = "test",
) -> None:
    """Evaluate retrieval on a BEIR dataset through the product's own ingest, index and retriever."""
    from ragbot.evaluation.beir import BeirFormatError
    from ragbot.evaluation.runner import ALL_MODES, format_table
    from ragbot.evaluation.runner import evaluate as run_eval

    if not directory.is_dir():
        _fail(f"{directory} is not a folder", 2)
    chosen = tuple(m.strip() for m in modes.split(",") if m.strip())
    if not chosen or any(m not in ALL_MODES for m in chosen):
        _fail(f"--modes {modes!r}: choose from {', '.join(ALL_MODES)}", 2)
    try:
        results = run_eval(directory, modes=chosen, settings=get_settings(), split=split)
    except BeirFormatError as exc:  # checked before anything is encoded: a usage error, not a crash
        _fail(str(exc), 2)
    if as_json:
        _print_json(results)
    else:
        typer.echo(format_table(results))


@app.command()
def reindex(
    bot: Annotated[
        str | None, typer.Option("--bot", help="Re-encode this bot's chunks only (default: every bot).")
    ] = None,
    keep_neural: Annotated[
        bool,
        typer.Option(
            "--keep-neural",
            help="Keep the stored SPLADE and dense vectors; add or refresh BM25 only (fast, no models).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Re-encode stored chunks from the index's own payloads, without re-crawling.

    Upgrades a collection created before the BM25 retriever (rebuilt whole into the new layout) and
    re-encodes with page titles and headings in front of each chunk. Stop the API first when the index is
    the embedded one. Each re-encoded bot's learned fusion weights start afresh.
    """
    from ragbot.runtime import Runtime
    from ragbot.services.calibration_store import SqlCalibrationStore

    runtime = Runtime(get_settings())
    try:
        if keep_neural:
            # Nothing is encoded by the models: do not load them.
            from ragbot.services.ingest import IngestService

            service = IngestService(
                runtime.index,
                _NoModel(),  # type: ignore[arg-type]
                _NoModel(),  # type: ignore[arg-type]
                runtime.session_factory,
                chunk_max_tokens=runtime.settings.chunk_max_tokens,
                chunk_overlap_tokens=runtime.settings.chunk_overlap_tokens,
                batch_size=runtime.settings.encode_batch_size,
                lexical=runtime.lexical_or_none,
                title_context=runtime.settings.title_context,
            )
        else:
            service = runtime.ingest_service
        report = service.reindex(bot, keep_neural=keep_neural)
        store = SqlCalibrationStore(runtime.session_factory)
        for bot_id in sorted(report.bots):
            store.reset(bot_id)
    finally:
        runtime.close()
    out = {
        "chunks": report.chunks,
        "reencoded": report.reencoded,
        "rebuilt": report.rebuilt,
        "bots": sorted(report.bots),
    }
    if as_json:
        _print_json(out)
    else:
        layout = " (collection rebuilt with BM25)" if report.rebuilt else ""
        typer.echo(
            f"re-encoded {report.chunks} chunks of {len(report.bots)} bot(s){layout}; "
            f"{report.reencoded} with fresh SPLADE and dense vectors"
        )


class _NoModel:
    """Stands in for an encoder that ``reindex --keep-neural`` never calls."""

    def encode_documents(self, texts: object) -> list[object]:
        if texts:
            raise RuntimeError("reindex --keep-neural must not encode with the neural models")
        return []


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    workers: Annotated[int, typer.Option(help="API processes (needs PostgreSQL and a Qdrant server).")] = 1,
    log_format: Annotated[
        str | None, typer.Option("--log-format", help="json or text (default: RAGBOT_LOG_FORMAT, else json).")
    ] = None,
    log_level: Annotated[
        str | None, typer.Option("--log-level", help="Default: RAGBOT_LOG_LEVEL, else INFO.")
    ] = None,
) -> None:
    """Run the HTTP API (OpenAPI docs at /docs, the widget demo at /demo, Prometheus metrics at /metrics).

    On first start it creates the deployment's bot and, when no admin API key exists yet, one admin key,
    printed once. Logs are JSON lines with a request id; with several workers the metrics of all of them
    are merged through PROMETHEUS_MULTIPROC_DIR (default: a folder under the data folder, emptied here).
    """
    import os

    import uvicorn

    from ragbot.runtime import Runtime

    if log_format is not None:
        if log_format not in ("json", "text"):
            _fail(f"--log-format must be json or text, not {log_format!r}", 2)
        os.environ["RAGBOT_LOG_FORMAT"] = log_format  # the worker processes read settings afresh
    if log_level is not None:
        os.environ["RAGBOT_LOG_LEVEL"] = log_level
    get_settings.cache_clear()
    if workers > 1 and not get_settings().qdrant_url:
        _fail(
            "--workers N needs a Qdrant server: embedded Qdrant Edge serves one process. "
            "Set RAGBOT_QDRANT_URL (see the README's production section), or run one worker.",
            2,
        )
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from ragbot.observability.metrics import prepare_multiprocess_dir

        prepare_multiprocess_dir(get_settings().data_dir / "prometheus-multiproc")
    runtime = Runtime(get_settings())
    try:
        bot = runtime.bots.ensure(runtime.settings.bot_id, actor="ragbot serve")
        if not runtime.api_keys.has_active_keys():
            key, _ = runtime.api_keys.create(name="first admin key (ragbot serve)")
            typer.secho(f"admin API key (shown once, store it now): {key}", fg=typer.colors.GREEN, err=True)
    finally:
        runtime.close()
    base = f"http://{host}:{port}"
    typer.echo(f"ragbot on {base}  docs: {base}/docs  widget demo: {base}/demo", err=True)
    typer.echo(
        f'embed: <script src="{base}/widget.js" data-bot="{bot["public_key"]}" async></script>', err=True
    )
    uvicorn.run(
        "ragbot.api.app:serve_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=None,  # serve_app sets up logging (JSON by default) in each process
        access_log=False,  # ragbot.access logs each request with its route, duration and request id
        # streams still open after the grace period end with an error event (ragbot.api.shutdown):
        # a few more seconds for those last events to go out before uvicorn cancels what is left
        timeout_graceful_shutdown=int(get_settings().shutdown_grace_s) + 10,
    )


@app.command()
def worker(
    jobs: Annotated[
        bool,
        typer.Option(
            "--jobs/--no-jobs",
            help="Run queued ingest and report jobs here; --no-jobs leaves them to the process that owns an "
            "embedded Qdrant Edge shard (`ragbot serve`) and only sends webhooks and runs the timers.",
        ),
    ] = True,
) -> None:
    """Run the background work until stopped (Ctrl-C or SIGTERM): queued ingest jobs and due scheduled
    re-syncs, webhook deliveries, handoff timers. Any number may run beside the API processes: they share
    the work through the database. A worker killed mid-job loses nothing (its job resumes elsewhere once
    its lease runs out); on SIGTERM it hands its job back and lets webhook sends in flight finish.
    With embedded Qdrant Edge only one process can ingest: stop `ragbot serve` or give it a Qdrant server,
    or run `ragbot worker --no-jobs` beside it (with RAGBOT_API_SENDS_WEBHOOKS=false the API then leaves
    every webhook delivery to the workers)."""
    import signal
    import threading

    from ragbot.index.lock import ShardInUseError
    from ragbot.observability.logging import configure_logging
    from ragbot.runtime import Runtime

    settings = get_settings()
    configure_logging("text" if settings.log_format == "text" else "json", settings.log_level)
    runtime = Runtime(settings)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        if jobs and not runtime.settings.qdrant_url:
            _ = runtime.index  # take the embedded shard now: a clear error at start, not at the first job
    except ShardInUseError as exc:
        runtime.close()
        _fail(f"{exc} To send webhooks and run the timers beside it, start `ragbot worker --no-jobs`.", 2)
    runtime.background.start(jobs=jobs, webhooks=True)
    doing = "ingest jobs, re-syncs, webhooks and handoff timers" if jobs else "webhooks and handoff timers"
    typer.echo(f"running {doing} (Ctrl-C to stop)", err=True)
    try:
        stopping.wait()
    except KeyboardInterrupt:
        pass
    finally:
        runtime.close()  # hands the job in hand back; lets the webhook sends in flight finish


_register_admin_commands()


def main() -> None:
    app()
