"""Model routing and cost: a cheap model for routine questions, a premium one for complex ones,
and what each answer cost from a configurable price table."""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.models import ModelChoice, RetrievedChunk

# Phrases that ask to relate provisions to each other rather than to read one.
_CROSS_REFERENCE = re.compile(
    r"\b(cross[- ]?referenc\w*|as referred to in|referred to in|in conjunction with|read together"
    r"|pursuant to|interplay|interaction between|relationship between|relate[sd]? to each other"
    r"|compare[sd]?|comparison|differ(?:s|ence|ences)?\b|versus|vs\.?)",
    re.IGNORECASE,
)
# Enumerated parts: "(a) ... (b)", "1) ... 2)", "(i) ... (ii)".
_ENUMERATION = re.compile(r"(?:^|\s)\(?(?:[a-h1-9]|[ivx]{1,4})\)\s")


@dataclass(frozen=True)
class Route:
    premium: bool
    reason: str


class ModelRouter:
    """The documented routing rule. The premium model answers when the caller asks for it, or when
    the question is complex:

    - it is multi-part: two or more question marks, or `min_parts` or more enumerated parts
      ("(a) ... (b)", "1) ... 2)", clauses separated by ";");
    - it is long: `long_question_words` words or more;
    - it asks to relate provisions: cross-references, comparisons, differences;
    - the retrieved passages span `min_documents` or more documents.

    Otherwise (or when the caller asks for it) the cheap model answers.
    """

    def __init__(
        self, min_documents: int = 3, long_question_words: int = 40, min_parts: int = 2
    ) -> None:
        if min_documents < 2 or long_question_words < 1 or min_parts < 2:
            raise ValueError("min_documents and min_parts must be >= 2, long_question_words >= 1")
        self.min_documents = min_documents
        self.long_question_words = long_question_words
        self.min_parts = min_parts

    def run(
        self, question: str, passages: list[RetrievedChunk], choice: ModelChoice = ModelChoice.AUTO
    ) -> Route:
        if choice is not ModelChoice.AUTO:
            return Route(premium=choice is ModelChoice.PREMIUM, reason="requested")
        if question.count("?") >= 2:
            return Route(premium=True, reason="multi-part question")
        clauses = question.count(";") + 1
        if max(len(_ENUMERATION.findall(question)), clauses) >= self.min_parts:
            return Route(premium=True, reason="enumerated parts")
        if len(question.split()) >= self.long_question_words:
            return Route(premium=True, reason="long question")
        if _CROSS_REFERENCE.search(question):
            return Route(premium=True, reason="cross-reference or comparison")
        documents = {passage.chunk.document_id for passage in passages}
        if len(documents) >= self.min_documents:
            return Route(premium=True, reason=f"passages span {len(documents)} documents")
        return Route(premium=False, reason="routine question")


class PriceTable:
    """USD per million prompt and completion tokens, by model name; unknown models cost 0."""

    def __init__(self, prices: dict[str, tuple[float, float]] | None = None) -> None:
        for model, (prompt, completion) in (prices or {}).items():
            if prompt < 0 or completion < 0:
                raise ValueError(f"negative price for {model}")
        self.prices = dict(prices or {})

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        prompt, completion = self.prices.get(model, (0.0, 0.0))
        return (prompt_tokens * prompt + completion_tokens * completion) / 1_000_000
