"""Multi-part questions through the real pipeline over GDPR and the ePrivacy Directive."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from api.services import Services
from core.models import PartStatus
from generation.pipeline import FinalEvent
from retrieval.embedder import Embedder
from tests.helpers import make_settings, services_for

TWO_REGULATIONS = (
    "Our marketing team wants to track website visitors with cookies. Under the ePrivacy "
    "Directive, may we store cookies on a visitor's device without asking, and under the GDPR, "
    "within how many hours must we notify the supervisory authority of a personal data breach?"
)


@pytest.fixture(scope="module")
def services(ingested_dir: Path, embedder: Embedder) -> Iterator[Services]:
    with services_for(make_settings(ingested_dir), embedder) as services:
        yield services


@pytest.mark.integration
class TestMultiPartQuestions:
    def test_a_two_regulation_question_is_answered_part_by_part_citing_both(
        self, services: Services
    ) -> None:
        result = services.query_pipeline(audited=False).run(
            TWO_REGULATIONS, services.anonymous_principal()
        )
        answer = result.answer
        assert not answer.refused
        assert [p.documents for p in answer.parts] == [["eprivacy"], ["gdpr"]]
        assert [p.status for p in answer.parts] == [PartStatus.ANSWERED, PartStatus.ANSWERED]
        assert {c.document_id for c in answer.citations} == {"eprivacy", "gdpr"}
        by_part = {
            s.part: {result.passages[n - 1].chunk.document_id for n in s.citations}
            for s in answer.sentences
        }
        assert by_part[1] == {"eprivacy"} and by_part[2] == {"gdpr"}
        assert any("72 hours" in s.text for s in answer.sentences if s.part == 2)
        sections = {c.section for c in answer.citations if c.document_id == "gdpr"}
        assert any("Article 33" in section for section in sections)

    def test_every_part_keeps_its_passages_in_one_budget(self, services: Services) -> None:
        result = services.query_pipeline(audited=False).run(
            TWO_REGULATIONS, services.anonymous_principal(), top_k=4
        )
        parts = result.answer.parts
        assert len(result.passages) <= 12
        assert all(part.passages for part in parts)
        for part in parts:
            assert {result.passages[n - 1].chunk.document_id for n in part.passages} == set(
                part.documents
            )

    def test_the_stream_ends_with_the_same_parts(self, services: Services) -> None:
        pipeline = services.query_pipeline(audited=False)
        principal = services.anonymous_principal()
        plain = pipeline.run(TWO_REGULATIONS, principal).answer
        final = [
            e for e in pipeline.stream(TWO_REGULATIONS, principal) if isinstance(e, FinalEvent)
        ]
        assert [p.status for p in final[0].result.answer.parts] == [p.status for p in plain.parts]
        assert final[0].result.answer.text == plain.text

    def test_a_part_referring_back_to_an_unindexed_law_is_not_covered_either(
        self, services: Services
    ) -> None:
        question = (
            "Under Ruritania's Privacy Ordinance, when must a personal data breach be notified, "
            "and how soon must that notification reach the people affected?"
        )
        pipeline = services.query_pipeline(audited=False)
        answer = pipeline.run(question, services.anonymous_principal()).answer
        assert len(answer.parts) == 2
        assert [p.status for p in answer.parts] == [PartStatus.NOT_COVERED] * 2
        assert answer.refused
