"""The retriever: configure once, then `run(query, principal, filters)` returns ranked chunks."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from qdrant_client import models

from core.models import FusionMethod, Principal, RetrievedChunk, SearchFilters, SearchMode
from core.timing import timed
from retrieval.embedder import Embedder, TextRole
from retrieval.expansion import ReferenceExpander
from retrieval.filters import build_filter
from retrieval.reranker import CrossEncoderReranker
from retrieval.sparse import BM25Encoder
from retrieval.store import VectorStore


class Retriever:
    """Dense, sparse (BM25) or hybrid search over the store, always filtered by access, then
    optionally re-scored by a cross-encoder over the best `rerank_candidates` fused hits."""

    def __init__(
        self,
        store: VectorStore,
        embedder: Embedder,
        sparse_encoder: BM25Encoder,
        mode: SearchMode = SearchMode.HYBRID,
        top_k: int = 5,
        candidates: int = 100,
        fusion: FusionMethod = FusionMethod.DBSF,
        reranker: CrossEncoderReranker | None = None,
        rerank_candidates: int = 30,
        expander: ReferenceExpander | None = None,
    ) -> None:
        if top_k < 1 or candidates < 1 or rerank_candidates < 1:
            raise ValueError("top_k, candidates and rerank_candidates must be at least 1")
        self.reranker = reranker
        self.rerank_candidates = rerank_candidates
        self.expander = expander
        self._store = store
        self._embedder = embedder
        self._sparse_encoder = sparse_encoder
        self.mode = SearchMode(mode)
        self.top_k = top_k
        self.candidates = candidates
        self.fusion = FusionMethod(fusion)

    def run(
        self,
        query: str,
        principal: Principal,
        filters: SearchFilters | None = None,
        top_k: int | None = None,
        timings: dict[str, float] | None = None,
    ) -> list[RetrievedChunk]:
        """Search, rerank, expand; each stage's milliseconds are added to `timings` if given."""
        stages = timings if timings is not None else {}
        with timed(stages, "retrieval"):
            candidates = self.search(query, principal, filters, top_k)
        with timed(stages, "rerank"):
            candidates = self.rerank(query, candidates, top_k)
        with timed(stages, "expansion"):
            return self.expand(candidates, top_k)

    def search(
        self,
        query: str,
        principal: Principal,
        filters: SearchFilters | None = None,
        top_k: int | None = None,
    ) -> Candidates:
        """The fused candidates: `top_k` of them, or the reranker's pool when there is one."""
        if not query.strip():
            raise ValueError("the query is empty")
        dense = (
            None
            if self.mode is SearchMode.SPARSE
            else self._embedder.embed_cached([query], TextRole.QUERY)[0]
        )
        sparse = None if self.mode is SearchMode.DENSE else self._sparse_encoder.encode_query(query)
        limit = top_k or self.top_k
        pool = max(limit, self.rerank_candidates) if self.reranker else limit
        query_filter = build_filter(principal, filters)
        hits = self._store.search(
            dense=dense,
            sparse=sparse,
            limit=pool,
            query_filter=query_filter,
            candidates=max(self.candidates, pool),
            fusion=self.fusion,
        )
        return Candidates(hits, dense, sparse, query_filter)

    def rerank(self, query: str, candidates: Candidates, top_k: int | None = None) -> Candidates:
        """The best `top_k` hits by the cross-encoder, or the hits as they are without one."""
        limit = top_k or self.top_k
        if self.reranker is None or not candidates.hits:
            return replace(candidates, hits=candidates.hits[:limit])
        return replace(candidates, hits=self.reranker.run(query, candidates.hits, top_k=limit))

    def expand(self, candidates: Candidates, top_k: int | None = None) -> list[RetrievedChunk]:
        """The hits, with the passages the best of them cite when expansion is on."""
        if self.expander is None or not candidates.hits:
            return candidates.hits
        return self.expander.run(
            candidates.hits,
            dense=candidates.dense,
            sparse=candidates.sparse,
            query_filter=candidates.query_filter,
            top_k=top_k or self.top_k,
        )


@dataclass(frozen=True)
class Candidates:
    """Hits with the query vectors and filter that found them: expansion searches with them."""

    hits: list[RetrievedChunk]
    dense: np.ndarray | None
    sparse: models.SparseVector | None
    query_filter: models.Filter
