"""The one query pipeline (retrieval, then generation, then verification) that the API, the CLI
and evaluation answer through; it writes each answered or failed query's audit row."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pydantic import BaseModel, Field

from core.audit import AuditLog
from core.injection import QuestionGuard
from core.models import Answer, ModelChoice, Principal, RetrievedChunk, SearchFilters
from core.timing import timed
from generation.base import Generator, ModelUnavailableError, StreamingGenerator
from generation.prompt import NOT_COVERED
from generation.refusal import RelevanceGate
from generation.routing import ModelRouter
from generation.verification import CitationVerifier
from retrieval.retriever import Retriever

log = logging.getLogger(__name__)


class QueryResult(BaseModel):
    answer: Answer
    passages: list[RetrievedChunk]
    timings: dict[str, float] = Field(
        default_factory=dict,
        description="Milliseconds per stage: retrieval, rerank, generation, verification.",
    )
    query_id: int | None = Field(default=None, description="The query's audit row, when audited.")


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


class QueryPipeline:
    """Retrieval, then (unless the passages are off-topic) generation by the routed model, then
    `_finish`: verification and the refusal decision, the same for streamed and plain answers.
    With an audit log, every answered or failed query leaves one row, whose id the result carries.
    """

    def __init__(
        self,
        retriever: Retriever,
        generator: Generator,
        premium: Generator | None = None,
        router: ModelRouter | None = None,
        guard: QuestionGuard | None = None,
        verifier: CitationVerifier | None = None,
        relevance: RelevanceGate | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.retriever = retriever
        self.generator = generator
        self.premium = premium
        self.router = router or ModelRouter()
        self.guard = guard
        self.verifier = verifier
        self.relevance = relevance
        self.audit = audit

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
        record = _QueryRecord(self.audit, principal, question, filters)
        timings: dict[str, float] = {}
        with record.failures():
            passages = self.retriever.run(question, principal, filters, top_k, timings)
            record.passages = passages
            if not self._relevant(question, passages, timings):
                answer = self.refusal()
            else:
                generator = self.route(question, passages, model)
                with timed(timings, "generation"), _unavailable(passages):
                    answer = generator.generate(question, passages)
            result = self._result(question, answer, passages, timings)
        return record.answered(result)

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
        record = _QueryRecord(self.audit, principal, question, filters)
        timings: dict[str, float] = {}
        with record.failures():
            passages = self.retriever.run(question, principal, filters, top_k, timings)
            record.passages = passages
            yield PassagesEvent(passages)
            if not self._relevant(question, passages, timings):
                not_covered = self.refusal()
                yield TokenEvent(not_covered.text)
                yield FinalEvent(
                    record.answered(self._result(question, not_covered, passages, timings))
                )
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
                    raise ModelUnavailableError(
                        f"{generator.name} ended its stream without an answer"
                    )
            timings["generation"] = (time.perf_counter() - start) * 1000
            result = self._result(question, answer, passages, timings)
        yield FinalEvent(record.answered(result))

    def route(
        self, question: str, passages: list[RetrievedChunk], model: ModelChoice = ModelChoice.AUTO
    ) -> Generator:
        """The generator the routing rule picks; the cheap one when no premium is configured."""
        if self.premium is None:
            return self.generator
        route = self.router.run(question, passages, model)
        log.info("routed to %s model: %s", "premium" if route.premium else "cheap", route.reason)
        return self.premium if route.premium else self.generator

    def _result(
        self,
        question: str,
        answer: Answer,
        passages: list[RetrievedChunk],
        timings: dict[str, float],
    ) -> QueryResult:
        with timed(timings, "verification"):
            answer = self._finish(question, answer, passages)
        return QueryResult(answer=answer, passages=passages, timings=timings)

    def _relevant(
        self, question: str, passages: list[RetrievedChunk], timings: dict[str, float]
    ) -> bool:
        with timed(timings, "relevance"):
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


class _QueryRecord:
    """The query's audit row, written once: when it is answered, or when it fails after the
    question passed screening (a model server failure, or an unexpected error)."""

    def __init__(
        self,
        audit: AuditLog | None,
        principal: Principal,
        question: str,
        filters: SearchFilters | None,
    ) -> None:
        self.audit, self.principal, self.question, self.filters = (
            audit,
            principal,
            question,
            filters,
        )
        self.passages: list[RetrievedChunk] = []
        self.started = time.perf_counter()

    def _write(self, answer: Answer | None, error: str | None = None) -> int | None:
        if self.audit is None:
            return None
        elapsed_ms = (time.perf_counter() - self.started) * 1000
        return self.audit.record_query(
            self.principal, self.question, self.filters, answer, self.passages, elapsed_ms, error
        )

    def answered(self, result: QueryResult) -> QueryResult:
        query_id = self._write(result.answer)
        return result.model_copy(update={"query_id": query_id})

    @contextmanager
    def failures(self) -> Iterator[None]:
        try:
            yield
        except AnswerUnavailableError as error:
            self.passages = error.passages or self.passages
            self._write(None, str(error))
            raise
        except ValueError:
            raise  # a bad request (e.g. an empty question): nothing was asked
        except Exception:
            self._write(None, "internal error")
            raise


@contextmanager
def _unavailable(passages: list[RetrievedChunk]) -> Iterator[None]:
    """A model server failure becomes an AnswerUnavailableError that keeps the passages."""
    try:
        yield
    except ModelUnavailableError as error:
        raise AnswerUnavailableError(str(error), passages) from error
