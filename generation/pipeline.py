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
from core.models import (
    Answer,
    AnswerPart,
    ModelChoice,
    PartStatus,
    Principal,
    RetrievedChunk,
    SearchFilters,
)
from core.sentences import split_sentences
from core.timing import timed
from generation.analysis import QuestionAnalysis, QuestionAnalyzer, QuestionPart
from generation.base import Generator, ModelUnavailableError, StreamingGenerator
from generation.context import PartRetriever
from generation.prompt import NOT_COVERED, not_covered_sentence
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
    """Question analysis, retrieval per part, coverage per part, then generation by the routed
    model of what is covered, then `_finish`: verification, the parts' outcome and the refusal
    decision, the same for streamed and plain answers. With an audit log, every answered or failed
    query leaves one row, whose id the result carries.
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
        analyzer: QuestionAnalyzer | None = None,
    ) -> None:
        self.retriever = retriever
        self.context = PartRetriever(retriever)
        self.generator = generator
        self.premium = premium
        self.router = router or ModelRouter()
        self.guard = guard
        self.verifier = verifier
        self.relevance = relevance
        self.audit = audit
        self.analyzer = analyzer or QuestionAnalyzer()

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
            passages, parts = self._retrieve(question, principal, filters, top_k, timings)
            record.passages = passages
            if not _any_covered(parts):
                answer = self.refusal(parts=parts)
            else:
                generator = self.route(question, passages, model)
                with timed(timings, "generation"), _unavailable(passages):
                    answer = generator.generate(question, passages, parts)
            result = self._result(question, answer, passages, parts, timings)
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
            passages, parts = self._retrieve(question, principal, filters, top_k, timings)
            record.passages = passages
            yield PassagesEvent(passages)
            if not _any_covered(parts):
                not_covered = self.refusal(parts=parts)
                yield TokenEvent(not_covered.text)
                result = self._result(question, not_covered, passages, parts, timings)
                yield FinalEvent(record.answered(result))
                return
            generator = self.route(question, passages, model)
            start = time.perf_counter()
            answer: Answer | None = None
            with _unavailable(passages):
                if isinstance(generator, StreamingGenerator):
                    for item in generator.stream(question, passages, parts):
                        if isinstance(item, Answer):
                            answer = item
                        else:
                            yield TokenEvent(item)
                else:
                    answer = generator.generate(question, passages, parts)
                    yield TokenEvent(answer.text)
                if answer is None:
                    raise ModelUnavailableError(
                        f"{generator.name} ended its stream without an answer"
                    )
            timings["generation"] = (time.perf_counter() - start) * 1000
            result = self._result(question, answer, passages, parts, timings)
        yield FinalEvent(record.answered(result))

    def analyze(self, question: str) -> QuestionAnalysis:
        return self.analyzer.run(question)

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
    ) -> tuple[list[RetrievedChunk], list[AnswerPart]]:
        """The passages for every part, and each part marked not covered where nothing retrieved
        for it is close enough to answer from."""
        with timed(timings, "analysis"):
            analysis = self.analyze(question)
        context = self.context.run(analysis, principal, filters, top_k, timings)
        with timed(timings, "relevance"):
            parts = [
                part
                if self.covers(analysis, asked, [context.passages[n - 1] for n in part.passages])
                else part.model_copy(update={"status": PartStatus.NOT_COVERED})
                for asked, part in zip(analysis.parts, context.parts, strict=True)
            ]
        return context.passages, parts

    def covers(
        self, analysis: QuestionAnalysis, part: QuestionPart, passages: list[RetrievedChunk]
    ) -> bool:
        """Whether the part's passages answer it: close enough to it (with the question's scenario),
        and, unless the part names an indexed document itself, about no law or place they never
        mention, in its words or in those of the clauses before it in its sentence ("Under the
        DPF, how do we certify, and how often must we renew?" asks about the DPF twice)."""
        if not passages:
            return False
        if self.relevance is None:
            return True
        known = None if part.named else analysis.known_names
        return self.relevance.run(part.query, passages, known, asked=part.about)

    def _result(
        self,
        question: str,
        answer: Answer,
        passages: list[RetrievedChunk],
        parts: list[AnswerPart],
        timings: dict[str, float],
    ) -> QueryResult:
        with timed(timings, "verification"):
            answer = self._finish(question, answer, passages, parts)
        return QueryResult(answer=answer, passages=passages, timings=timings)

    def refusal(
        self, answer: Answer | None = None, parts: list[AnswerPart] | None = None
    ) -> Answer:
        """ "Not covered", keeping the model, usage and per-sentence verdicts of a failed answer;
        every part not answered."""
        refused_parts = [
            part.model_copy(
                update={
                    "status": PartStatus.UNANSWERED
                    if part.status is PartStatus.ANSWERED
                    else part.status
                }
            )
            for part in (parts if parts is not None else answer.parts if answer else [])
        ]
        if answer is None:
            return Answer(
                text=NOT_COVERED,
                citations=[],
                model=self.generator.name,
                refused=True,
                parts=refused_parts,
            )
        return answer.model_copy(
            update={"text": NOT_COVERED, "citations": [], "refused": True, "parts": refused_parts}
        )

    def _finish(
        self,
        question: str,
        answer: Answer,
        passages: list[RetrievedChunk],
        parts: list[AnswerPart],
    ) -> Answer:
        """What every answer goes through before it is returned, streamed or not: verification of
        its sentences against the passages they cite; each sentence assigned to the part it
        answers; refusal when the model declined or no sentence is supported; the parts nothing
        answers named in the text."""
        answer = _without_declines(answer.model_copy(update={"parts": parts}))
        if answer.refused or not answer.text.strip():
            return self.refusal(answer)
        if self.verifier is not None:
            answer = self.verifier.run(answer, passages)
            if not any(sentence.supported for sentence in answer.sentences):
                return self.refusal(answer)
        return with_parts_answered(answer, parts)


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


def with_parts_answered(answer: Answer, parts: list[AnswerPart]) -> Answer:
    """The answer with each sentence assigned to a part (the first part whose passages it cites,
    unless the generator said), each part's status, and a closing sentence naming the parts the
    documents do not address."""
    sentences = []
    for sentence in answer.sentences:
        if sentence.part is None:
            owner = next(
                (i for i, p in enumerate(parts, 1) if set(sentence.citations) & set(p.passages)),
                None,
            )
            sentence = sentence.model_copy(update={"part": owner})
        sentences.append(sentence)
    answered = {s.part for s in sentences if s.supported is not False and s.citations}
    if not sentences and answer.citations:  # an answer with no sentence records: trust its text
        answered = set(range(1, len(parts) + 1))
    final_parts = []
    for number, part in enumerate(parts, start=1):
        status = part.status
        if status is PartStatus.ANSWERED and number not in answered:
            status = PartStatus.UNANSWERED
        final_parts.append(part.model_copy(update={"status": status}))
    text = answer.text
    missing = [p for p in final_parts if p.status is not PartStatus.ANSWERED]
    if missing and len(parts) > 1:
        text += " " + not_covered_sentence([p.text for p in missing])
    return answer.model_copy(update={"sentences": sentences, "parts": final_parts, "text": text})


def _without_declines(answer: Answer) -> Answer:
    """The answer without the model's own "not covered" sentences: a model that declines one part
    still answers the others (the parts' outcome names what is left out)."""
    decline = NOT_COVERED.rstrip(".")
    if decline not in answer.text:
        return answer
    kept = [s for s in split_sentences(answer.text) if decline not in s]
    if not kept:
        return answer.model_copy(update={"text": ""})
    sentences = [s for s in answer.sentences if decline not in s.text]
    return answer.model_copy(update={"text": " ".join(kept), "sentences": sentences})


def _any_covered(parts: list[AnswerPart]) -> bool:
    return any(part.status is PartStatus.ANSWERED for part in parts)
