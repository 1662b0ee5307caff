"""Structured answers: the JSON schema the model is asked to fill, a tolerant parser for whatever
comes back, and an incremental decoder that turns streamed JSON into readable answer text."""

from __future__ import annotations

import json
import re
from typing import Any

import jiter

from core.models import AnswerSentence, StructuredOutput
from core.sentences import split_sentences
from generation.citations import cited_numbers, strip_markers

# The order `auto` tries them in.
FALLBACK_ORDER = (StructuredOutput.JSON_SCHEMA, StructuredOutput.JSON_OBJECT, StructuredOutput.TEXT)

ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "sentences": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {
                    "text": {"type": "string"},
                    "citations": {"type": "array", "items": {"type": "integer", "minimum": 1}},
                },
                "required": ["text", "citations"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["sentences"],
    "additionalProperties": False,
}


def response_format(mode: StructuredOutput) -> dict[str, Any] | None:
    if mode is StructuredOutput.JSON_SCHEMA:
        return {
            "type": "json_schema",
            "json_schema": {"name": "cited_answer", "schema": ANSWER_SCHEMA, "strict": True},
        }
    if mode is StructuredOutput.JSON_OBJECT:
        return {"type": "json_object", "schema": ANSWER_SCHEMA}
    return None


_FENCE = re.compile(r"```(?:json)?\s*(.*?)(?:```|$)", re.DOTALL)


def parse_answer(raw: str) -> list[AnswerSentence]:
    """Sentences and their passage numbers from the model's output, whatever its shape: schema
    JSON (complete, in a code fence, or cut off by the token limit) or text with [n] markers."""
    text = raw.strip()
    fenced = _FENCE.search(text)
    if fenced and text.startswith("```"):
        text = fenced.group(1).strip()
    if text.startswith("{"):
        data = _load_partial(text)
        if isinstance(data, dict):
            sentences = _from_json(data)
            if sentences is not None:
                return sentences
    return sentences_from_text(text)


def _load_partial(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return jiter.from_json(text.encode(), partial_mode="trailing-strings")
    except ValueError:
        return None


def _from_json(data: dict[str, Any]) -> list[AnswerSentence] | None:
    items = data.get("sentences")
    if not isinstance(items, list):
        # Another shape of JSON answer: read its text, if it has one.
        for key in ("answer", "text"):
            if isinstance(data.get(key), str):
                return sentences_from_text(data[key])
        return None
    sentences = []
    for item in items:
        if isinstance(item, str):
            sentences.extend(sentences_from_text(item))
            continue
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            continue
        numbers = cited_numbers(item["text"])  # markers the model also wrote into the text
        for value in item.get("citations") or []:
            number = _as_number(value)
            if number is not None and number not in numbers:
                numbers.append(number)
        sentence = strip_markers(item["text"])
        if sentence:
            sentences.append(AnswerSentence(text=sentence, citations=numbers))
    return sentences


def _as_number(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        digits = re.sub(r"[^\d]", "", value)
        return int(digits) if digits else None
    return None


def sentences_from_text(text: str) -> list[AnswerSentence]:
    sentences = []
    for sentence in split_sentences(text):
        plain = strip_markers(sentence)
        if plain:
            sentences.append(AnswerSentence(text=plain, citations=cited_numbers(sentence)))
    return sentences


def markers(numbers: list[int]) -> str:
    return "".join(f"[{number}]" for number in numbers)


def render(sentences: list[AnswerSentence]) -> str:
    """The answer text: each sentence followed by the markers of the passages it cites."""
    return " ".join(
        f"{s.text} {markers(s.citations)}" if s.citations else s.text for s in sentences
    )


class StreamDecoder:
    """Turns the model's streamed output into readable answer text, as it arrives.

    In text mode the output already is the text. In JSON modes the buffer is re-parsed as partial
    JSON on each delta; each sentence's text is emitted as it grows and its [n] markers once the
    next sentence begins (so a citation list is never shown half-written). What is emitted only
    ever grows; the final answer is the full parse of the complete output.
    """

    def __init__(self, json_output: bool) -> None:
        self.json_output = json_output
        self.raw = ""
        self._emitted = ""

    def feed(self, delta: str) -> str:
        self.raw += delta
        if not self.json_output:
            return delta
        return self._advance(self._display(final=False))

    def finish(self) -> str:
        """Whatever text is still owed once the output is complete."""
        if not self.json_output:
            return ""
        return self._advance(self._display(final=True))

    def _advance(self, display: str) -> str:
        if not display.startswith(self._emitted):
            return ""  # a re-parse disagreed with what was sent; the final answer corrects it
        delta = display[len(self._emitted) :]
        self._emitted = display
        return delta

    def _display(self, final: bool) -> str:
        text = self.raw.strip()
        if text.startswith("```"):
            text = text.lstrip("`").removeprefix("json").lstrip()
        if not text.startswith("{"):
            return "" if not final else render(sentences_from_text(text))
        data = _load_partial(text)
        items = data.get("sentences") if isinstance(data, dict) else None
        if not isinstance(items, list):
            return ""
        parts = []
        for index, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("text"), str):
                break
            done = final or index + 1 < len(items)
            numbers = [n for v in item.get("citations") or [] if (n := _as_number(v)) is not None]
            parts.append(f"{item['text']} {markers(numbers)}" if done and numbers else item["text"])
            if not done:
                break
        return " ".join(parts)
