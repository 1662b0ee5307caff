"""Citation verification with the shipped support model, refusal and the LLM judge code path."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

import retrieval.embedder
from api.services import Services
from core.model_files import MODELS_DIR_ENV
from core.models import (
    Answer,
    AnswerSentence,
    EmbedBackend,
    RetrievedChunk,
    SupportCheck,
    UnsupportedPolicy,
)
from eval.training.train_support import perturb, tagged_sentences
from generation.checks import FactChecker
from generation.citations import citations_for
from generation.drafts import DraftNotFoundError, DraftSentence, DraftVerifier
from generation.prompt import NOT_COVERED
from generation.verification import (
    CHECKED_THRESHOLD_KEY,
    CONFIRMED_THRESHOLD_KEY,
    DEFAULT_SUPPORT_MODEL,
    SUPPORT_SETTINGS_FILE,
    CitationVerifier,
    CrossEncoderSupportJudge,
    LLMJudgeVerifier,
    load_verifier,
    passage_windows,
    quoted_in,
)
from retrieval.embedder import Embedder
from tests.helpers import BREACH_PASSAGES as PASSAGES
from tests.helpers import BREACH_QUESTION, make_settings, retrieved, services_for

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


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("support-onnx")


def backend_pairs() -> list[tuple[str, str]]:
    """Backed, unrelated and negated claims against each breach passage."""
    negated = SUPPORTED.replace("must notify", "must not notify")
    return [(claim, p.chunk.text) for claim in (SUPPORTED, UNRELATED, negated) for p in PASSAGES]


class TestSupportBackends:
    def test_fp32_onnx_gives_the_torch_scores(
        self, judge: CrossEncoderSupportJudge, onnx_cache: Path
    ) -> None:
        fp32 = CrossEncoderSupportJudge(backend=EmbedBackend.ONNX, cache_dir=onnx_cache)
        pairs = backend_pairs()
        assert fp32.score(pairs) == pytest.approx(judge.score(pairs), abs=1e-4)
        assert fp32.score([]) == []
        assert fp32.threshold == judge.threshold
        assert fp32.checked_threshold == judge.checked_threshold

    def test_int8_stays_close_and_decides_clear_cases_alike(
        self, judge: CrossEncoderSupportJudge, onnx_cache: Path
    ) -> None:
        int8 = CrossEncoderSupportJudge(backend=EmbedBackend.ONNX_INT8, cache_dir=onnx_cache)
        pairs = backend_pairs()
        torch_scores, int8_scores = judge.score(pairs), int8.score(pairs)
        # Measured on the benchmark's pairs: docs/benchmarks.md, "Support model backends".
        assert int8_scores == pytest.approx(torch_scores, abs=0.05)
        backed, unrelated = pairs[0], pairs[len(PASSAGES)]
        for scores in (judge.score([backed, unrelated]), int8.score([backed, unrelated])):
            assert scores[0] >= judge.threshold > judge.checked_threshold > scores[1]

    def test_the_export_is_made_once(
        self, onnx_cache: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        CrossEncoderSupportJudge(backend=EmbedBackend.ONNX_INT8, cache_dir=onnx_cache)
        exports = sorted(onnx_cache.rglob("*.onnx"))
        assert [path.name for path in exports] == ["model-int8.onnx", "model.onnx"]
        stamps = [path.stat().st_mtime_ns for path in exports]

        def no_export(*args: object) -> None:
            raise AssertionError("exported again")

        monkeypatch.setattr(retrieval.embedder, "_trace_onnx", no_export)
        again = CrossEncoderSupportJudge(backend=EmbedBackend.ONNX_INT8, cache_dir=onnx_cache)
        assert again.score(backend_pairs()[:1])
        assert [path.stat().st_mtime_ns for path in exports] == stamps
        assert not list(onnx_cache.rglob("*.tmp"))

    def test_the_service_setting_selects_the_backend_exported_into_the_models_folder(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path / "models"))
        verifier = load_verifier(make_settings(tmp_path / "data", support_backend="onnx-int8"))
        assert verifier is not None and isinstance(verifier.judge, CrossEncoderSupportJudge)
        assert verifier.judge.backend is EmbedBackend.ONNX_INT8
        assert list((tmp_path / "models" / "exports").rglob("model-int8.onnx"))
        default = load_verifier(make_settings(tmp_path / "data"))
        assert default is not None and isinstance(default.judge, CrossEncoderSupportJudge)
        assert default.judge.backend is EmbedBackend.ONNX
        assert not (tmp_path / "data" / "models").exists()

    def test_invalid_backends_are_rejected(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="cache_dir"):
            CrossEncoderSupportJudge(backend=EmbedBackend.ONNX)
        with pytest.raises(ValueError, match="onnx-fp16"):
            CrossEncoderSupportJudge(backend="onnx-fp16", cache_dir=tmp_path)  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match="support_backend"):
            make_settings(tmp_path, support_backend="onnx-fp16")


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


class CountingJudge:
    """The real judge, counting the pairs it is asked to score."""

    def __init__(self, judge: CrossEncoderSupportJudge) -> None:
        self.judge = judge
        self.pairs = 0
        self.name = judge.name
        self.threshold = judge.threshold

    def score(self, pairs: list[tuple[str, str]]) -> list[float]:
        self.pairs += len(pairs)
        return self.judge.score(pairs)


class TestCheckedVerification:
    """The verifier with the deterministic checks beside the support model."""

    def test_a_changed_duration_is_unsupported_with_its_reason(
        self, judge: CrossEncoderSupportJudge
    ) -> None:
        wrong = SUPPORTED.replace("72 hours", "48 hours")
        answer = answer_citing(f"{SUPPORTED} [1] {wrong} [1]", PASSAGES)
        verified = CitationVerifier(judge, checker=FactChecker()).run(answer, PASSAGES)
        right, changed = verified.sentences
        assert (right.supported, right.check, right.reason) == (True, SupportCheck.MODEL, None)
        assert changed.supported is False and changed.check is SupportCheck.QUANTITY
        assert changed.reason == "duration 48 hours not in the cited passage (it says 72 hours)"
        assert changed.citations == [1]  # no other passage passes the checks either
        # Without the checks, today's verifier: the model alone.
        unchecked = CitationVerifier(judge).run(answer, PASSAGES).sentences[1]
        assert unchecked.check is SupportCheck.MODEL

    def test_a_contradicted_modal_moves_only_to_a_passage_stating_one(self) -> None:
        """A passage with no "shall" or "may" in it passes the modality check without confirming
        anything: it must not take the citation of a sentence its cited passage contradicts."""

        class Confident:  # the model finds every pair supported: only the checks decide
            name, threshold = "confident", 0.5

            def score(self, pairs: list[tuple[str, str]]) -> list[float]:
                return [0.9] * len(pairs)

        passages = [
            retrieved("rule", text="The controller shall notify the supervisory authority."),
            retrieved("recital", text="Notification of breaches to the supervisory authority."),
            retrieved("option", text="The controller may notify the supervisory authority."),
        ]
        verifier = CitationVerifier(Confident(), checker=FactChecker())
        flipped = "The controller may notify the supervisory authority."
        (moved,) = verifier.run(answer_citing(f"{flipped} [1]", passages), passages).sentences
        assert (moved.supported, moved.citations) == (True, [3])
        (kept,) = verifier.run(
            answer_citing(f"{flipped} [1]", passages[:2]), passages[:2]
        ).sentences
        assert (kept.supported, kept.check, kept.citations) == (False, SupportCheck.MODALITY, [1])

    def test_a_wrong_reference_moves_only_to_a_passage_closer_to_the_sentence(self) -> None:
        """A sentence its cited passage backs, but naming a rule that passage does not name, is
        about that passage: another passage naming the rule takes it only when the judge finds
        that one closer; an actor from another passage moves the citation as before."""
        cited = "A deduction must be calculated on the gross long positions, under Rule 3.10.15."
        passages = [
            retrieved("cited", text=cited),
            retrieved("other", text="For the purposes of Rule 3.10.16, the amount is multiplied."),
        ]

        class Scores:  # the cited passage backs the sentences best, the other one well enough
            name, threshold = "fixed", 0.4

            def __init__(self, other: float) -> None:
                self.other = other

            def score(self, pairs: list[tuple[str, str]]) -> list[float]:
                return [0.9 if text == cited else self.other for _, text in pairs]

        wrong = "A deduction must be calculated on the gross long positions, under Rule 3.10.16."
        answer = answer_citing(f"{wrong} [1]", passages)
        (kept,) = (
            CitationVerifier(Scores(0.6), checker=FactChecker()).run(answer, passages).sentences
        )
        assert (kept.supported, kept.check, kept.citations) == (False, SupportCheck.REFERENCE, [1])
        (moved,) = (
            CitationVerifier(Scores(0.95), checker=FactChecker()).run(answer, passages).sentences
        )
        assert (moved.supported, moved.citations) == (True, [2])
        # Not for an actor: an answer sentence may take it from another passage it draws on.
        actor = [
            retrieved("cited", text=cited),
            retrieved("other", text="The Authorised Person must deduct the amount."),
        ]
        claim = "The Authorised Person must calculate a deduction on the gross long positions."
        (drawn,) = (
            CitationVerifier(Scores(0.6), checker=FactChecker())
            .run(answer_citing(f"{claim} [1]", actor), actor)
            .sentences
        )
        assert (drawn.supported, drawn.citations) == (True, [2])

    def test_a_low_score_says_so(self, judge: CrossEncoderSupportJudge) -> None:
        answer = answer_citing("Encryption keeps stored backups unreadable. [1]", PASSAGES)
        (sentence,) = CitationVerifier(judge, checker=FactChecker()).run(answer, PASSAGES).sentences
        assert sentence.supported is False and sentence.check is SupportCheck.MODEL
        assert sentence.reason is not None
        assert sentence.reason.startswith("the cited passage does not back it (support 0.")

    def test_verbatim_quotes_are_supported_without_a_model_call(
        self, judge: CrossEncoderSupportJudge
    ) -> None:
        counting = CountingJudge(judge)
        quote = "The processor shall notify the controller without undue delay"
        answer = answer_citing(f"“{quote}.” [1] {SUPPORTED} [1]", PASSAGES)
        verified = CitationVerifier(counting, checker=FactChecker()).run(answer, PASSAGES)
        quoted, paraphrased = verified.sentences
        assert (quoted.check, quoted.supported, quoted.support) == (SupportCheck.QUOTED, True, 1.0)
        assert paraphrased.check is SupportCheck.MODEL
        assert counting.pairs == 1  # the paraphrase, against the passage it cites, which backs it
        assert f"“{quote}.” [1]" in verified.text

    def test_only_a_sentence_its_citation_does_not_back_is_scored_against_the_others(
        self, judge: CrossEncoderSupportJudge
    ) -> None:
        counting = CountingJudge(judge)
        answer = answer_citing(f"{SUPPORTED} [2]", PASSAGES)  # cites the wrong passage
        (moved,) = CitationVerifier(counting, checker=FactChecker()).run(answer, PASSAGES).sentences
        assert moved.supported and moved.citations == [1]
        assert counting.pairs == len(PASSAGES)  # its citation first, then every other passage

    def test_a_span_that_the_passage_negates_or_conditions_is_not_a_quote(self) -> None:
        passages = [retrieved("p", text="The authority may publish the decision only if asked.")]
        assert quoted_in("The authority may publish the decision", [1], passages) is None
        assert quoted_in("The authority may publish the decision only if asked", [1], passages)
        assert quoted_in("publish the decision", [1], passages) is None  # under five words

    def test_the_generators_sentences_are_verified_as_given(
        self, judge: CrossEncoderSupportJudge
    ) -> None:
        """Quotes ending in ';' inside list items would merge if the text were re-split."""
        article_34 = retrieved(
            "art-34",
            text=(
                "3. The communication shall: (a) describe in clear and plain language the nature "
                "of the personal data breach;\n(c) describe the likely consequences of the "
                "personal data breach;"
            ),
        )
        items = [
            "(c) describe the likely consequences of the personal data breach;",
            "(a) describe in clear and plain language the nature of the personal data breach;",
        ]
        text = " ".join(f"“{item}” [1]" for item in items)
        answer = Answer(
            text=text,
            citations=[],
            model="extractive",
            sentences=[AnswerSentence(text=item, citations=[1]) for item in items],
        )
        verified = CitationVerifier(judge, checker=FactChecker()).run(answer, [article_34])
        assert [s.text for s in verified.sentences] == items
        assert all(s.check is SupportCheck.QUOTED for s in verified.sentences)
        assert verified.text == text  # nothing moved: the generator's text stays
        assert verified.support_score == 1.0

    def test_the_service_verifier_runs_the_checks_at_their_threshold(self, tmp_path: Path) -> None:
        shipped = json.loads((DEFAULT_SUPPORT_MODEL / SUPPORT_SETTINGS_FILE).read_text())
        verifier = load_verifier(make_settings(tmp_path))
        assert verifier is not None and verifier.checker is not None
        assert verifier.threshold == shipped.get(CHECKED_THRESHOLD_KEY, shipped["threshold"])
        assert verifier.judge.threshold == shipped["threshold"]
        assert verifier.confirmed_threshold == shipped.get(CONFIRMED_THRESHOLD_KEY)
        chosen = load_verifier(make_settings(tmp_path, support_threshold=0.6))
        assert chosen is not None and chosen.threshold == chosen.judge.threshold == 0.6
        assert chosen.confirmed_threshold is None  # a set threshold is the only one

    def test_a_sentence_the_checks_confirm_needs_less_of_the_model(self) -> None:
        rule = "An Applicant must satisfy the Regulator that it has sufficient working capital."
        passages = [retrieved("rule", text=rule)]

        class Low:  # the model finds the pair weakly supported
            name, threshold = "low", 0.4

            def score(self, pairs: list[tuple[str, str]]) -> list[float]:
                return [0.25] * len(pairs)

        def verified(claim: str, confirmed: float | None) -> AnswerSentence:
            verifier = CitationVerifier(
                Low(), checker=FactChecker(), threshold=0.3, confirmed_threshold=confirmed
            )
            (sentence,) = verifier.run(answer_citing(f"{claim} [1]", passages), passages).sentences
            return sentence

        confirmed = "The Applicant must satisfy the Regulator that its working capital suffices."
        assert verified(confirmed, 0.2).supported is True
        assert verified(confirmed, None).supported is False  # without the lower bar
        # Passing the checks without their confirming anything (no modal) is not enough.
        plain = "The Applicant has sufficient working capital for the Regulator."
        assert verified(plain, 0.2).supported is False
        with pytest.raises(ValueError, match="confirmed_threshold"):
            CitationVerifier(Low(), checker=FactChecker(), confirmed_threshold=1.2)

    def test_threshold_must_be_a_probability(self, judge: CrossEncoderSupportJudge) -> None:
        with pytest.raises(ValueError, match="threshold"):
            CitationVerifier(judge, threshold=1.5)


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


@pytest.mark.integration
class TestDraftVerifier:
    """Draft sentences against GDPR in the embedded store, as `POST /v1/verify` runs them."""

    @pytest.fixture
    def drafts(self, services: Services) -> DraftVerifier:
        assert services.verifier is not None
        return DraftVerifier(
            services.verifier,
            services.retriever(),
            services.store,
            services.embedder,
            services.catalog,
        )

    def test_against_a_named_section(self, drafts: DraftVerifier, services: Services) -> None:
        right = DraftSentence(SUPPORTED, "gdpr", "Article 33")
        wrong = DraftSentence(SUPPORTED.replace("72", "48"), "gdpr", "Article 33")
        ok, flagged = drafts.run([right, wrong], services.anonymous_principal())
        assert ok.sentence.supported is True
        assert ok.passages and all("Article 33" in p.chunk.section for p in ok.passages)
        assert flagged.sentence.supported is False
        assert flagged.sentence.reason is not None
        assert flagged.sentence.reason.startswith("duration 48 hours not in the cited passage")

    def test_against_retrieved_passages(self, drafts: DraftVerifier, services: Services) -> None:
        (verdict,) = drafts.run([DraftSentence(SUPPORTED)], services.anonymous_principal())
        assert verdict.sentence.supported is True
        (n,) = verdict.sentence.citations
        assert "Article 33" in verdict.passages[n - 1].chunk.section

    def test_unknown_unreadable_and_missing_are_not_found(
        self, drafts: DraftVerifier, services: Services
    ) -> None:
        anonymous = services.anonymous_principal()
        outsider = anonymous.model_copy(update={"groups": ["board"]})
        for draft, principal, message in [
            (DraftSentence(SUPPORTED, "nope", "Article 33"), anonymous, "no document 'nope'"),
            (DraftSentence(SUPPORTED, "gdpr", "Article 33"), outsider, "no document 'gdpr'"),
            (DraftSentence(SUPPORTED, "gdpr"), outsider, "no document 'gdpr'"),
            (DraftSentence(SUPPORTED, "gdpr", "Article 330"), anonymous, "no section"),
        ]:
            with pytest.raises(DraftNotFoundError, match=message):
                drafts.run([draft], principal)

    def test_a_section_needs_its_document(self) -> None:
        with pytest.raises(ValueError, match="a section needs its document_id"):
            DraftSentence(SUPPORTED, None, "Article 33")


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
