"""Answer metrics, gold sections, run folders and summaries of the evaluation harness."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from core.models import Answer, AnswerSentence, Chunk, Citation
from eval.answers import citation_pairs, citation_recall, is_refusal, unsupported_sentences
from eval.datasets import (
    DatasetError,
    DatasetFormat,
    EvalQuestion,
    GoldSection,
    load_questions,
    resolve_gold_sections,
    section_chunk_ids,
)
from eval.ragas_scores import JudgeConfig, RagasScorer
from eval.report import compare_runs, render_report
from eval.run import QuestionRecord, RunFolder, RunInfo, summarize
from generation.prompt import NOT_COVERED
from retrieval.embedder import Embedder
from tests.helpers import SAMPLE

GOLDEN = SAMPLE / "golden.jsonl"


def chunk(chunk_id: str, document_id: str, section: str) -> Chunk:
    return Chunk(
        chunk_id=chunk_id,
        document_id=document_id,
        document_title=document_id,
        section=section,
        text="text",
        source="x",
        content_hash="h",
    )


CHUNKS = [
    chunk("a1", "gdpr", "CHAPTER IV > Section 2 > Article 33 — Notification of a breach"),
    chunk("a2", "gdpr", "CHAPTER IV > Section 2 > Article 33 — Notification of a breach"),
    chunk("b1", "gdpr", "CHAPTER IV > Section 2 > Article 3 — Territorial scope"),
    chunk("c1", "nist", "Access Control > AC-2 Account Management"),
    chunk("c2", "nist", "Access Control > AC-2 Account Management > AC-2(1) Automated"),
    chunk("c3", "nist", "Access Control > AC-20 Use of External Systems"),
]


def citation(n: int, chunk_id: str) -> Citation:
    return Citation(
        n=n,
        document_id="gdpr",
        document_title="GDPR",
        section="s",
        section_path="s",
        chunk_id=chunk_id,
        quote="q",
    )


class TestGoldSections:
    def test_a_section_matches_its_heading_and_not_a_longer_number(self) -> None:
        assert section_chunk_ids(GoldSection(document_id="gdpr", section="Article 33"), CHUNKS) == [
            "a1",
            "a2",
        ]
        assert section_chunk_ids(GoldSection(document_id="gdpr", section="Article 3"), CHUNKS) == [
            "b1"
        ]
        control = GoldSection(document_id="nist", section="AC-2")
        assert section_chunk_ids(control, CHUNKS) == ["c1", "c2"]

    def test_a_multi_chunk_section_is_one_gold_unit(self) -> None:
        question = EvalQuestion(
            question_id="q",
            question="?",
            gold_ids=[],
            gold_sections=[GoldSection(document_id="gdpr", section="Article 33")],
        )
        assert resolve_gold_sections([question], CHUNKS) == []
        assert question.gold_ids == ["a1", "a2"]
        assert question.gold_unit_ids() == {"a1"}
        assert question.to_units(["b1", "a2", "a1", "c1"]) == ["b1", "a1", "c1"]

    def test_unmatched_sections_are_reported(self) -> None:
        question = EvalQuestion(
            question_id="q",
            question="?",
            gold_ids=[],
            gold_sections=[GoldSection(document_id="gdpr", section="Article 99")],
        )
        assert resolve_gold_sections([question], CHUNKS) == ["q: gdpr Article 99"]

    def test_the_golden_set_loads_with_its_tags(self) -> None:
        fmt, questions = load_questions(GOLDEN)
        assert fmt is DatasetFormat.REGULUS
        assert len(questions) >= 40
        multi = [q for q in questions if "multi-document" in q.tags]
        unanswerable = [q for q in questions if not q.answerable]
        assert len(multi) * 3 >= len(questions)
        assert len(unanswerable) >= 5
        assert all(len({s.document_id for s in q.gold_sections}) >= 2 for q in multi)
        assert all(not q.gold_sections for q in unanswerable)
        assert all(q.reference_answer for q in questions)

    def test_a_record_without_gold_is_a_clear_error(self, tmp_path: Path) -> None:
        path = tmp_path / "q.jsonl"
        path.write_text(json.dumps({"question": "?", "gold_sections": [{"section": "x"}]}) + "\n")
        with pytest.raises(DatasetError, match="question 0"):
            load_questions(path)


class TestAnswerMetrics:
    def answer(self, *sentences: AnswerSentence, refused: bool = False) -> Answer:
        return Answer(
            text="t",
            citations=[citation(1, "a1"), citation(2, "c1")],
            model="m",
            sentences=list(sentences),
            refused=refused,
        )

    def test_citation_pairs_carry_their_sentence_verdict(self) -> None:
        answer = self.answer(
            AnswerSentence(text="x", citations=[1, 2], supported=True),
            AnswerSentence(text="y", citations=[1], supported=False),
            AnswerSentence(text="z", citations=[]),
        )
        assert citation_pairs(answer) == (2, 3)
        assert unsupported_sentences(answer) == (1, 2)

    def test_unverified_answers_have_no_figures(self) -> None:
        answer = self.answer(AnswerSentence(text="x", citations=[1]))
        assert citation_pairs(answer) is None
        assert unsupported_sentences(answer) is None

    def test_citation_recall_counts_gold_units(self) -> None:
        question = EvalQuestion(
            question_id="q", question="?", gold_ids=["a2", "b1"], gold_groups=[["a2", "a1"]]
        )
        assert citation_recall(question, self.answer()) == pytest.approx(0.5)

    def test_refusal_is_the_flag_or_the_fixed_reply(self) -> None:
        assert is_refusal(self.answer(refused=True))
        assert is_refusal(Answer(text=NOT_COVERED, citations=[], model="m"))
        assert not is_refusal(self.answer())


def record(
    qid: str, tags: list[str], answerable: bool = True, **metrics: float | None
) -> QuestionRecord:
    return QuestionRecord(
        question_id=qid,
        question="?",
        tags=tags,
        answerable=answerable,
        gold_documents=["gdpr"],
        gold_units=1,
        refused=metrics.pop("refused", 0.0) == 1.0,
        timings_ms={"total": 100.0},
        metrics=dict(metrics),
    )


INFO = RunInfo(run_id="r", dataset="d", dataset_sha256="x", format=DatasetFormat.REGULUS, k=10)


class TestSummary:
    def test_figures_and_nulls(self) -> None:
        records = [
            record("1", [], recall_at_10=1.0, citation_recall=1.0, fully_cited=1.0),
            record(
                "2",
                ["multi-document"],
                recall_at_10=0.5,
                citation_recall=0.5,
                fully_cited=0.0,
                refused=1.0,
            ),
            record("3", ["unanswerable"], answerable=False, refused=1.0),
            record("4", ["unanswerable"], answerable=False),
        ]
        summary = summarize(records, INFO)
        assert summary["recall_at_10"] == pytest.approx(0.75)
        assert summary["citation_recall"] == pytest.approx(0.75)
        assert summary["fully_cited_multi_document"] == 0.0
        assert summary["refusal_accuracy"] == pytest.approx(0.5)
        assert summary["false_refusal_rate"] == pytest.approx(0.5)
        # Nothing verified, no usage, no judge: no figure rather than a made-up one.
        assert summary["citation_precision"] is None
        assert summary["correct_and_fully_cited"] is None
        assert summary["cost_usd_per_question"] is None
        assert summary["ragas_faithfulness"] is None
        assert summary["latency_ms"]["total"] == {"p50": 100.0, "p95": 100.0}
        assert summary["by_tag"]["unanswerable"]["refusal_accuracy"] == pytest.approx(0.5)

    def test_citation_precision_is_micro_averaged_over_pairs(self) -> None:
        records = [
            record("1", [], citation_supported_pairs=1.0, citation_pairs=1.0),
            record("2", [], citation_supported_pairs=1.0, citation_pairs=3.0),
        ]
        assert summarize(records, INFO)["citation_precision"] == pytest.approx(0.5)


class TestRunFolder:
    def test_a_torn_last_line_is_dropped_and_the_rest_kept(self, tmp_path: Path) -> None:
        folder = RunFolder(tmp_path)
        folder.append(record("1", []))
        folder.append(record("2", []))
        with folder.results_path.open("a") as out:
            out.write('{"question_id": "3", "quest')  # the process died mid-write
        assert sorted(folder.records()) == ["1", "2"]
        folder.append(record("3", []))
        assert sorted(folder.records()) == ["1", "2", "3"]

    def test_a_later_record_replaces_an_earlier_one(self, tmp_path: Path) -> None:
        folder = RunFolder(tmp_path)
        first = record("1", [])
        first.error = "model unavailable"
        folder.append(first)
        folder.append(record("1", []))
        assert folder.records()["1"].error is None


class TestReportAndCompare:
    def folder(self, path: Path, **recall: float) -> RunFolder:
        folder = RunFolder(path)
        folder.save_info(INFO)
        for qid, value in recall.items():
            folder.append(record(qid, ["gdpr"], recall_at_10=value, citation_recall=value))
        return folder

    def test_compare_lists_moves_question_by_question(self, tmp_path: Path) -> None:
        a = self.folder(tmp_path / "a", q1=1.0, q2=0.0, q3=0.5)
        b = self.folder(tmp_path / "b", q1=0.0, q2=1.0, q4=1.0)
        comparison = compare_runs(a, b)
        assert {(c.question_id, c.metric) for c in comparison.regressed} == {
            ("q1", "recall_at_10"),
            ("q1", "citation_recall"),
        }
        assert {c.question_id for c in comparison.improved} == {"q2"}
        assert comparison.only_in_a == ["q3"] and comparison.only_in_b == ["q4"]
        assert comparison.figures["recall_at_10"] == pytest.approx((0.5, 2 / 3))

    def test_report_is_one_self_contained_page(self, tmp_path: Path) -> None:
        page = render_report(self.folder(tmp_path, q1=1.0, q2=0.5))
        assert page.startswith("<!doctype html>")
        assert page.count("data:image/png;base64,") == 4  # distributions, 2 breakdowns, latency
        assert "<td>recall_at_10</td><td>0.750</td>" in page
        assert "http" not in page.replace("http-equiv", "")  # nothing fetched from elsewhere

    def test_a_folder_without_a_run_is_a_clear_error(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError, match="no evaluation run"):
            render_report(RunFolder(tmp_path))


class _Judged:
    """Stands in for one judged ragas metric: slow, failing, unscorable or scoring."""

    def __init__(self, outcome: str) -> None:
        self.outcome = outcome

    async def ascore(self, **_: object) -> object:
        if self.outcome == "slow":
            await asyncio.sleep(5)
        if self.outcome == "fail":
            raise ValueError("judge returned no JSON")
        return SimpleNamespace(value=float("nan") if self.outcome == "nan" else 0.7)


def test_judged_metric_failures_are_recorded_never_borrowed(embedder: Embedder) -> None:
    judge = JudgeConfig(base_url="http://127.0.0.1:9/v1", metric_timeout_s=0.2)
    scorer = RagasScorer(embedder, judge)
    scorer._judge_metrics = {
        "ragas_faithfulness": _Judged("slow"),
        "ragas_response_relevancy": _Judged("fail"),
        "ragas_llm_context_precision": _Judged("nan"),
        "ragas_factual_correctness": _Judged("ok"),
    }
    scores = scorer.score("q?", "an answer", ["a passage"], ["a passage"], "a reference")
    assert scores.values["ragas_faithfulness"] is None
    assert scores.errors["ragas_faithfulness"] == "timed out after 0.2 s"
    assert scores.values["ragas_response_relevancy"] is None
    assert "no JSON" in scores.errors["ragas_response_relevancy"]
    assert scores.values["ragas_llm_context_precision"] is None
    assert scores.values["ragas_factual_correctness"] == pytest.approx(0.7)
    assert scores.values["ragas_non_llm_context_recall"] == pytest.approx(1.0)
    assert scores.values["ragas_semantic_similarity"] is not None
