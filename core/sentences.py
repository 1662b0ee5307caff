"""Sentence splitting, shared by ingestion (which stores passage sentences' vectors) and answers."""

from __future__ import annotations

import re

# A sentence ends at . ! ? (then optional citation markers) before whitespace and a capital,
# a digit or an opening bracket; "Art. 5" style abbreviations are rare enough in answers to accept.
_SENTENCE_END = re.compile(
    r"(?:(?<=[.!?])|(?<=[.!?][”\"’)]))(?:\s*\[[\d,;\s]+\])*\s+(?=[A-Z0-9(‘'\"“])"
)
# The shortest passage sentence an extractive answer quotes: shorter ones are headings and list
# stubs ("(a) the controller;"), which answer nothing on their own.
QUOTABLE_MIN_WORDS = 5


def split_sentences(text: str) -> list[str]:
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        end = match.start() + len(match.group(0).rstrip())
        sentences.append(text[start:end].strip())
        start = match.end()
    sentences.append(text[start:].strip())
    return [sentence for sentence in sentences if sentence]


def passage_sentences(text: str, min_words: int = QUOTABLE_MIN_WORDS) -> list[str]:
    """A passage's sentences of at least `min_words` words, in order; a line break (list item,
    heading, paragraph) always ends one."""
    return [
        sentence
        for line in text.splitlines()
        for sentence in split_sentences(line)
        if len(sentence.split()) >= min_words
    ]
