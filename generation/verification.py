"""Citation verification: is each answer sentence backed by the passage it cites?

A support judge scores (sentence, passage) pairs: by default the project's own support
cross-encoder (trained by `eval/training/train_support.py` on XRefRAG SCHEMA train and shipped in
fp16 under `generation/models/`, with its threshold), or any cross-encoder folder / hub id, or an
LLM judge behind an OpenAI-compatible endpoint. `CitationVerifier` marks each sentence supported or
not, moves a citation to another retrieved passage that backs the sentence when the cited one does
not, and flags or drops what no passage backs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import openai
import torch
from sentence_transformers import CrossEncoder
from transformers.utils import logging as transformers_logging

from core.models import Answer, AnswerSentence, RetrievedChunk, UnsupportedPolicy
from core.settings import BUILTIN_RERANKER, LLM_JUDGE, Settings
from generation.citations import citations_for, cited_numbers, split_sentences, strip_markers
from retrieval.embedder import resolve_model_location

transformers_logging.set_verbosity_error()

DEFAULT_SUPPORT_MODEL = Path(__file__).resolve().parent / "models" / "regulus-support-minilm-l6"
SUPPORT_SETTINGS_FILE = "support.json"  # written by train_support.py: {"threshold": ...}
_QUOTES = "“”\"‘’'"


class SupportJudge(Protocol):
    """Scores how well each passage backs each sentence, as probabilities in [0, 1]."""

    @property
    def name(self) -> str: ...

    @property
    def threshold(self) -> float:
        """Scores at or above it count as supported."""
        ...

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]: ...


class CrossEncoderSupportJudge:
    """A one-logit cross-encoder read through a sigmoid, e.g. the shipped support model."""

    def __init__(
        self,
        model: str | Path = DEFAULT_SUPPORT_MODEL,
        threshold: float | None = None,
        max_length: int = 256,
        batch_size: int = 32,
    ) -> None:
        if threshold is not None and not 0.0 < threshold < 1.0:
            raise ValueError("threshold must be between 0 and 1")
        if batch_size < 1 or not 16 <= max_length <= 512:
            raise ValueError("batch_size must be positive and max_length within 16..512")
        location = resolve_model_location(str(model))
        self._name = str(model)
        self._threshold = threshold if threshold is not None else shipped_threshold(location)
        self.batch_size = batch_size
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self._model = CrossEncoder(
            location,
            num_labels=1,
            max_length=max_length,
            device=device,
            model_kwargs={"dtype": torch.float16 if device == "cuda" else torch.float32},
        )

    @property
    def name(self) -> str:
        return self._name

    @property
    def threshold(self) -> float:
        return self._threshold

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        if not pairs:
            return []
        scores = self._model.predict(
            list(pairs),
            batch_size=self.batch_size,
            activation_fn=torch.nn.Sigmoid(),
            show_progress_bar=False,
            convert_to_numpy=True,
        )
        return [float(value) for value in scores]


def shipped_threshold(location: str) -> float:
    """The threshold calibrated with the weights, or 0.5 for a model that carries none."""
    settings = Path(location) / SUPPORT_SETTINGS_FILE
    if settings.is_file():
        return float(json.loads(settings.read_text(encoding="utf-8"))["threshold"])
    return 0.5


JUDGE_PROMPT = """Does the passage state or directly imply the claim? Answer only yes or no.

Passage:
\"\"\"
{passage}
\"\"\"

Claim: {claim}"""


class LLMJudgeVerifier:
    """An instruction-tuned model behind an OpenAI-compatible endpoint answers yes/no per pair.

    For deployments with a capable model to spare; one short request per pair, so slower than the
    cross-encoder. A reply that does not start with "yes" counts as unsupported.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str = "not-needed",
        timeout_s: float = 30.0,
        max_retries: int = 2,
    ) -> None:
        if not base_url:
            raise ValueError("base_url is required")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.model = model
        self._client = openai.OpenAI(
            base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=max_retries
        )

    @property
    def name(self) -> str:
        return f"llm-judge:{self.model}"

    @property
    def threshold(self) -> float:
        return 0.5

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        return [self._judge(claim, passage) for claim, passage in pairs]

    def _judge(self, claim: str, passage: str) -> float:
        response = self._client.chat.completions.create(
            model=self.model,
            messages=[
                {"role": "user", "content": JUDGE_PROMPT.format(passage=passage, claim=claim)}
            ],
            max_tokens=3,
            temperature=0.0,
        )
        reply = (response.choices[0].message.content or "") if response.choices else ""
        return 1.0 if reply.strip().lower().startswith("yes") else 0.0


class CitationVerifier:
    """Checks every answer sentence against the passages it cites and re-attributes or flags it.

    All (sentence, passage window) pairs go to the judge in one call: a sentence is scored against
    every retrieved passage, so that a wrong citation can be moved to the passage that backs it.
    Long passages are cut into windows of whole sentences that fit the model's input.
    """

    def __init__(
        self,
        judge: SupportJudge,
        unsupported: UnsupportedPolicy = UnsupportedPolicy.FLAG,
        reattribute: bool = True,
        window_words: int = 150,
    ) -> None:
        if window_words < 20:
            raise ValueError("window_words must be at least 20")
        self.judge = judge
        self.unsupported = UnsupportedPolicy(unsupported)
        self.reattribute = reattribute
        self.window_words = window_words

    def run(self, answer: Answer, passages: list[RetrievedChunk]) -> Answer:
        if answer.refused or not answer.text.strip():
            return answer
        raw = split_sentences(answer.text)
        claims = [strip_markers(sentence).strip(_QUOTES + " ") for sentence in raw]
        windows = [passage_windows(p.chunk.text, self.window_words) for p in passages]
        owners = [n for n, texts in enumerate(windows, start=1) for _ in texts]
        flat = [text for texts in windows for text in texts]
        scores = np.zeros((len(claims), len(passages)))
        if flat:
            values = self.judge.score([(claim, text) for claim in claims for text in flat])
            grid = np.asarray(values, dtype=np.float64).reshape(len(claims), len(flat))
            for column, n in enumerate(owners):
                scores[:, n - 1] = np.maximum(scores[:, n - 1], grid[:, column])
        threshold = self.judge.threshold
        verified: list[tuple[str, AnswerSentence]] = []
        for row, (sentence, claim) in enumerate(zip(raw, claims, strict=True)):
            cited = [n for n in cited_numbers(sentence) if 1 <= n <= len(passages)]
            backing = [n for n in cited if scores[row, n - 1] >= threshold]
            if not backing and self.reattribute and len(passages):
                best = int(np.argmax(scores[row])) + 1
                if scores[row, best - 1] >= threshold:
                    backing = [best]
            kept = backing or cited
            support = float(max((scores[row, n - 1] for n in kept), default=0.0))
            verified.append(
                (
                    claim,
                    AnswerSentence(
                        text=claim, citations=kept, support=support, supported=bool(backing)
                    ),
                )
            )
        supported = sum(1 for _, s in verified if s.supported)
        if self.unsupported is UnsupportedPolicy.DROP:
            verified = [(claim, s) for claim, s in verified if s.supported]
        text = " ".join(
            f"{quoted(claim, answer.text)} {''.join(f'[{n}]' for n in s.citations)}".strip()
            for claim, s in verified
        )
        return answer.model_copy(
            update={
                "text": text,
                "citations": citations_for(text, passages),
                "sentences": [s for _, s in verified],
                "support_score": supported / len(raw) if raw else None,
            }
        )


def quoted(claim: str, original: str) -> str:
    """The claim as the answer showed it: extractive answers wrap their quotes in “...”."""
    return f"“{claim}”" if f"“{claim}”" in original else claim


def passage_windows(text: str, window_words: int) -> list[str]:
    """The passage as one text, or, when longer than `window_words`, consecutive sentence runs."""
    if len(text.split()) <= window_words:
        return [text]
    windows: list[str] = []
    current: list[str] = []
    size = 0
    for line in text.splitlines():
        for sentence in split_sentences(line) or []:
            words = len(sentence.split())
            if current and size + words > window_words:
                windows.append(" ".join(current))
                current, size = current[-1:], len(current[-1].split())  # one sentence overlap
            current.append(sentence)
            size += words
    if current:
        windows.append(" ".join(current))
    return [re.sub(r"\s+", " ", window) for window in windows]


def load_verifier(settings: Settings) -> CitationVerifier | None:
    """The configured support judge (shipped model, a folder or hub id, an LLM judge) or none."""
    if settings.verifier is None:
        return None
    judge: SupportJudge
    if settings.verifier == LLM_JUDGE:
        base_url = settings.verifier_base_url or settings.llm_base_url
        if not base_url:
            raise ValueError("REGULUS_VERIFIER=llm needs REGULUS_VERIFIER_BASE_URL or LLM_BASE_URL")
        judge = LLMJudgeVerifier(
            base_url=base_url,
            model=settings.verifier_model or settings.llm_model,
            api_key=settings.llm_api_key,
            timeout_s=settings.llm_timeout_s,
        )
    else:
        builtin = settings.verifier == BUILTIN_RERANKER
        judge = CrossEncoderSupportJudge(
            DEFAULT_SUPPORT_MODEL if builtin else settings.verifier,
            threshold=settings.support_threshold,
        )
    return CitationVerifier(judge, unsupported=settings.unsupported)
