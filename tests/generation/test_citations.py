from core.models import RetrievedChunk
from generation.citations import (
    best_quote,
    citations_for,
    cited_numbers,
    split_sentences,
    strip_markers,
)
from tests.helpers import retrieved


def passage(chunk_id: str, text: str, section: str = "Article 1") -> RetrievedChunk:
    return retrieved(chunk_id, text, section, document_id="doc")


class TestSplitSentences:
    def test_keeps_markers_with_their_sentence(self) -> None:
        text = (
            "Breaches go to the authority within 72 hours [1]. Processors tell controllers [2][3]."
        )
        assert split_sentences(text) == [
            "Breaches go to the authority within 72 hours [1].",
            "Processors tell controllers [2][3].",
        ]

    def test_splits_after_closing_quotes(self) -> None:
        assert split_sentences("“One.” [1] “Two.” [2]") == ["“One.” [1]", "“Two.” [2]"]

    def test_does_not_split_decimals(self) -> None:
        assert split_sentences("Article 4.2 applies.") == ["Article 4.2 applies."]


class TestCitationMarkers:
    def test_numbers_in_order_without_repeats(self) -> None:
        assert cited_numbers("a [2] b [1, 2] c [3;4]") == [2, 1, 3, 4]

    def test_strip_markers(self) -> None:
        assert strip_markers("It must notify [1][2] promptly [3].") == "It must notify promptly."


class TestCitationsFor:
    def test_maps_numbers_to_passages_and_quotes_the_backing_sentence(self) -> None:
        passages = [
            passage("c1", "Scope is wide. The controller shall notify within 72 hours."),
            passage("c2", "Processors inform controllers.", section="Article 2"),
        ]
        citations = citations_for("Notify within 72 hours [1]. Processors inform [2].", passages)
        assert [(c.n, c.chunk_id, c.section) for c in citations] == [
            (1, "c1", "Article 1"),
            (2, "c2", "Article 2"),
        ]
        assert citations[0].quote == "The controller shall notify within 72 hours."

    def test_drops_numbers_that_match_no_passage(self) -> None:
        citations = citations_for("Invented [0]. Also invented [7].", [passage("c1", "Text.")])
        assert citations == []

    def test_best_quote_prefers_most_shared_words(self) -> None:
        text = "Alpha beta.\nThe fine is 4% of turnover."
        assert best_quote("fine of 4% turnover", text) == "The fine is 4% of turnover."
