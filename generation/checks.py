"""Deterministic checks between an answer sentence and the passages it cites.

The support model reads meaning well but misses small changes that reverse a rule: "72 hours"
written as "48 hours", "must" as "may" or "must not", the controller where the passage says the
processor, Article 34 where it says Article 33. `FactChecker` compares what the sentence states
with what the passages state, without a model:

- quantities: numbers, durations, percentages, currency amounts and dates, normalised
  ("seventy-two hours" = "72 hours", "EUR 20 million" = "20 000 000 EUR"); units are never
  converted ("3 days" matches only where the passage says 3 days); a number that labels a class
  ("Tier 1", "Level 2") must appear with the same label;
- modality and polarity: obligation (shall, must, is required to), permission (may, can),
  prohibition (shall not, may not, is prohibited) and no obligation (need not), compared per verb
  where the passage uses the sentence's verb on the same matter (as a verb, in the numbered list
  a modal's colon opens, or as a noun: "may agree on charges" for "must charge"), and overall
  where it does not ("may include" restates a definition);
  a prohibition of what the passage states plainly ("must not reference" against "references")
  and a positive phrase taking in what the passage excludes ("other than") are contradictions,
  while a conditional permission may restate a prohibition with an exception ("may issue more
  if the holders approve" for "must not issue more without their approval");
- exceptions: an "unless" / "except" the sentence makes where the passage states no condition
  (nor "comply ... or explain", "otherwise than"; a dropped exception is left to the support
  model: a sentence may rightly say less);
- actors (controller, processor, provider, Member State, Commission, Reporting Entity ...): named
  in the passage (a regulator's guidance that says "we" names the regulator), and the one the
  passage makes do what the sentence says;
- references (Article 33(1), Rule 3.19.6, Section 62): cited by the passage or its section (its
  own chapter or number only where its text names no other of that kind on the same matter).

A check fires only on something the sentence states that the passages contradict or lack; a
sentence that says less than the passage (no number, no modal) passes.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from nltk.stem.snowball import SnowballStemmer
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from core.models import Chunk, SupportCheck
from retrieval.references import extract_references, section_keys

FACT_CHECKS = (
    SupportCheck.QUANTITY,
    SupportCheck.MODALITY,
    SupportCheck.EXCEPTION,
    SupportCheck.ACTOR,
    SupportCheck.REFERENCE,
)


@dataclass(frozen=True)
class Mismatch:
    """What the sentence states that the cited passages do not, in words an analyst reads."""

    kind: SupportCheck
    reason: str


# --- quantities ----------------------------------------------------------------------------------

_ONES = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
_TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
    "eighty": 80, "ninety": 90,
}  # fmt: skip
_SCALES = {"hundred": 100, "thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000}
_MONTH_NAMES = (
    "january february march april may june july august september october november december"
)
_MONTHS = {name: n for n, name in enumerate(_MONTH_NAMES.split(), start=1)}
_WORD_NUMBER = (
    rf"(?:(?:{'|'.join(_TENS)})(?:[- ](?:{'|'.join(k for k in _ONES if _ONES[k] < 10)}))?"
    rf"|{'|'.join(sorted(_ONES, key=len, reverse=True))})"
)
_DIGITS = r"\d{1,3}(?:[,\u00a0\u202f ]\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_UNITS = {
    "second": "second", "minute": "minute", "hour": "hour", "day": "day", "week": "week",
    "month": "month", "year": "year",
}  # fmt: skip
_CURRENCIES = {
    "€": "EUR", "eur": "EUR", "euro": "EUR", "euros": "EUR", "$": "USD", "us$": "USD",
    "usd": "USD", "dollars": "USD", "£": "GBP", "gbp": "GBP", "aed": "AED", "dirhams": "AED",
    "chf": "CHF",
}  # fmt: skip
_CURRENCY = r"€|us\$|\$|£|\b(?:eur|euros?|usd|dollars|gbp|aed|dirhams|chf)\b"
_QUANTITY = re.compile(
    rf"(?P<pre>{_CURRENCY})?\s?"
    rf"(?P<number>{_DIGITS}|\b{_WORD_NUMBER}\b)"
    rf"(?:\s(?P<scale>hundred|thousand|million|billion)\b)?"
    rf"(?:\s?(?P<percent>%|per\s?cent\b|percent\b)"
    rf"|\s(?P<qualifier>(?:calendar|working|business|consecutive|clear)\s)?"
    rf"(?P<unit>seconds?|minutes?|hours?|days?|weeks?|months?|years?)\b"
    rf"|\s?(?P<post>{_CURRENCY}))?",
    re.IGNORECASE,
)
_DATE = re.compile(
    rf"\b(?:(?P<day>\d{{1,2}})(?:st|nd|rd|th)?\s(?P<month>{'|'.join(_MONTHS)})(?:,?\s(?P<year>\d{{4}}))?"
    rf"|(?P<month2>{'|'.join(_MONTHS)})\s(?P<day2>\d{{1,2}})(?:st|nd|rd|th)?,?\s(?P<year2>\d{{4}})"
    rf"|(?P<iso>\d{{4}}-\d{{2}}-\d{{2}}))\b",
    re.IGNORECASE,
)
# Numbers that name things rather than state quantities: references (Article 33(1), Rule 3.19.6),
# instruments (Regulation (EU) 2016/679), list labels ((1), (a), 148h)), codes (CET1, ISO 27001).
_NAMING = re.compile(
    r"\b(?:articles?|art\.|rules?|sections?|chapters?|paragraphs?|sub-?paragraphs?|points?|annex"
    r"(?:es)?|parts?|schedules?|recitals?|appendix|appendices|app|titles?|regulations?|directives?"
    r"|decisions?|forms?|iso|nist|sp|controls?)\s+(?:\([a-z]+\)\s*)?[0-9ivxlc]+[0-9a-z.()/-]*"
    r"(?:(?:\s*(?:,|and|or|to|-|–)\s*)\(?[0-9ivxlc]+[0-9a-z.()/-]*)*"
    r"|\b\d+/\d+(?:/\w+)?\b|\(\w{1,4}\)|\b\d+[a-z]\)|\b\d+(?:\.\d+){2,}\w*|\b[a-z]+-\d+\b"
    # paragraph numbers opening a line or a sentence: "...machine-readable.\n8. The Commission"
    r"|(?:^|(?<=\n)|(?<=[.:;] ))\d{1,3}\.(?= (?-i:[A-Z(]))",
    re.IGNORECASE,
)
# Numbers that label a class or grade ("Tier 1 capital", "Level 2 assets", "Stage 3"): a name, that
# the passage must state with the same label; the bare number elsewhere does not back it.
_LABEL = re.compile(
    r"\b(?P<label>tiers?|levels?|class(?:es)?|categor(?:y|ies)|stages?|pillars?|phases?|types?"
    r"|grades?|bands?|zones?)\s(?P<number>\d+[a-z]?)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Quantity:
    kind: str  # number, duration, percentage, amount, date
    value: float | str
    unit: str = ""
    text: str = ""

    def satisfied_by(self, other: Quantity) -> bool:
        if self.kind == "label":  # "Tier 1": only the same label with the same number
            return other.kind == "label" and (self.value, self.unit) == (other.value, other.unit)
        if self.kind == "number":  # a bare number: the passage states it in any form
            if other.kind == "label":  # "Grade of 1" is backed by "Grade 1"
                return str(other.value) == f"{self.value:g}"
            return other.kind != "date" and self.value == other.value
        if self.kind != other.kind or self.value != other.value:
            return self.kind == "date" and other.kind == "date" and _same_day(self, other)
        if self.kind == "duration":  # "10 days" is satisfied by "10 working days", not back
            return self.unit == other.unit or other.unit.endswith(" " + self.unit)
        return not self.unit or not other.unit or self.unit == other.unit


def _same_day(claim: Quantity, passage: Quantity) -> bool:
    """A date without a year ("25 May") matches that day in any year."""
    return bool(claim.unit == "no-year" and str(passage.value)[5:] == str(claim.value)[5:])


def _number_value(text: str) -> float | None:
    text = text.lower().replace("\u00a0", "").replace("\u202f", "")
    if text[0].isdigit():
        return float(re.sub(r"[, ]", "", text))
    head, _, tail = text.replace("-", " ").partition(" ")
    if head in _TENS:
        return float(_TENS[head] + _ONES.get(tail, 0))
    return float(_ONES[head]) if head in _ONES else None


@lru_cache(maxsize=4096)
def quantities(text: str, counts: bool = False) -> tuple[Quantity, ...]:
    """The dates, durations, percentages, amounts and plain numbers a text states; with `counts`,
    also the numbers it spells out ("two types"), which back a sentence's "2 types"."""
    found: list[Quantity] = []
    for match in _LABEL.finditer(text):
        label = _actor_key(match.group("label"))  # singular, lower case
        found.append(Quantity("label", match.group("number").lower(), label, match.group(0)))
    masked = _mask(_mask(text, _NAMING), _LABEL)
    for match in _DATE.finditer(masked):
        found.append(_date(match))
    masked = _mask(masked, _DATE)
    for match in _QUANTITY.finditer(masked):
        number = match.group("number")
        value = _number_value(number)
        if value is None:
            continue
        if match.group("scale"):
            value *= _SCALES[match.group("scale").lower()]
        spelled = not number[0].isdigit()
        currency = match.group("pre") or match.group("post")
        if match.group("percent"):
            found.append(Quantity("percentage", value, text=match.group(0).strip()))
        elif match.group("unit"):
            unit = _UNITS[match.group("unit").lower().rstrip("s")]
            qualifier = (match.group("qualifier") or "").strip().lower()
            unit = f"{qualifier} {unit}" if qualifier else unit
            found.append(Quantity("duration", value, unit, match.group(0).strip()))
        elif currency:
            code = _CURRENCIES[currency.lower()]
            found.append(Quantity("amount", value, code, match.group(0).strip()))
        elif not spelled or counts:  # "one of the following": counts, often implied
            found.append(Quantity("number", value, text=number))
    return tuple(found)


def _date(match: re.Match[str]) -> Quantity:
    if match.group("iso"):
        return Quantity("date", match.group("iso"), text=match.group(0))
    day = int(match.group("day") or match.group("day2"))
    month = _MONTHS[(match.group("month") or match.group("month2")).lower()]
    year = match.group("year") or match.group("year2")
    try:
        iso = dt.date(int(year or 2000), month, day).isoformat()
    except ValueError:
        iso = f"{year or 2000}-{month:02d}-{day:02d}"
    return Quantity("date", iso, "" if year else "no-year", match.group(0))


def _mask(text: str, pattern: re.Pattern[str]) -> str:
    """The text with the pattern's matches blanked out, so that offsets stay where they were."""
    return pattern.sub(lambda m: " " * len(m.group(0)), text)


def _check_quantities(claim: str, evidence: str) -> Mismatch | None:
    stated = quantities(evidence, counts=True)
    for quantity in quantities(claim):
        if any(quantity.satisfied_by(other) for other in stated):
            continue
        same_kind = [o.text for o in stated if o.kind == quantity.kind]
        says = f" (it says {', '.join(dict.fromkeys(same_kind[:3]))})" if same_kind else ""
        label = "number" if quantity.kind in ("number", "label") else quantity.kind
        return Mismatch(
            SupportCheck.QUANTITY, f"{label} {quantity.text} not in the cited passage{says}"
        )
    return None


# --- modality, exceptions and actors -------------------------------------------------------------


class Force(enum.StrEnum):
    OBLIGATION = "obligation"
    PERMISSION = "permission"
    PROHIBITION = "prohibition"
    NO_OBLIGATION = "no obligation"
    ABILITY = "ability"  # can, could, might: as often what is possible as what is allowed


_OBLIGATION = (
    r"shall|must|should|will|(?:is|are|be|been)\s+(?:required|obliged|obligated|bound)\s+to"
    r"|ha(?:s|ve)\s+to|needs?\s+to|(?:is|are)\s+to"
    # "may require the person to answer": an obligation on the person
    r"|(?:requir|oblig|direct)(?:e|es|ed|s)?\s+(?:[\w']+\s+){0,6}?to"
)
# An adverb between the modal and its verb ("shall promptly notify"), not a verb ending in -ly.
_ADVERB = r"(?!(?:apply|supply|comply|rely|reply|imply|multiply|fly)\b)\w+ly"
_PERMISSION = r"may|(?:is|are|be)\s+(?:permitted|allowed|entitled|authori[sz]ed|free)\s+to"
_MODAL = re.compile(
    rf"\b(?:(?P<no>no|neither|nor)\s+(?:\w+\s+){{0,4}}?)?"
    rf"(?:(?P<cannot>cannot|can't|won't|shan't|mustn't|need\s+not|needn't)"
    rf"|(?P<prohibited>(?:is|are|be|been)\s+(?:prohibited|forbidden|barred)\s+(?:from|to)?)"
    rf"|(?P<not_required>(?:is|are)\s+not\s+(?:required|obliged|obligated)\s+to)"
    rf"|(?P<obligation>{_OBLIGATION})|(?P<permission>{_PERMISSION})|(?P<ability>can|could|might))"
    rf"(?P<negation>\s+not\b|\s+never\b|n't\b)?(?P<colon>\s*:)?"
    rf"(?:\s+(?:\([a-z0-9]{{1,4}}\)|\d{{1,2}}\.))?"  # a list's first label: "must: (a)", "will: 1."
    rf"(?P<filler>(?:\s+(?:also|only|then|first|further|immediately|promptly|always|still"
    rf"|either|jointly|{_ADVERB}|be|been))*)"
    rf"\s+(?P<verb>[a-z]+)",
    re.IGNORECASE,
)
_EXCEPTION = re.compile(
    r"\b(?:unless|except(?:\s+(?:where|when|if|for|that|in))?|save\s+(?:where|as|for|that)"
    r"|other\s+than|provided\s+that|with\s+the\s+exception\s+of|exempt(?:ed|s)?\s+from)\b",
    re.IGNORECASE,
)
_NEGATIVE = re.compile(
    r"\b(?:not|no|never|neither|nor|prohibit\w*|forbid\w*|cannot|without)\b|n't\b", re.I
)
_CLAUSE_BREAK = re.compile(r"[;:.]\s|\s(?:and|or|but|which|who|that|where|when|if|unless)\s")

# Who a rule binds or empowers, as regulations name them (singular, lower case).
ACTORS = (
    "joint controller", "controller", "sub-processor", "processor", "data subject",
    "lead supervisory authority", "supervisory authority", "member state", "commission", "board",
    "data protection officer", "representative", "recipient", "third party", "provider",
    "deployer", "importer", "distributor", "authorised representative", "notified body",
    "notifying authority", "market surveillance authority", "national competent authority",
    "ai office", "operator", "subscriber", "user", "service provider", "network operator",
    "regulator", "fsra", "listing authority", "reporting entity", "authorised person",
    "fund manager", "recognised body", "listed entity", "issuer", "offeror", "auditor", "trustee",
    "custodian", "applicant", "insurer", "credit institution", "investment firm",
    "competent authority", "european data protection board",
)  # fmt: skip
# Defined terms written with capitals ("Recognised Investment Exchange", "Authorised Person").
_DEFINED_ACTOR = re.compile(
    r"\b(?:[A-Z][a-z]+ ){1,3}(?:Person|Entity|Entities|Authority|Manager|Firm|Body|Officer|Issuer"
    r"|Operator|Provider|Auditor|Trustee|Custodian|Institution|Exchange|House|Undertaking)s?\b"
)
_ACTOR = re.compile(
    r"\b(?:" + "|".join(re.escape(a) for a in sorted(ACTORS, key=len, reverse=True)) + r")"
    r"(?:s|es)?\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Modal:
    force: Force
    verb: str  # the first word after it, as written (a sentence's verb)
    reach: frozenset[str]  # stems of the verbs it governs in its clause
    topic: frozenset[str]  # stems of the content words of its clause
    subject: frozenset[str]  # stems of the content words before it in its clause
    modal: str  # as written, e.g. "must not"
    actor: str | None  # the actor named just before it, when one is
    scope: str = ""  # its sentence, from the sentence's start to the end of what it governs

    @property
    def stem(self) -> str:
        return _verb_stem(self.verb)

    @property
    def matter(self) -> frozenset[str]:
        """What its clause is about: the content words of its clause and subject, not the verb."""
        return (self.topic | self.subject) - {self.stem}

    def governing(self, verb: str) -> str:
        """How it reads with `verb`: "must not notify", or "shall … notify" further on."""
        return f"{self.modal} {verb}" if verb == self.verb else f"{self.modal} … {verb}"


_stemmer = SnowballStemmer("english")
_NOT_A_VERB = {"not", "be", "to", "the", "a", "an", "also", "in", "at", "as", "by", "on", "with"}
# "provided that" opens a condition; "information which is provided at the request" goes on.
_CLAUSE_END = re.compile(r"[;:]|\.\s|\s(?:unless|except|provided\s+that)\s")
_COORDINATED = re.compile(rf"\b(?:and|or)\s+(?:{_ADVERB}\s+)?([a-z]+)", re.IGNORECASE)
_WORD = re.compile(r"[a-z]+", re.IGNORECASE)
_ITEM = re.compile(r"\([a-z0-9]{1,4}\)\s+(?:be\s+|not\s+)?([a-z]+)", re.IGNORECASE)
_AFTER_COMMA = re.compile(r",\s*([a-z]+)", re.IGNORECASE)
_ADVERBIAL = {
    "without", "within", "where", "in", "at", "as", "upon", "on", "by", "after", "before",
    "from", "with", "for", "to", "no", "not", "if", "when", "subject", "following", "prior",
}  # fmt: skip


@lru_cache(maxsize=65_536)
def _stem(word: str) -> str:
    return _stemmer.stem(word.lower())


def _force(match: re.Match[str]) -> Force:
    negated = bool(match.group("negation") or match.group("no"))
    if match.group("prohibited"):
        return Force.PROHIBITION
    if match.group("not_required") or (match.group("cannot") or "").lower().startswith("need"):
        return Force.NO_OBLIGATION
    if match.group("cannot"):
        return Force.PROHIBITION
    if match.group("obligation"):
        return Force.PROHIBITION if negated else Force.OBLIGATION
    if match.group("ability"):
        return Force.PROHIBITION if negated else Force.ABILITY
    return Force.PROHIBITION if negated else Force.PERMISSION


_DETERMINER = re.compile(r"^(?:a|an|the|this|that|any|each|every|such|its|their|our)\s+")


def _actor_key(name: str) -> str:
    """One spelling per actor: lower case, singular ("Member States" -> "member state")."""
    name = _DETERMINER.sub("", " ".join(name.lower().split()))
    if name.endswith("ies"):
        return name[:-3] + "y"
    if name.endswith(("sses", "xes")):
        return name[:-2]
    return name[:-1] if name.endswith("s") and not name.endswith("ss") else name


@lru_cache(maxsize=4096)
def actors(text: str) -> frozenset[str]:
    named = {_actor_key(m.group(0)) for m in _ACTOR.finditer(text)}
    named |= {_actor_key(m.group(0)) for m in _DEFINED_ACTOR.finditer(text)}
    # "supervisory authority" inside "lead supervisory authority" is the same mention
    return frozenset(a for a in named if not any(a != b and b.endswith(" " + a) for b in named))


@lru_cache(maxsize=4096)
def modals(text: str) -> tuple[Modal, ...]:
    """Each modal verb phrase with its force, the verbs it governs and the actor before it."""
    matches = [
        m
        for m in _MODAL.finditer(text)
        if (m.group("verb").lower() not in _NOT_A_VERB or _existential(text, m))
        and not _NEED_IN_CONDITION.search(text, max(0, m.start() - 60), m.end())
    ]
    found = []
    for n, match in enumerate(matches):
        clause_start = max(
            (m.end() for m in _CLAUSE_BREAK.finditer(text, 0, match.start())), default=0
        )
        sentence_start = max(
            text.rfind(". ", 0, match.start()) + 2, text.rfind("\n", 0, match.start()) + 1
        )
        before = text[max(clause_start, match.start() - 60) : match.start()]
        named = [m.group(0) for m in _ACTOR.finditer(before)]
        named += [m.group(0) for m in _DEFINED_ACTOR.finditer(before)]
        sentence_end = text.find(". ", match.end())
        sentence_end = len(text) if sentence_end < 0 else sentence_end
        reach_end = min(sentence_end, matches[n + 1].start() if n + 1 < len(matches) else len(text))
        reach = text[match.start("verb") : reach_end]
        # "must: (a) be designated ...; (b) be used only ...": the list is the clause
        clause = reach if match.group("colon") else _CLAUSE_END.split(reach, maxsplit=1)[0]
        # The verb, the verbs coordinated with it ("identify ... and determine"), and, after an
        # adverbial ("shall without undue delay and, where feasible, ... notify"), what follows
        # its commas.
        existential = _existential(text, match)
        verb = "be" if existential else match.group("verb").lower()
        governed = [verb, *_COORDINATED.findall(clause), *_ITEM.findall(clause)]
        if match.group("verb").lower() in _ADVERBIAL:
            governed += _AFTER_COMMA.findall(clause)
        items = _numbered_items(text, match.end("colon")) if match.group("colon") else []
        governed += [verb for verb, _ in items]
        clause = " ".join([clause, *(item for _, item in items)])
        found.append(
            Modal(
                # "there must be no conflict": no conflict may exist
                force=Force.PROHIBITION
                if existential and match.group("verb").lower() == "no"
                else _force(match),
                verb=verb,
                reach=frozenset(_verb_stem(w) for w in governed),
                topic=_content_stems(clause),
                subject=_content_stems(text[clause_start : match.start()]),
                modal=" ".join(
                    match.group(0)[: match.start("verb") - match.start()].split()[
                        : -1 if existential else None
                    ]
                ),
                actor=_actor_key(named[-1]) if named else None,
                scope=text[sentence_start:reach_end],
            )
        )
    return tuple(found)


def _existential(text: str, match: re.Match[str]) -> bool:
    """Whether the modal states that something is to exist: "there must be an Approved
    Prospectus", "there may be a waiver", "there should be no conflict"."""
    return (match.group("filler") or "").split()[-1:] == ["be"] and bool(
        re.search(r"\bthere\s+$", text[max(0, match.start() - 7) : match.start()], re.I)
    )


# An item of a numbered list that goes on a sentence: "1. give written notice", "5. (when it has
# reached its decision) notify the Applicant"; a paragraph opens with a capital ("8. The").
_NUMBERED_ITEM = re.compile(r"(?<![\w.])(\d{1,2})\.\s+(?:\([^)]{0,80}\)\s*)?([a-z]+)([^;\n]*)")


def _numbered_items(text: str, start: int) -> list[tuple[str, str]]:
    """The verb and words of each item of the numbered list a modal's colon opens ("The
    Regulator will: 1. give ...; 2. receive ..."), items 1, 2, 3 ... in turn, across the notes
    between them; the list ends where the numbering does."""
    found: list[tuple[str, str]] = []
    for item in _NUMBERED_ITEM.finditer(text, start):
        if int(item.group(1)) != len(found) + 1:
            break
        found.append((item.group(2), item.group(2) + item.group(3)))
    return found


# "when they need to advance the investigation": a necessity in a condition, not a rule.
_NEED_IN_CONDITION = re.compile(
    r"\b(?:if|when|whenever|where)\s+(?:[\w']+\s+){0,4}?(?:needs?|ha(?:s|ve))\s+to\s+\w+$",
    re.IGNORECASE,
)


# "must be more than the cost" says "must exceed the cost": the same verb as "must not exceed".
_EXCEEDING = frozenset({"more", "greater", "higher", "larger", "above", "over"})


def _verb_stem(word: str) -> str:
    return "exceed" if word.lower() in _EXCEEDING else _stem(word)


def _content_stems(text: str) -> frozenset[str]:
    return frozenset(_stem(w) for w in _WORD.findall(text) if w.lower() not in ENGLISH_STOP_WORDS)


# Verbs a restatement swaps for one another ("must not allow" for "shall not permit").
_VERB_GROUPS = (
    "allow permit let authorise authorize",
    "give provide supply furnish",
    "tell inform notify communicate",
    "send submit transmit file forward",
    "keep retain maintain preserve",
    "refuse reject decline deny",
    "disclose reveal divulge",
    "stop cease discontinue",
    "delete erase",
    "get obtain acquire",
    "ask request require",
    "check verify",
    "examine assess evaluate review",
    "start begin commence",
)


@lru_cache(maxsize=1)
def _synonyms() -> dict[str, frozenset[str]]:
    table: dict[str, frozenset[str]] = {}
    for group in _VERB_GROUPS:
        stems = frozenset(_stem(word) for word in group.split())
        for stem in stems:
            table[stem] = table.get(stem, frozenset()) | stems
    return table


def _governing(modal: Modal, stated: Sequence[Modal]) -> list[Modal]:
    """The passage's modal phrases that govern the claim modal's verb; where several do, those
    about the same matter (most words shared with the claim's subject and clause): "(a) exposures
    must be net of allowances ... (c) loans must not be netted with deposits"."""
    words = modal.topic | modal.subject
    governing = [m for m in stated if modal.stem in m.reach]
    # A phrase that shares nothing but the verb with the sentence is about something else:
    # "The report will disclose a claim" does not govern "An Insider must not disclose ...".
    others = words - {modal.stem}
    if others:
        governing = [m for m in governing if (m.topic | m.subject) & others]
    if not governing:  # a synonym governs it only where the phrase is about the same matter
        synonyms = _synonyms().get(modal.stem, frozenset())
        governing = [
            m for m in stated if synonyms & m.reach and len((m.topic | m.subject) & words) >= 3
        ]
    if not governing:  # so does the verb as a noun in its clause: "may agree on charges" for
        # "must charge", "may use the details for direct marketing" for "must market"
        governing = [
            m for m in stated if modal.stem in m.topic and len((m.topic | m.subject) & others) >= 3
        ]
    if len(governing) < 2:
        return governing
    shared = [len((m.topic | m.subject) & words) for m in governing]
    return [m for m, n in zip(governing, shared, strict=True) if n == max(shared)]


def _uses_verb(modal: Modal, stated: Sequence[Modal]) -> bool:
    return any(modal.stem in m.reach for m in stated)


@lru_cache(maxsize=1)
def _actor_stems() -> frozenset[str]:
    return frozenset(_stem(word) for actor in ACTORS for word in actor.replace("-", " ").split())


def _aligned(modal: Modal, stated: Sequence[Modal], share: float = 0.5) -> Modal | None:
    """The passage phrase whose clause shares most of the claim phrase's clause words, when it
    shares at least `share` of them and clearly more than any phrase of another force. Actors'
    names do not count: they recur across a passage's clauses ("the provider", "the deployer")."""
    topic = modal.topic - _actor_stems()
    # A short clause ("may give reasons for the delay") is about its subject too ("a later
    # notification"), as each passage phrase then is ("where the notification is not made ...").
    short = len(topic) < 3
    if short:
        topic = (modal.topic | modal.subject) - _actor_stems()
    if len(topic) < 3:
        return None

    def words(m: Modal) -> frozenset[str]:
        return m.topic | m.subject if short else m.topic

    ranked = sorted(stated, key=lambda m: len(words(m) & topic), reverse=True)
    if not ranked or len(words(ranked[0]) & topic) < share * len(topic):
        return None
    best = ranked[0]
    rivals = [m for m in ranked[1:] if m.force != best.force]
    if rivals and len(words(rivals[0]) & topic) >= len(words(best) & topic):
        return None
    return best


def _compatible(claim: Force, passage: Force) -> bool:
    """Whether the claim's force can restate the passage's: "can" goes with anything allowed."""
    if Force.ABILITY in (claim, passage):
        return Force.PROHIBITION not in (claim, passage)
    return claim == passage or {claim, passage} == {Force.PERMISSION, Force.NO_OBLIGATION}


_ALLOWED = (Force.PERMISSION, Force.ABILITY)
_DEFINITION = re.compile(r"\b(?:is|are)\s*:|\b(?:means|includes|including|comprises)\b", re.I)
_SCOPE_VERBS = frozenset(_stem(w) for w in ("include", "comprise", "cover", "encompass"))
# A permission on a condition and a prohibition with an exception or a bound state one rule:
# "may issue more only if the holders approve" = "must not issue more without their approval".
_POSITIVE_CONDITION = re.compile(
    r"\b(?:if|only|provided|as\s+long\s+as|subject\s+to|with\s+(?:the\s+)?(?:prior\s+)?"
    r"(?:approval|consent|permission))\b",
    re.IGNORECASE,
)
_BOUND = re.compile(
    r"\b(?:unless|except\w*|without|other(?:wise)?\s+than|more\s+(?:\w+\s+){0,4}?than"
    r"|exceed\w*|beyond|until|before)\b",
    re.IGNORECASE,
)
# What a passage states where it excludes or forbids without a modal: "exposures ..., other than
# those to banks", "conduct that may contravene section 92(3)".
_EXCLUSION = re.compile(r"\b(?:other(?:wise)?\s+than|except(?:ing)?|exclud\w*)\b", re.I)
_SENTENCES = re.compile(r"(?<=\.)\s+|\n")
# "must be within the period" restates the bound of "may be authorised for no longer than".
_BOUNDS = frozenset(["within", "under", "below", "above", "less", "more", "up", "between"])


def _says_on_matter(modal: Modal, evidence: str, pattern: re.Pattern[str]) -> bool:
    """Whether a sentence of the passage on the phrase's matter (three of its words besides the
    verb) matches `pattern`: a definition ("X is: (a) ...", "X means") or an exclusion ("must not
    include X" restates "..., other than X")."""
    return any(
        pattern.search(sentence) and len(_content_stems(sentence) & modal.matter) >= 3
        for sentence in _SENTENCES.split(evidence)
    )


_PART = re.compile(r"[;:,]|\(\w{1,4}\)|\s(?:and|or|but|that|which|where|when|if)\s")
_DENIAL = re.compile(
    r"\b(?:not|no|never|neither|nor|without|cannot|prohibit\w*|forbid\w*|offences?|contraven\w*"
    r"|breach\w*|infring\w*|refrain\w*|avoid\w*|prevent\w*|improper\w*|only)\b|n't\b",
    re.IGNORECASE,
)


def _stated_plainly(modal: Modal, evidence: str) -> str | None:
    """Where the passage states the prohibited verb as a plain fact or condition, on the same
    matter (three of the sentence's words besides the verb) and never with a negation nearby:
    "must not reference the earlier disclosure" against "... references the earlier disclosure".
    The words it is stated in, or None."""
    words = modal.matter
    found = None
    for sentence in _SENTENCES.split(evidence):
        uses = [m for m in _WORD.finditer(sentence) if _verb_stem(m.group(0)) == modal.stem]
        if not uses or len(_content_stems(sentence) & words) < 3:
            continue
        for use in uses:  # its clause: from the last break or list label before it to the next
            start = max((m.end() for m in _PART.finditer(sentence, 0, use.start())), default=0)
            end = _PART.search(sentence, use.end())
            if _DENIAL.search(sentence, start, end.start() if end else len(sentence)):
                return None
        found = found or sentence[uses[0].start() : uses[0].start() + 40].split("\n")[0]
    return found


def _conditional_rule(claim: Modal, passage: Modal) -> bool:
    """A conditional permission restating a prohibition with an exception, or back."""
    for allowed, prohibited in ((claim, passage), (passage, claim)):
        if (
            allowed.force in _ALLOWED
            and prohibited.force is Force.PROHIBITION
            and _POSITIVE_CONDITION.search(allowed.scope)
            and _BOUND.search(prohibited.scope)
        ):
            return True
    return False


def _excluded(modal: Modal, evidence: str) -> str | None:
    """What the passage excludes that the sentence's positive phrase takes in: "should include
    exposures to central banks" against "exposures ..., other than (a) central bank". Only the
    words after the exclusion that its sentence does not name before it count."""
    if _NEGATIVE.search(modal.scope) or _EXCLUSION.search(modal.scope):
        return None
    for sentence in _SENTENCES.split(evidence):
        for match in _EXCLUSION.finditer(sentence):
            before = _content_stems(sentence[: match.start()])
            after = _content_stems(sentence[match.end() :]) - before
            if len(before & modal.topic) >= 1 and len(after & modal.topic) >= 3:
                return sentence[match.start() : match.start() + 40]
    return None


def _check_modality(claim: str, evidence: str) -> Mismatch | None:
    stated = modals(evidence)
    for modal in modals(claim):
        if modal.force is not Force.PROHIBITION and (excluded := _excluded(modal, evidence)):
            return Mismatch(
                SupportCheck.MODALITY,
                f"the sentence says '{modal.governing(modal.verb)}', the cited passage excludes "
                f"it ('{excluded}')",
            )
        same_verb = _governing(modal, stated)
        if same_verb:
            if not any(
                _compatible(modal.force, m.force) or _conditional_rule(modal, m) for m in same_verb
            ):
                return Mismatch(
                    SupportCheck.MODALITY,
                    f"the sentence says '{modal.governing(modal.verb)}', "
                    f"the cited passage '{same_verb[0].governing(modal.verb)}'",
                )
            continue
        # The verb is the sentence's own: the passage's phrase on the same matter (most of the
        # sentence's clause words in its clause) must have a compatible force ...
        # An obligation may restate a prohibition: "must be fair" for "must not exceed the cost".
        accepted = {modal.force, Force.PROHIBITION} if modal.force is Force.OBLIGATION else set()
        bound = modal.force is Force.OBLIGATION and modal.verb in _BOUNDS
        # Where the passage uses the verb only on another matter, no phrase of it is aligned.
        aligned = None if _uses_verb(modal, stated) else _aligned(modal, stated)
        if aligned is not None and not (
            _compatible(modal.force, aligned.force)
            or aligned.force in accepted
            or (bound and aligned.force is Force.PERMISSION)
            or _conditional_rule(modal, aligned)
        ):
            return Mismatch(
                SupportCheck.MODALITY,
                f"the sentence says '{modal.governing(modal.verb)}', "
                f"the cited passage '{aligned.governing(aligned.verb)}'",
            )
        # ... and the passage must at least state that force somewhere; what something "can" do
        # is no permission ("may keep" where the passage says "must keep" and "can meet").
        if modal.force is Force.PERMISSION:
            stating = {Force.PERMISSION, Force.NO_OBLIGATION}
        else:
            stating = accepted | {f for f in Force if _compatible(modal.force, f)}
        if modal.force is Force.PROHIBITION and _says_on_matter(modal, evidence, _EXCLUSION):
            continue
        if modal.force is Force.PROHIBITION and aligned is None:
            positive = _stated_plainly(modal, evidence)
            if positive:
                return Mismatch(
                    SupportCheck.MODALITY,
                    f"the sentence says '{modal.governing(modal.verb)}', the cited passage states "
                    f"it without a negation ('{positive}')",
                )
        # What something "may include" describes its scope, which a definition states without a
        # modal ("a Spot Commodity is: ... e) an Environmental Instrument"): no permission is
        # needed where the passage defines the matter and no modal phrase of it is on that
        # matter ("must ensure the disclosure contains: (1) the types of permits" is).
        scope = modal.force in _ALLOWED and modal.stem in _SCOPE_VERBS
        if scope:
            scope = _says_on_matter(modal, evidence, _DEFINITION) and not any(
                len((m.topic | m.subject) & modal.matter) >= 3 for m in stated
            )
        if stated and not scope and not any(m.force in stating for m in stated):
            return Mismatch(
                SupportCheck.MODALITY,
                f"the sentence says '{modal.governing(modal.verb)}'; the cited passage states no "
                f"{modal.force.value} (it says '{stated[0].governing(stated[0].verb)}')",
            )
    return None


def states_modality(claim: str, evidence: str) -> bool:
    """Whether the passage says something of the force of each of the claim's modal phrases: a
    phrase governing its verb, or one on the same matter. A passage that merely states no modal
    passes the modality check without confirming anything."""
    stated = modals(evidence)
    return all(_governing(m, stated) or _aligned(m, stated) for m in modals(claim))


def confirms(claim: str, evidence: str) -> bool:
    """Whether the passage confirms what the sentence states, beyond not contradicting it: each
    of its modal phrases governed by, or on the same matter as, a passage phrase of a compatible
    force, and each actor it names named there; a sentence with no modal confirms nothing."""
    stated = modals(evidence)
    claimed = modals(claim)
    if not claimed or not actors(claim) <= actors(evidence):
        return False
    for modal in claimed:
        aligned = _aligned(modal, stated)
        phrases = _governing(modal, stated) or ([aligned] if aligned else [])
        if not any(_compatible(modal.force, phrase.force) for phrase in phrases):
            return False
    return True


_CONDITION = re.compile(
    r"\b(?:only|if|where|when|subject\s+to|exempt\w*|exemption|waiv\w+|derogat\w+"
    r"|otherwise\s+than|or\s+(?:to\s+)?explain)\b",  # "comply ... or explain its non-compliance"
    re.I,
)


def _check_exceptions(claim: str, evidence: str) -> Mismatch | None:
    made = _EXCEPTION.search(claim)
    if made and not (_EXCEPTION.search(evidence) or _CONDITION.search(evidence)):
        return Mismatch(
            SupportCheck.EXCEPTION,
            f"the sentence makes an exception ('{made.group(0)}') the cited passage does not",
        )
    return None


# Guidance written in the regulator's voice calls the regulator "we" ("we will take into account").
_AUTHORITIES = frozenset({
    "regulator", "fsra", "supervisory authority", "competent authority", "listing authority",
    "national competent authority", "market surveillance authority",
})  # fmt: skip
_FIRST_PERSON = re.compile(r"\b(?:we|us|our)\b", re.IGNORECASE)


def _check_actors(claim: str, evidence: str) -> Mismatch | None:
    named = actors(evidence)
    present = named | _AUTHORITIES if _FIRST_PERSON.search(evidence) else named
    for actor in sorted(actors(claim)):
        if actor not in present and not any(p.endswith(" " + actor) for p in present):
            names = f" (it names {', '.join(sorted(named)[:3])})" if named else ""
            return Mismatch(SupportCheck.ACTOR, f"actor '{actor}' not in the cited passage{names}")
    stated = modals(evidence)
    for modal in modals(claim):
        if modal.actor is None:
            continue
        doers = {m.actor for m in _governing(modal, stated) if m.actor}
        if doers and modal.actor not in doers:
            return Mismatch(
                SupportCheck.ACTOR,
                f"in the cited passage the {sorted(doers)[0]}, not the {modal.actor}, "
                f"'{modal.verb}'",
            )
    return None


# --- references ----------------------------------------------------------------------------------

_REFERENCE_TEXT = re.compile(
    r"\b(?:articles?|rules?|sections?|paragraphs?|regulations?|chapters?|parts?|schedules?"
    r"|annex(?:es)?|appendix|appendices|recitals?)\s+\d[\w.()]*(?:\s?\(\w{1,4}\))*",
    re.IGNORECASE,
)


def _reference_keys(text: str) -> set[str]:
    return {key for reference in extract_references(text) for key in reference.keys}


def _check_references(claim: str, evidence: str, own_keys: Collection[str]) -> Mismatch | None:
    named = _reference_keys(evidence)
    cited = named | set(own_keys)
    claim = _ABBREVIATION.sub("Article ", claim)
    for match in _REFERENCE_TEXT.finditer(claim):
        keys = _reference_keys(match.group(0))
        if keys and not keys & cited:
            return Mismatch(
                SupportCheck.REFERENCE,
                f"reference {match.group(0).strip()} not in the cited passage",
            )
        if keys and not keys & named and (other := _named_instead(claim, match, evidence)):
            return Mismatch(
                SupportCheck.REFERENCE,
                f"reference {match.group(0).strip()} not in the cited passage (it says {other})",
            )
    return None


def _label(reference: str) -> str:
    return _actor_key(reference.split()[0])  # "Chapters 4 and 5" -> "chapter"


def _named_instead(claim: str, match: re.Match[str], evidence: str) -> str | None:
    """A reference of the same kind the passage names for what the sentence attributes to its
    own place: "Credit RWAs calculated under Chapter 3" in a passage of Chapter 3 that says
    "Credit RWAs have to be calculated in accordance with Chapter 4". The passage's own chapter
    or rule number backs a reference only where its text names no other one on that matter (two
    words of the eight before each reference)."""
    label = _label(match.group(0))
    context = _content_stems(" ".join(claim[: match.start()].split()[-8:]))
    for other in _REFERENCE_TEXT.finditer(evidence):
        if _label(other.group(0)) != label:
            continue
        before = _content_stems(" ".join(evidence[: other.start()].split()[-8:]))
        if len(before & context) >= 2:
            return other.group(0).strip()
    return None


_ABBREVIATION = re.compile(r"\bArts?\.\s*", re.IGNORECASE)
_INVISIBLE = re.compile("[\u200b-\u200f\u2060\ufeff\u00ad]")  # direction marks, soft hyphens


# --- the component -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """The text a sentence is checked against: its passages, headed by their section paths."""

    text: str
    reference_keys: frozenset[str]

    @classmethod
    def of(cls, chunks: Iterable[Chunk]) -> Evidence:
        chunks = list(chunks)
        text = "\n".join(f"{c.section_path or c.section}\n{c.text}" for c in chunks)
        keys = frozenset(k for c in chunks for k in section_keys(c.section_ref))
        text = _INVISIBLE.sub("", _ABBREVIATION.sub("Article ", text))
        return cls(text=text, reference_keys=keys)


class FactChecker:
    """Runs the enabled checks on (sentence, evidence) and returns the first mismatch, if any."""

    def __init__(self, kinds: Collection[SupportCheck] = FACT_CHECKS) -> None:
        unknown = [kind for kind in kinds if kind not in FACT_CHECKS]
        if unknown or not kinds:
            raise ValueError(f"checks must be some of {[k.value for k in FACT_CHECKS]}")
        self.kinds = tuple(SupportCheck(kind) for kind in kinds)

    def run(self, claim: str, evidence: Evidence) -> Mismatch | None:
        text = evidence.text
        claim = _INVISIBLE.sub("", claim)
        for kind in self.kinds:
            if kind is SupportCheck.QUANTITY:
                found = _check_quantities(claim, text)
            elif kind is SupportCheck.MODALITY:
                found = _check_modality(claim, text)
            elif kind is SupportCheck.EXCEPTION:
                found = _check_exceptions(claim, text)
            elif kind is SupportCheck.ACTOR:
                found = _check_actors(claim, text)
            else:
                found = _check_references(claim, text, evidence.reference_keys)
            if found is not None:
                return found
        return None
