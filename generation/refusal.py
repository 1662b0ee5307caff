"""Refusal before generation: when nothing retrieved is close enough to the question, say so.

Retrieval always returns its top hits, however far they are from the question. The gate embeds the
question and the top passages (as indexed: title, headings, text) with the service's embedder and
refuses when the best cosine similarity is below a threshold (the default in core.settings is
calibrated on answerable and unanswerable questions by `benchmarks/refusal.py`, where comparing
whole passages separated the two as well as comparing their sentences, with 5x fewer texts to
embed; figures in docs/benchmarks.md).
"""

from __future__ import annotations

import enum

import numpy as np

from core.models import RetrievedChunk
from generation.citations import split_sentences
from retrieval.embedder import Embedder


class RelevanceSignal(enum.StrEnum):
    """What the question is compared with."""

    PASSAGE = "passage"  # each top passage as a whole (title, headings and text): the default
    SENTENCE = "sentence"  # each sentence of the top passages


class RelevanceGate:
    def __init__(
        self,
        embedder: Embedder,
        threshold: float,
        signal: RelevanceSignal = RelevanceSignal.PASSAGE,
        passages_considered: int = 3,
        min_words: int = 4,
    ) -> None:
        if not -1.0 <= threshold <= 1.0:
            raise ValueError("threshold is a cosine similarity: between -1 and 1")
        if passages_considered < 1:
            raise ValueError("passages_considered must be at least 1")
        self._embedder = embedder
        self.threshold = threshold
        self.signal = RelevanceSignal(signal)
        self.passages_considered = passages_considered
        self.min_words = min_words

    def score(self, question: str, passages: list[RetrievedChunk]) -> float:
        """The best cosine similarity between the question and the top passages (or sentences)."""
        texts = self._texts(passages[: self.passages_considered])
        if not texts:
            return -1.0
        vectors = self._embedder.embed([question, *texts])
        return float(np.max(vectors[1:] @ vectors[0]))

    def run(self, question: str, passages: list[RetrievedChunk]) -> bool:
        """True when the passages are relevant enough to answer from."""
        return bool(passages) and self.score(question, passages) >= self.threshold

    def _texts(self, passages: list[RetrievedChunk]) -> list[str]:
        if self.signal is RelevanceSignal.PASSAGE:
            return [p.chunk.embedding_text() for p in passages]
        return [
            sentence
            for p in passages
            for line in p.chunk.text.splitlines()
            for sentence in split_sentences(line)
            if len(sentence.split()) >= self.min_words
        ]
