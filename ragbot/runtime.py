"""The composition root: builds each component once, lazily, from settings.

Commands and the API share it, so the same settings pick the same engines everywhere, and nothing heavy
(models, shards, connections) is created until something actually needs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

from ragbot.config import Settings, get_settings

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from ragbot.encoders.base import DenseEncoder, SparseEncoder
    from ragbot.encoders.lexical import Bm25Encoder
    from ragbot.feedback.service import FeedbackService
    from ragbot.generation.base import ChatLLM
    from ragbot.generation.prompts import PromptLibrary
    from ragbot.handoff.service import HandoffService
    from ragbot.index.base import VectorIndex
    from ragbot.jobs.schedules import SourceSchedules
    from ragbot.leads.service import LeadService
    from ragbot.realtime.bus import EventBus
    from ragbot.retrieval.calibration import FusionCalibration
    from ragbot.retrieval.retriever import Retriever
    from ragbot.services.background import Background
    from ragbot.services.chat import ChatService
    from ragbot.services.ingest import IngestService
    from ragbot.services.jobs import IngestJobs
    from ragbot.tenancy.api_keys import ApiKeyService
    from ragbot.tenancy.bots import BotProfile, BotService
    from ragbot.tenancy.ratelimit import RateLimiter
    from ragbot.tenancy.sessions import VisitorSessions
    from ragbot.webhooks.service import WebhookService
    from ragbot.webhooks.worker import WebhookWorker


class Runtime:
    """``components`` pre-seeds any of the properties below (e.g. ``sparse_encoder=...``), so tests and
    embedding applications can share loaded models or pass a ready index without rebuilding them."""

    _COMPONENTS = frozenset(
        {
            "engine",
            "session_factory",
            "sparse_encoder",
            "dense_encoder",
            "lexical_encoder",
            "index",
            "retriever",
            "llm",
            "prompts",
        }
    )

    def __init__(self, settings: Settings | None = None, **components: object) -> None:
        self.settings = settings or get_settings()
        unknown = set(components) - self._COMPONENTS
        if unknown:
            raise TypeError(f"unknown runtime components: {sorted(unknown)}")
        self._owned = self._COMPONENTS - set(components)
        self.__dict__.update(components)
        self._llms: dict[tuple[str, tuple[str, ...]], ChatLLM] = {}

    @cached_property
    def engine(self) -> Engine:
        from ragbot.db.session import make_engine, migrate

        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(self.settings.resolved_database_url)
        migrate(engine)
        return engine

    @cached_property
    def session_factory(self) -> sessionmaker[Session]:
        from ragbot.db.session import make_session_factory

        return make_session_factory(self.engine)

    @cached_property
    def sparse_encoder(self) -> SparseEncoder:
        from ragbot.encoders import load_sparse_encoder

        return load_sparse_encoder(self.settings)

    @cached_property
    def dense_encoder(self) -> DenseEncoder:
        from ragbot.encoders import load_dense_encoder

        return load_dense_encoder(self.settings)

    @cached_property
    def lexical_encoder(self) -> Bm25Encoder:
        """The BM25 analyser (cheap: no model); retrieval and ingest use it when ``lexical_retriever`` is on,
        search highlighting always."""
        from ragbot.encoders import load_lexical_encoder

        return load_lexical_encoder(self.settings)

    @property
    def lexical_or_none(self) -> Bm25Encoder | None:
        return self.lexical_encoder if self.settings.lexical_retriever else None

    @cached_property
    def index(self) -> VectorIndex:
        from ragbot.index import open_index

        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        return open_index(self.settings)

    @cached_property
    def retriever(self) -> Retriever:
        from ragbot.retrieval.calibration import FusionCalibration
        from ragbot.services.calibration_store import SqlCalibrationStore

        # Every process adds to the same learned weights; the lambda defers opening the database until a
        # bot's totals are first needed.
        calibration = FusionCalibration(
            min_queries=self.settings.fusion_calibration_queries,
            store=SqlCalibrationStore(lambda: self.session_factory()),
            flush_every=self.settings.fusion_calibration_flush_every,
        )
        return self.build_retriever(calibration)

    def build_retriever(self, calibration: FusionCalibration, *, explain_terms: int = 8) -> Retriever:
        """A retriever over this runtime's encoders and index, configured from settings; ``retriever`` is
        the served one, evaluation builds its own with a private calibration and no explanations."""
        from ragbot.retrieval.retriever import Retriever

        return Retriever(
            self.sparse_encoder,
            self.dense_encoder,
            self.index,
            prefetch_k=self.settings.prefetch_k,
            fusion=self.settings.fusion,
            rrf_k=self.settings.rrf_k,
            explain_terms=explain_terms,
            calibration=calibration,
            lexical=self.lexical_or_none,
            neural_languages=self.settings.neural_languages,
        )

    @cached_property
    def llm(self) -> ChatLLM:
        from ragbot.generation import build_llm

        return build_llm(self.settings)

    def llm_for(self, profile: BotProfile) -> ChatLLM:
        """The chat model a bot answers with: the deployment's, or the one (and fallbacks) the bot chose
        among those the deployment allows. One client per distinct choice, built on first use."""
        wanted = (profile.llm_model, tuple(profile.llm_fallbacks))
        if wanted == (self.settings.llm_model, tuple(self.settings.llm_fallbacks)):
            return self.llm
        if wanted not in self._llms:
            from ragbot.generation import build_llm

            chosen = self.settings.model_copy(
                update={"llm_model": wanted[0], "llm_fallbacks": list(wanted[1])}
            )
            self._llms[wanted] = build_llm(chosen)
        return self._llms[wanted]

    @cached_property
    def bots(self) -> BotService:
        from ragbot.tenancy.bots import BotService

        return BotService(self.session_factory, self.settings)

    @cached_property
    def api_keys(self) -> ApiKeyService:
        from ragbot.tenancy.api_keys import ApiKeyService

        return ApiKeyService(self.session_factory)

    @cached_property
    def visitor_sessions(self) -> VisitorSessions:
        from ragbot.tenancy.sessions import VisitorSessions, load_secret

        secret = load_secret(self.settings.secret_key, self.settings.data_dir)
        return VisitorSessions(
            secret,
            ttl_s=self.settings.visitor_token_ttl_s,
            renew_window_s=self.settings.visitor_renew_days * 86400,
        )

    @cached_property
    def rate_limiter(self) -> RateLimiter:
        from ragbot.tenancy.ratelimit import build_rate_limiter

        return build_rate_limiter(self.settings.redis_url)

    @cached_property
    def bus(self) -> EventBus:
        from ragbot.realtime.bus import build_bus

        return build_bus(
            self.settings.events_bus,
            database_url=self.settings.resolved_database_url,
            redis_url=self.settings.redis_url,
        )

    @cached_property
    def webhooks(self) -> WebhookService:
        from ragbot.webhooks.service import WebhookService

        return WebhookService(self.session_factory, self.settings)

    @cached_property
    def webhook_worker(self) -> WebhookWorker:
        from ragbot.webhooks.worker import WebhookWorker

        return WebhookWorker(self.session_factory, self.settings)

    @cached_property
    def background(self) -> Background:
        from ragbot.privacy.retention import purge_expired
        from ragbot.services.background import Background

        return Background(
            self.webhook_worker,
            self.handoff,
            lambda: purge_expired(self.session_factory),
            jobs=lambda: self.jobs,
            run_jobs=self.settings.api_runs_jobs,
            send_webhooks=self.settings.api_sends_webhooks,
        )

    def delete_bot(self, bot_id: str, *, actor: str) -> dict[str, int]:
        """Delete a bot everywhere: its vectors, its rows, and what this process learned about it."""
        removed = self.bots.delete(bot_id, actor=actor, delete_vectors=self.index.delete_bot)
        if "retriever" in self.__dict__:
            self.retriever.calibration.forget(bot_id)
        return removed

    @cached_property
    def prompts(self) -> PromptLibrary:
        from ragbot.generation.prompts import PromptLibrary

        return PromptLibrary(self.settings.prompts_dir)

    @cached_property
    def ingest_service(self) -> IngestService:
        from ragbot.services.ingest import IngestService

        return IngestService(
            self.index,
            self.sparse_encoder,
            self.dense_encoder,
            self.session_factory,
            chunk_max_tokens=self.settings.chunk_max_tokens,
            chunk_overlap_tokens=self.settings.chunk_overlap_tokens,
            batch_size=self.settings.encode_batch_size,
            lexical=self.lexical_or_none,
            title_context=self.settings.title_context,
        )

    @cached_property
    def chat_service(self) -> ChatService:
        from ragbot.services.chat import ChatService

        return ChatService(
            session_factory=self.session_factory,
            retriever=self.retriever,
            llm_factory=self.llm_for,
            prompts=self.prompts,
            settings=self.settings,
            publish=self.publish,
            sparse_encoder=self.sparse_encoder,
            dense_encoder=self.dense_encoder,
            index=self.index,
        )

    def publish(self, conversation_id: str) -> None:
        """Wake the streams of a conversation whose events just committed."""
        self.bus.publish(conversation_id)

    @cached_property
    def handoff(self) -> HandoffService:
        from ragbot.handoff.service import HandoffService

        return HandoffService(self.session_factory, self.publish)

    @cached_property
    def leads(self) -> LeadService:
        from ragbot.leads.service import LeadService

        return LeadService(self.session_factory, self.publish)

    @cached_property
    def feedback(self) -> FeedbackService:
        from ragbot.feedback.service import FeedbackService

        return FeedbackService(self.session_factory, lambda: self.handoff)

    @cached_property
    def jobs(self) -> IngestJobs:
        from ragbot.services.jobs import IngestJobs

        return IngestJobs(
            lambda: self.ingest_service,
            self.session_factory,
            self.settings,
            schedules=self.schedules,
            reports=self._build_report,
            run_locally=self.settings.api_runs_jobs,
        )

    def _build_report(self, bot_id: str, spec: Mapping[str, Any]) -> str:
        """An analytics report job's HTML (``ragbot.analytics.report``), from the job's spec."""
        from ragbot.analytics.report import build_report
        from ragbot.analytics.windows import parse_window
        from ragbot.db.models import utcnow

        window = parse_window(str(spec["since"]), str(spec["until"]), utcnow())
        base_url = spec.get("base_url")
        return build_report(
            self,
            bot_id,
            window,
            base_url=str(base_url) if base_url else None,
            limit=int(spec.get("limit", 20)),
        )

    @cached_property
    def schedules(self) -> SourceSchedules:
        from ragbot.jobs.schedules import SourceSchedules

        return SourceSchedules(self.session_factory)

    def close(self) -> None:
        """Store what retrieval learned, release the shard and connections; safe to call when nothing
        was opened."""
        if "background" in self.__dict__:
            self.background.stop()
        if "webhook_worker" in self.__dict__:
            self.webhook_worker.stop()
        if "webhooks" in self.__dict__:
            self.webhooks.close()
        if "jobs" in self.__dict__:
            self.jobs.shutdown(wait=True)
        if "bus" in self.__dict__:
            self.bus.close()
        if "retriever" in self.__dict__ and "retriever" in self._owned:
            self.retriever.calibration.flush()  # before the engine goes; logs, never raises
        if "index" in self.__dict__ and "index" in self._owned:
            self.index.close()
        if "engine" in self.__dict__ and "engine" in self._owned:
            self.engine.dispose()
