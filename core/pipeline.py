"""The one query pipeline (retrieval, then generation) shared by the API, the CLI and evaluation,
and `Services`: the long-lived components every entry point builds from settings."""

from __future__ import annotations

from functools import cached_property

import torch
from pydantic import BaseModel

from core.db import make_engine, make_session_factory
from core.models import Answer, RetrievedChunk, SearchMode
from core.settings import BUILTIN_RERANKER, Settings
from generation.base import Generator, ModelUnavailableError
from generation.extractive import ExtractiveGenerator
from generation.llm import OpenAICompatibleGenerator
from generation.prompt import NOT_COVERED
from ingest.catalog import Catalog
from ingest.pipeline import Ingestor
from retrieval.embedder import Embedder, check_same_embedder
from retrieval.filters import Principal, SearchFilters
from retrieval.reranker import DEFAULT_RERANKER_PATH, CrossEncoderReranker
from retrieval.retriever import Retriever
from retrieval.sparse import BM25Encoder
from retrieval.store import open_vector_store


def load_reranker(settings: Settings) -> CrossEncoderReranker | None:
    """The configured cross-encoder: the shipped one, a folder or hub id, or none."""
    if settings.reranker is None:
        return None
    builtin = settings.reranker == BUILTIN_RERANKER
    return CrossEncoderReranker(str(DEFAULT_RERANKER_PATH) if builtin else settings.reranker)


class QueryResult(BaseModel):
    answer: Answer
    passages: list[RetrievedChunk]


class AnswerUnavailableError(RuntimeError):
    """Retrieval worked but the model server did not answer; the passages are still useful."""

    def __init__(self, message: str, passages: list[RetrievedChunk]) -> None:
        super().__init__(message)
        self.passages = passages


class QueryPipeline:
    def __init__(self, retriever: Retriever, generator: Generator) -> None:
        self.retriever = retriever
        self.generator = generator

    def run(
        self,
        question: str,
        principal: Principal,
        filters: SearchFilters | None = None,
        top_k: int | None = None,
    ) -> QueryResult:
        passages = self.retriever.run(question, principal, filters, top_k)
        if not passages:
            answer = Answer(text=NOT_COVERED, citations=[], model=self.generator.name)
        else:
            try:
                answer = self.generator.generate(question, passages)
            except ModelUnavailableError as error:
                raise AnswerUnavailableError(str(error), passages) from error
        return QueryResult(answer=answer, passages=passages)


class Services:
    """One SQL engine, one vector store handle and one embedder per process."""

    def __init__(self, settings: Settings, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.engine = make_engine(settings)
        self.catalog = Catalog(make_session_factory(self.engine))
        self.store = open_vector_store(settings)
        self.embedder = embedder or Embedder.from_settings(settings)

    def query_pipeline(self) -> QueryPipeline:
        settings = self.settings
        generator: Generator
        if settings.llm_base_url:
            generator = OpenAICompatibleGenerator(
                base_url=settings.llm_base_url,
                model=settings.llm_model,
                api_key=settings.llm_api_key,
                timeout_s=settings.llm_timeout_s,
                max_tokens=settings.llm_max_tokens,
                temperature=settings.llm_temperature,
                max_retries=settings.llm_max_retries,
            )
        else:
            generator = ExtractiveGenerator(self.embedder)
        return QueryPipeline(self.retriever(), generator)

    def retriever(self, mode: SearchMode | None = None, rerank: bool = True) -> Retriever:
        """The configured retriever; a baseline may override the mode and skip reranking."""
        self.check_embedder()
        settings = self.settings
        return Retriever(
            self.store,
            self.embedder,
            BM25Encoder(settings.bm25_k1, settings.bm25_b, settings.bm25_average_length),
            mode=mode or settings.search_mode,
            top_k=settings.top_k,
            candidates=settings.search_candidates,
            reranker=self.reranker if rerank else None,
            rerank_candidates=settings.rerank_candidates,
        )

    def check_embedder(self) -> None:
        """Queries must be embedded like the stored chunks, or dense search ranks noise."""
        check_same_embedder(self.catalog.index_embedder(), self.embedder.signature)

    @cached_property
    def reranker(self) -> CrossEncoderReranker | None:
        return load_reranker(self.settings)

    def ingestor(self) -> Ingestor:
        return Ingestor.from_settings(self.settings, self.store, self.catalog, self.embedder)

    def serve_queries(self) -> None:
        """Tune the process for many small concurrent inferences rather than batch throughput."""
        torch.set_num_threads(self.settings.query_threads)

    def anonymous_principal(self) -> Principal:
        """The caller behind requests without credentials (and local CLI use)."""
        return Principal(subject="anonymous", groups=self.settings.anonymous_groups)

    def close(self) -> None:
        self.store.close()
        self.engine.dispose()
