"""Settings in one place (``RAGBOT_`` prefix).

Nothing here touches disk or loads a model: ``get_settings()`` only reads the environment,
so importing any module stays cheap.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Marker values for the models that ship inside Python packages (see ``ragbot.encoders.packaged``).
PACKAGED_SPARSE = "packaged:splade-tiny"
PACKAGED_DENSE = "packaged:all-minilm-l6-v2"
PACKAGED_LLM = "ragbot-local/smollm2-135m-instruct"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAGBOT_", env_file=".env", extra="ignore")

    # --- storage -----------------------------------------------------------------
    data_dir: Path = Field(default=Path(".ragbot"), description="SQLite file, embedded Qdrant shard, caches.")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite in data_dir.")
    db_retry_s: float = Field(
        default=15.0,
        ge=0.0,
        description=(
            "How long a chat turn keeps retrying its database writes while the database is unreachable "
            "(a restart or failover) before it ends with a database_unavailable error."
        ),
    )
    database_busy_timeout_s: float = Field(
        default=30.0, description="SQLite only: how long a writer waits for another writer's lock."
    )
    qdrant_url: str | None = Field(
        default=None, description="Unset: embedded Qdrant Edge. Set: Qdrant server."
    )
    qdrant_api_key: str | None = None
    qdrant_collection: str = "ragbot"
    bot_id: str = Field(default="default", description="Tenant used by the CLI and by API calls naming none.")

    # --- encoders ----------------------------------------------------------------
    sparse_model: str = PACKAGED_SPARSE
    dense_model: str = PACKAGED_DENSE
    sparse_max_length: int = 256
    dense_max_length: int = 256
    encode_batch_size: int = 32
    gc_freeze: bool = Field(
        default=True,
        description=(
            "ragbot serve: after loading the models, take everything alive out of Python's garbage "
            "collector's sight (gc.freeze), so its full collections stop pausing every request for a second "
            "(ragbot.observability.gc_pauses)."
        ),
    )
    torch_threads: int | None = None
    dense_query_prefix: str = Field(
        default="", description='Instruction for e5/bge-style models, e.g. "query: ".'
    )
    dense_document_prefix: str = Field(default="", description='e.g. "passage: " for e5 models.')
    dense_precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description=(
            "Linear layers of the dense encoder in bf16 where the hardware has native bf16 products "
            "(auto), always (bf16) or never (fp32). bf16 is 2-3x faster on such CPUs, cosine >= 0.9999."
        ),
    )
    dense_query_precision: Literal["auto", "fp32", "bf16", "int8"] = Field(
        default="auto",
        description=(
            "Linear layers of the dense encoder for queries: auto = the documents' precision; int8 = int8 "
            "weights with bf16 activations (a query is bound by weight reads: ~1.25x faster than bf16, "
            "cosine >= 0.999 to fp32, but hybrid nDCG@10 0.003-0.006 lower on three of five BEIR sets)."
        ),
    )

    # --- chunking ----------------------------------------------------------------
    chunk_max_tokens: int = 200
    chunk_overlap_tokens: int = 30

    # --- retrieval ---------------------------------------------------------------
    top_k: int = 5
    prefetch_k: int = 50
    fusion: str = Field(
        default="zscore_calibrated",
        description=(
            "zscore_calibrated (standardised exact scores, per-bot weights learned from its queries) | "
            "zscore (standardised scores, equal weights) | rrf | dbsf (in the engine); benchmarks/FUSION.md"
        ),
    )
    fusion_calibration_queries: int = Field(
        default=40,
        description="zscore_calibrated: hybrid queries a bot needs before its learned weights apply.",
    )
    fusion_calibration_flush_every: int = Field(
        default=10,
        description=(
            "zscore_calibrated: a process adds its observations to the bot's shared totals in the database "
            "every this many hybrid queries (and at shutdown)."
        ),
    )
    rrf_k: int = 60
    lexical_retriever: bool = Field(
        default=True,
        description=(
            "BM25 as a third retriever beside SPLADE and the dense model (exact names, model numbers, "
            "error codes, and languages the neural models do not know)."
        ),
    )
    neural_languages: list[str] = Field(
        default_factory=lambda: ["en"],
        description=(
            "ISO 639-1 languages the sparse and dense models understand (the packaged ones: English). A "
            "query detected in another language is answered by BM25 alone."
        ),
    )
    title_context: bool = Field(
        default=True,
        description="Encode each chunk with its page title and section headings in front of its text.",
    )

    # --- grounding: in scope or declined, verified or not shown ---------------------
    min_relevance: float | None = Field(
        default=None,
        description=(
            "A fixed floor on the top hits' dense cosine for every bot (below it the bot declines without "
            "an LLM call). None: each bot's floor is calibrated on its own content "
            "(ragbot.retrieval.scope); a bot's own min_relevance overrides either."
        ),
    )
    grounding: Literal["verify", "off"] = Field(
        default="verify",
        description=(
            "verify: calibrated relevance floor, and every answer sentence is shown only once the passages "
            "it cites support it (else an extractive answer or a decline). off: no calibrated floor and "
            "the model's text is shown as written (a fixed min_relevance still applies)."
        ),
    )
    relevance_null_k: float = Field(
        default=3.0,
        description=(
            "Calibrated floor: robust deviations (MAD) above the bot's off-topic null distribution the "
            "question's strongest retrieval signal must reach."
        ),
    )
    relevance_fallback: float = Field(
        default=0.20,
        description="Dense cosine floor used while a bot's calibration is still running.",
    )
    relevance_calibration_wait_s: float = Field(
        default=2.0,
        ge=0.0,
        description="How long a turn waits for a bot's first calibration before using the fallback floor.",
    )
    grounding_min_coverage: float = Field(
        default=0.7,
        ge=0.0,
        le=1.0,
        description="Share of a sentence's content words a passage must hold to support it on words alone.",
    )
    grounding_min_dense: float = Field(
        default=0.65,
        ge=-1.0,
        le=1.0,
        description="Dense cosine to the passage's closest sentence that supports a paraphrased sentence.",
    )
    answer_max_words: int = Field(
        default=80,
        ge=10,
        le=1000,
        description="Default answer length limit in words (bots override it); citation markers are kept.",
    )

    # --- generation --------------------------------------------------------------
    llm_model: str = PACKAGED_LLM
    llm_api_base: str | None = None
    llm_api_key: str | None = None
    llm_fallbacks: list[str] = Field(default_factory=list)
    llm_temperature: float = 0.1
    llm_max_tokens: int = 160
    llm_connect_timeout_s: float = 5.0
    llm_first_token_timeout_s: float = 60.0
    llm_total_timeout_s: float = 180.0
    llm_max_retries: int = 2
    llm_retry_backoff_s: float = 0.5
    llm_context_window: int = 2048
    llm_cache_dir: Path | None = Field(
        default=None,
        description=(
            "Converted (dequantized) weights of the embedded model, shared by every process and data folder. "
            "Unset: $XDG_CACHE_HOME/ragbot, else ~/.cache/ragbot."
        ),
    )
    condense: Literal["concat", "llm"] = Field(
        default="concat",
        description=(
            "How a follow-up becomes a retrieval query. concat: the previous question followed by the "
            "follow-up (no LLM call before the answer). llm: the LLM rewrites it first (one more LLM round "
            "trip before the first token; worth it with a capable model). benchmarks/condense_eval.py "
            "compares the two: with the embedded model they retrieve the same, and llm adds 1.8 s."
        ),
    )
    llm_tools: Literal["auto", "on", "off"] = Field(
        default="auto",
        description=(
            "Offer the model a handoff(reason) tool: auto = when LiteLLM knows the model takes tool calls."
        ),
    )
    persona: str = Field(default="", description="Per-deployment tone/persona appended to the system prompt.")
    prompts_dir: Path | None = None

    # --- API / crawling ----------------------------------------------------------
    max_message_chars: int = 4000
    max_upload_bytes: int = 25 * 1024 * 1024
    api_path_roots: list[Path] = Field(
        default_factory=lambda: [Path.cwd()],
        description="Server-side folders POST /v1/sources may read; paths elsewhere are refused.",
    )
    crawl_allow_private: bool = False
    crawl_user_agent: str = "ragbot-crawler/0.1 (+https://github.com/ragbot/ragbot)"
    crawl_max_pages: int = 500
    crawl_concurrency: int = 4
    crawl_timeout_s: float = 15.0
    crawl_max_bytes: int = 10 * 1024 * 1024
    crawl_max_depth: int | None = Field(default=None, description="Link depth from a start URL; unset: any.")
    crawl_max_redirects: int = 5
    crawl_host_rate: float = Field(
        default=8.0, description="Requests/s per host when robots.txt sets no Crawl-delay or Request-rate."
    )
    crawl_allowed_networks: list[str] = Field(
        default_factory=list,
        description="CIDRs crawlable even when private (an intranet subnet); cloud metadata stays refused.",
    )

    # --- bots, keys, visitors --------------------------------------------------------
    secret_key: str | None = Field(
        default=None,
        description=(
            "Signs visitor session tokens. Unset: a random key is created once in data_dir/secret.key; "
            "set it (the same value) on every API process of a multi-process deployment."
        ),
    )
    visitor_token_ttl_s: int = Field(default=3600, ge=60, description="Lifetime of a visitor session token.")
    visitor_renew_days: int = Field(
        default=30, ge=1, description="A visitor may renew an expired token this long after it was issued."
    )
    allowed_llm_models: list[str] = Field(
        default_factory=list,
        description="LiteLLM models a bot may choose besides the deployment's llm_model and llm_fallbacks.",
    )
    redis_url: str | None = Field(
        default=None,
        description="redis://host:port/db for rate limits shared by every process; unset: memory.",
    )
    rate_visitor_per_minute: int = Field(default=20, description="Messages a visitor may send a minute.")
    rate_ip_per_minute: int = Field(default=60, description="Messages one IP address may send a minute.")
    rate_sessions_per_ip_minute: int = Field(
        default=30, description="Visitor sessions an IP may open a minute."
    )
    daily_message_budget: int = Field(
        default=10000, description="Chat messages a bot answers per day (UTC), all visitors together."
    )
    events_bus: Literal["auto", "memory", "postgres", "redis"] = Field(
        default="auto",
        description=(
            "How conversation events reach streams in other API processes: auto = Redis when "
            "RAGBOT_REDIS_URL is set, PostgreSQL LISTEN/NOTIFY on PostgreSQL, else in memory (one process)."
        ),
    )
    webhook_allow_private: bool = Field(
        default=False, description="Allow webhook targets on private or loopback addresses."
    )
    webhook_max_attempts: int = Field(
        default=8, ge=1, description="Deliveries give up after this many tries."
    )
    webhook_backoff_s: float = Field(default=2.0, gt=0, description="First retry delay; doubles each time.")
    webhook_timeout_s: float = Field(default=10.0, gt=0)

    # --- background jobs (ragbot.jobs) ------------------------------------------------
    api_runs_jobs: bool = Field(
        default=True,
        description=(
            "`ragbot serve` runs queued ingest jobs and due re-syncs itself (needed with embedded Qdrant "
            "Edge, which belongs to one process); false: leave them to `ragbot worker` processes."
        ),
    )
    api_sends_webhooks: bool = Field(
        default=True,
        description=(
            "`ragbot serve` sends webhook deliveries itself; false: leave them to `ragbot worker` processes, "
            "so a slow receiver never holds an API process's threads."
        ),
    )
    job_lease_s: float = Field(
        default=60.0,
        ge=1,
        description="A running job's lease, renewed while it runs; a killed worker's job resumes after it.",
    )
    job_max_attempts: int = Field(
        default=3, ge=1, description="Runs of a job (crashed workers, errors) before it is marked failed."
    )
    job_retry_backoff_s: float = Field(
        default=10.0, ge=0, description="Wait before retrying a job that raised (times the attempt)."
    )
    job_poll_s: float = Field(default=1.0, gt=0, description="How often an idle worker looks for jobs.")
    schedule_check_s: float = Field(
        default=15.0, gt=0, description="How often a worker looks for sources whose re-sync is due."
    )
    demo_page: bool = Field(
        default=True, description="Serve /demo, a page embedding the default bot's widget."
    )

    # --- operations: logs and metrics ------------------------------------------------
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto",
        description="auto: JSON lines for the API server (`ragbot serve`), plain text for other commands.",
    )
    log_level: str = Field(default="INFO", description="Root log level of the API server (`ragbot serve`).")
    shutdown_grace_s: float = Field(
        default=20.0,
        ge=0,
        description=(
            "On SIGTERM, answers still streaming get this long to finish; then each ends with a "
            "server_shutting_down error event, its text so far stored as a partial answer. Keep it below "
            "the orchestrator's kill timeout (Kubernetes: 30 s)."
        ),
    )
    metrics_token: str | None = Field(
        default=None,
        description="Bearer token for GET /metrics (Prometheus scrapers); an unscoped admin key works too.",
    )

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'ragbot.db').resolve()}"

    @property
    def edge_path(self) -> Path:
        return self.data_dir / "qdrant-edge"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def model_cache_dir(self) -> Path:
        """Where the embedded LLM's converted weights live: per user, not per data folder, so a server,
        the CLI and tests with their own data folders convert the GGUF once between them."""
        if self.llm_cache_dir is not None:
            return self.llm_cache_dir
        xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
        base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
        return base / "ragbot"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
