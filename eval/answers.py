"""Per-question answer metrics (citations, verification, refusal) and their aggregation.

Every figure is computed from what the pipeline returned; a figure that needs something the answer
does not carry (verifier verdicts, token usage, stage timings) is None, never a guess.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.models import Answer
from eval.datasets import EvalQuestion
from generation.prompt import NOT_COVERED


def is_refusal(answer: Answer) -> bool:
    """The generator's refusal flag, or the fixed not-covered reply the pipeline and prompt use."""
    return answer.refused or answer.text.strip() == NOT_COVERED


def cited_chunk_ids(answer: Answer) -> list[str]:
    return [citation.chunk_id for citation in answer.citations]


def citation_pairs(answer: Answer) -> tuple[int, int] | None:
    """(supported, verified) (sentence, cited passage) pairs; None when nothing was verified.

    The verifier judges a sentence against the passages it cites, so each pair carries its
    sentence's verdict.
    """
    verified = [s for s in answer.sentences if s.citations and s.supported is not None]
    if not verified:
        return None
    pairs = sum(len(s.citations) for s in verified)
    supported = sum(len(s.citations) for s in verified if s.supported)
    return supported, pairs


def unsupported_sentences(answer: Answer) -> tuple[int, int] | None:
    """(unsupported, verified) sentences; None when the verifier judged none."""
    verified = [s for s in answer.sentences if s.supported is not None]
    if not verified:
        return None
    return sum(not s.supported for s in verified), len(verified)


def citation_recall(question: EvalQuestion, answer: Answer) -> float | None:
    """Share of gold passages (units) the answer cites."""
    gold = question.gold_unit_ids()
    if not gold:
        return None
    return len(gold & set(question.to_units(cited_chunk_ids(answer)))) / len(gold)


def key_fact_recall(question: EvalQuestion, answer: Answer) -> float | None:
    """Share of the question's key facts the answer states (case and spacing ignored)."""
    if not question.key_facts:
        return None
    text = _normalised(answer.text)
    return sum(_normalised(fact) in text for fact in question.key_facts) / len(question.key_facts)


def _normalised(text: str) -> str:
    return "".join(text.lower().split())


def micro(pairs: Sequence[tuple[int, int] | None]) -> float | None:
    """Sum of numerators over sum of denominators, over the questions where they exist."""
    known = [p for p in pairs if p is not None]
    total = sum(d for _, d in known)
    return sum(n for n, _ in known) / total if total else None


def mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def percentile(values: Sequence[float], share: float) -> float | None:
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]
