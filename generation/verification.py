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
from typing import TYPE_CHECKING, Protocol

import numpy as np
import openai
import torch
from sentence_transformers import CrossEncoder
from transformers.utils import logging as transformers_logging

from core.model_files import models_dir
from core.models import (
    Answer,
    AnswerSentence,
    EmbedBackend,
    RetrievedChunk,
    SupportCheck,
    UnsupportedPolicy,
)
from core.sentences import split_sentences
from core.settings import BUILTIN_RERANKER, LLM_JUDGE, Settings
from generation.checks import Evidence, FactChecker, Mismatch, confirms, states_modality
from generation.citations import cite, cited_numbers, strip_markers
from retrieval.embedder import export_onnx, onnx_session, resolve_model_location

if TYPE_CHECKING:
    import onnxruntime

transformers_logging.set_verbosity_error()

DEFAULT_SUPPORT_MODEL = Path(__file__).resolve().parent / "models" / "regulus-support-minilm-l6"
SUPPORT_SETTINGS_FILE = "support.json"  # written by train_support.py: {"threshold": ...}
CHECKED_THRESHOLD_KEY = "threshold_with_checks"  # calibrated by benchmarks/verification.py
CONFIRMED_THRESHOLD_KEY = "threshold_confirmed"  # the same, where the checks confirm the sentence
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
    """A one-logit cross-encoder read through a sigmoid, e.g. the shipped support model.

    It runs in PyTorch, or through ONNX Runtime on an export of it (fp32 or int8 weights) made once
    into `cache_dir`, with the same tokenisation of the pairs (figures: docs/benchmarks.md).
    """

    def __init__(
        self,
        model: str | Path = DEFAULT_SUPPORT_MODEL,
        threshold: float | None = None,
        max_length: int = 256,
        batch_size: int = 32,
        backend: EmbedBackend = EmbedBackend.TORCH,
        cache_dir: Path | None = None,
    ) -> None:
        if threshold is not None and not 0.0 < threshold < 1.0:
            raise ValueError("threshold must be between 0 and 1")
        if batch_size < 1 or not 16 <= max_length <= 512:
            raise ValueError("batch_size must be positive and max_length within 16..512")
        backend = EmbedBackend(backend)
        if backend is not EmbedBackend.TORCH and cache_dir is None:
            raise ValueError(f"the {backend.value} backend needs a cache_dir for its ONNX file")
        location = resolve_model_location(str(model))
        self._name = str(model)
        self._threshold = threshold if threshold is not None else shipped_threshold(location)
        # Beside the deterministic checks the model need not catch changed facts on its own, so
        # it is calibrated apart for them (benchmarks/verification.py); a set threshold wins.
        self.checked_threshold = (
            threshold
            if threshold is not None
            else shipped_threshold(location, CHECKED_THRESHOLD_KEY, self._threshold)
        )
        # Lower still where the checks confirm the sentence's modal and actors (none: no lower).
        confirmed = shipped_threshold(location, CONFIRMED_THRESHOLD_KEY, -1.0)
        self.confirmed_threshold = confirmed if threshold is None and confirmed > 0 else None
        self.batch_size = batch_size
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self._model = CrossEncoder(
            location,
            num_labels=1,
            max_length=max_length,
            device=device,
            model_kwargs={"dtype": torch.float16 if device == "cuda" else torch.float32},
        )
        self.backend = backend
        self._onnx_path = (
            export_onnx(self._model, location, cache_dir, backend)
            if backend is not EmbedBackend.TORCH and cache_dir is not None
            else None
        )
        self._session: onnxruntime.InferenceSession | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def threshold(self) -> float:
        return self._threshold

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        if not pairs:
            return []
        if self._onnx_path is not None:
            return self._score_onnx(list(pairs))
        scores = self._model.predict(
            list(pairs),
            batch_size=self.batch_size,
            activation_fn=torch.nn.Sigmoid(),
            show_progress_bar=False,
            convert_to_numpy=True,
        )
        return [float(value) for value in scores]

    def _score_onnx(self, pairs: list[tuple[str, str]]) -> list[float]:
        """`predict`'s batches (longest pairs first) and tokenisation, through the ONNX session."""
        if self._session is None:
            assert self._onnx_path is not None
            self._session = onnx_session(self._onnx_path)
        names = self._model.tokenizer.model_input_names
        order = np.argsort([-(len(claim) + len(text)) for claim, text in pairs], kind="stable")
        logits = np.zeros(len(pairs), dtype=np.float32)
        for start in range(0, len(pairs), self.batch_size):
            batch = order[start : start + self.batch_size]
            features = self._model.preprocess([pairs[i] for i in batch])
            feeds = {name: features[name].numpy().astype(np.int64) for name in names}
            logits[batch] = self._session.run(None, feeds)[0].reshape(-1)
        return [float(value) for value in 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))]


def shipped_threshold(location: str, key: str = "threshold", default: float = 0.5) -> float:
    """A threshold calibrated with the weights, or `default` for a model that carries none."""
    settings = Path(location) / SUPPORT_SETTINGS_FILE
    if settings.is_file():
        return float(json.loads(settings.read_text(encoding="utf-8")).get(key, default))
    return default


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

    The sentences are the generator's (`answer.sentences`, each with its citations); an answer
    without them is split into sentences at its [n] markers. A sentence that is a verbatim span of
    a passage is supported without a model call (`check="quoted"`). The others are scored against
    the passages they cite in one judge call (long passages cut into windows of whole sentences
    that fit the model's input), those their citations do not back against every other passage
    in a second, and checked by the `FactChecker`: a sentence is supported by its
    cited passages when the best of them scores at or above `threshold` and the checks find
    nothing it states that they contradict or lack, or, with `confirmed_threshold`, when it scores
    at or above that lower bar and the checks confirm its modal phrases and actors in them. An
    unsupported sentence moves to the best-scoring other passage that passes both, when
    `reattribute` is on.
    """

    def __init__(
        self,
        judge: SupportJudge,
        unsupported: UnsupportedPolicy = UnsupportedPolicy.FLAG,
        reattribute: bool = True,
        window_words: int = 150,
        checker: FactChecker | None = None,
        threshold: float | None = None,
        confirmed_threshold: float | None = None,
    ) -> None:
        if window_words < 20:
            raise ValueError("window_words must be at least 20")
        if threshold is not None and not 0.0 < threshold < 1.0:
            raise ValueError("threshold must be between 0 and 1")
        if confirmed_threshold is not None and not 0.0 < confirmed_threshold < 1.0:
            raise ValueError("confirmed_threshold must be between 0 and 1")
        self.judge = judge
        self.unsupported = UnsupportedPolicy(unsupported)
        self.reattribute = reattribute
        self.window_words = window_words
        self.checker = checker
        self.threshold = judge.threshold if threshold is None else threshold
        self.confirmed_threshold = confirmed_threshold if checker is not None else None

    def run(self, answer: Answer, passages: list[RetrievedChunk]) -> Answer:
        if answer.refused or not answer.text.strip():
            return answer
        given = bool(answer.sentences)
        sentences = answer.sentences if given else resplit(answer.text)
        claims = [claim_of(sentence.text) for sentence in sentences]
        cited = [[n for n in s.citations if 1 <= n <= len(passages)] for s in sentences]
        quotes = [quoted_in(c, numbers, passages) for c, numbers in zip(claims, cited, strict=True)]
        to_score = [row for row, quote in enumerate(quotes) if quote is None]
        mismatches = [
            self.mismatch(claims[row], cited[row], passages) if cited[row] else None
            for row in to_score
        ]
        scores = self.scores(
            [claims[row] for row in to_score], passages, [cited[row] for row in to_score]
        )
        # Only a sentence its own citations do not back is scored against the other passages
        # (to move its citation or say why not): most sentences cost one passage's windows.
        unbacked = [
            i
            for i, row in enumerate(to_score)
            if mismatches[i] is not None
            or not any(scores[i, n - 1] >= self.threshold for n in cited[row])
        ]
        if unbacked:
            others = [
                [n for n in range(1, len(passages) + 1) if n not in cited[to_score[i]]]
                for i in unbacked
            ]
            scores[unbacked] += self.scores(
                [claims[to_score[i]] for i in unbacked], passages, others
            )
        verified = []
        for row, sentence in enumerate(sentences):
            quote = quotes[row]
            if quote is not None:
                update = verdict(cited[row] if quote in cited[row] else [quote], 1.0, True)
                update["check"] = SupportCheck.QUOTED
            else:
                i = to_score.index(row)
                update = self.decide(claims[row], cited[row], scores[i], passages, mismatches[i])
            verified.append(sentence.model_copy(update=update))
        supported = sum(1 for s in verified if s.supported)
        kept = [s for s in verified if s.supported or self.unsupported is UnsupportedPolicy.FLAG]
        unchanged = len(kept) == len(sentences) and all(
            after.citations == before.citations
            for after, before in zip(verified, sentences, strict=True)
        )
        if given and unchanged:
            text, citations = answer.text, answer.citations
        else:
            text = render(kept, answer.text)
            citations = cite([(claim_of(s.text), s.citations) for s in kept], passages)
        return answer.model_copy(
            update={
                "text": text,
                "citations": citations,
                "sentences": kept,
                "support_score": supported / len(sentences) if sentences else None,
            }
        )

    def scores(
        self,
        claims: list[str],
        passages: list[RetrievedChunk],
        among: list[list[int]] | None = None,
    ) -> np.ndarray:
        """The judge's support of each claim by each passage (its best window's score), in one
        judge call; with `among`, each claim only by the passages numbered there (0 elsewhere)."""
        windows = [passage_windows(p.chunk.text, self.window_words) for p in passages]
        everything = list(range(1, len(passages) + 1))
        pairs: list[tuple[str, str]] = []
        places: list[tuple[int, int]] = []
        for row, claim in enumerate(claims):
            for n in everything if among is None else among[row]:
                pairs.extend((claim, text) for text in windows[n - 1])
                places.extend((row, n - 1) for _ in windows[n - 1])
        scores = np.zeros((len(claims), len(passages)))
        if pairs:
            for (row, column), value in zip(places, self.judge.score(pairs), strict=True):
                scores[row, column] = max(scores[row, column], value)
        return scores

    def decide(
        self,
        claim: str,
        cited: list[int],
        scores: np.ndarray,
        passages: list[RetrievedChunk],
        mismatch: Mismatch | None,
    ) -> dict[str, object]:
        """The verdict fields of one scored sentence (`mismatch`: what the checks find against
        its cited passages): citations, support, check and reason."""
        threshold = self.threshold
        backing = [n for n in cited if scores[n - 1] >= threshold] if mismatch is None else []
        if not backing and mismatch is None and cited and self.confirmed_threshold is not None:
            # The checks confirming the sentence's modal and actors lower the bar for the model.
            near = [n for n in cited if scores[n - 1] >= self.confirmed_threshold]
            evidence = Evidence.of(passages[n - 1].chunk for n in cited).text
            if near and confirms(claim, evidence):
                backing = near
        if not backing and self.reattribute:
            # Moving a citation takes the model's own calibrated confidence, not only the lower
            # threshold that the checks make safe beside it: a passage that merely lacks the
            # facts to contradict the sentence (no number, no modal) passes the checks.
            floor = max(threshold, self.judge.threshold)
            # A sentence whose cited passages the judge finds backing it, but which names a
            # reference they do not, is about them and names the wrong rule: it moves only to a
            # passage the judge finds closer to it ("subject to Rule 3.10.16" for the cited
            # passage's "Rule 3.10.15" does not move to Rule 3.10.16, on another matter). An
            # actor or a number may rightly come from another passage the answer draws on.
            best_cited = max((scores[n - 1] for n in cited), default=0.0)
            matter = (
                mismatch is not None
                and mismatch.kind is SupportCheck.REFERENCE
                and best_cited >= threshold
            )
            for n in np.argsort(-scores, kind="stable") + 1:
                if scores[n - 1] < floor or (matter and scores[n - 1] <= best_cited):
                    break
                if n not in cited and self.backs(claim, int(n), passages, mismatch):
                    backing = [int(n)]
                    break
        kept = backing or cited
        support = float(max((scores[n - 1] for n in kept), default=0.0))
        if backing:
            return verdict(kept, support, True)
        if mismatch is None and not cited and len(scores) and scores.max() >= threshold:
            # nothing cited, and every passage the judge finds backing fails a check: say why
            best = int(np.argmax(scores)) + 1
            mismatch = self.mismatch(claim, [best], passages)
        if mismatch is not None:
            return verdict(kept, support, False, mismatch.kind, mismatch.reason)
        what = "the cited passage does not" if cited else "no passage"
        reason = f"{what} back it (support {support:.2f} < {threshold:.2f})"
        return verdict(kept, support, False, reason=reason)

    def backs(
        self,
        claim: str,
        number: int,
        passages: list[RetrievedChunk],
        contradiction: Mismatch | None,
    ) -> bool:
        """Whether another passage may take the citation: it passes the checks and, where the
        cited passage contradicted the sentence's modal, states one itself (a passage with no
        "shall" or "may" in it passes the check without confirming anything)."""
        if self.mismatch(claim, [number], passages) is not None:
            return False
        if contradiction is None or contradiction.kind is not SupportCheck.MODALITY:
            return True
        return states_modality(claim, Evidence.of([passages[number - 1].chunk]).text)

    def mismatch(
        self, claim: str, numbers: list[int], passages: list[RetrievedChunk]
    ) -> Mismatch | None:
        if self.checker is None:
            return None
        return self.checker.run(claim, Evidence.of(passages[n - 1].chunk for n in numbers))


def verdict(
    citations: list[int],
    support: float,
    supported: bool,
    check: SupportCheck = SupportCheck.MODEL,
    reason: str | None = None,
) -> dict[str, object]:
    """The AnswerSentence fields verification sets; the generator's other fields stay."""
    return {
        "citations": citations,
        "support": support,
        "supported": supported,
        "check": check,
        "reason": reason,
    }


def resplit(text: str) -> list[AnswerSentence]:
    """The sentences of an answer that came without them, each with the [n] it cites."""
    return [
        AnswerSentence(text=strip_markers(raw), citations=cited_numbers(raw))
        for raw in split_sentences(text)
    ]


def claim_of(text: str) -> str:
    """What a sentence claims: its text without [n] markers nor the quotes around a quote."""
    return strip_markers(text).strip(_QUOTES + " ")


# A verbatim span followed by these words says less than the passage, or the opposite.
_CONTINUES = re.compile(r"\s*(?:,\s*)?(?:not|unless|except|save|provided|only|if|where)\b", re.I)


def quoted_in(claim: str, cited: list[int], passages: list[RetrievedChunk]) -> int | None:
    """The passage (a cited one first) the claim is a verbatim span of, if any.

    The span must have five words or more, and the passage must not go on with a negation or a
    condition: "The controller shall notify" out of "... shall notify only if" is not the rule.
    """
    words = claim.rstrip(".;:, ").split()  # a quote may end where the passage goes on
    if len(words) < 5:
        return None
    span = " ".join(words)
    others = [n for n in range(1, len(passages) + 1) if n not in cited]
    for n in [*cited, *others]:
        text = " ".join(passages[n - 1].chunk.text.split())
        at = text.find(span)
        while at >= 0:
            end = at + len(span)
            bounded = (at == 0 or not text[at - 1].isalnum()) and (
                end == len(text) or not text[end].isalnum()
            )
            if bounded and not _CONTINUES.match(text, end):
                return n
            at = text.find(span, at + 1)
    return None


def render(sentences: list[AnswerSentence], original: str) -> str:
    """The answer text: each sentence as the answer showed it, then its [n] markers."""
    return " ".join(
        f"{quoted(claim_of(s.text), original)} {''.join(f'[{n}]' for n in s.citations)}".strip()
        for s in sentences
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
    threshold = confirmed = None  # the judge's own
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
            # The ONNX exports run on the CPU: with a GPU the model runs there, in torch.
            backend=EmbedBackend.TORCH if torch.cuda.is_available() else settings.support_backend,
            cache_dir=models_dir() / "exports",
        )
        threshold = judge.checked_threshold
        confirmed = judge.confirmed_threshold
    return CitationVerifier(
        judge,
        unsupported=settings.unsupported,
        checker=FactChecker(),
        threshold=threshold,
        confirmed_threshold=confirmed,
    )
