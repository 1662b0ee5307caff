from pathlib import Path

import pytest

from core.models import FusionMethod, Principal, SearchFilters, SearchMode
from retrieval.embedder import Embedder
from retrieval.retriever import Retriever
from retrieval.sparse import BM25Encoder, terms
from retrieval.store import open_vector_store
from tests.helpers import make_settings, services_for

PUBLIC = Principal(subject="analyst", groups=["public"])


class TestBM25Encoder:
    def test_terms_are_stemmed_without_stop_words_and_keep_rule_numbers(self) -> None:
        assert terms("The Notifications under Rule 7.2.1") == terms("notification rule 7.2.1")
        assert len(terms("the of and")) == 0

    def test_document_weights_saturate_and_favour_short_texts(self) -> None:
        encoder = BM25Encoder(k1=1.2, b=0.75, average_length=10)
        once = encoder.encode_document("breach").values[0]
        many = encoder.encode_document("breach breach breach breach").values[0]
        diluted = encoder.encode_document("breach " + "other words " * 10)
        breach_in_diluted = dict(zip(diluted.indices, diluted.values, strict=True))[
            terms("breach")[0]
        ]
        assert once < many < once * (1.2 + 1)
        assert breach_in_diluted < once

    def test_query_weights_are_uniform(self) -> None:
        query = BM25Encoder().encode_query("breach breach notification")
        assert query.values == [1.0, 1.0]

    def test_rejects_invalid_parameters(self) -> None:
        with pytest.raises(ValueError):
            BM25Encoder(b=2)


RULEBOOK = {
    "open.md": "# Capital\n\n## Rule 4.1\n\nA firm must hold capital of at least USD 10 million.\n",
    "open2.md": "# Conduct\n\n## Rule 9.3\n\nA firm must treat customers fairly at all times.\n",
    "secret.md": "# Board minutes\n\n## Item 1\n\nThe board approved the merger with Zephyr.\n",
}
MANIFEST = """
"*": {jurisdiction: ADGM, regulator: FSRA, document_type: rulebook}
secret.md: {access_groups: [board], effective_date: 2025-01-01, jurisdiction: DIFC}
open2.md: {effective_date: 2020-06-30}
"""


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Path:
    docs = tmp_path_factory.mktemp("docs")
    for name, text in RULEBOOK.items():
        (docs / name).write_text(text)
    (docs / "manifest.yaml").write_text(MANIFEST)
    settings = make_settings(tmp_path_factory.mktemp("data"))
    with services_for(settings, embedder) as services:
        services.ingestor().run(sorted(docs.glob("*.md")))
    return settings.data_dir


@pytest.fixture
def search(store_dir: Path, embedder: Embedder):  # type: ignore[no-untyped-def]
    store = open_vector_store(make_settings(store_dir))

    def run(
        query: str,
        principal: Principal = PUBLIC,
        mode: SearchMode = SearchMode.HYBRID,
        filters: SearchFilters | None = None,
        fusion: FusionMethod = FusionMethod.DBSF,
    ) -> list[str]:
        retriever = Retriever(store, embedder, BM25Encoder(), mode=mode, top_k=5, fusion=fusion)
        return [hit.chunk.document_id for hit in retriever.run(query, principal, filters)]

    yield run
    store.close()


@pytest.mark.integration
class TestRetriever:
    @pytest.mark.parametrize("mode", list(SearchMode))
    def test_every_mode_finds_the_answering_rule(self, search, mode: SearchMode) -> None:  # type: ignore[no-untyped-def]
        assert search("How much capital must a firm hold?", mode=mode)[0] == "open"

    @pytest.mark.parametrize("fusion", list(FusionMethod))
    def test_both_fusions_rank_the_answering_rule_first_and_respect_access(
        self, search, fusion: FusionMethod
    ) -> None:  # type: ignore[no-untyped-def]
        assert search("How much capital must a firm hold?", fusion=fusion)[0] == "open"
        assert search("Rule 9.3", fusion=fusion)[0] == "open2"
        assert "secret" not in search("What did the board approve?", fusion=fusion)

    def test_sparse_matches_rule_numbers_exactly(self, search) -> None:  # type: ignore[no-untyped-def]
        assert search("Rule 9.3", mode=SearchMode.SPARSE)[0] == "open2"

    def test_restricted_document_never_reaches_unauthorised_callers(self, search) -> None:  # type: ignore[no-untyped-def]
        question = "What did the board approve about the merger with Zephyr?"
        for mode in SearchMode:
            assert "secret" not in search(question, mode=mode)
            assert search(question, Principal(subject="b", groups=["board"]), mode=mode) == [
                "secret"
            ]
        assert search(question, Principal(subject="nobody", groups=[])) == []

    def test_metadata_filters(self, search) -> None:  # type: ignore[no-untyped-def]
        both = Principal(subject="b", groups=["public", "board"])
        question = "firm rules"
        assert set(search(question, both, filters=SearchFilters(jurisdictions=["DIFC"]))) == {
            "secret"
        }
        assert set(search(question, both, filters=SearchFilters(document_ids=["open2"]))) == {
            "open2"
        }
        dated = SearchFilters(effective_from="2020-01-01", effective_to="2021-01-01")  # type: ignore[arg-type]
        assert set(search(question, both, filters=dated)) == {"open2"}
        assert search(question, both, filters=SearchFilters(regulators=["SEC"])) == []
