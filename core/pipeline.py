"""The one query pipeline (retrieval, then generation) shared by the API, the CLI and evaluation,
and `Services`: the long-lived components every entry point builds from settings."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property

import torch
from pydantic import BaseModel, Field

from core.audit import AuditLog
from core.auth import Authenticator, JwtVerifier, KeyStore
from core.db import make_engine, make_session_factory
from core.injection import InjectionScreen, QuestionGuard
from core.models import Answer, ModelChoice, RetrievedChunk, SearchMode
from core.settings import BUILTIN_RERANKER, LLM_JUDGE, Settings
from generation.base import Generator, ModelUnavailableError, StreamingGenerator
from generation.breaker import CircuitBreaker
from generation.extractive import ExtractiveGenerator
from generation.llm import OpenAICompatibleGenerator
from generation.prompt import NOT_COVERED
from generation.refusal import RelevanceGate
from generation.routing import ModelRouter, PriceTable
from generation.verification import (
    DEFAULT_SUPPORT_MODEL,
    CitationVerifier,
    CrossEncoderSupportJudge,
    LLMJudgeVerifier,
    SupportJudge,
)
from ingest.catalog import Catalog
from ingest.pipeline import Ingestor
from retrieval.embedder import Embedder, check_same_embedder
from retrieval.expansion import ReferenceExpander
from retrieval.filters import Principal, SearchFilters
from retrieval.reranker import DEFAULT_RERANKER_PATH, CrossEncoderReranker
from retrieval.retriever import Retriever
from retrieval.sparse import BM25Encoder
from retrieval.store import open_vector_store

log = logging.getLogger(__name__)


def load_reranker(settings: Settings) -> CrossEncoderReranker | None:
    """The configured cross-encoder: the project's own, a folder or a hub id; or none."""
    if settings.reranker is None:
        return None
    if settings.reranker != BUILTIN_RERANKER:
        return CrossEncoderReranker(settings.reranker)
    if not (DEFAULT_RERANKER_PATH / "config.json").is_file():
        raise ValueError(
            f"REGULUS_RERANKER=builtin, but no project reranker is at {DEFAULT_RERANKER_PATH}: "
            "train one with retrieval/training/train_reranker.py or name a folder or hub id"
        )
    return CrossEncoderReranker(str(DEFAULT_RERANKER_PATH))


def load_verifier(settings: Settings) -> CitationVerifier | None:
    """The configured support judge (shipped model, a folder or hub id, an LLM judge) or none."""
    if settings.verifier is None:
        return None
    judge: SupportJudge
    if settings.verifier == LLM_JUDGE:
        base_url = settings.verifier_base_url or settings.llm_base_url
        if not base_url:
            raise ValueError("REGULUS_VERIFIER=llm needs REGULUS_VERIFIER_BASE_URL or LLM_BASE_URL")
        judge = LLMJudgeVerifier(
            base_url=base_url,
            model=settings.verifier_model or settings.llm_model,
            api_key=settings.llm_api_key,
            timeout_s=settings.llm_timeout_s,
        )
    else:
        builtin = settings.verifier == BUILTIN_RERANKER
        judge = CrossEncoderSupportJudge(
            DEFAULT_SUPPORT_MODEL if builtin else settings.verifier,
            threshold=settings.support_threshold,
        )
    return CitationVerifier(judge, unsupported=settings.unsupported)


class QueryResult(BaseModel):
    answer: Answer
    passages: list[RetrievedChunk]
    timings: dict[str, float] = Field(
        default_factory=dict,
        description="Milliseconds per stage: retrieval, rerank, generation, verification.",
    )


class AnswerUnavailableError(RuntimeError):
    """Retrieval worked but the model server did not answer; the passages are still useful."""

    def __init__(self, message: str, passages: list[RetrievedChunk]) -> None:
        super().__init__(message)
        self.passages = passages


@dataclass(frozen=True)
class PassagesEvent:
    passages: list[RetrievedChunk]


@dataclass(frozen=True)
class TokenEvent:
    text: str


@dataclass(frozen=True)
class FinalEvent:
    result: QueryResult


StreamEvent = PassagesEvent | TokenEvent | FinalEvent


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + (time.perf_counter() - start) * 1000


class QueryPipeline:
    """Retrieval, then (unless the passages are off-topic) generation by the routed model, then
    `_finish`: verification and the refusal decision, the same for streamed and plain answers."""

    def __init__(
        self,
        retriever: Retriever,
        generator: Generator,
        premium: Generator | None = None,
        router: ModelRouter | None = None,
        guard: QuestionGuard | None = None,
        verifier: CitationVerifier | None = None,
        relevance: RelevanceGate | None = None,
    ) -> None:
        self.retriever = retriever
        self.generator = generator
        self.premium = premium
        self.router = router or ModelRouter()
        self.guard = guard
        self.verifier = verifier
        self.relevance = relevance

    def screen(self, question: str) -> None:
        """Refuse a question that tries to instruct the model (PromptInjectionError)."""
        if self.guard is not None:
            self.guard.check(question)

    def run(
        self,
        question: str,
        principal: Principal,
        filters: SearchFilters | None = None,
        top_k: int | None = None,
        model: ModelChoice = ModelChoice.AUTO,
    ) -> QueryResult:
        self.screen(question)
        timings: dict[str, float] = {}
        passages = self._retrieve(question, principal, filters, top_k, timings)
        if not self._relevant(question, passages, timings):
            answer = self.refusal()
        else:
            generator = self.route(question, passages, model)
            with _timed(timings, "generation"), _unavailable(passages):
                answer = generator.generate(question, passages)
        return self._result(question, answer, passages, timings)

    def stream(
        self,
        question: str,
        principal: Principal,
        filters: SearchFilters | None = None,
        top_k: int | None = None,
        model: ModelChoice = ModelChoice.AUTO,
    ) -> Iterator[StreamEvent]:
        """The passages, then the answer's text as it is written, then the finished result."""
        self.screen(question)
        timings: dict[str, float] = {}
        passages = self._retrieve(question, principal, filters, top_k, timings)
        yield PassagesEvent(passages)
        if not self._relevant(question, passages, timings):
            not_covered = self.refusal()
            yield TokenEvent(not_covered.text)
            yield FinalEvent(self._result(question, not_covered, passages, timings))
            return
        generator = self.route(question, passages, model)
        start = time.perf_counter()
        answer: Answer | None = None
        with _unavailable(passages):
            if isinstance(generator, StreamingGenerator):
                for item in generator.stream(question, passages):
                    if isinstance(item, Answer):
                        answer = item
                    else:
                        yield TokenEvent(item)
            else:
                answer = generator.generate(question, passages)
                yield TokenEvent(answer.text)
            if answer is None:
                raise ModelUnavailableError(f"{generator.name} ended its stream without an answer")
        timings["generation"] = (time.perf_counter() - start) * 1000
        yield FinalEvent(self._result(question, answer, passages, timings))

    def route(
        self, question: str, passages: list[RetrievedChunk], model: ModelChoice = ModelChoice.AUTO
    ) -> Generator:
        """The generator the routing rule picks; the cheap one when no premium is configured."""
        if self.premium is None:
            return self.generator
        route = self.router.run(question, passages, model)
        log.info("routed to %s model: %s", "premium" if route.premium else "cheap", route.reason)
        return self.premium if route.premium else self.generator

    def _retrieve(
        self,
        question: str,
        principal: Principal,
        filters: SearchFilters | None,
        top_k: int | None,
        timings: dict[str, float],
    ) -> list[RetrievedChunk]:
        with _timed(timings, "retrieval"):
            candidates = self.retriever.search(question, principal, filters, top_k)
        with _timed(timings, "rerank"):
            candidates = self.retriever.rerank(question, candidates, top_k)
        with _timed(timings, "expansion"):
            return self.retriever.expand(candidates, top_k)

    def _result(
        self,
        question: str,
        answer: Answer,
        passages: list[RetrievedChunk],
        timings: dict[str, float],
    ) -> QueryResult:
        with _timed(timings, "verification"):
            answer = self._finish(question, answer, passages)
        return QueryResult(answer=answer, passages=passages, timings=timings)

    def _relevant(
        self, question: str, passages: list[RetrievedChunk], timings: dict[str, float]
    ) -> bool:
        with _timed(timings, "relevance"):
            return self.is_relevant(question, passages)

    def is_relevant(self, question: str, passages: list[RetrievedChunk]) -> bool:
        """False when retrieval found nothing, or nothing close enough to answer from."""
        if not passages:
            return False
        return self.relevance is None or self.relevance.run(question, passages)

    def refusal(self, answer: Answer | None = None) -> Answer:
        """ "Not covered", keeping the model, usage and per-sentence verdicts of a failed answer."""
        if answer is None:
            return Answer(text=NOT_COVERED, citations=[], model=self.generator.name, refused=True)
        return answer.model_copy(update={"text": NOT_COVERED, "citations": [], "refused": True})

    def _finish(self, question: str, answer: Answer, passages: list[RetrievedChunk]) -> Answer:
        """What every answer goes through before it is returned, streamed or not: verification of
        its sentences against the passages they cite; refusal when the model declined or no
        sentence is supported."""
        if answer.refused or NOT_COVERED.rstrip(".") in answer.text or not answer.text.strip():
            return self.refusal(answer)
        if self.verifier is None:
            return answer
        verified = self.verifier.run(answer, passages)
        if not any(sentence.supported for sentence in verified.sentences):
            return self.refusal(verified)
        return verified


@contextmanager
def _unavailable(passages: list[RetrievedChunk]) -> Iterator[None]:
    """A model server failure becomes an AnswerUnavailableError that keeps the passages."""
    try:
        yield
    except ModelUnavailableError as error:
        raise AnswerUnavailableError(str(error), passages) from error


class Services:
    """One SQL engine, one vector store handle and one embedder per process."""

    def __init__(self, settings: Settings, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.engine = make_engine(settings)
        sessions = make_session_factory(self.engine)
        self.catalog = Catalog(sessions)
        self.audit = AuditLog(sessions, redact_pii=settings.audit_redact_pii)
        self.keys = KeyStore(sessions, self.audit)
        self.store = open_vector_store(settings)
        self.embedder = embedder or Embedder.from_settings(settings)

    def query_pipeline(self) -> QueryPipeline:
        settings = self.settings
        if not settings.llm_base_url:
            return QueryPipeline(
                self.retriever(),
                ExtractiveGenerator(self.embedder),
                guard=self.question_guard(),
                verifier=self.verifier,
                relevance=self.relevance_gate,
            )
        cheap = self.llm_generator(settings.llm_base_url, settings.llm_model, settings.llm_api_key)
        premium = None
        if settings.llm_premium_model:
            premium = self.llm_generator(
                settings.llm_premium_base_url or settings.llm_base_url,
                settings.llm_premium_model,
                settings.llm_premium_api_key or settings.llm_api_key,
            )
        router = ModelRouter(
            min_documents=settings.llm_route_min_documents,
            long_question_words=settings.llm_route_long_question_words,
        )
        return QueryPipeline(
            self.retriever(),
            cheap,
            premium=premium,
            router=router,
            guard=self.question_guard(),
            verifier=self.verifier,
            relevance=self.relevance_gate,
        )

    def question_guard(self) -> QuestionGuard:
        settings = self.settings
        return QuestionGuard(
            InjectionScreen(settings.injection_threshold), settings.injection_questions
        )

    def llm_generator(self, base_url: str, model: str, api_key: str) -> OpenAICompatibleGenerator:
        """A generator for one model server, with its own circuit breaker."""
        settings = self.settings
        return OpenAICompatibleGenerator(
            base_url=base_url,
            model=model,
            api_key=api_key,
            timeout_s=settings.llm_timeout_s,
            connect_timeout_s=settings.llm_connect_timeout_s,
            max_tokens=settings.llm_max_tokens,
            temperature=settings.llm_temperature,
            max_retries=settings.llm_max_retries,
            structured=settings.llm_structured,
            breaker=CircuitBreaker(settings.llm_breaker_failures, settings.llm_breaker_cooldown_s),
            prices=PriceTable(settings.llm_prices),
        )

    def retriever(
        self, mode: SearchMode | None = None, rerank: bool = True, expand: bool = True
    ) -> Retriever:
        """The configured retriever; a baseline may override the mode and skip the later stages."""
        self.check_embedder()
        settings = self.settings
        expander = (
            ReferenceExpander(
                self.store,
                from_top=settings.expand_from_top,
                max_added=settings.expand_max_added,
            )
            if expand and settings.expand_references
            else None
        )
        return Retriever(
            self.store,
            self.embedder,
            BM25Encoder(settings.bm25_k1, settings.bm25_b, settings.bm25_average_length),
            mode=mode or settings.search_mode,
            top_k=settings.top_k,
            candidates=settings.search_candidates,
            fusion=settings.search_fusion,
            reranker=self.reranker if rerank else None,
            rerank_candidates=settings.rerank_candidates,
            expander=expander,
        )

    def check_embedder(self) -> None:
        """Queries must be embedded like the stored chunks, or dense search ranks noise."""
        check_same_embedder(self.catalog.index_embedder(), self.embedder.signature)

    @cached_property
    def reranker(self) -> CrossEncoderReranker | None:
        return load_reranker(self.settings)

    @cached_property
    def verifier(self) -> CitationVerifier | None:
        return load_verifier(self.settings)

    @cached_property
    def relevance_gate(self) -> RelevanceGate | None:
        threshold = self.settings.relevance_threshold
        return None if threshold is None else RelevanceGate(self.embedder, threshold)

    def ingestor(self) -> Ingestor:
        return Ingestor.from_settings(
            self.settings, self.store, self.catalog, self.embedder, self.audit
        )

    @cached_property
    def authenticator(self) -> Authenticator:
        return Authenticator(self.keys, JwtVerifier.from_settings(self.settings))

    def serve_queries(self) -> None:
        """Tune the process for many small concurrent inferences rather than batch throughput."""
        torch.set_num_threads(self.settings.query_threads)

    def anonymous_principal(self) -> Principal:
        """The caller when authentication is off (and in local CLI use)."""
        return Principal(subject="anonymous", groups=self.settings.anonymous_groups)

    def close(self) -> None:
        self.store.close()
        self.engine.dispose()
