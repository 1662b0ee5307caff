"""Refusal before generation: when nothing retrieved is close enough to the question, say so.

Retrieval always returns its top hits, however far they are from the question. The gate compares
the question's embedding with the top passages' (the vectors stored with them at ingestion: title,
headings, text) and refuses when the best cosine similarity is below a threshold (the default in
core.settings is calibrated on answerable and unanswerable questions by `benchmarks/refusal.py`,
where comparing whole passages separated the two as well as comparing their sentences; figures in
docs/benchmarks.md).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable

import numpy as np

from core.models import RetrievedChunk
from core.sentences import passage_sentences
from retrieval.embedder import Embedder, TextRole


class RelevanceSignal(enum.StrEnum):
    """What the question is compared with."""

    PASSAGE = "passage"  # each top passage as a whole (title, headings and text): the default
    SENTENCE = "sentence"  # each sentence of the top passages


# A name a question asks about: "under HIPAA", "Singapore's PDPA", "in California", "the CCPA".
_NAME = r"(?:[A-Z][A-Za-z]*[A-Z0-9][A-Za-z0-9-]*|[A-Z][a-z]+(?:[ -][A-Z][A-Za-z]+)*)"
_ASKED_NAME = re.compile(
    rf"(?:\b(?i:under|in|by|per|from|of|to|with|according to|pursuant to)\s+(?:(?i:the)\s+)?"
    rf"(?P<after>{_NAME})|(?P<owner>{_NAME})['’]s\b|\b(?P<acronym>[A-Z][A-Za-z]*[A-Z][A-Z0-9]+)\b)"
)
# A law called by its name wherever the question puts it: "the Texas Data Privacy and Security
# Act", "the EU Data Act"; indexed when an indexed document's name is part of it ("the EU AI Act").
_INSTRUMENT = re.compile(
    r"\b(?:[A-Z][\w’'-]*\s+(?:(?:and|of|for|on)\s+)?)+"
    r"(?:Act|Law|Regulation|Directive|Code|Framework|Ordinance|Bill|Convention)\b"
)
_WORD = re.compile(r"[\w/()-]+")
_LEADING = re.compile(r"^(?:(?:The|Under|In|For|And|Or|But|Does|Do|Is|Are|Can)\s+)+")
_NOT_NAMES = {"what", "who", "that", "it", "there", "here", "where", "how", "let", "this", "i"}
_OWNED = re.compile(r"\b(?:our|your|their|my|its|his|her)\s+$", re.IGNORECASE)


def foreign_names(
    question: str, passages: list[RetrievedChunk], known: Iterable[str] = ()
) -> list[str]:
    """Names the question asks about (a law, a jurisdiction, an authority) that neither the
    passages nor the indexed documents' names mention: the passages are then about something
    else, however close their wording (an EU deadline is no answer about Singapore's)."""
    haystack = " ".join(
        f"{p.chunk.document_title} {p.chunk.section} {p.chunk.text}" for p in passages
    ).lower()
    known_lower = {name.lower() for name in known}
    initials = _initialisms(haystack)
    missing: list[str] = []
    for match in _ASKED_NAME.finditer(question):
        name = _LEADING.sub("", next(g for g in match.groups() if g))
        if not name or name.lower() in _NOT_NAMES or _OWNED.search(question[: match.start()]):
            continue
        if name.lower() in known_lower or name.lower() in haystack or name.lower() in initials:
            continue
        if name not in missing:
            missing.append(name)
    for match in _INSTRUMENT.finditer(question):
        name = _LEADING.sub("", match.group())
        if " " not in name or name.lower() in haystack or _names_any(name, known_lower):
            continue
        if name not in missing:
            missing.append(name)
    return missing


def _names_any(name: str, known: set[str]) -> bool:
    """Whether one of the `known` names is among the name's words ("AI Act" in "EU AI Act")."""
    words = f" {' '.join(_WORD.findall(name.lower()))} "
    return any(f" {known_name} " in words for known_name in known)


def _initialisms(text: str) -> set[str]:
    """The initials of every run of 2 to 5 words: "data protection officer" -> "dpo"."""
    words = re.findall(r"[a-z]+", text)
    return {
        "".join(word[0] for word in words[i : i + n])
        for n in range(2, 6)
        for i in range(len(words) - n + 1)
    }


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
        """The best cosine similarity between the question and the top passages (or sentences).
        Whole passages are compared through the vectors stored with them, as ingestion embedded
        the same text; a passage that came without one is embedded here."""
        considered = passages[: self.passages_considered]
        query = self._embedder.embed_cached([question], TextRole.QUERY)[0]
        if self.signal is RelevanceSignal.PASSAGE:
            vectors = [p.vector for p in considered if p.vector is not None]
            texts = [p.chunk.embedding_text() for p in considered if p.vector is None]
        else:
            vectors, texts = [], self._sentences(considered)
        if not vectors and not texts:
            return -1.0
        stored = np.asarray(vectors, dtype=np.float32).reshape(-1, query.shape[0])
        stored /= np.maximum(np.linalg.norm(stored, axis=1, keepdims=True), 1e-12)
        embedded = self._embedder.embed_cached(texts, TextRole.DOCUMENT) if texts else stored[:0]
        return float(np.max(np.concatenate([stored, embedded]) @ query))

    def run(
        self,
        question: str,
        passages: list[RetrievedChunk],
        known_names: Iterable[str] | None = None,
        asked: str | None = None,
    ) -> bool:
        """True when the passages are relevant enough to answer from. With `known_names` (the
        indexed documents' names), a question asking about a law, place or authority that neither
        they nor the passages mention is not answered from them. `asked`: the words to look for
        such names in, when `question` also carries a scenario (default: the question)."""
        if not passages:
            return False
        considered = passages[: self.passages_considered]
        names_in = asked if asked is not None else question
        if known_names is not None and foreign_names(names_in, considered, known_names):
            return False
        return self.score(question, passages) >= self.threshold

    def _sentences(self, passages: list[RetrievedChunk]) -> list[str]:
        return [s for p in passages for s in passage_sentences(p.chunk.text, self.min_words)]
