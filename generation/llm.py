"""Answers from any OpenAI-compatible chat-completions server: vLLM in production."""

from __future__ import annotations

import openai

from core.models import Answer, RetrievedChunk
from generation.base import ModelUnavailableError
from generation.citations import citations_for
from generation.prompt import build_messages


class OpenAICompatibleGenerator:
    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str = "not-needed",
        timeout_s: float = 60.0,
        max_tokens: int = 512,
        temperature: float = 0.0,
        max_retries: int = 2,
    ) -> None:
        if not base_url:
            raise ValueError("base_url is required")
        if timeout_s <= 0 or max_tokens < 1:
            raise ValueError("timeout_s and max_tokens must be positive")
        self.model = model
        self.max_tokens = max_tokens
        self.temperature = temperature
        # The client retries connection errors, 408/429 and 5xx with exponential backoff.
        self._client = openai.OpenAI(
            base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=max_retries
        )

    @property
    def name(self) -> str:
        return self.model

    def generate(self, question: str, passages: list[RetrievedChunk]) -> Answer:
        try:
            response = self._client.chat.completions.create(
                model=self.model,
                messages=build_messages(question, passages),  # type: ignore[arg-type]
                max_tokens=self.max_tokens,
                temperature=self.temperature,
            )
        except openai.APIError as error:
            raise ModelUnavailableError(f"model server error: {error}") from error
        text = (response.choices[0].message.content or "").strip() if response.choices else ""
        return Answer(
            text=text, citations=citations_for(text, passages), model=response.model or self.model
        )
