"""Answers from any OpenAI-compatible chat-completions server: vLLM in production."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import openai
from openai.types import CompletionUsage

from core.models import (
    Answer,
    AnswerPart,
    AnswerSentence,
    RetrievedChunk,
    StructuredOutput,
    Usage,
)
from generation.base import ModelUnavailableError
from generation.breaker import CircuitBreaker
from generation.citations import cite
from generation.prompt import build_messages
from generation.routing import PriceTable
from generation.structured import (
    FALLBACK_ORDER,
    StreamDecoder,
    parse_answer,
    render,
    response_format,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

# What a server answers when it does not support the requested response_format (llama.cpp-python
# answers json_schema with a 500); `auto` then tries the next format.
_FORMAT_REJECTED = {400, 422, 500, 501}


class OpenAICompatibleGenerator:
    """Asks for sentences with their passage numbers (structured output where the server has it),
    and turns the reply into an Answer with citations and usage.

    Transient failures (connection errors, timeouts, 408/409/429, 5xx) are retried by the openai
    client with exponential backoff (0.5 s doubling to 8 s, with jitter) up to `max_retries` times;
    a call that still fails counts against the circuit breaker, which then refuses calls at once
    for its cool-down instead of letting every request wait out the same timeouts.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str = "not-needed",
        timeout_s: float = 60.0,
        connect_timeout_s: float = 5.0,
        max_tokens: int = 512,
        temperature: float = 0.0,
        max_retries: int = 2,
        structured: StructuredOutput = StructuredOutput.AUTO,
        breaker: CircuitBreaker | None = None,
        prices: PriceTable | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        if not base_url:
            raise ValueError("base_url is required")
        if timeout_s <= 0 or connect_timeout_s <= 0 or max_tokens < 1:
            raise ValueError("timeouts and max_tokens must be positive")
        self.model = model
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.breaker = breaker or CircuitBreaker()
        self._prices = prices or PriceTable()
        self._modes: tuple[StructuredOutput, ...] = (
            FALLBACK_ORDER if structured is StructuredOutput.AUTO else (structured,)
        )
        self._client = openai.OpenAI(
            base_url=base_url,
            api_key=api_key,
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            max_retries=max_retries,
            http_client=http_client,  # e.g. for a proxy or private CA; default: openai's own
        )

    @property
    def name(self) -> str:
        return self.model

    @property
    def structured(self) -> StructuredOutput:
        """The output format in use (under `auto`, the first one the server has accepted so far)."""
        return self._modes[0]

    def generate(
        self,
        question: str,
        passages: list[RetrievedChunk],
        parts: list[AnswerPart] | None = None,
    ) -> Answer:
        response, _ = self._call(
            lambda mode: self._client.chat.completions.create(
                **self._request(question, passages, mode, parts)
            )
        )
        content = (response.choices[0].message.content or "") if response.choices else ""
        return self._answer(content, passages, response.model, response.usage)

    def stream(
        self,
        question: str,
        passages: list[RetrievedChunk],
        parts: list[AnswerPart] | None = None,
    ) -> Iterator[str | Answer]:
        """Yields the answer's text as it is written, then the complete Answer."""
        stream, mode = self._call(
            lambda mode: self._client.chat.completions.create(
                **self._request(question, passages, mode, parts),
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        decoder = StreamDecoder(json_output=mode is not StructuredOutput.TEXT)
        model: str | None = None
        usage: CompletionUsage | None = None
        pieces = 0
        try:
            for chunk in stream:
                model = chunk.model or model
                usage = chunk.usage or usage
                for choice in chunk.choices:
                    if choice.delta.content:
                        pieces += 1
                        if text := decoder.feed(choice.delta.content):
                            yield text
        except openai.APIError as error:
            self.breaker.record_failure()
            raise ModelUnavailableError(f"model server error mid-answer: {error}") from error
        finally:
            stream.close()
        if tail := decoder.finish():
            yield tail
        if usage is None:
            # A server without stream usage: one streamed piece is one token on vLLM and llama.cpp.
            usage = CompletionUsage(prompt_tokens=0, completion_tokens=pieces, total_tokens=pieces)
        yield self._answer(decoder.raw, passages, model, usage)

    def _request(
        self,
        question: str,
        passages: list[RetrievedChunk],
        mode: StructuredOutput,
        parts: list[AnswerPart] | None = None,
    ) -> dict[str, Any]:
        json_output = mode is not StructuredOutput.TEXT
        request: dict[str, Any] = {
            "model": self.model,
            "messages": build_messages(question, passages, json_output=json_output, parts=parts),
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }
        if (fmt := response_format(mode)) is not None:
            request["response_format"] = fmt
        return request

    def _call(self, send: Callable[[StructuredOutput], T]) -> tuple[T, StructuredOutput]:
        """One request through the breaker, falling back to the next output format when the
        server rejects the current one (only under `auto`)."""
        if not self.breaker.allow():
            raise ModelUnavailableError(
                f"model server for {self.model} is failing: not called for another "
                f"{self.breaker.retry_in_s():.0f} s (circuit open)"
            )
        for index, mode in enumerate(self._modes):
            try:
                result = send(mode)
            except openai.APIStatusError as error:
                if error.status_code in _FORMAT_REJECTED and index + 1 < len(self._modes):
                    log.warning(
                        "%s rejected %s output (%s); trying the next format",
                        self.model,
                        mode,
                        error.status_code,
                    )
                    continue
                if error.status_code >= 500 or error.status_code == 429:
                    self.breaker.record_failure()
                else:
                    self.breaker.record_success()  # it answered: the request was the problem
                raise ModelUnavailableError(f"model server error: {error}") from error
            except openai.APIError as error:
                self.breaker.record_failure()
                raise ModelUnavailableError(f"model server error: {error}") from error
            self.breaker.record_success()
            if index:
                log.warning("%s: using %s output from now on", self.model, mode)
                self._modes = self._modes[index:]
            return result, mode
        raise AssertionError("unreachable: the last format re-raises")

    def _answer(
        self,
        content: str,
        passages: list[RetrievedChunk],
        model: str | None,
        usage: CompletionUsage | None,
    ) -> Answer:
        sentences = [
            AnswerSentence(
                text=sentence.text,
                citations=[n for n in sentence.citations if 1 <= n <= len(passages)],
            )
            for sentence in parse_answer(content)
        ]
        model = model or self.model
        prompt_tokens = usage.prompt_tokens if usage else 0
        completion_tokens = usage.completion_tokens if usage else 0
        return Answer(
            text=render(sentences),
            citations=cite([(s.text, s.citations) for s in sentences], passages),
            model=model,
            sentences=sentences,
            usage=Usage(
                model=model,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                cost_usd=self._prices.cost(self.model, prompt_tokens, completion_tokens),
            ),
        )
