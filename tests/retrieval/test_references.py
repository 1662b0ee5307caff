import json
from pathlib import Path

import pytest

from core.models import Principal, SearchMode
from retrieval.embedder import Embedder
from retrieval.expansion import ReferenceExpander, rule_number
from retrieval.references import (
    Reference,
    document_codes,
    extract_references,
    section_keys,
)
from retrieval.retriever import Retriever
from retrieval.sparse import BM25Encoder
from retrieval.store import open_vector_store
from tests.helpers import (
    OBLIQA_LIKE_CORPUS,
    OBLIQA_LIKE_MAP,
    make_settings,
    obliqa_ids,
    services_for,
)

PUBLIC = Principal(subject="analyst", groups=["public"])
BOARD = Principal(subject="director", groups=["public", "board"])


class TestSectionKeys:
    @pytest.mark.parametrize(
        ("section_ref", "expected"),
        [
            ("3.19.7", ["3.19.7", "3.19", "chapter 3"]),
            ("3.19.7.(2)", ["3.19.7(2)", "3.19.7", "3.19", "chapter 3"]),
            ("Part 11.Chapter 4.117.", ["part 11", "chapter 4", "117"]),
            ("Part 17.206.(1)", ["part 17", "206(1)", "206"]),
            ("APP4.A4.11.1", ["app 4", "a4.11.1", "a4.11"]),
            ("148)", ["148"]),
            ("15.11A.2", ["15.11a.2", "15.11a", "chapter 15"]),
            ("Article 33", ["33"]),
            ("3.19.7.Guidance.1.", []),
            (None, []),
        ],
    )
    def test_passage_ids_become_the_keys_they_are_joins(
        self, section_ref: str | None, expected: list[str]
    ) -> None:
        assert section_keys(section_ref) == expected

    def test_a_rule_number_has_levels(self) -> None:
        assert rule_number("3.19.7.(2)") == "3.19.7"
        assert rule_number("Article 33") is None  # "33" is a keyword everywhere
        assert rule_number("Part 11.Chapter 4.117.") is None
        assert rule_number(None) is None

    def test_document_codes_come_from_the_title(self) -> None:
        assert document_codes("FSMR — FINANCIAL SERVICES AND MARKETS REGULATIONS 2015") == ["FSMR"]
        assert document_codes("Fees Rules (FEES) — FEES") == ["FEES"]
        assert document_codes("Guidance – English Law in ADGM") == []


class TestExtractReferences:
    def test_rules_sections_articles_and_lists(self) -> None:
        text = (
            "calculate the amount in accordance with Rule 3.19.6; under Rules 4.13.5 to 4.13.8, "
            "Article 17(1) and section 206(1)(d)."
        )
        assert [r.keys[0] for r in extract_references(text)] == [
            "3.19.6",
            "4.13.5",
            "4.13.8",
            "17(1)",
            "206(1)(d)",
        ]

    def test_other_documents_by_code(self) -> None:
        refs = extract_references(
            "Pursuant to Section 117 of FSMR and GEN Rule 5.2.7, see also COBS 22.10.1."
        )
        assert refs == [
            Reference(keys=["117"], document_code="FSMR"),
            Reference(keys=["5.2.7"], document_code="GEN"),
            Reference(keys=["22.10.1"], document_code="COBS"),
        ]

    def test_labelled_units_and_lettered_paragraphs(self) -> None:
        refs = extract_references("in Chapter 4, Part 5, APP 2 and paragraph 148h) above")
        assert [r.keys for r in refs] == [["chapter 4"], ["part 5"], ["app 2"], ["148(h)", "148"]]

    def test_relative_paragraphs_resolve_against_the_citing_passage(self) -> None:
        refs = extract_references("The notice in paragraph (2)(b) must be given.", "3.19.7.(1)")
        assert refs == [Reference(keys=["3.19.7(2)(b)", "3.19.7(2)"])]
        assert extract_references("The notice in paragraph (2) must be given.") == []

    def test_named_instruments_outside_the_corpus_are_left_out(self) -> None:
        assert extract_references("See section 61 of the Companies Regulations 2020.") == []
        assert extract_references("Nothing cited here, 3.5 million dollars in 2019.") == []


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Path:
    docs = tmp_path_factory.mktemp("obliqa-like")
    for number, passages in OBLIQA_LIKE_CORPUS.items():
        (docs / f"{number}.json").write_text(json.dumps(passages))
    (docs / "document_map.json").write_text(json.dumps(OBLIQA_LIKE_MAP))
    (docs / "manifest.yaml").write_text('"3.json": {access_groups: [board]}\n')
    settings = make_settings(tmp_path_factory.mktemp("data"))
    with services_for(settings, embedder) as services:
        job = services.ingestor().run(sorted(docs.glob("[0-9].json")))
    assert [d.error for d in job.documents] == [None, None, None]
    return settings.data_dir


@pytest.fixture
def retrieve(store_dir: Path, embedder: Embedder):  # type: ignore[no-untyped-def]
    store = open_vector_store(make_settings(store_dir))

    def run(query: str, principal: Principal, expand: bool, top_k: int = 3) -> list[str]:
        retriever = Retriever(
            store,
            embedder,
            BM25Encoder(),
            mode=SearchMode.HYBRID,
            top_k=top_k,
            expander=ReferenceExpander(store, from_top=1, max_added=3) if expand else None,
        )
        return [hit.chunk.chunk_id for hit in retriever.run(query, principal)]

    yield run
    store.close()


@pytest.mark.integration
class TestReferenceExpansion:
    QUESTION = "What must a firm do when it fails to meet the Combined Buffer Requirement?"

    def test_cited_rule_follows_the_ranking_it_leaves_unchanged(self, retrieve) -> None:  # type: ignore[no-untyped-def]
        plain = retrieve(self.QUESTION, PUBLIC, expand=False, top_k=1)
        assert plain == obliqa_ids(1, "3.19.3")
        expanded = retrieve(self.QUESTION, PUBLIC, expand=True, top_k=1)
        assert expanded == obliqa_ids(1, "3.19.3", "3.19.6")
        # Within the ranking it is not added again, nor does it move.
        assert retrieve(self.QUESTION, PUBLIC, expand=True, top_k=2) == obliqa_ids(
            1, "3.19.3", "3.19.6"
        )

    def test_section_of_another_document_is_found_by_its_code(self, retrieve) -> None:  # type: ignore[no-untyped-def]
        question = "Who must be notified of a change of auditor?"
        assert retrieve(question, PUBLIC, expand=False, top_k=1) == obliqa_ids(1, "5.1.1")
        assert retrieve(question, PUBLIC, expand=True, top_k=1) == [
            *obliqa_ids(1, "5.1.1"),
            *obliqa_ids(2, "Part 11.Chapter 4.117."),
        ]

    def test_a_passage_citing_the_rule_found_follows_it(self, retrieve) -> None:  # type: ignore[no-untyped-def]
        question = "How is the figure of interim profits not included in Common Equity Tier 1 used?"
        assert retrieve(question, PUBLIC, expand=False, top_k=1) == obliqa_ids(1, "3.19.6")
        # 3.19.3 says "in accordance with Rule 3.19.6"; nothing cites 5.1.1 or 117.
        assert retrieve(question, PUBLIC, expand=True, top_k=1) == obliqa_ids(1, "3.19.6", "3.19.3")

    def test_cited_passage_in_a_restricted_document_is_never_added(self, retrieve) -> None:  # type: ignore[no-untyped-def]
        waiver = obliqa_ids(3, "2.1.1")[0]
        for top_k in (2, 3, 5):
            assert waiver not in retrieve(self.QUESTION, PUBLIC, expand=True, top_k=top_k)
        assert waiver in retrieve(self.QUESTION, BOARD, expand=True, top_k=3)

    def test_rejects_invalid_configuration(self, store_dir: Path) -> None:
        store = open_vector_store(make_settings(store_dir))
        try:
            with pytest.raises(ValueError):
                ReferenceExpander(store, from_top=0)
            with pytest.raises(ValueError):
                ReferenceExpander(store, max_added=0)
            with pytest.raises(ValueError):
                ReferenceExpander(store, max_citing=-1)
        finally:
            store.close()
