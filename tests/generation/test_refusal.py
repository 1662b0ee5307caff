import pytest

from generation.refusal import RelevanceGate, foreign_names
from retrieval.embedder import Embedder
from tests.helpers import BREACH_PASSAGES, retrieved

KNOWN = ("GDPR", "General Data Protection Regulation", "AI Act", "NIST", "800-53")
OFFICER = [
    retrieved(
        "art-37",
        "The controller and the processor shall designate a data protection officer where the "
        "core activities consist of processing on a large scale in the Union.",
        "Article 37",
    )
]


class TestForeignNames:
    @pytest.mark.parametrize(
        ("question", "names"),
        [
            ("How many days do we have to comply under the CCPA?", ["CCPA"]),
            ("What is the breach deadline under Singapore's PDPA?", ["Singapore", "PDPA"]),
            ("Do we need a business associate agreement under HIPAA?", ["HIPAA"]),
            ("How much notice must an employee in France get?", ["France"]),
            ("Under DORA, when is the initial notification due?", ["DORA"]),
            ("Does the Ohio Data Protection Act cover us?", ["Ohio Data Protection Act"]),
            ("What notice does the EU Cyber Resilience Act require?", ["EU Cyber Resilience Act"]),
            (
                "Does the Ruritanian Data Protection and Privacy Act apply?",
                ["Ruritanian Data Protection and Privacy Act"],
            ),
        ],
    )
    def test_a_law_or_place_the_passages_never_mention_is_named(
        self, question: str, names: list[str]
    ) -> None:
        assert foreign_names(question, BREACH_PASSAGES, KNOWN) == names

    @pytest.mark.parametrize(
        "question",
        [
            "Under the GDPR, when must we appoint a DPO?",  # DPO: data protection officer
            "What must a data protection officer in the Union do?",
            "Can our CEO's assistant be the officer?",  # ours, not a law
            "What's the deadline, and who's in charge?",
            "How does the AI Act's ban compare with the 800-53 controls?",
            "What does the EU AI Act say about deepfakes?",  # an indexed name within the name
            "Does the General Data Protection Regulation apply to us?",
            "Can we rely on Binding Corporate Rules?",  # rules, not a law
        ],
    )
    def test_names_the_passages_or_documents_know_are_not_foreign(self, question: str) -> None:
        assert foreign_names(question, OFFICER, KNOWN) == []


@pytest.mark.integration
class TestRelevanceGate:
    def test_refuses_an_unknown_jurisdiction_however_close_the_wording(
        self, embedder: Embedder
    ) -> None:
        gate = RelevanceGate(embedder, threshold=0.1)
        question = "Within how many hours must a personal data breach be notified under HIPAA?"
        assert gate.run(question, BREACH_PASSAGES)  # without names: close wording passes
        assert not gate.run(question, BREACH_PASSAGES, KNOWN)

    def test_answers_a_question_the_passages_address(self, embedder: Embedder) -> None:
        gate = RelevanceGate(embedder, threshold=0.1)
        question = "Within how many hours must a personal data breach be notified?"
        assert gate.run(question, BREACH_PASSAGES, KNOWN)

    def test_stored_vectors_give_the_score_of_embedding_the_passages(
        self, embedder: Embedder
    ) -> None:
        """Passages come from the store with the vectors ingestion gave them: the gate compares
        through those and embeds nothing but the question."""
        question = "Within how many hours must a personal data breach be notified?"
        with_vectors = [
            p.model_copy(update={"vector": embedder.embed_one(p.chunk.embedding_text()).tolist()})
            for p in BREACH_PASSAGES
        ]
        counting = Embedder(embedder.model_name, cache_entries=100)
        gate = RelevanceGate(counting, threshold=0.1)
        assert gate.score(question, with_vectors) == pytest.approx(
            RelevanceGate(embedder, threshold=0.1).score(question, BREACH_PASSAGES), abs=1e-5
        )
        assert len(counting.cache) == 1  # the question only

    def test_nothing_retrieved_is_never_relevant(self, embedder: Embedder) -> None:
        assert not RelevanceGate(embedder, threshold=-1.0).run("Anything?", [], KNOWN)
