"""Answers without a language model: the passage sentences closest to the question, quoted."""

from __future__ import annotations

import numpy as np

from core.models import Answer, Citation, RetrievedChunk
from generation.citations import make_citation, split_sentences
from retrieval.embedder import Embedder

EXTRACTIVE_MODEL = "extractive"


class ExtractiveGenerator:
    """Quotes the `max_sentences` sentences of the top passages most similar to the question.

    Every sentence is verbatim from a passage, so every claim is supported by construction; this is
    the default when no model server is configured.
    """

    def __init__(
        self,
        embedder: Embedder,
        max_sentences: int = 3,
        passages_considered: int = 3,
        min_words: int = 5,
    ) -> None:
        if max_sentences < 1 or passages_considered < 1:
            raise ValueError("max_sentences and passages_considered must be at least 1")
        self._embedder = embedder
        self.max_sentences = max_sentences
        self.passages_considered = passages_considered
        self.min_words = min_words

    @property
    def name(self) -> str:
        return EXTRACTIVE_MODEL

    def generate(self, question: str, passages: list[RetrievedChunk]) -> Answer:
        # A sentence that several passages share (a rule repeated in two articles) is quoted once,
        # from the best-ranked of them.
        first_source: dict[str, int] = {}
        for number, passage in enumerate(passages[: self.passages_considered], start=1):
            for line in passage.chunk.text.splitlines():
                for sentence in split_sentences(line):
                    if len(sentence.split()) >= self.min_words:
                        first_source.setdefault(sentence, number)
        candidates = [(number, sentence) for sentence, number in first_source.items()]
        if not candidates:
            return Answer(text="", citations=[], model=EXTRACTIVE_MODEL)
        vectors = self._embedder.embed([sentence for _, sentence in candidates])
        similarity = vectors @ self._embedder.embed_one(question)
        chosen = [candidates[i] for i in np.argsort(-similarity)[: self.max_sentences]]
        text = " ".join(f"“{sentence}” [{number}]" for number, sentence in chosen)
        citations: dict[int, Citation] = {}
        for number, sentence in chosen:
            citations.setdefault(
                number, make_citation(number, passages[number - 1].chunk, sentence)
            )
        return Answer(
            text=text,
            citations=[citations[number] for number in sorted(citations)],
            model=EXTRACTIVE_MODEL,
        )
