"""The interface every answer generator implements."""

from __future__ import annotations

from typing import Protocol

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
