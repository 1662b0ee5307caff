"""Cross-references between regulation passages ("as required under Rule 7.2.1", "section 117 of
FSMR", "Article 17(1)", "paragraph (2)"), normalised to keys that passages are stored under.

At ingestion every chunk gets `ref_keys` (the names it can be referred to by: its rule number,
its ancestors and its labelled parts) and `document_codes` (the acronyms its document is cited by,
e.g. "FSMR"). At query time the references found in retrieved passages are turned into the same
keys and looked up with a filtered store query, so expansion needs no extra index or catalog.

Keys are lower case without spaces inside numbers: "3.19.7(2)", "3.19.7", "117(1)", "117",
"part 11", "chapter 4", "app 4", "schedule 1". Rules, sections, articles, regulations and
paragraphs share one unlabelled numbering (documents cite the same passage by several of them).
"""

from __future__ import annotations

import re

from pydantic import BaseModel

from core.models import Chunk

# Structural units whose numbers are their own namespace ("Part 11", "Schedule 1", "APP 4").
_LABELS = {
    "part": "part",
    "parts": "part",
    "chapter": "chapter",
    "chapters": "chapter",
    "schedule": "schedule",
    "schedules": "schedule",
    "annex": "annex",
    "annexes": "annex",
    "appendix": "app",
    "appendices": "app",
    "app": "app",
    "recital": "recital",
    "recitals": "recital",
}
# Units cited by the passage number alone ("Regulations 2015" is a title, not a reference).
_NUMBERED = r"rules?|sections?|articles?|paragraphs?|sub-?paragraphs?"
_CODE = r"[A-Z]{2,6}"
_SUB = r"\([0-9a-zA-Z]{1,4}\)"
_NUMBER = rf"[A-Z]?\d+[A-Za-z]?(?:\.(?:\d+[A-Za-z]?|[A-Z](?=\.\d)))*\)?(?:\s?{_SUB})*"
_SEPARATOR = r"\s*(?:,|and|or|to|-|–)\s*"
_REFERENCE = re.compile(
    rf"(?:\b(?P<code>{_CODE})\s+)?"
    rf"\b(?P<label>{_NUMBERED}|{'|'.join(_LABELS)})\s+"
    rf"(?P<numbers>{_NUMBER}(?:{_SEPARATOR}{_NUMBER})*)"
    rf"(?:\s+of\s+(?:the\s+)?(?P<of>[A-Z][\w-]*))?",
    re.IGNORECASE,
)
# "GEN 3.3.4" (a code and a rule number) and bare rule numbers of three levels ("7.1.3(1)(c)").
_CODED_NUMBER = re.compile(rf"\b(?P<code>{_CODE})\s+(?P<number>\d+\.\d+(?:\.\d+)*(?:{_SUB})*)")
_BARE_NUMBER = re.compile(rf"(?<![\w.])(?P<number>\d+\.\d+\.\d+[A-Za-z]?(?:{_SUB})*)")
_RELATIVE = re.compile(rf"\b(?:sub-?)?paragraphs?\s+(?P<subs>(?:{_SUB})+)", re.IGNORECASE)
_NUMBER_PART = re.compile(_NUMBER)
_SUB_PART = re.compile(r"\(([0-9a-zA-Z]{1,4})\)")
_CODE_ONLY = re.compile(rf"^{_CODE}$")
_LABELLED_COMPONENT = re.compile(rf"^({'|'.join(_LABELS)})\s*([0-9a-z]+)$", re.IGNORECASE)
_NUMBERED_COMPONENT = re.compile(rf"^(?:{_NUMBERED})\s+(.+)$", re.IGNORECASE)
_TITLE_CODES = re.compile(rf"\(({_CODE})\)|^({_CODE})\b")


class Reference(BaseModel):
    """One cited passage: the keys it may be stored under (most specific first) and, for a
    reference to another document, that document's code."""

    keys: list[str]
    document_code: str | None = None


def _number_keys(main: list[str], subs: list[str], ancestors: bool = False) -> list[str]:
    """'3.19.7' + ['2', 'a'] -> 3.19.7(2)(a), 3.19.7(2), 3.19.7, and with `ancestors` 3.19 (of
    two or more levels only: a bare chapter number would name half a rulebook).

    A passage is stored under its ancestors, so that "Rule 3.19" finds the rules of 3.19; a
    reference names no ancestors, so that "Rule 3.19.6" does not find its siblings."""

    def joined(parts: list[str]) -> str:
        # "15.11.A.2" and "15.11A.2" are the same rule.
        return re.sub(r"\.([a-z])(?=\.|$)", r"\1", ".".join(parts).lower())

    base = joined(main)
    keys = [base + "".join(f"({s.lower()})" for s in subs[:n]) for n in range(len(subs), 0, -1)]
    keys.append(base)
    if ancestors:
        keys.extend(joined(main[:n]) for n in range(len(main) - 1, 1, -1))
    return list(dict.fromkeys(keys))


def _split_number(text: str) -> tuple[list[str], list[str]]:
    """'3.19.7(2)(a)' -> (['3','19','7'], ['2','a']); '148h)' -> (['148'], ['h'])."""
    text = text.strip()
    head = re.split(r"\s?\(", text, maxsplit=1)[0].rstrip(")")
    subs = _SUB_PART.findall(text[len(head) :])
    letter = re.fullmatch(r"(\d+)([a-z])", head)
    if letter:  # "148h)": item h of paragraph 148
        head, subs = letter.group(1), [letter.group(2), *subs]
    return [part for part in head.split(".") if part], subs


def section_keys(section_ref: str | None) -> list[str]:
    """The keys a passage with this structural reference can be cited by.

    Understands ObliQA/ADGM passage ids ("3.19.7.(2)", "Part 11.Chapter 4.117.",
    "APP4.A4.11.1", "148)") and headings such as "Article 33" or "Chapter IV". Guidance under a
    rule is not the rule: "3.19.7.Guidance.1." keeps only its labelled parts.
    """
    if not section_ref:
        return []
    labelled: list[str] = []
    main: list[str] = []
    subs: list[str] = []
    for raw in re.split(r"\.(?![^(]*\))", section_ref.strip()):
        component = raw.strip()
        if not component:
            continue
        if component.lower() == "guidance":
            main, subs = [], []
            break
        if match := _LABELLED_COMPONENT.match(component):
            labelled.append(f"{_LABELS[match.group(1).lower()]} {match.group(2).lower()}")
            continue
        if match := _NUMBERED_COMPONENT.match(component):
            component = match.group(1)
        if sub := re.fullmatch(r"\(([0-9a-zA-Z]{1,4})\)", component):
            if main:
                subs.append(sub.group(1))
            continue
        if subs:  # numbering restarts after a sub-paragraph: not a passage number
            break
        component = component.rstrip(")")
        if re.fullmatch(r"[0-9a-zA-Z-]+", component):
            main.append(component)
        else:
            break
    keys = labelled + (_number_keys(main, subs, ancestors=True) if main else [])
    if len(main) >= 2 and main[0].isdigit():
        keys.append(f"chapter {main[0]}")
    return list(dict.fromkeys(keys))


def document_codes(document_title: str) -> list[str]:
    """Acronyms a document is cited by: a leading one ("FSMR — ...") or in brackets ("(PRU)")."""
    pairs = _TITLE_CODES.findall(document_title)
    return list(dict.fromkeys(code for pair in pairs for code in pair if code))


def reference_payload(chunk: Chunk) -> dict[str, list[str]]:
    """What the store keeps beside a chunk so that references to it can be looked up."""
    return {
        "ref_keys": section_keys(chunk.section_ref),
        "document_codes": document_codes(chunk.document_title),
    }


def _main_number(section_ref: str | None) -> list[str]:
    keys = section_keys(section_ref)
    numbered = [k for k in keys if " " not in k and "(" not in k]
    return numbered[0].split(".") if numbered else []


def extract_references(text: str, section_ref: str | None = None) -> list[Reference]:
    """References cited in a passage, in order of appearance, without duplicates.

    `section_ref` is the citing passage's own reference: "paragraph (2)" is resolved against it.
    A reference "of" a named instrument that is not an acronym ("section 61 of the Companies
    Regulations") points outside the known documents and is left out.
    """
    found: list[tuple[int, Reference]] = []
    for match in _REFERENCE.finditer(text):
        of = match.group("of")
        if of and not _CODE_ONLY.match(of):
            if of.lower() not in ("this", "these", "rule", "section", "chapter", "part"):
                continue
            of = None
        code = of or match.group("code")
        if code and not _CODE_ONLY.match(code):
            code = None
        label = match.group("label").lower()
        for number in _NUMBER_PART.findall(match.group("numbers")):
            if label in _LABELS and "." not in number:
                keys = [f"{_LABELS[label]} {number.rstrip(')').lower()}"]
            else:
                main, subs = _split_number(number)
                if not main:
                    continue
                keys = _number_keys(main, subs)
            reference = Reference(keys=keys, document_code=code.upper() if code else None)
            found.append((match.start(), reference))
    for pattern in (_CODED_NUMBER, _BARE_NUMBER):
        for match in pattern.finditer(text):
            code = match.groupdict().get("code")
            main, subs = _split_number(match.group("number"))
            found.append(
                (match.start(), Reference(keys=_number_keys(main, subs), document_code=code))
            )
    own = _main_number(section_ref)
    if own:
        for match in _RELATIVE.finditer(text):
            subs = _SUB_PART.findall(match.group("subs"))
            found.append((match.start(), Reference(keys=_number_keys(own, subs)[: len(subs)])))
    # One reference per cited passage: "GEN Rule 5.2.7" is also a bare "5.2.7"; the coded wins.
    unique: dict[tuple[str, ...], Reference] = {}
    for _, reference in sorted(found, key=lambda item: item[0]):
        known = unique.get(tuple(reference.keys))
        if known is None or (reference.document_code and not known.document_code):
            unique[tuple(reference.keys)] = reference
    return list(unique.values())
