"""Knowledge-base search: the ranked passages for a query, with highlighted snippets; no LLM is called.

The backend of a help-center search box. Callers are those of the chat: an admin key (``bot_id`` within
its scope) or a visitor session (its own bot only).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from ragbot.api.deps import RuntimeDep
from ragbot.api.errors import ApiError
from ragbot.api.schemas import BOT_ID_RULES, MatchedTermOut, error_responses
from ragbot.runtime import Runtime
from ragbot.services.search import MAX_TOP_K, Passage, search_limits, search_service
from ragbot.tenancy.bots import BotProfile
from ragbot.tenancy.deps import CallerDep, caller_bot
from ragbot.tenancy.principals import Caller

router = APIRouter(prefix="/v1", tags=["search"])

_SPANS = "[start, end) offsets in Unicode code points (not UTF-16 units)"


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, description="What the visitor typed into the search box.")
    bot_id: str | None = Field(
        default=None,
        description=(
            f"Admin keys: the bot (default: the key's own bot, else the deployment's). Visitor sessions: "
            f"omit it (the session's bot). {BOT_ID_RULES}"
        ),
    )
    top_k: int | None = Field(
        default=None, ge=1, le=MAX_TOP_K, description="How many passages (default: the deployment's top_k)."
    )


class ScoresOut(BaseModel):
    hybrid: float = Field(description="The fused score the results are ranked by.")
    sparse: float | None = Field(description="SPLADE's score; null where it was not computed.")
    dense: float | None = Field(description="The dense cosine; null where it was not computed.")
    bm25: float | None = Field(description="BM25's score; null where BM25 did not run.")


class RanksOut(BaseModel):
    sparse: int | None
    dense: int | None
    bm25: int | None


class SearchResultOut(BaseModel):
    rank: int
    chunk_id: str
    source_id: str
    title: str
    title_highlights: list[tuple[int, int]] = Field(description=f"Matched words in the title: {_SPANS}.")
    url: str | None = None
    path: str | None = None
    heading_path: list[str] = Field(default_factory=list)
    page: int | None = None
    start_s: float | None = None
    end_s: float | None = None
    snippet: str = Field(description="Plain text: the passage's best-matching window, one line.")
    highlights: list[tuple[int, int]] = Field(description=f"Matched words in the snippet: {_SPANS}.")
    snippet_html: str = Field(description="The snippet HTML-escaped, each highlight in <mark>...</mark>.")
    matched_terms: list[MatchedTermOut] = Field(
        description="The sparse retriever's terms behind the score (in_text: false for expansions)."
    )
    scores: ScoresOut
    ranks: RanksOut
    language: str | None = Field(default=None, description="The passage's detected language (ISO 639-1).")


class SearchResponse(BaseModel):
    bot_id: str
    query: str
    top_k: int
    results: list[SearchResultOut]


def _check_quota(request: Request, caller: Caller, profile: BotProfile, runtime: Runtime) -> None:
    client_ip = request.client.host if request.client else None
    decision = runtime.rate_limiter.hit(search_limits(profile, caller, client_ip))
    if not decision.allowed:
        raise ApiError(
            429,
            "rate_limited",
            f"too many searches; try again in {decision.retry_after_s} s",
            headers={"Retry-After": str(decision.retry_after_s)},
            limit=decision.limit.scope if decision.limit else "rate",
        )


def _result(p: Passage) -> SearchResultOut:
    chunk, hit = p.hit.chunk, p.hit
    return SearchResultOut(
        rank=p.rank,
        chunk_id=chunk.id,
        source_id=chunk.source_id,
        title=chunk.title,
        title_highlights=list(p.title_highlights),
        url=chunk.url,
        path=chunk.path,
        heading_path=list(chunk.heading_path),
        page=chunk.page,
        start_s=chunk.start_s,
        end_s=chunk.end_s,
        snippet=p.snippet.text,
        highlights=list(p.snippet.highlights),
        snippet_html=p.snippet.html,
        matched_terms=[
            MatchedTermOut(term=t.term, contribution=t.contribution, in_text=t.in_text)
            for t in hit.matched_terms
        ],
        scores=ScoresOut.model_validate(p.scores),
        ranks=RanksOut.model_validate(p.ranks),
        language=p.language,
    )


@router.post("/search", response_model=SearchResponse, responses=error_responses(401, 403, 404, 422, 429))
def search(body: SearchRequest, request: Request, caller: CallerDep, runtime: RuntimeDep) -> SearchResponse:
    """Search the bot's knowledge base: the ranked passages, each with a highlighted snippet, where it
    came from (title, URL or path, page or timestamp), the matched terms and every retriever's score.

    No LLM is called, no conversation is stored. Visitor sessions count against the bot's per-minute
    limits (their own counters, apart from chat); admin keys are not limited.
    """
    query = body.query.strip()
    limit = runtime.settings.max_message_chars
    if not query:
        raise ApiError(422, "empty_query", "query must not be empty")
    if len(query) > limit:
        raise ApiError(422, "query_too_long", f"query has {len(query)} characters; the limit is {limit}")
    profile = caller_bot(caller, body.bot_id, runtime, doing="search")
    _check_quota(request, caller, profile, runtime)
    top_k = body.top_k or runtime.settings.top_k
    passages = search_service(runtime).search(profile.id, query, min(top_k, MAX_TOP_K))
    return SearchResponse(bot_id=profile.id, query=query, top_k=top_k, results=[_result(p) for p in passages])
