"""The interfaces answer generators implement."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from core.models import Answer, RetrievedChunk


class ModelUnavailableError(RuntimeError):
    """The model server could not produce an answer (down, timing out, or refusing the request)."""


class Generator(Protocol):
    @property
    def name(self) -> str:
        """What answered: a model name, or `extractive`."""
        ...

    def generate(self, question: str, passages: list[RetrievedChunk]) -> Answer:
        """Answer from `passages` only; passage i is cited as [i + 1]."""
        ...


@runtime_checkable
class StreamingGenerator(Generator, Protocol):
    def stream(self, question: str, passages: list[RetrievedChunk]) -> Iterator[str | Answer]:
        """Yield the answer's text as it is written, then the complete Answer, last."""
        ...
