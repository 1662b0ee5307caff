"""`Services`: the one place that builds every long-lived component from settings, for the HTTP
server, the CLI and evaluation alike."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import torch

from core.audit import AuditLog
from core.auth import Authenticator, JwtVerifier, KeyStore
from core.catalog import Catalog, Job
from core.db import make_engine, make_session_factory
from core.injection import InjectionScreen, QuestionGuard
from core.models import Principal, SearchMode
from core.saved import SavedAnswers
from core.sentence_vectors import SentenceVectors
from core.settings import Settings
from generation.analysis import DocumentNames, QuestionAnalyzer
from generation.base import Generator
from generation.breaker import CircuitBreaker
from generation.extractive import ExtractiveGenerator
from generation.llm import OpenAICompatibleGenerator
from generation.pipeline import QueryPipeline
from generation.refusal import RelevanceGate
from generation.routing import ModelRouter, PriceTable
from generation.verification import CitationVerifier, load_verifier
from ingest.pipeline import Ingestor, ProgressCallback
from retrieval.embedder import Embedder, check_same_embedder
from retrieval.expansion import ReferenceExpander
from retrieval.reranker import CrossEncoderReranker, load_reranker
from retrieval.retriever import Retriever
from retrieval.sparse import BM25Encoder
from retrieval.store import open_vector_store


class Services:
    """One SQL engine, one vector store handle and one embedder per process."""

    def __init__(self, settings: Settings, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.engine = make_engine(settings)
        sessions = make_session_factory(self.engine)
        self.catalog = Catalog(sessions)
        self.audit = AuditLog.from_settings(sessions, settings)
        self.keys = KeyStore(sessions, self.audit)
        self.saved = SavedAnswers(sessions)
        self.sentence_vectors = SentenceVectors(sessions)
        self.store = open_vector_store(settings)
        self.embedder = embedder or Embedder.from_settings(settings)
        self._names: tuple[tuple[tuple[str, str, str], ...], DocumentNames] | None = None

    def query_pipeline(self, audited: bool = True) -> QueryPipeline:
        """The configured pipeline: extractive answers, or the LLM (with a premium route when one
        is set). `audited`: each query leaves its audit row (evaluation runs are audited as runs).
        """
        settings = self.settings
        generator: Generator = ExtractiveGenerator(self.embedder, self.sentence_vectors)
        premium = None
        if settings.llm_base_url:
            generator = self.llm_generator(
                settings.llm_base_url, settings.llm_model, settings.llm_api_key
            )
            if settings.llm_premium_model:
                premium = self.llm_generator(
                    settings.llm_premium_base_url or settings.llm_base_url,
                    settings.llm_premium_model,
                    settings.llm_premium_api_key or settings.llm_api_key,
                )
        return QueryPipeline(
            self.retriever(),
            generator,
            premium=premium,
            router=ModelRouter(
                min_documents=settings.llm_route_min_documents,
                long_question_words=settings.llm_route_long_question_words,
            ),
            guard=self.question_guard(),
            verifier=self.verifier,
            relevance=self.relevance_gate,
            audit=self.audit if audited else None,
            analyzer=QuestionAnalyzer(self.document_names),
        )

    def document_names(self) -> DocumentNames:
        """The names of the indexed documents, rebuilt when the catalog's documents change."""
        records = self.catalog.documents()
        key = tuple((r.document_id, r.title, str(r.metadata.get("aliases"))) for r in records)
        if self._names is None or self._names[0] != key:
            self._names = (key, DocumentNames.from_records(records))
        return self._names[1]

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
                max_citing=settings.expand_max_citing,
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
            self.settings,
            self.store,
            self.catalog,
            self.embedder,
            self.audit,
            self.saved,
            self.sentence_vectors,
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


def build_index(
    settings: Settings,
    files: list[Path],
    on_document: ProgressCallback | None,
    embedder: Embedder | None = None,
) -> tuple[Job, int]:
    """Ingest `files` into the store `settings` point at (a benchmark index): the job and the
    number of chunks stored."""
    services = Services(settings, embedder=embedder)
    try:
        job = services.ingestor().run(files, requested_by="eval", on_document=on_document)
        return job, services.store.count()
    finally:
        services.close()
