"""Answers without a language model: for each part of the question, the passage sentences closest
to it, quoted verbatim and cited."""

from __future__ import annotations

import numpy as np

from core.models import Answer, AnswerPart, AnswerSentence, Citation, PartStatus, RetrievedChunk
from core.sentence_vectors import SentenceVectors
from core.sentences import QUOTABLE_MIN_WORDS, passage_sentences
from generation.citations import make_citation
from retrieval.embedder import Embedder, TextRole

EXTRACTIVE_MODEL = "extractive"
# Recitals explain; articles oblige. A recital sentence must be this much closer to be quoted.
RECITAL_PENALTY = 0.05


class ExtractiveGenerator:
    """Quotes, for each part, the sentences of that part's top passages most similar to the part.

    The sentences' vectors come from `stored` (ingestion embedded them) where it has them.

    A one-part question gets up to `max_sentences` quotes; each part of a multi-part question gets
    up to `per_part`, so that every part is answered. A passage that reference expansion joined to
    one of the top passages (one it cites, or one citing it) is considered too, with one quote more
    for each.
    Every sentence is verbatim from a passage, so every claim is supported by construction; this
    is the default when no model server is configured.
    """

    def __init__(
        self,
        embedder: Embedder,
        stored: SentenceVectors | None = None,
        max_sentences: int = 3,
        per_part: int = 3,
        passages_considered: int = 3,
        min_words: int = QUOTABLE_MIN_WORDS,
    ) -> None:
        if max_sentences < 1 or per_part < 1 or passages_considered < 1:
            raise ValueError("max_sentences, per_part and passages_considered must be at least 1")
        self._embedder = embedder
        self._stored = stored
        self.max_sentences = max_sentences
        self.per_part = per_part
        self.passages_considered = passages_considered
        self.min_words = min_words

    @property
    def name(self) -> str:
        return EXTRACTIVE_MODEL

    def generate(
        self,
        question: str,
        passages: list[RetrievedChunk],
        parts: list[AnswerPart] | None = None,
    ) -> Answer:
        if not parts:
            parts = [AnswerPart(text=question, passages=list(range(1, len(passages) + 1)))]
        asked = [
            (index, part)
            for index, part in enumerate(parts, start=1)
            if part.status is not PartStatus.NOT_COVERED
        ]
        considered = [self._considered(part, passages) for _, part in asked]
        candidates = self._candidates(passages, considered)
        if not candidates:
            return Answer(text="", citations=[], model=EXTRACTIVE_MODEL, parts=parts)
        texts = sorted({sentence for sentence, _ in candidates})
        row = {sentence: i for i, sentence in enumerate(texts)}
        vectors = self._sentence_vectors(texts)
        queries = self._embedder.embed_cached([part.asked for _, part in asked], TextRole.QUERY)
        limit = self.max_sentences if len(parts) == 1 else self.per_part
        quoted: set[str] = set()
        chosen: list[AnswerSentence] = []
        for (index, _), query, numbers in zip(asked, queries, considered, strict=True):
            options = [(s, n) for s, n in candidates if n in numbers and s not in quoted]
            scores = [
                float(vectors[row[s]] @ query) - _recital_penalty(passages[n - 1])
                for s, n in options
            ]
            joined = sum(passages[n - 1].joins is not None for n in numbers)
            for quote, number in _spread(
                [options[int(i)] for i in np.argsort(-np.asarray(scores))], limit + joined
            ):
                quoted.add(quote)
                chosen.append(AnswerSentence(text=quote, citations=[number], part=index))
        text = " ".join(f"“{s.text}” [{s.citations[0]}]" for s in chosen)
        citations: dict[int, Citation] = {}
        for chosen_sentence in chosen:
            number = chosen_sentence.citations[0]
            citations.setdefault(
                number, make_citation(number, passages[number - 1].chunk, chosen_sentence.text)
            )
        return Answer(
            text=text,
            citations=[citations[number] for number in sorted(citations)],
            model=EXTRACTIVE_MODEL,
            sentences=chosen,
            parts=parts,
        )

    def _sentence_vectors(self, texts: list[str]) -> np.ndarray:
        """The sentences' vectors: those ingestion stored, the others embedded (and cached)."""
        stored = self._stored.get(self._embedder.signature, texts) if self._stored else {}
        missing = [text for text in texts if text not in stored]
        computed = (
            dict(zip(missing, self._embedder.embed_cached(missing, TextRole.DOCUMENT), strict=True))
            if missing
            else {}
        )
        return np.asarray(
            [stored[t] if t in stored else computed[t] for t in texts], dtype=np.float32
        ).reshape(len(texts), self._embedder.dimension)

    def _considered(self, part: AnswerPart, passages: list[RetrievedChunk]) -> list[int]:
        """The part's first `passages_considered` passages that its search found, and the
        passages reference expansion joined to them: a rule is answered with the rule it refers
        to, and with the rule applying it."""
        found = [n for n in part.passages if passages[n - 1].joins is None]
        top = found[: self.passages_considered]
        joined = {passages[n - 1].chunk.chunk_id for n in top}
        return [n for n in part.passages if n in top or passages[n - 1].joins in joined]

    def _candidates(
        self, passages: list[RetrievedChunk], considered: list[list[int]]
    ) -> list[tuple[str, int]]:
        """(sentence, passage number) for the sentences of the passages any part considers; a
        sentence that several passages share (a rule repeated in two articles) is kept once, with
        the best-ranked of them."""
        first_source: dict[str, int] = {}
        for number in sorted({n for numbers in considered for n in numbers}):
            for sentence in passage_sentences(passages[number - 1].chunk.text, self.min_words):
                first_source.setdefault(sentence, number)
        return list(first_source.items())


def _spread(ranked: list[tuple[str, int]], limit: int) -> list[tuple[str, int]]:
    """The `limit` best sentences, taking each passage's best before any passage's second: an
    answer that cites two articles covers more of the question than two quotes of one."""
    firsts: list[tuple[str, int]] = []
    seconds: list[tuple[str, int]] = []
    seen: set[int] = set()
    for sentence, number in ranked:
        (seconds if number in seen else firsts).append((sentence, number))
        seen.add(number)
    return (firsts + seconds)[:limit]


def _recital_penalty(passage: RetrievedChunk) -> float:
    return RECITAL_PENALTY if passage.chunk.section.startswith("Recitals") else 0.0
