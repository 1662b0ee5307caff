"""A rule-based screen for prompt injection: text that addresses the model instead of the reader.

Regulations oblige firms ("the firm must ..."); they never tell an AI assistant to drop its
instructions, pretend to be someone else, open a system prompt, or send data to a URL. Each rule
below matches one of those moves and carries a weight; a text whose weights add up to the
threshold is suspect. The rules run on a normalised copy of the text (NFKC, hidden characters
removed, Unicode tag characters decoded), so an instruction cannot hide behind zero-width
characters or look-alike letters; the hidden characters themselves also count.

A screen, not a proof: it catches the known phrasings. What it misses still reaches the model only
as quoted passages under a system prompt that says to never follow them (generation/prompt.py).
"""

from __future__ import annotations

import enum
import logging
import re
import unicodedata
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

_log = logging.getLogger(__name__)


class InjectionPolicy(enum.StrEnum):
    """What ingestion does with a suspect chunk."""

    TAG = "tag"  # stored and retrievable, marked in its payload
    QUARANTINE = "quarantine"  # stored and marked, but never retrieved


class QuestionPolicy(enum.StrEnum):
    """What the query path does with a suspect question."""

    REJECT = "reject"  # 400 prompt_injection
    FLAG = "flag"  # answered; logged and counted


QUARANTINE_REASON = "prompt_injection"  # the chunk payload's `quarantine` value


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: re.Pattern[str]
    weight: float


def _rule(name: str, pattern: str, weight: float = 1.0) -> Rule:
    return Rule(name, re.compile(pattern, re.IGNORECASE | re.MULTILINE), weight)


_VERB = r"\b(?:ignore|disregard|forget|override|bypass|skip|drop)\s+"
_PRIOR = r"(?:(?:all|any|the|your|my|these|those|of)\s+)*"
_EARLIER = r"(?:previous|prior|preceding|above|earlier|foregoing|initial|original|system|old)"
_ORDERS = r"(?:instructions?|prompts?|rules|directions|directives|guidelines|context|commands)"
_MODEL = r"(?:AI|assistant|language\s+model|LLM|chatbot|model)"

RULES: tuple[Rule, ...] = (
    _rule(
        "override_instructions",
        # "ignore all previous instructions", "forget your rules"; not "ignore the guidelines".
        rf"{_VERB}{_PRIOR}{_EARLIER}\s+{_ORDERS}\b|"
        rf"{_VERB}(?:all|any|your)\s+(?:of\s+)?(?:your\s+|the\s+)?{_ORDERS}\b",
    ),
    _rule(
        "disregard_above",
        r"\b(?:ignore|disregard|forget)\s+(?:everything\s+|all\s+)?(?:the\s+|that\s+)?"
        r"(?:above|before|said\s+before|you\s+were\s+told)\b",
    ),
    _rule("new_instructions", r"\b(?:new|updated|real|actual)\s+instructions?\s*:", 0.6),
    _rule(
        "role_switch",
        r"\byou\s+are\s+now\s+(?:an?\s|the\s|my\s|in\s|DAN\b|free\b|no\s+longer\b)|"
        r"\byou\s+are\s+no\s+longer\s+(?:an?\s|bound|restricted|limited|Regulus)|"
        r"\bfrom\s+now\s+on,?\s+you\s+(?:are|will|must|shall)\b",
    ),
    _rule(
        "role_play",
        r"\b(?:act|behave|respond|answer)\s+as\s+(?:an?\s+)?(?:DAN|unrestricted|unfiltered|"
        r"uncensored|jailbroken|evil)\b|\bpretend\s+(?:to\s+be|you\s+are|that\s+you)\b|"
        r"\brole-?play\s+as\b",
    ),
    _rule(
        "jailbreak_terms",
        r"\b(?:DAN\s+mode|do\s+anything\s+now|developer\s+mode|jailbreak(?:en)?|god\s+mode)\b",
    ),
    _rule(
        "hidden_system_prompt",
        r"<\|\s*/?\s*(?:system|im_start|im_end|assistant|user|endoftext)\s*\|>|"
        r"</?\s*(?:system|system_prompt)\s*>|"
        r"^\s*#{2,}\s*(?:system|assistant)(?:\s+(?:prompt|message|instructions?))?\s*:?\s*$|"
        r"\b(?:BEGIN|END)\s+(?:SYSTEM|HIDDEN|SECRET)\s+(?:PROMPT|INSTRUCTIONS?)\b|"
        r"\[/?INST\]|<<\s*/?SYS\s*>>|^\s*system\s+prompt\s*:",
    ),
    _rule(
        "addresses_the_model",
        rf"\b(?:the|you,?\s+the)\s+{_MODEL}\s+(?:must|should|shall|will|is\s+instructed)\b|"
        rf"\b{_MODEL}s?\s+reading\s+this\b",
        0.6,
    ),
    _rule(
        "prompt_exfiltration",
        r"\b(?:reveal|print|repeat|output|show|disclose|leak|tell\s+me)\s+(?:me\s+)?"
        r"(?:your|the)\s+(?:(?:system|hidden|secret|initial|original)\s+"
        r"(?:prompt|instructions|configuration|settings|message)|prompt|api\s+keys?|"
        r"secrets?|passwords?)\b",
    ),
    _rule(
        "conceal_from_user",
        r"\bdo\s+not\s+(?:tell|inform|mention\s+(?:this\s+)?to)\s+the\s+user",
        0.6,
    ),
    _rule("markdown_image_with_data", r"!\[[^\]]*\]\(\s*<?https?://[^)\s]*[?#][^)\s]*\)"),
    _rule("link_with_placeholder", r"https?://\S*[?&][\w.-]+=(?:\{|\[|%7B|<|\$)"),
    _rule(
        "send_data_to_url",
        r"\b(?:send|post|forward|upload|transmit|exfiltrate|append|encode)\b[^.\n]{0,80}"
        r"\b(?:to|into)\s+https?://",
    ),
    _rule(
        "send_data_to_endpoint",
        r"\b(?:send|post|forward|upload|transmit|exfiltrate)\b[^.\n]{0,80}"
        r"\b(?:to|into)\s+(?:the\s+|this\s+)?(?:url|link|endpoint|webhook)\b",
        0.6,
    ),
)

# Invisible in a rendered page yet read by the model: zero-width, joiners, word joiner, BOM,
# bidirectional overrides and isolates. Soft hyphens (U+00AD) are common in PDFs and ignored.
_HIDDEN = re.compile(r"[\u200b-\u200f\u2060-\u2064\ufeff\u202a-\u202e\u2066-\u2069]")
# Unicode "tag" characters spell ASCII invisibly ("ASCII smuggling"); no regulation uses them.
_TAGS = re.compile(r"[\U000e0000-\U000e007f]")
HIDDEN_TEXT_WEIGHT = 0.5
SMUGGLED_TEXT_WEIGHT = 1.0
HIDDEN_RUN = 3  # fewer stray zero-width characters are PDF-extraction noise


class Screening(BaseModel):
    """What the screen found in one text."""

    score: float = 0.0
    reasons: list[str] = Field(default_factory=list, description="The rules that matched.")
    suspect: bool = False


def strip_hidden(text: str) -> str:
    """The text without the characters a reader cannot see (tag characters dropped, not decoded)."""
    return _TAGS.sub("", _HIDDEN.sub("", text))


def normalise(text: str) -> str:
    """The text as the model reads it: tag characters decoded, hidden characters removed, NFKC."""
    decoded = _TAGS.sub(lambda m: chr(ord(m.group()) - 0xE0000), text)
    return unicodedata.normalize("NFKC", _HIDDEN.sub("", decoded))


@dataclass
class InjectionScreen:
    """Scores text against `RULES`; suspect at `threshold` or above."""

    threshold: float = 1.0
    rules: tuple[Rule, ...] = field(default=RULES)

    def __post_init__(self) -> None:
        if self.threshold <= 0:
            raise ValueError("threshold must be positive")

    def run(self, text: str) -> Screening:
        reasons: list[str] = []
        score = 0.0
        if _TAGS.search(text):
            reasons.append("smuggled_tag_characters")
            score += SMUGGLED_TEXT_WEIGHT
        if len(_HIDDEN.findall(text)) >= HIDDEN_RUN:
            reasons.append("hidden_characters")
            score += HIDDEN_TEXT_WEIGHT
        clean = normalise(text)
        for rule in self.rules:
            if rule.pattern.search(clean):
                reasons.append(rule.name)
                score += rule.weight
        return Screening(score=round(score, 3), reasons=reasons, suspect=score >= self.threshold)


class PromptInjectionError(ValueError):
    """A question was refused because it reads as an attempt to instruct the model."""

    def __init__(self, screening: Screening) -> None:
        super().__init__(
            "the question looks like an attempt to instruct the model ("
            + ", ".join(screening.reasons)
            + "); ask about the documents instead"
        )
        self.screening = screening


@dataclass
class QuestionGuard:
    """Screens questions on the query path: rejects suspects, or lets them through flagged."""

    screen: InjectionScreen
    policy: QuestionPolicy = QuestionPolicy.REJECT

    def check(self, question: str) -> Screening:
        screening = self.screen.run(question)
        if screening.suspect:
            if self.policy is QuestionPolicy.REJECT:
                raise PromptInjectionError(screening)
            _log.warning("question flagged as prompt injection: %s", ", ".join(screening.reasons))
        return screening
