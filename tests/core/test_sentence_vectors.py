"""The stored vectors of passage sentences (SQLite and PostgreSQL)."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import Engine

from core.db import make_session_factory
from core.sentence_vectors import SentenceVectors

MINI = "all-MiniLM-L6-v2 (torch)"
OTHER = "all-mpnet-base-v2 (torch)"
NOTIFY = "The controller shall notify the breach within 72 hours."
INFORM = "The processor shall inform the controller without undue delay."
KEEP = "Records shall be kept for five years."


def vector(seed: int) -> np.ndarray:
    values = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
    return values / np.linalg.norm(values)


@pytest.fixture
def stored(engine: Engine) -> SentenceVectors:
    return SentenceVectors(make_session_factory(engine))


class TestSentenceVectors:
    def test_vectors_come_back_as_saved_for_their_embedder_only(
        self, stored: SentenceVectors
    ) -> None:
        stored.save(MINI, "gdpr", {NOTIFY: vector(1), INFORM: vector(2)})
        found = stored.get(MINI, [NOTIFY, KEEP, INFORM])
        assert set(found) == {NOTIFY, INFORM}
        np.testing.assert_array_equal(found[NOTIFY], vector(1))
        assert stored.get(OTHER, [NOTIFY]) == {}

    def test_missing_lists_what_the_document_lacks_and_saving_twice_adds_nothing(
        self, stored: SentenceVectors
    ) -> None:
        stored.save(MINI, "gdpr", {NOTIFY: vector(1)})
        assert stored.missing(MINI, "gdpr", [NOTIFY, KEEP, KEEP]) == [KEEP]
        assert stored.missing(MINI, "nis2", [NOTIFY]) == [NOTIFY]
        stored.save(MINI, "gdpr", {NOTIFY: vector(3), KEEP: vector(4)})
        assert stored.count() == 2
        np.testing.assert_array_equal(stored.get(MINI, [NOTIFY])[NOTIFY], vector(1))

    def test_keep_only_drops_an_old_versions_sentences_and_other_embedders(
        self, stored: SentenceVectors
    ) -> None:
        stored.save(MINI, "gdpr", {NOTIFY: vector(1), INFORM: vector(2)})
        stored.save(OTHER, "gdpr", {NOTIFY: vector(5)})
        stored.save(MINI, "eprivacy", {INFORM: vector(2)})
        stored.keep_only(MINI, "gdpr", [NOTIFY])
        assert stored.count(MINI) == 2 and stored.count(OTHER) == 0
        assert stored.missing(MINI, "gdpr", [NOTIFY, INFORM]) == [INFORM]
        assert set(stored.get(MINI, [INFORM])) == {INFORM}  # the other document's, kept

    def test_deleting_a_document_removes_its_vectors(self, stored: SentenceVectors) -> None:
        stored.save(MINI, "gdpr", {NOTIFY: vector(1)})
        stored.save(MINI, "eprivacy", {INFORM: vector(2)})
        stored.delete_document("gdpr")
        assert stored.count() == 1
        assert stored.get(MINI, [NOTIFY]) == {}

    def test_a_lookup_of_many_sentences_goes_in_slices(self, stored: SentenceVectors) -> None:
        texts = [f"Sentence number {i} of a long regulation." for i in range(1200)]
        stored.save(MINI, "gdpr", {text: vector(i) for i, text in enumerate(texts)})
        found = stored.get(MINI, texts)
        assert len(found) == 1200
        np.testing.assert_array_equal(found[texts[1100]], vector(1100))
