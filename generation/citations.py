"""[n] citation markers and the passage span that backs a sentence."""

from __future__ import annotations

import re

from core.models import Chunk, Citation, RetrievedChunk
from core.sentences import split_sentences

_MARKER = re.compile(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]")
_WORD = re.compile(r"\w+")
_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+([.,;:!?])")


def cited_numbers(sentence: str) -> list[int]:
    numbers: list[int] = []
    for group in _MARKER.findall(sentence):
        for number in re.split(r"[,;]", group):
            if int(number) not in numbers:
                numbers.append(int(number))
    return numbers


def strip_markers(sentence: str) -> str:
    """The sentence without its [n] markers, nor the space they leave before punctuation."""
    return _SPACE_BEFORE_PUNCTUATION.sub(r"\1", " ".join(_MARKER.sub("", sentence).split()))


def best_quote(claim: str, passage: str) -> str:
    """The passage sentence sharing most words with the claim: the span an analyst should read."""
    claim_words = {word.lower() for word in _WORD.findall(claim)}
    candidates = [line for chunk in passage.splitlines() for line in split_sentences(chunk)]
    if not candidates:
        return passage
    return max(
        candidates,
        key=lambda sentence: len(claim_words & {w.lower() for w in _WORD.findall(sentence)}),
    )


def citations_for(answer: str, passages: list[RetrievedChunk]) -> list[Citation]:
    """One citation per distinct passage number cited; numbers matching no passage are dropped."""
    sentences = split_sentences(answer)
    return cite([(strip_markers(s), cited_numbers(s)) for s in sentences], passages)


def cite(sentences: list[tuple[str, list[int]]], passages: list[RetrievedChunk]) -> list[Citation]:
    """Citations for (sentence, passage numbers) pairs, quoting each passage where the first
    sentence citing it draws on it."""
    citations: dict[int, Citation] = {}
    for sentence, numbers in sentences:
        for number in numbers:
            if number in citations or not 1 <= number <= len(passages):
                continue
            chunk = passages[number - 1].chunk
            citations[number] = make_citation(number, chunk, best_quote(sentence, chunk.text))
    return [citations[number] for number in sorted(citations)]


def make_citation(number: int, chunk: Chunk, quote: str) -> Citation:
    return Citation(
        n=number,
        document_id=chunk.document_id,
        document_title=chunk.document_title,
        section=chunk.section,
        section_path=chunk.section_path or chunk.section,
        page=chunk.page,
        chunk_id=chunk.chunk_id,
        quote=quote,
    )
