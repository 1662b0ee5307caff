"""The interfaces answer generators implement."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from core.models import Answer, AnswerPart, RetrievedChunk


class ModelUnavailableError(RuntimeError):
    """The model server could not produce an answer (down, timing out, or refusing the request)."""


class Generator(Protocol):
    @property
    def name(self) -> str:
        """What answered: a model name, or `extractive`."""
        ...

    def generate(
        self,
        question: str,
        passages: list[RetrievedChunk],
        parts: list[AnswerPart] | None = None,
    ) -> Answer:
        """Answer from `passages` only; passage i is cited as [i + 1]. With `parts`, answer each
        part that is not marked not covered, from the passages retrieved for it."""
        ...


@runtime_checkable
class StreamingGenerator(Generator, Protocol):
    def stream(
        self,
        question: str,
        passages: list[RetrievedChunk],
        parts: list[AnswerPart] | None = None,
    ) -> Iterator[str | Answer]:
        """Yield the answer's text as it is written, then the complete Answer, last."""
        ...
