"""The two stores against one contract, and against each other (qdrant-client's congruence tests).

Every deployment must return the same passages in the same order for the same question: the
embedded engine (`EdgeVectorStore`) and a Qdrant server or cluster (`QdrantServerStore`, here on
qdrant-client's in-process mode, which speaks the client API a server does). Small seeded
vectors, with deliberate score ties, so that tie-breaking is tested too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import numpy as np
import pytest
from pydantic import ValidationError
from qdrant_client import QdrantClient, models

from core.injection import QUARANTINE_REASON
from core.models import Chunk, FusionMethod, Principal, RetrievedChunk, SearchFilters
from core.settings import Settings
from retrieval.expansion import ReferenceExpander
from retrieval.filters import build_filter
from retrieval.store import VectorStore, chunk_point_id, open_vector_store
from retrieval.store import server as server_module
from retrieval.store.base import StoreUnavailableError, best
from retrieval.store.edge import EdgeVectorStore
from retrieval.store.server import QdrantServerStore

DIMENSION = 12
VOCABULARY = 40
PUBLIC = Principal(subject="analyst", groups=["public"])
BOARD = Principal(subject="director", groups=["public", "board"])
OUTSIDER = Principal(subject="outsider", groups=["contractors"])
pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect in the local Qdrant")

DOCUMENTS: dict[str, dict[str, Any]] = {
    "gen": {
        "document_title": "General Rulebook (GEN)",
        "jurisdiction": "ADGM",
        "regulator": "FSRA",
        "document_type": "rulebook",
        "effective_date": dt.date(2020, 6, 30),
        "access_groups": ["public"],
    },
    "cob": {
        "document_title": "COB — Conduct of Business",
        "jurisdiction": "DIFC",
        "regulator": "DFSA",
        "document_type": "rulebook",
        "effective_date": dt.date(2023, 1, 1),
        "access_groups": ["public"],
    },
    "guide": {
        "document_title": "Supervision guidance",
        "jurisdiction": "ADGM",
        "regulator": "FSRA",
        "document_type": "guidance",
        "access_groups": ["public", "board"],
    },
    "minutes": {
        "document_title": "Board minutes (MIN)",
        "jurisdiction": "ADGM",
        "regulator": "FSRA",
        "document_type": "minutes",
        "effective_date": dt.date(2025, 1, 1),
        "access_groups": ["board"],
    },
}
PASSAGES_PER_DOCUMENT = 6
PASSAGES = [(document_id, n) for document_id in DOCUMENTS for n in range(PASSAGES_PER_DOCUMENT)]
# Passages that cite others: within their document, in another by its code, and in one that only
# the board may read.
CITATIONS = {
    ("gen", 0): "A firm must notify the Regulator as required under Rule 3.1.2.",
    ("cob", 0): "Client money is held as GEN 3.1.4 requires.",
    ("cob", 1): "The board decided otherwise, see MIN 3.1.3.",
    ("guide", 0): "Supervisors follow Rule 3.1.5 and Rule 3.1.1.",
}
# Passages that share one dense and one sparse vector: every search scores them alike.
TIED = [("gen", 2), ("cob", 2), ("guide", 2), ("minutes", 2), ("gen", 5)]
QUARANTINED = ("gen", 5)


def make_chunk(document_id: str, ordinal: int, content_hash: str = "v1") -> Chunk:
    section_ref = f"3.1.{ordinal}"
    text = CITATIONS.get((document_id, ordinal), f"{document_id} passage {ordinal}.")
    return Chunk(
        **DOCUMENTS[document_id],
        document_id=document_id,
        chunk_id=chunk_point_id(document_id, section_ref, ordinal),
        section=f"Chapter 3 > Rule {section_ref}",
        section_ref=section_ref,
        text=f"{text} ({content_hash})",
        source=f"{document_id}.md",
        content_hash=content_hash,
        quarantine=QUARANTINE_REASON if (document_id, ordinal) == QUARANTINED else None,
    )


def chunk_id_of(document_id: str, ordinal: int) -> str:
    return make_chunk(document_id, ordinal).chunk_id


def sparse_vector(rng: np.random.Generator, terms: int = 5) -> models.SparseVector:
    indices = sorted(rng.choice(VOCABULARY, size=terms, replace=False).tolist())
    return models.SparseVector(indices=indices, values=rng.uniform(0.5, 2.0, terms).tolist())


class Corpus:
    """`PASSAGES` as chunks with seeded vectors; with `ties`, the `TIED` ones share theirs."""

    def __init__(self, seed: int = 7, ties: bool = True) -> None:
        rng = np.random.default_rng(seed)
        self.chunks = [make_chunk(*passage) for passage in PASSAGES]
        self.dense = rng.normal(size=(len(PASSAGES), DIMENSION)).astype(np.float32)
        self.sparse = [sparse_vector(rng) for _ in PASSAGES]
        self.tie_dense = rng.normal(size=DIMENSION).astype(np.float32)
        # Heavy weights: the tied passages are every query's best sparse match for it too.
        self.tie_sparse = models.SparseVector(indices=sparse_vector(rng).indices, values=[5.0] * 5)
        if ties:
            for position, passage in enumerate(PASSAGES):
                if passage in TIED:
                    self.dense[position] = self.tie_dense
                    self.sparse[position] = self.tie_sparse
        # The tied passages' vectors, a random query, and the first passage's own vectors.
        self.queries = [
            (self.tie_dense, self.tie_sparse),
            (rng.normal(size=DIMENSION).astype(np.float32), sparse_vector(rng, 8)),
            (self.dense[0], self.sparse[0]),
        ]

    def fill(self, store: VectorStore) -> VectorStore:
        store.ensure_collection(DIMENSION)
        store.upsert(self.chunks, self.dense, self.sparse)
        return store

    def vectors_of(
        self, *passages: tuple[str, int]
    ) -> tuple[np.ndarray, list[models.SparseVector]]:
        positions = [PASSAGES.index(passage) for passage in passages]
        return self.dense[positions], [self.sparse[i] for i in positions]


CORPUS = Corpus()


def open_store(kind: str, folder: Path) -> VectorStore:
    if kind == "edge":
        return EdgeVectorStore(folder / "vectors")
    return QdrantServerStore(QdrantClient(location=":memory:"), "chunks")


STORE_KINDS = ["edge", "server"]


@pytest.fixture(params=STORE_KINDS)
def empty_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    store = open_store(request.param, tmp_path)
    yield store
    store.close()


@pytest.fixture
def store(empty_store: VectorStore) -> VectorStore:
    """A filled store of its own, for a test that changes it."""
    return CORPUS.fill(empty_store)


@pytest.fixture(scope="module")
def filled_stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, VectorStore]]:
    """A filled store of each kind, shared by the tests that only read them."""
    folder = tmp_path_factory.mktemp("congruence")
    stores = {kind: CORPUS.fill(open_store(kind, folder)) for kind in STORE_KINDS}
    yield stores
    for each in stores.values():
        each.close()


@pytest.fixture(params=STORE_KINDS)
def shared(request: pytest.FixtureRequest, filled_stores: dict[str, VectorStore]) -> VectorStore:
    return filled_stores[request.param]


@pytest.fixture
def filled(filled_stores: dict[str, VectorStore]) -> tuple[VectorStore, VectorStore]:
    return filled_stores["edge"], filled_stores["server"]


@pytest.fixture
def both(tmp_path: Path) -> Iterator[tuple[VectorStore, VectorStore]]:
    """A filled store of each kind, for tests that change them."""
    stores = [CORPUS.fill(open_store(kind, tmp_path)) for kind in STORE_KINDS]
    yield stores[0], stores[1]
    for each in stores:
        each.close()


def close_to(scores: list[float]) -> Any:
    """Scores as float32 (qdrant-edge) and float64 (qdrant-client's local mode) compute them."""
    return pytest.approx(scores, rel=1e-4, abs=1e-4)


def ids(hits: list[RetrievedChunk]) -> list[str]:
    return [hit.chunk.chunk_id for hit in hits]


def assert_same_hits(edge_hits: list[RetrievedChunk], server_hits: list[RetrievedChunk]) -> None:
    assert ids(edge_hits) == ids(server_hits)
    edge_scores = [hit.score for hit in edge_hits]
    assert edge_scores == close_to([hit.score for hit in server_hits])
    for edge_hit, server_hit in zip(edge_hits, server_hits, strict=True):
        if edge_hit.vector is None or server_hit.vector is None:  # built in memory, not found
            assert edge_hit.vector is server_hit.vector is None
        else:
            assert edge_hit.vector == close_to(server_hit.vector)


MODES: dict[str, dict[str, Any]] = {
    "dense": {"use_dense": True, "use_sparse": False},
    "sparse": {"use_dense": False, "use_sparse": True},
    "hybrid-dbsf": {"use_dense": True, "use_sparse": True, "fusion": FusionMethod.DBSF},
    "hybrid-rrf": {"use_dense": True, "use_sparse": True, "fusion": FusionMethod.RRF},
}


def search(
    store: VectorStore,
    dense: np.ndarray,
    sparse: models.SparseVector,
    query_filter: models.Filter,
    *,
    use_dense: bool,
    use_sparse: bool,
    fusion: FusionMethod = FusionMethod.DBSF,
    limit: int = 4,
    candidates: int = 6,
) -> list[RetrievedChunk]:
    return store.search(
        dense=dense if use_dense else None,
        sparse=sparse if use_sparse else None,
        limit=limit,
        query_filter=query_filter,
        candidates=candidates,
        fusion=fusion,
    )


# Who asks, with which filters, and the documents a dense search over everything then finds.
FILTER_CASES: dict[str, tuple[Principal, SearchFilters | None, set[str]]] = {
    "public": (PUBLIC, None, {"gen", "cob", "guide"}),
    "board": (BOARD, None, {"gen", "cob", "guide", "minutes"}),
    "no matching group": (OUTSIDER, None, set()),
    "no groups": (Principal(subject="nobody"), None, set()),
    "document_id": (BOARD, SearchFilters(document_ids=["gen", "minutes"]), {"gen", "minutes"}),
    "jurisdiction": (BOARD, SearchFilters(jurisdictions=["DIFC"]), {"cob"}),
    "regulator": (BOARD, SearchFilters(regulators=["FSRA"]), {"gen", "guide", "minutes"}),
    "document_type": (
        BOARD,
        SearchFilters(document_types=["guidance", "minutes"]),
        {"guide", "minutes"},
    ),
    "effective range": (
        BOARD,
        SearchFilters(effective_from=dt.date(2021, 1, 1), effective_to=dt.date(2024, 12, 31)),
        {"cob"},
    ),
    "effective from": (
        BOARD,
        SearchFilters(effective_from=dt.date(2023, 1, 1)),
        {"cob", "minutes"},
    ),
    "effective to": (BOARD, SearchFilters(effective_to=dt.date(2022, 12, 31)), {"gen"}),
    "public asking for board documents": (
        PUBLIC,
        SearchFilters(document_ids=["minutes"]),
        set(),
    ),
}


class TestContract:
    """What every store does, each on its own."""

    def test_an_unmade_collection_is_empty(self, empty_store: VectorStore) -> None:
        assert empty_store.count() == 0
        assert empty_store.chunks() == []
        assert not empty_store.has_document("gen", "v1")
        assert empty_store.delete_document("gen") == 0
        for dense, sparse in CORPUS.queries:
            assert (
                empty_store.search(
                    dense=dense, sparse=sparse, limit=3, query_filter=build_filter(PUBLIC)
                )
                == []
            )

    def test_ensure_collection_keeps_data_and_refuses_another_dimension(
        self, shared: VectorStore
    ) -> None:
        shared.ensure_collection(DIMENSION)
        assert shared.count() == len(CORPUS.chunks)
        with pytest.raises(StoreUnavailableError):
            shared.ensure_collection(DIMENSION + 1)

    def test_upsert_stores_chunks_with_their_payload(self, shared: VectorStore) -> None:
        assert shared.count() == len(CORPUS.chunks)
        assert shared.has_document("gen", "v1")
        assert not shared.has_document("gen", "v2")
        assert not shared.has_document("other", "v1")
        assert shared.chunks() == sorted(CORPUS.chunks, key=lambda chunk: chunk.chunk_id)
        assert {chunk.document_id for chunk in shared.chunks("cob")} == {"cob"}

    def test_upserting_overwrites_and_a_new_version_replaces_the_old(
        self, store: VectorStore
    ) -> None:
        store.upsert(CORPUS.chunks[:3], CORPUS.dense[:3], CORPUS.sparse[:3])
        assert store.count() == len(CORPUS.chunks)
        new = [make_chunk("gen", ordinal, "v2") for ordinal in (0, 1, 7)]
        store.upsert(new, *CORPUS.vectors_of(("gen", 0), ("gen", 1), ("gen", 2)))
        store.delete_other_versions("gen", "v2")
        assert store.chunks("gen") == sorted(new, key=lambda chunk: chunk.chunk_id)
        assert store.has_document("gen", "v2")
        assert not store.has_document("gen", "v1")
        assert store.count() == len(CORPUS.chunks) - PASSAGES_PER_DOCUMENT + len(new)

    def test_delete_document_counts_what_it_removed(self, store: VectorStore) -> None:
        assert store.delete_document("cob") == PASSAGES_PER_DOCUMENT
        assert store.delete_document("cob") == 0
        assert store.chunks("cob") == []
        assert store.count() == len(CORPUS.chunks) - PASSAGES_PER_DOCUMENT

    @pytest.mark.parametrize("case", FILTER_CASES)
    def test_filters_select_exactly_the_matching_documents(
        self, shared: VectorStore, case: str
    ) -> None:
        principal, filters, documents = FILTER_CASES[case]
        hits = shared.search(
            dense=CORPUS.tie_dense,
            sparse=None,
            limit=len(CORPUS.chunks),
            query_filter=build_filter(principal, filters),
        )
        assert {hit.chunk.document_id for hit in hits} == documents
        assert all(hit.chunk.quarantine is None for hit in hits)

    @pytest.mark.parametrize("mode", MODES)
    def test_ties_are_broken_by_chunk_id(self, shared: VectorStore, mode: str) -> None:
        tied = sorted(chunk_id_of(*passage) for passage in TIED if passage != QUARANTINED)
        for limit in (2, len(tied)):  # a cut inside the ties and one right after them
            hits = search(
                shared,
                CORPUS.tie_dense,
                CORPUS.tie_sparse,
                build_filter(BOARD),
                **MODES[mode],
                limit=limit,
                candidates=len(tied),
            )
            assert ids(hits) == tied[:limit]
            if mode != "hybrid-rrf":  # RRF scores ranks, and tied passages get consecutive ones
                assert len({hit.score for hit in hits}) == 1

    @pytest.mark.parametrize("mode", MODES)
    def test_a_caller_without_a_matching_group_gets_nothing(
        self, shared: VectorStore, mode: str
    ) -> None:
        for dense, sparse in CORPUS.queries:
            assert search(shared, dense, sparse, build_filter(OUTSIDER), **MODES[mode]) == []

    @pytest.mark.parametrize("mode", MODES)
    def test_hits_carry_their_stored_dense_vector(self, shared: VectorStore, mode: str) -> None:
        """The query path compares passages with the question through these, never embedding a
        stored passage again: each must be the vector stored (as cosine stores it, unit length)."""
        dense, sparse = CORPUS.queries[1]
        hits = search(shared, dense, sparse, build_filter(BOARD, None), **MODES[mode])
        assert hits
        for hit in hits:
            stored = CORPUS.dense[[c.chunk_id for c in CORPUS.chunks].index(hit.chunk.chunk_id)]
            assert hit.vector is not None
            assert hit.vector == close_to((stored / np.linalg.norm(stored)).tolist())

    def test_search_needs_a_query_vector(self, shared: VectorStore) -> None:
        with pytest.raises(ValueError):
            shared.search(dense=None, sparse=None, limit=3, query_filter=build_filter(PUBLIC))


class TestCongruence:
    """The same calls on both stores give the same answers."""

    @pytest.mark.parametrize("case", FILTER_CASES)
    @pytest.mark.parametrize("mode", MODES)
    def test_search_ranks_and_scores_alike(
        self, filled: tuple[VectorStore, VectorStore], mode: str, case: str
    ) -> None:
        principal, filters, _ = FILTER_CASES[case]
        query_filter = build_filter(principal, filters)
        # A small limit and candidate count cut through the ties.
        for limit, candidates in ((2, 3), (30, 30)):
            for dense, sparse in CORPUS.queries[:2]:
                edge_hits, server_hits = (
                    search(
                        store,
                        dense,
                        sparse,
                        query_filter,
                        **MODES[mode],
                        limit=limit,
                        candidates=candidates,
                    )
                    for store in filled
                )
                assert_same_hits(edge_hits, server_hits)

    def test_reading_back_agrees(self, filled: tuple[VectorStore, VectorStore]) -> None:
        edge_store, server_store = filled
        assert edge_store.count() == server_store.count()
        assert edge_store.chunks() == server_store.chunks()
        for document_id in [*DOCUMENTS, "absent"]:
            assert edge_store.chunks(document_id) == server_store.chunks(document_id)
            for version in ("v1", "v2"):
                assert edge_store.has_document(document_id, version) == (
                    server_store.has_document(document_id, version)
                )

    @pytest.mark.parametrize("principal", [PUBLIC, BOARD], ids=["public", "board"])
    def test_reference_lookups_agree(
        self, filled: tuple[VectorStore, VectorStore], principal: Principal
    ) -> None:
        citing = [("gen", 0), ("cob", 0), ("cob", 1), ("guide", 0)]
        hits = [
            RetrievedChunk(chunk=make_chunk(*passage), score=1.0 - rank / 10)
            for rank, passage in enumerate(citing)
        ]
        dense, sparse = CORPUS.queries[1]
        expanded = [
            ReferenceExpander(store, from_top=len(hits), max_added=10).run(
                hits, dense=dense, sparse=sparse, query_filter=build_filter(principal), top_k=20
            )
            for store in filled
        ]
        assert_same_hits(*expanded)
        cited = [
            *citing,  # the ranking as it was, then what its hits cite, in their order
            ("gen", 2),  # Rule 3.1.2: in the citing document
            ("gen", 4),  # GEN 3.1.4: in the document with that code
            *([("minutes", 3)] if principal is BOARD else []),  # MIN 3.1.3: the board's only
            ("guide", 5),
            ("guide", 1),
        ]
        assert ids(expanded[0]) == [chunk_id_of(*passage) for passage in cited]

    def test_writes_and_deletes_agree(self, both: tuple[VectorStore, VectorStore]) -> None:
        new = [make_chunk("gen", ordinal, "v2") for ordinal in (0, 3, 8)]
        dense, sparse = CORPUS.vectors_of(("gen", 1), ("gen", 3), ("cob", 4))
        removed = []
        for store in both:
            store.upsert(new, dense, sparse)
            store.delete_other_versions("gen", "v2")
            removed.append((store.delete_document("cob"), store.delete_document("absent")))
        assert removed[0] == removed[1] == (PASSAGES_PER_DOCUMENT, 0)
        edge_store, server_store = both
        assert edge_store.count() == server_store.count()
        assert edge_store.chunks() == server_store.chunks()
        # Sparse IDF counts the live points only, on both, right after the deletes.
        for mode in MODES.values():
            for dense_query, sparse_query in CORPUS.queries:
                edge_hits, server_hits = (
                    search(store, dense_query, sparse_query, build_filter(BOARD), **mode)
                    for store in both
                )
                assert_same_hits(edge_hits, server_hits)


@pytest.mark.parametrize("fusion", list(FusionMethod))
def test_fusion_scores_as_qdrants_own(fusion: FusionMethod) -> None:
    """Fusion runs in `retrieval.store.base`: with no ties inside the candidate lists, it must
    score as Qdrant's does (whose order among equal fused scores is its storage order)."""
    corpus = Corpus(seed=11, ties=False)
    client = QdrantClient(location=":memory:")
    store = corpus.fill(QdrantServerStore(client, "chunks"))
    query_filter = build_filter(BOARD)
    engine_fusion = models.FusionQuery(
        fusion=models.Fusion.RRF if fusion is FusionMethod.RRF else models.Fusion.DBSF
    )
    for dense, sparse in corpus.queries:
        ours = store.search(
            dense=dense,
            sparse=sparse,
            limit=5,
            query_filter=query_filter,
            candidates=8,
            fusion=fusion,
        )
        qdrants = client.query_points(
            "chunks",
            prefetch=[
                models.Prefetch(query=dense.tolist(), using="dense", limit=8, filter=query_filter),
                models.Prefetch(query=sparse, using="sparse", limit=8, filter=query_filter),
            ],
            query=engine_fusion,
            limit=len(corpus.chunks),
        ).points
        expected = best([(str(point.id), point.score) for point in qdrants], 5)
        assert ids(ours) == [chunk_id for chunk_id, _ in expected]
        assert [hit.score for hit in ours] == close_to([score for _, score in expected])
    store.close()


class TestClusterSettings:
    def test_a_new_collection_gets_shards_replicas_and_write_consistency(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # qdrant-client's local mode ignores the cluster parameters: a mock sees what is sent.
        client = MagicMock(spec=QdrantClient)
        client.collection_exists.return_value = False
        monkeypatch.setattr(server_module, "QdrantClient", lambda **_: client)
        settings = Settings(
            _env_file=None,
            qdrant_url="http://qdrant:6333",
            qdrant_shards=6,
            qdrant_replication_factor=3,
            qdrant_write_consistency=2,
        )
        store = open_vector_store(settings)
        store.ensure_collection(DIMENSION)
        sent = client.create_collection.call_args.kwargs
        assert (sent["shard_number"], sent["replication_factor"]) == (6, 3)
        assert sent["write_consistency_factor"] == 2

    def test_defaults_are_a_single_node(self) -> None:
        settings = Settings(_env_file=None)
        assert (
            settings.qdrant_shards,
            settings.qdrant_replication_factor,
            settings.qdrant_write_consistency,
        ) == (1, 1, 1)
        with pytest.raises(ValidationError):
            Settings(_env_file=None, qdrant_shards=0)

    @pytest.mark.parametrize(
        ("shards", "replication_factor", "write_consistency"),
        [(0, 1, 1), (1, 0, 1), (1, 1, 0), (2, 2, 3)],
    )
    def test_impossible_cluster_parameters_are_refused_at_once(
        self, shards: int, replication_factor: int, write_consistency: int
    ) -> None:
        client = MagicMock()
        with pytest.raises(ValueError):
            QdrantServerStore(
                client,
                "chunks",
                shards=shards,
                replication_factor=replication_factor,
                write_consistency=write_consistency,
            )
        assert client.mock_calls == []
