from pathlib import Path

import pytest

from core.db import make_engine, make_session_factory
from core.models import AnswerPart, PartStatus
from core.sentence_vectors import SentenceVectors
from core.sentences import passage_sentences
from generation.base import ModelUnavailableError
from generation.extractive import ExtractiveGenerator
from generation.llm import OpenAICompatibleGenerator
from generation.local_server import LOCAL_MODEL_ALIAS
from generation.prompt import build_messages
from retrieval.embedder import Embedder
from tests.helpers import BREACH_PASSAGES as PASSAGES
from tests.helpers import free_port, make_settings, retrieved

QUESTION = "How many hours does a controller have to notify a breach to the supervisory authority?"


class TestPrompt:
    def test_numbers_passages_with_title_and_section_after_the_fixed_system_prompt(self) -> None:
        system, user = build_messages(QUESTION, PASSAGES)
        assert system["role"] == "system" and "[1]" in system["content"]
        assert user["content"].index("[1] GDPR | Article 33") < user["content"].index("[2] GDPR")
        assert user["content"].rstrip().endswith(QUESTION)


class TestExtractiveGenerator:
    def test_quotes_and_cites_the_sentence_that_answers(self, embedder: Embedder) -> None:
        answer = ExtractiveGenerator(embedder, max_sentences=1).generate(QUESTION, PASSAGES)
        assert "not later than 72 hours" in answer.text
        assert answer.text.endswith("[1]")
        assert [(c.n, c.chunk_id) for c in answer.citations] == [(1, "art-33")]
        assert answer.citations[0].quote in PASSAGES[0].chunk.text
        assert answer.model == "extractive"

    def test_every_cited_quote_is_verbatim_from_its_passage(self, embedder: Embedder) -> None:
        answer = ExtractiveGenerator(embedder, max_sentences=3).generate(QUESTION, PASSAGES)
        assert len(answer.citations) >= 1
        for citation in answer.citations:
            assert citation.quote in PASSAGES[citation.n - 1].chunk.text

    def test_a_sentence_two_passages_share_is_quoted_once_from_the_better_ranked(
        self, embedder: Embedder
    ) -> None:
        repeated = retrieved("art-28", PASSAGES[0].chunk.text, "Article 28 — Processor", score=0.6)
        answer = ExtractiveGenerator(embedder, max_sentences=3).generate(
            QUESTION, [PASSAGES[0], repeated]
        )
        quotes = [part.split("”")[0] for part in answer.text.split("“")[1:]]
        assert len(quotes) == len(set(quotes)) == 2
        assert [c.chunk_id for c in answer.citations] == ["art-33"]

    def test_answers_each_part_from_its_own_passages(self, embedder: Embedder) -> None:
        parts = [
            AnswerPart(text="Within how many hours must a breach be notified?", passages=[1]),
            AnswerPart(text="How must personal data be processed?", passages=[2]),
        ]
        answer = ExtractiveGenerator(embedder, per_part=1).generate(QUESTION, PASSAGES, parts)
        assert [(s.part, s.citations) for s in answer.sentences] == [(1, [1]), (2, [2])]
        assert "72 hours" in answer.sentences[0].text
        assert "lawfully, fairly" in answer.sentences[1].text
        assert answer.parts == parts

    def test_a_part_not_covered_gets_no_quote(self, embedder: Embedder) -> None:
        parts = [
            AnswerPart(text="Within how many hours must a breach be notified?", passages=[1]),
            AnswerPart(
                text="What is the deadline in Singapore?",
                passages=[2],
                status=PartStatus.NOT_COVERED,
            ),
        ]
        answer = ExtractiveGenerator(embedder).generate(QUESTION, PASSAGES, parts)
        assert {s.part for s in answer.sentences} == {1}

    def test_stored_sentence_vectors_give_the_same_answer_without_embedding_them(
        self, embedder: Embedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        engine = make_engine(make_settings(tmp_path))
        stored = SentenceVectors(make_session_factory(engine))
        for passage in PASSAGES:
            sentences = passage_sentences(passage.chunk.text)
            vectors = dict(zip(sentences, embedder.embed(sentences), strict=True))
            stored.save(embedder.signature, passage.chunk.document_id, vectors)
        expected = ExtractiveGenerator(Embedder(embedder.model_name)).generate(QUESTION, PASSAGES)
        embedded: list[str] = []
        real_embed = embedder.embed
        monkeypatch.setattr(
            embedder, "embed", lambda texts, role: embedded.extend(texts) or real_embed(texts, role)
        )
        answer = ExtractiveGenerator(embedder, stored).generate(QUESTION, PASSAGES)
        engine.dispose()
        assert embedded == [QUESTION]  # the question only, not one sentence
        assert answer.text == expected.text

    def test_a_passage_a_top_passage_cites_is_considered_with_one_quote_more(
        self, embedder: Embedder
    ) -> None:
        cited = retrieved(
            "art-34",
            "The controller shall communicate the personal data breach to the data subject "
            "without undue delay.",
            section="Article 34 — Communication of a personal data breach to the data subject",
            joins="art-33",
        )
        answer = ExtractiveGenerator(embedder, max_sentences=1).generate(
            QUESTION, [PASSAGES[0], cited]
        )
        assert [c.chunk_id for c in answer.citations] == ["art-33", "art-34"]
        # One passage considered: the next one found is not, the one it cites is.
        narrow = ExtractiveGenerator(embedder, max_sentences=3, passages_considered=1)
        quoted = narrow.generate(QUESTION, [PASSAGES[0], PASSAGES[1], cited]).citations
        assert {c.chunk_id for c in quoted} == {"art-33", "art-34"}

    def test_rejects_invalid_configuration(self, embedder: Embedder) -> None:
        with pytest.raises(ValueError):
            ExtractiveGenerator(embedder, max_sentences=0)


@pytest.mark.slow
@pytest.mark.integration
class TestOpenAICompatibleGenerator:
    def test_answers_through_a_real_openai_compatible_server(self, llm_server: str) -> None:
        generator = OpenAICompatibleGenerator(
            base_url=llm_server, model=LOCAL_MODEL_ALIAS, max_tokens=96
        )
        answer = generator.generate(QUESTION, PASSAGES)
        assert answer.text
        assert answer.model == LOCAL_MODEL_ALIAS
        # Whatever the small model cites must point at a passage it was given.
        assert {c.chunk_id for c in answer.citations} <= {"art-33", "art-5"}

    def test_unreachable_server_raises_model_unavailable(self) -> None:
        generator = OpenAICompatibleGenerator(
            base_url=f"http://127.0.0.1:{free_port()}/v1", model="m", timeout_s=2, max_retries=0
        )
        with pytest.raises(ModelUnavailableError, match="model server error"):
            generator.generate(QUESTION, PASSAGES)
