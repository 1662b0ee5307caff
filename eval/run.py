"""End-to-end evaluation runs: every question through the product's own QueryPipeline.

A run lives in one folder: `run.json` (what is evaluated, status, progress), `results.jsonl` (one
record per question, appended and flushed as each finishes) and `summary.json` (the figures).
Running again into the same folder skips the questions already recorded, so a crashed or stopped
run continues where it stopped; the summary always covers every recorded question.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import os
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from core.models import Answer, AnswerPart, Chunk, Principal, Usage
from eval.answers import (
    citation_pairs,
    citation_recall,
    cited_chunk_ids,
    is_refusal,
    key_fact_recall,
    mean,
    micro,
    percentile,
    unsupported_sentences,
)
from eval.datasets import (
    MULTI_DOCUMENT,
    DatasetFormat,
    EvalQuestion,
    PassageIndex,
    load_questions,
    resolve_gold_sections,
)
from eval.metrics import average_precision_at_k, ndcg_at_k, recall_at_k, reciprocal_rank
from eval.ragas_scores import JUDGE_METRICS, NON_LLM_METRICS, RagasScorer
from generation.citations import strip_markers
from generation.pipeline import AnswerUnavailableError, QueryPipeline
from retrieval.store import VectorStore

RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.json"
RUN_FILE = "run.json"
# A judged factual-correctness F1 at or above this counts the answer as correct.
CORRECT_THRESHOLD = 0.5


class RunStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"  # stopped at its owner's request; kept as far as it got
    INTERRUPTED = "interrupted"  # stopped by a shutdown; resumed at the next start


class RunConflictError(ValueError):
    """The output folder holds a run of a different dataset or configuration."""


class RunInfo(BaseModel):
    """What a run evaluates and how far it got (`run.json`)."""

    run_id: str
    dataset: str
    dataset_sha256: str
    format: DatasetFormat
    corpus: str | None = None
    k: int
    top_k: int | None = None
    judge_model: str | None = None
    requested_by: str = "cli"
    groups: list[str] = Field(default_factory=list, description="Whose documents it searched.")
    status: RunStatus = RunStatus.QUEUED
    total: int = 0
    done: int = 0
    error: str | None = None
    created_at: dt.datetime = Field(default_factory=lambda: dt.datetime.now(dt.UTC))
    finished_at: dt.datetime | None = None

    def identity(self) -> tuple[object, ...]:
        """What must match for a rerun to continue this run rather than mix two."""
        return (self.dataset_sha256, self.format, self.k, self.top_k, self.judge_model)


class SentenceRecord(BaseModel):
    text: str
    cited_chunk_ids: list[str]
    support: float | None = None
    supported: bool | None = None
    part: int | None = Field(default=None, description="The question part it answers.")


class QuestionRecord(BaseModel):
    """One question's outcome: the inputs, what the pipeline returned and its metrics."""

    question_id: str
    question: str
    tags: list[str]
    answerable: bool
    gold_documents: list[str]
    gold_units: int
    reference_answer: str | None = None
    ranked_ids: list[str] = Field(default_factory=list, description="Top k, as gold units.")
    passage_ids: list[str] = Field(default_factory=list, description="What the answer saw.")
    answer: str = ""
    model: str | None = None
    refused: bool | None = None
    cited_ids: list[str] = Field(default_factory=list)
    sentences: list[SentenceRecord] = Field(default_factory=list)
    parts: list[AnswerPart] = Field(default_factory=list, description="The question's parts.")
    usage: Usage | None = None
    timings_ms: dict[str, float] = Field(default_factory=dict)
    error: str | None = None
    metrics: dict[str, float | None] = Field(default_factory=dict)
    metric_errors: dict[str, str] = Field(default_factory=dict)


def load_eval_questions(
    path: Path,
    dataset_format: DatasetFormat | None,
    store: VectorStore,
    corpus_files: Iterable[Path] = (),
    groups: Collection[str] | None = None,
) -> tuple[DatasetFormat, list[EvalQuestion], dict[str, Chunk], list[str]]:
    """Questions with gold resolved to this index's chunk ids, the index's chunks, and warnings.

    With `groups`, only the chunks those groups may read count: gold in a document the evaluator
    may not read resolves to nothing, exactly like gold that does not exist, so no figure tells
    the two apart.
    """
    fmt, questions = load_questions(path, dataset_format, PassageIndex(corpus_files))
    readable = None if groups is None else set(groups)
    chunks = {
        chunk.chunk_id: chunk
        for chunk in store.chunks()
        if readable is None or readable.intersection(chunk.access_groups)
    }
    warnings = [
        f"gold section not in the index: {s}"
        for s in resolve_gold_sections(questions, list(chunks.values()))
    ]
    missing = sum(1 for q in questions if q.answerable and not any(i in chunks for i in q.gold_ids))
    if missing:
        warnings.append(f"{missing} answerable questions have no gold passage in this index")
    return fmt, questions, chunks, warnings


class RunFolder:
    """The files of one run; appends are flushed and synced so a crash loses at most one record."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def results_path(self) -> Path:
        return self.path / RESULTS_FILE

    def info(self) -> RunInfo | None:
        file = self.path / RUN_FILE
        return RunInfo.model_validate_json(file.read_text()) if file.is_file() else None

    def save_info(self, info: RunInfo) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        temporary = self.path / f"{RUN_FILE}.tmp"
        temporary.write_text(info.model_dump_json(indent=2))
        temporary.replace(self.path / RUN_FILE)

    def records(self) -> dict[str, QuestionRecord]:
        """The latest record per question; a torn last line (a crash mid-write) is dropped."""
        records: dict[str, QuestionRecord] = {}
        if not self.results_path.is_file():
            return records
        lines = self.results_path.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                record = QuestionRecord.model_validate_json(line)
            except ValueError:
                if n == len(lines) - 1:
                    self._truncate_torn_line(lines[:n])
                    break
                raise
            records[record.question_id] = record
        return records

    def _truncate_torn_line(self, good: list[str]) -> None:
        self.results_path.write_text("".join(f"{line}\n" for line in good), encoding="utf-8")

    def append(self, record: QuestionRecord) -> None:
        with self.results_path.open("a", encoding="utf-8") as out:
            out.write(record.model_dump_json() + "\n")
            out.flush()
            os.fsync(out.fileno())

    def summary(self) -> dict[str, Any] | None:
        file = self.path / SUMMARY_FILE
        return json.loads(file.read_text()) if file.is_file() else None

    def save_summary(self, summary: dict[str, Any]) -> None:
        (self.path / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))


class EvalRunner:
    """Runs questions through a QueryPipeline as `principal` and scores every answer.

    Ranking metrics use the pipeline's own retriever at depth `k`; the answer is generated from the
    pipeline's usual `top_k` passages, exactly as the API would answer.
    """

    def __init__(
        self,
        pipeline: QueryPipeline,
        principal: Principal,
        chunks: Mapping[str, Chunk],
        scorer: RagasScorer | None = None,
        k: int = 10,
        top_k: int | None = None,
    ) -> None:
        if k < 1 or (top_k is not None and top_k < 1):
            raise ValueError("k and top_k must be at least 1")
        self.pipeline = pipeline
        self.principal = principal
        self.chunks = chunks
        self.scorer = scorer
        self.k = k
        self.top_k = top_k

    def run(
        self,
        questions: list[EvalQuestion],
        folder: RunFolder,
        info: RunInfo,
        on_question: Callable[[QuestionRecord], None] | None = None,
        should_stop: Callable[[], RunStatus | None] | None = None,
    ) -> dict[str, Any]:
        """Evaluate the questions not yet recorded in `folder`; returns (and saves) the summary.

        `should_stop` is asked before each question: a status (cancelled, interrupted) ends the
        run there, with that status and the summary of what was recorded (not saved).
        """
        previous = folder.info()
        if previous is not None and previous.identity() != info.identity():
            raise RunConflictError(
                f"{folder.path} holds a run of {previous.dataset} with other settings; "
                "choose another output folder"
            )
        if previous is not None:
            info = info.model_copy(
                update={"run_id": previous.run_id, "created_at": previous.created_at}
            )
        records = folder.records()
        wanted = {q.question_id for q in questions}
        done = {qid for qid, r in records.items() if r.error is None and qid in wanted}
        info = info.model_copy(
            update={"status": RunStatus.RUNNING, "total": len(questions), "done": len(done)}
        )
        folder.save_info(info)
        try:
            for question in questions:
                if question.question_id in done:
                    continue
                if should_stop is not None and (stopped := should_stop()) is not None:
                    info.status = stopped
                    if stopped is RunStatus.CANCELLED:
                        info.finished_at = dt.datetime.now(dt.UTC)
                    folder.save_info(info)
                    return summarize(self._recorded(questions, records), info)
                record = self.evaluate(question)
                folder.append(record)
                records[record.question_id] = record
                info.done += 1
                folder.save_info(info)
                if on_question:
                    on_question(record)
        except BaseException as error:
            info.status, info.error = RunStatus.FAILED, f"{type(error).__name__}: {error}"
            folder.save_info(info)
            raise
        summary = summarize(self._recorded(questions, records), info)
        folder.save_summary(summary)
        info.status, info.finished_at = RunStatus.SUCCEEDED, dt.datetime.now(dt.UTC)
        folder.save_info(info)
        return summary

    @staticmethod
    def _recorded(
        questions: list[EvalQuestion], records: dict[str, QuestionRecord]
    ) -> list[QuestionRecord]:
        return [records[q.question_id] for q in questions if q.question_id in records]

    def evaluate(self, question: EvalQuestion) -> QuestionRecord:
        gold_documents = sorted(
            {self.chunks[i].document_id for i in question.gold_ids if i in self.chunks}
            | {s.document_id for s in question.gold_sections}
        )
        # Gold spread over several documents makes a question multi-document, tagged or not.
        multi = [MULTI_DOCUMENT] if len(gold_documents) > 1 else []
        record = QuestionRecord(
            question_id=question.question_id,
            question=question.question,
            tags=list(dict.fromkeys([*question.tags, *multi])),
            answerable=question.answerable,
            gold_documents=gold_documents,
            gold_units=len(question.gold_unit_ids()),
            reference_answer=question.reference_answer,
        )
        ranked = self.pipeline.retriever.run(question.question, self.principal, top_k=self.k)
        record.ranked_ids = question.to_units(hit.chunk.chunk_id for hit in ranked)
        started = time.perf_counter()
        try:
            result = self.pipeline.run(question.question, self.principal, top_k=self.top_k)
        except AnswerUnavailableError as error:
            record.error = f"model unavailable: {error}"
            return record
        total_ms = (time.perf_counter() - started) * 1000
        answer = result.answer
        record.passage_ids = [p.chunk.chunk_id for p in result.passages]
        record.answer, record.model, record.usage = answer.text, answer.model, answer.usage
        record.refused = is_refusal(answer)
        record.cited_ids = cited_chunk_ids(answer)
        record.parts = answer.parts
        record.sentences = _sentences(answer, [p.chunk.chunk_id for p in result.passages])
        stage_timings = getattr(result, "timings", None) or {}
        record.timings_ms = {str(k): float(v) for k, v in dict(stage_timings).items()} | {
            "total": total_ms
        }
        record.metrics = self._metrics(question, record, answer)
        if self.scorer is not None and not record.refused and question.answerable:
            scores = self.scorer.score(
                question.question,
                strip_markers(answer.text),
                [p.chunk.text for p in result.passages],
                [self.chunks[i].text for i in question.gold_ids if i in self.chunks],
                question.reference_answer,
            )
            record.metrics |= scores.values
            record.metric_errors = scores.errors
        correct = record.metrics.get("ragas_factual_correctness")
        if self.scorer is not None and self.scorer.judge is not None and correct is not None:
            record.metrics["judged_correct"] = float(correct >= CORRECT_THRESHOLD)
        record.metrics["correct_and_fully_cited"] = _correct_and_fully_cited(record)
        return record

    def _metrics(
        self, question: EvalQuestion, record: QuestionRecord, answer: Answer
    ) -> dict[str, float | None]:
        k, gold = self.k, question.gold_unit_ids()
        metrics: dict[str, float | None] = {}
        if question.answerable and gold:
            ranked = record.ranked_ids
            metrics |= {
                f"recall_at_{k}": recall_at_k(ranked, gold, k),
                f"map_at_{k}": average_precision_at_k(ranked, gold, k),
                f"ndcg_at_{k}": ndcg_at_k(ranked, gold, k),
                "mrr": reciprocal_rank(ranked, gold),
                f"all_gold_at_{k}": float(gold <= set(ranked[:k])),
                "citation_recall": citation_recall(question, answer),
            }
            metrics["fully_cited"] = float(metrics["citation_recall"] == 1.0)
            metrics["key_fact_recall"] = key_fact_recall(question, answer)
        pairs = citation_pairs(answer)
        unsupported = unsupported_sentences(answer)
        metrics |= {
            "citation_supported_pairs": float(pairs[0]) if pairs else None,
            "citation_pairs": float(pairs[1]) if pairs else None,
            "unsupported_sentences": float(unsupported[0]) if unsupported else None,
            "verified_sentences": float(unsupported[1]) if unsupported else None,
        }
        return metrics


def _sentences(answer: Answer, passage_ids: list[str]) -> list[SentenceRecord]:
    return [
        SentenceRecord(
            text=s.text,
            cited_chunk_ids=[passage_ids[n - 1] for n in s.citations if 1 <= n <= len(passage_ids)],
            support=s.support,
            supported=s.supported,
            part=s.part,
        )
        for s in answer.sentences
    ]


def _correct_and_fully_cited(record: QuestionRecord) -> float | None:
    """Cites every gold passage, no unsupported sentence and, when judged, correct.

    None when it cannot be decided: an unanswerable question, or sentences nobody verified.
    """
    metrics = record.metrics
    if metrics.get("fully_cited") is None or metrics.get("verified_sentences") is None:
        return None
    ok = metrics["fully_cited"] == 1.0 and metrics["unsupported_sentences"] == 0
    if "judged_correct" in metrics:
        ok = ok and metrics["judged_correct"] == 1.0
    return float(ok)


def summarize(records: list[QuestionRecord], info: RunInfo) -> dict[str, Any]:
    """The run's figures: keys name the metric; None where nothing could be measured."""
    k = info.k
    answered = [r for r in records if r.error is None]
    summary: dict[str, Any] = {
        "run_id": info.run_id,
        "dataset": info.dataset,
        "format": info.format.value,
        "corpus": info.corpus,
        "k": k,
        "top_k": info.top_k,
        "judge_model": info.judge_model,
        "models": sorted({r.model for r in answered if r.model}),
        "n_questions": len(records),
        "n_errors": len(records) - len(answered),
    }
    summary |= _figures(answered, k)
    summary["by_tag"] = {
        tag: _figures([r for r in answered if tag in r.tags], k)
        for tag in sorted({t for r in answered for t in r.tags})
    }
    summary["by_document"] = {
        doc: _figures([r for r in answered if doc in r.gold_documents], k)
        for doc in sorted({d for r in answered for d in r.gold_documents})
    }
    return summary


def _figures(records: list[QuestionRecord], k: int) -> dict[str, Any]:
    def values(name: str, subset: list[QuestionRecord] | None = None) -> list[float | None]:
        return [r.metrics.get(name) for r in (records if subset is None else subset)]

    answerable = [r for r in records if r.answerable]
    unanswerable = [r for r in records if not r.answerable]
    multi = [r for r in answerable if MULTI_DOCUMENT in r.tags]
    figures: dict[str, Any] = {
        "n": len(records),
        "n_answerable": len(answerable),
        "n_unanswerable": len(unanswerable),
        "n_multi_document": len(multi),
    }
    for name in (f"recall_at_{k}", f"map_at_{k}", f"ndcg_at_{k}", "mrr", f"all_gold_at_{k}"):
        figures[name] = mean(values(name))
    figures["citation_precision"] = micro(
        [_pair(r, "citation_supported_pairs", "citation_pairs") for r in records]
    )
    figures["citation_recall"] = mean(values("citation_recall", answerable))
    figures["unsupported_sentence_rate"] = micro(
        [_pair(r, "unsupported_sentences", "verified_sentences") for r in records]
    )
    figures["fully_cited"] = mean(values("fully_cited", answerable))
    figures["key_fact_recall"] = mean(values("key_fact_recall", answerable))
    figures["fully_cited_multi_document"] = mean(values("fully_cited", multi))
    figures["correct_and_fully_cited"] = mean(values("correct_and_fully_cited", multi))
    figures["judged_correct"] = mean(values("judged_correct", answerable))
    figures["refusal_accuracy"] = (
        sum(bool(r.refused) for r in unanswerable) / len(unanswerable) if unanswerable else None
    )
    figures["false_refusal_rate"] = (
        sum(bool(r.refused) for r in answerable) / len(answerable) if answerable else None
    )
    stages = sorted({s for r in records for s in r.timings_ms})
    figures["latency_ms"] = {
        stage: {
            "p50": percentile([r.timings_ms[stage] for r in records if stage in r.timings_ms], 0.5),
            "p95": percentile(
                [r.timings_ms[stage] for r in records if stage in r.timings_ms], 0.95
            ),
        }
        for stage in stages
    }
    usages = [r.usage for r in records if r.usage is not None]
    figures["prompt_tokens_per_question"] = mean([u.prompt_tokens for u in usages])
    figures["completion_tokens_per_question"] = mean([u.completion_tokens for u in usages])
    figures["cost_usd_per_question"] = mean([u.cost_usd for u in usages])
    figures["cost_usd_total"] = sum(u.cost_usd for u in usages) if usages else None
    for name in NON_LLM_METRICS + JUDGE_METRICS:
        figures[name] = mean(values(name))
    return figures


def _pair(record: QuestionRecord, numerator: str, denominator: str) -> tuple[int, int] | None:
    n, d = record.metrics.get(numerator), record.metrics.get(denominator)
    return None if n is None or d is None else (int(n), int(d))
