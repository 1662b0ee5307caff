"""The one query pipeline (retrieval, then generation) shared by the API, the CLI and evaluation,
and `Services`: the long-lived components every entry point builds from settings."""

from __future__ import annotations

from functools import cached_property

import torch
from pydantic import BaseModel

from core.db import make_engine, make_session_factory
from core.models import Answer, RetrievedChunk, SearchMode
from core.settings import BUILTIN_RERANKER, LLM_JUDGE, Settings
from generation.base import Generator, ModelUnavailableError
from generation.extractive import ExtractiveGenerator
from generation.llm import OpenAICompatibleGenerator
from generation.prompt import NOT_COVERED
from generation.refusal import RelevanceGate
from generation.verification import (
    DEFAULT_SUPPORT_MODEL,
    CitationVerifier,
    CrossEncoderSupportJudge,
    LLMJudgeVerifier,
    SupportJudge,
)
from ingest.catalog import Catalog
from ingest.pipeline import Ingestor
from retrieval.embedder import Embedder
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


class AnswerUnavailableError(RuntimeError):
    """Retrieval worked but the model server did not answer; the passages are still useful."""

    def __init__(self, message: str, passages: list[RetrievedChunk]) -> None:
        super().__init__(message)
        self.passages = passages


class QueryPipeline:
    """Retrieval, then (unless the passages are off-topic) generation, then verification."""

    def __init__(
        self,
        retriever: Retriever,
        generator: Generator,
        verifier: CitationVerifier | None = None,
        relevance: RelevanceGate | None = None,
    ) -> None:
        self.retriever = retriever
        self.generator = generator
        self.verifier = verifier
        self.relevance = relevance

    def run(
        self,
        question: str,
        principal: Principal,
        filters: SearchFilters | None = None,
        top_k: int | None = None,
    ) -> QueryResult:
        passages = self.retriever.run(question, principal, filters, top_k)
        if not self.is_relevant(question, passages):
            return QueryResult(answer=self.refusal(), passages=passages)
        try:
            answer = self.generator.generate(question, passages)
        except ModelUnavailableError as error:
            raise AnswerUnavailableError(str(error), passages) from error
        return QueryResult(answer=self._verify_and_decide(answer, passages), passages=passages)

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

    def _verify_and_decide(self, answer: Answer, passages: list[RetrievedChunk]) -> Answer:
        """Verify a generated answer; refuse when the model declined or no sentence is supported.

        Also the last step of the streaming path, once the whole answer is known.
        """
        if answer.refused or NOT_COVERED.rstrip(".") in answer.text or not answer.text.strip():
            return self.refusal(answer)
        if self.verifier is None:
            return answer
        verified = self.verifier.run(answer, passages)
        if not any(sentence.supported for sentence in verified.sentences):
            return self.refusal(verified)
        return verified


class Services:
    """One SQL engine, one vector store handle and one embedder per process."""

    def __init__(self, settings: Settings, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.engine = make_engine(settings)
        self.catalog = Catalog(make_session_factory(self.engine))
        self.store = open_vector_store(settings)
        self.embedder = embedder or Embedder(
            settings.embed_model, batch_size=settings.embed_batch_size
        )

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
        return QueryPipeline(self.retriever(), generator, self.verifier, self.relevance_gate)

    def retriever(self, mode: SearchMode | None = None, rerank: bool = True) -> Retriever:
        """The configured retriever; a baseline may override the mode and skip reranking."""
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
