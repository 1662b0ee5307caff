"""Question analysis: the parts a question asks, the documents it names, the scenario around it.

Analysts write a short scenario, then one question with two or three parts, often about two
regulations. Each part is searched, checked for coverage and answered on its own; the scenario
sentences stay with every part as context. Deterministic: the same question always splits the
same way.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from core.catalog import DocumentRecord
from core.sentences import split_sentences

# A clause boundary inside a question sentence: a conjunction (or ';') that starts a new ask.
_ASK = (
    r"what|which|how|when|where|who|whom|whose|why|whether|is|are|was|were|do|does|did|can|"
    r"could|must|should|shall|may|will|would|has|have|if|also|separately|then"
)
_CLAUSE_BREAK = re.compile(
    rf"\s*;\s*|,?\s+(?:and|or|but|plus)\s+(?=(?:{_ASK})\b)|,?\s+as well as\s+(?=(?:{_ASK})\b)"
    r"|,?\s+and\s+(?=(?:under|in|according to|for)\s+(?:the\s+)?[A-Z0-9])",
    re.IGNORECASE,
)
_COMPARISON = re.compile(
    r"\s+(?:compares?|compared)\s+(?:with|to|against)\s+|\s+(?:versus|vs\.?)\s+", re.IGNORECASE
)
_ASKS = re.compile(rf"\b(?:{_ASK})\b", re.IGNORECASE)
_LEAD_IN = re.compile(r"^(?:how|in what way)\s+(?:does|do|did|is|are)\s+", re.IGNORECASE)
_MIN_PART_WORDS = 3
_MAX_PARTS = 4
# A clause that refers back to the one before ("what will that person do", "how long should we
# keep them") or is too short to stand alone ("for how long") is searched with that clause.
_REFERS_BACK = re.compile(
    r"\b(?:that|this|those|these|it|its|them|such|the same|either|both|each|none)\b", re.IGNORECASE
)
_STANDALONE_WORDS = 5
# A clause that only names where to look ("and under the GDPR"): the ask before it, per document.
_ONLY_WHERE = re.compile(
    r"^(?:(?:and|or)\s+)?(?:under|in|according to|for)\s+(?:the\s+)?\S.*$", re.IGNORECASE
)
# Title segments that name the document's kind, not the document: "Directive", "Regulation".
_GENERIC = {"regulation", "directive", "act", "the", "rules", "rulebook", "guidance", "law"}


@dataclass(frozen=True)
class QuestionPart:
    """One thing the question asks: its words, what to search with, the documents it names."""

    text: str
    query: str
    documents: tuple[str, ...] = ()
    named: tuple[str, ...] = ()  # the documents the part's own words name (not its sentence's)
    standalone: str = ""  # the part with the clause it refers back to; its text when it has none
    # The words that say what the part is about: for a part naming no document, its sentence's
    # clauses up to it ("Under Virginia's act what is the fine, and is there a cure period?").
    about: str = ""

    def __post_init__(self) -> None:
        if not self.standalone:
            object.__setattr__(self, "standalone", self.text)
        if not self.about:
            object.__setattr__(self, "about", self.standalone)


@dataclass(frozen=True)
class QuestionAnalysis:
    question: str
    parts: tuple[QuestionPart, ...]
    context: str = ""
    documents: tuple[str, ...] = field(default=())
    known_names: tuple[str, ...] = field(default=())  # every name of every indexed document

    @property
    def multi_part(self) -> bool:
        return len(self.parts) > 1


class DocumentNames:
    """The names each indexed document goes by, read from the catalog: the title's segments
    ("GDPR", "Regulation (EU) 2016/679", "General Data Protection Regulation"), their short forms
    ("2016/679", "ePrivacy", "SP 800-53"), the document id and any `aliases` in its metadata."""

    def __init__(self, names: dict[str, Sequence[str]]) -> None:
        self.aliases = tuple(sorted({alias for aliases in names.values() for alias in aliases}))
        self._patterns: list[tuple[re.Pattern[str], str]] = []
        pairs = sorted(
            ((alias, document_id) for document_id, aliases in names.items() for alias in aliases),
            key=lambda pair: -len(pair[0]),
        )
        for alias, document_id in pairs:
            words = r"\s+".join(re.escape(word) for word in alias.split())
            pattern = re.compile(rf"(?<![\w/-]){words}(?![\w/-])", re.IGNORECASE)
            self._patterns.append((pattern, document_id))

    @classmethod
    def from_records(cls, records: Iterable[DocumentRecord]) -> DocumentNames:
        return cls({r.document_id: document_aliases(r) for r in records})

    def find(self, text: str) -> tuple[str, ...]:
        """The documents `text` names, in the order it names them."""
        return tuple(self.mentions(text))

    def mentions(self, text: str) -> dict[str, str]:
        """Document id -> the words `text` first names it with, in the order it names them."""
        found: list[tuple[int, str, str]] = []
        taken: list[tuple[int, int]] = []
        for pattern, document_id in self._patterns:  # longest aliases first
            for match in pattern.finditer(text):
                span = match.span()
                if any(start < span[1] and span[0] < end for start, end in taken):
                    continue
                taken.append(span)
                found.append((span[0], document_id, match.group(0)))
        ordered: dict[str, str] = {}
        for _, document_id, words in sorted(found):
            ordered.setdefault(document_id, words)
        return ordered


def document_aliases(record: DocumentRecord) -> list[str]:
    """Every name of a document that a question may use for it."""
    aliases: set[str] = {record.document_id, record.document_id.replace("-", " ")}
    extra = record.metadata.get("aliases") or []
    aliases.update(str(alias) for alias in (extra if isinstance(extra, list) else [extra]))
    segments = [s.strip() for s in re.split(r"\s+[—–-]\s+|[()]", record.title) if s.strip()]
    for segment in segments:
        aliases.add(segment)
        aliases.update(_short_forms(segment))
    return sorted(a for a in aliases if len(a) >= 3 and a.lower() not in _GENERIC)


def _short_forms(segment: str) -> list[str]:
    forms: list[str] = []
    code = re.search(r"\b\d{2,4}/\d{1,4}(?:/[A-Z]{2,3})?\b", segment)
    if code:  # "Regulation (EU) 2016/679" -> "2016/679"
        forms.append(code.group(0))
    numbered = re.search(r"\b(?:(?:NIST\s+)?SP\s+)?\d{3}-\d{1,3}[A-Z]?\b", segment)
    if numbered:  # "NIST SP 800-53 Rev. 5" -> "NIST SP 800-53", "SP 800-53", "800-53"
        stem = numbered.group(0)
        forms += [stem, re.sub(r"^NIST\s+", "", stem), re.sub(r"^(?:NIST\s+)?SP\s+", "", stem)]
        if stem.upper().startswith("NIST"):
            forms.append("NIST")
    words = segment.split()
    if len(words) > 1 and words[-1].lower() in {"directive", "regulation"}:
        forms.append(" ".join(words[:-1]))  # "ePrivacy Directive" -> "ePrivacy"
    if len(words) > 1 and words[0].lower() == "the":
        forms.append(" ".join(words[1:]))
    return [
        form
        for form in forms
        if len(form.split()) > 1
        or not form.isalpha()
        or form.isupper()
        or any(c.isupper() for c in form[1:])
    ]


class QuestionAnalyzer:
    """Splits a question into parts (several questions, "and"/"or" clauses that ask different
    things, comparisons, "under A ... and under B") and finds the documents each part names."""

    def __init__(
        self,
        names: Callable[[], DocumentNames] | None = None,
        max_parts: int = _MAX_PARTS,
    ) -> None:
        """`names`: the current documents' names (they change as documents are ingested)."""
        if max_parts < 1:
            raise ValueError("max_parts must be at least 1")
        self._names = names or (lambda: DocumentNames({}))
        self.max_parts = max_parts

    def run(self, question: str) -> QuestionAnalysis:
        names = self._names()
        text = " ".join(question.split())
        sentences = split_sentences(text) or [text]
        asks = [s for s in sentences if s.rstrip().endswith("?")]
        if not asks:
            asks = [sentences[-1]]
        context = " ".join(s for s in sentences if s not in asks)
        framing = tuple(names.mentions(context))
        parts: list[QuestionPart] = []
        for sentence in asks:
            earlier: tuple[str, ...] = ()  # the documents the sentence's clauses so far name
            before: list[str] = []  # the sentence's clauses so far
            for clause in _clauses(sentence, names):
                if own := names.mentions(clause):
                    parts.extend(_per_document(clause, context, own))
                    earlier = tuple(dict.fromkeys([*earlier, *own]))
                else:  # searched where the clauses before it, or else the scenario, point
                    standalone = _standalone(clause, before[-1] if before else "")
                    parts.append(
                        QuestionPart(
                            clause,
                            _query(standalone, context),
                            earlier or framing,
                            standalone=standalone,
                            about=" ".join([*before, clause]),
                        )
                    )
                before.append(clause)
        if len(parts) > self.max_parts:
            parts = [*parts[: self.max_parts - 1], _merged(parts[self.max_parts - 1 :], context)]
        if len(parts) == 1:  # one part: search with the question exactly as asked
            everywhere = names.find(text)
            parts = [QuestionPart(text, text, everywhere, everywhere)]
        return QuestionAnalysis(
            question=text,
            parts=tuple(parts),
            context=context,
            documents=names.find(text),
            known_names=names.aliases,
        )


def _clauses(sentence: str, names: DocumentNames) -> list[str]:
    """The asks of one question sentence; a fragment too short to search on joins its neighbour,
    and one that only names another document ("... under the AI Act and under the GDPR") joins
    the ask before it, which is then asked of each document."""
    pieces: list[str] = []
    for clause in _CLAUSE_BREAK.split(sentence):
        where = clause.strip(" ,?")
        if pieces and _ONLY_WHERE.match(where) and names.find(where) and not _ASKS.search(where):
            pieces[-1] = f"{pieces[-1]} and {where}"
            continue
        compared = _COMPARISON.split(clause)
        if len(compared) > 1:  # "How does X compare with Y": search X and Y
            compared[0] = _LEAD_IN.sub("", compared[0])
        pieces.extend(compared)
    clauses: list[str] = []
    for piece in (p.strip(" ,?") for p in pieces):
        if not piece:
            continue
        if clauses and len(piece.split()) < _MIN_PART_WORDS:
            clauses[-1] = f"{clauses[-1]} and {piece}"
        elif not clauses and len(piece.split()) < _MIN_PART_WORDS:
            clauses.append(piece)
        elif clauses and len(clauses[-1].split()) < _MIN_PART_WORDS:
            clauses[-1] = f"{clauses[-1]} {piece}"
        else:
            clauses.append(piece)
    return [_as_question(clause) for clause in clauses] or [sentence]


def _standalone(clause: str, previous: str) -> str:
    """The clause with the one before it, when it refers back to it or is too short alone."""
    if previous and (_REFERS_BACK.search(clause) or len(clause.split()) < _STANDALONE_WORDS):
        return f"{previous} {clause}"
    return clause


def _as_question(clause: str) -> str:
    clause = clause[0].upper() + clause[1:] if clause else clause
    return clause if clause.endswith("?") else f"{clause}?"


def _query(clause: str, context: str) -> str:
    return f"{context} {clause}".strip() if context else clause


def _per_document(clause: str, context: str, mentions: dict[str, str]) -> list[QuestionPart]:
    """The clause as one part, or, when it names several documents ("what rights do they have
    under the GDPR and the AI Act"), one part per document, each searched in that document
    alone: otherwise one document's passages can fill the whole answer."""
    query = _query(clause, context)
    if len(mentions) < 2:
        documents = tuple(mentions)
        return [QuestionPart(clause, query, documents, documents)]
    return [
        QuestionPart(f"{clause} ({words})", query, (document,), (document,))
        for document, words in mentions.items()
    ]


def _merged(parts: list[QuestionPart], context: str) -> QuestionPart:
    text = " ".join(part.text for part in parts)
    documents = tuple(dict.fromkeys(d for part in parts for d in part.documents))
    named = tuple(dict.fromkeys(d for part in parts for d in part.named))
    return QuestionPart(text, _query(text, context), documents, named)
