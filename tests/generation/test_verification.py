"""Citation verification with the shipped support model, refusal and the LLM judge code path."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.services import Services
from core.models import Answer, RetrievedChunk, UnsupportedPolicy
from eval.training.train_support import perturb, tagged_sentences
from generation.citations import citations_for
from generation.prompt import NOT_COVERED
from generation.verification import (
    CitationVerifier,
    CrossEncoderSupportJudge,
    LLMJudgeVerifier,
    passage_windows,
)
from retrieval.embedder import Embedder
from tests.helpers import BREACH_PASSAGES as PASSAGES
from tests.helpers import BREACH_QUESTION, make_settings, services_for

SUPPORTED = (
    "The controller must notify a personal data breach to the supervisory authority "
    "within 72 hours."
)
UNRELATED = "Credit institutions must hold common equity tier 1 capital of at least 4.5 percent."


@pytest.fixture(scope="module")
def judge() -> CrossEncoderSupportJudge:
    return CrossEncoderSupportJudge()


def answer_citing(text: str, passages: list[RetrievedChunk]) -> Answer:
    return Answer(text=text, citations=citations_for(text, passages), model="test")


class TestSupportModel:
    def test_backed_sentence_passes_and_unrelated_or_negated_one_fails(
        self, judge: CrossEncoderSupportJudge
    ) -> None:
        article_33 = PASSAGES[0].chunk.text
        negated = SUPPORTED.replace("must notify", "must not notify")
        supported, unrelated, perturbed = judge.score(
            [(SUPPORTED, article_33), (UNRELATED, article_33), (negated, article_33)]
        )
        assert supported >= judge.threshold > unrelated
        assert perturbed < supported
        assert 0 < judge.threshold < 1  # the calibrated one shipped with the weights


class TestCitationVerifier:
    def test_marks_sentences_and_scores_the_answer(self, judge: CrossEncoderSupportJudge) -> None:
        answer = answer_citing(f"{SUPPORTED} [1] {UNRELATED} [1]", PASSAGES)
        verified = CitationVerifier(judge).run(answer, PASSAGES)
        assert [s.supported for s in verified.sentences] == [True, False]
        assert verified.sentences[0].citations == [1]
        assert verified.support_score == 0.5
        assert UNRELATED in verified.text  # flagged, not dropped

    def test_drop_removes_what_nothing_supports(self, judge: CrossEncoderSupportJudge) -> None:
        answer = answer_citing(f"{SUPPORTED} [1] {UNRELATED} [2]", PASSAGES)
        verifier = CitationVerifier(judge, unsupported=UnsupportedPolicy.DROP)
        verified = verifier.run(answer, PASSAGES)
        assert UNRELATED not in verified.text
        assert [s.text for s in verified.sentences] == [SUPPORTED]
        assert [c.n for c in verified.citations] == [1]
        assert verified.support_score == 0.5

    def test_wrong_citation_moves_to_the_passage_that_backs_it(
        self, judge: CrossEncoderSupportJudge
    ) -> None:
        answer = answer_citing(f"{SUPPORTED} [2]", PASSAGES)
        assert [c.n for c in answer.citations] == [2]
        verified = CitationVerifier(judge).run(answer, PASSAGES)
        assert verified.sentences[0].citations == [1]
        assert verified.sentences[0].supported is True
        assert verified.text.endswith("[1]")
        assert [(c.n, c.chunk_id) for c in verified.citations] == [(1, "art-33")]

    def test_without_reattribution_a_wrong_citation_is_unsupported(
        self, judge: CrossEncoderSupportJudge
    ) -> None:
        answer = answer_citing(f"{SUPPORTED} [2]", PASSAGES)
        verified = CitationVerifier(judge, reattribute=False).run(answer, PASSAGES)
        assert verified.sentences[0].supported is False
        assert verified.sentences[0].citations == [2]

    def test_long_passages_are_cut_into_overlapping_windows(self) -> None:
        text = " ".join(f"Sentence number {i} says something." for i in range(60))
        windows = passage_windows(text, 40)
        assert len(windows) > 1
        assert all(len(w.split()) <= 45 for w in windows)
        assert windows[1].startswith("Sentence number 7 says")  # one sentence of overlap
        assert windows[0].endswith("Sentence number 7 says something.")


class TestTrainingData:
    def test_answer_tags_become_per_sentence_passage_ids(self) -> None:
        answer = "First claim here [#SRC:aaaaaaaa-0000-0000-0000-000000000000]. Second claim."
        sentences = tagged_sentences(answer)
        assert sentences[0] == ("First claim here.", {"aaaaaaaa-0000-0000-0000-000000000000"})
        assert sentences[1] == ("Second claim.", set())

    def test_perturbations_change_what_the_sentence_claims(self) -> None:
        rng = random.Random(0)
        assert perturb("A firm must report it.", rng, []) == "A firm must not report it."
        assert perturb("Report within 30 days.", rng, []) not in (None, "Report within 30 days.")
        terms = ["Listing Authority", "Regulator"]
        assert (
            perturb("Approval by the Listing Authority.", rng, terms)
            == "Approval by the Regulator."
        )


@pytest.fixture(scope="module")
def services(ingested_dir: Path, embedder: Embedder) -> Iterator[Services]:
    with services_for(make_settings(ingested_dir), embedder) as services:
        yield services


@pytest.mark.integration
class TestRefusal:
    """Embedder, embedded Qdrant with GDPR and ePrivacy, extractive answers, shipped verifier."""

    def test_off_topic_question_is_refused_with_the_closest_passages(
        self, services: Services
    ) -> None:
        pipeline = services.query_pipeline()
        result = pipeline.run(
            "What are the capital adequacy requirements for banks under Basel III?",
            services.anonymous_principal(),
        )
        assert result.answer.refused
        assert result.answer.text == NOT_COVERED
        assert result.answer.citations == []
        assert result.passages  # the closest passages stay for the analyst to judge

    def test_answerable_question_is_answered_and_verified(self, services: Services) -> None:
        result = services.query_pipeline().run(BREACH_QUESTION, services.anonymous_principal())
        assert not result.answer.refused
        assert "72 hours" in result.answer.text
        assert result.answer.sentences and all(s.supported for s in result.answer.sentences)
        assert result.answer.support_score == 1.0


@pytest.mark.slow
@pytest.mark.integration
def test_llm_judge_over_the_real_model_server(llm_server: str) -> None:
    """SmolLM2 is no judge of quality: this checks the request/parse path only."""
    judge = LLMJudgeVerifier(base_url=llm_server, model="smollm2-135m", timeout_s=300)
    scores = judge.score([(SUPPORTED, PASSAGES[0].chunk.text), (UNRELATED, PASSAGES[1].chunk.text)])
    assert all(score in (0.0, 1.0) for score in scores) and len(scores) == 2
    verified = CitationVerifier(judge).run(answer_citing(f"{SUPPORTED} [1]", PASSAGES), PASSAGES)
    assert verified.sentences[0].support in (0.0, 1.0)
    assert verified.support_score in (0.0, 1.0)
