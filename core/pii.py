"""Personal data in free text: e-mail addresses, phone numbers, IBANs, payment cards, national ids.

Numbers with a checksum (IBAN mod 97, card Luhn) count only when the checksum holds, and phone
numbers only in shapes that dates, article numbers and regulation ids (2016/679, 2018-05-25) never
take, so regulatory text is not flagged at every turn (IP addresses are left out: rule numbers such
as 1.2.3.4 look the same). Used to redact what the audit log keeps and
to flag answers that contain personal data.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass


class PiiKind(enum.StrEnum):
    EMAIL = "email"
    IBAN = "iban"
    CARD = "payment_card"
    US_SSN = "us_ssn"
    UK_NINO = "uk_nino"
    PHONE = "phone"


@dataclass(frozen=True)
class PiiMatch:
    kind: PiiKind
    start: int
    end: int
    text: str


def luhn_valid(digits: str) -> bool:
    """The payment card check digit (ISO/IEC 7812)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """ISO 13616: country code and check digits moved to the end, letters as numbers, mod 97 = 1."""
    compact = re.sub(r"[ -]", "", iban).upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", compact):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def _card(candidate: str) -> bool:
    digits = re.sub(r"\D", "", candidate)
    # Issuer prefixes: 2 and 5 Mastercard, 3 Amex/Diners/JCB, 4 Visa, 6 Discover/UnionPay/Maestro.
    return 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn_valid(digits)


_DATE = re.compile(r"\d{1,4}([./-])\d{1,2}\1\d{1,4}")
_LOCAL_NORTH_AMERICAN = re.compile(r"[2-9]\d{2}-\d{4}")


def _phone(candidate: str) -> bool:
    digits = re.sub(r"\D", "", candidate)
    if _LOCAL_NORTH_AMERICAN.fullmatch(candidate):  # 555-0134: a local number, no area code
        return True
    if not 8 <= len(digits) <= 15 or _DATE.fullmatch(candidate):
        return False
    if candidate.startswith(("+", "(")):
        return True
    if candidate.startswith("00"):  # international prefix: a country code and a full number follow
        return len(digits) >= 11
    # A national number with a trunk prefix and any separator (020 7946 0958, 0171-1234567,
    # 030/1234567, 06.12.34.56.78), or the North American 3-3-4 shape.
    north_american = re.fullmatch(r"\d{3}[-. ]\d{3}[-. ]\d{4}", candidate) is not None
    trunk = candidate.startswith("0") and re.search(r"[ ./-]", candidate) is not None
    return north_american or trunk


_BOUNDARY_START = r"(?<![\w@./+-])"
_BOUNDARY_END = r"(?![\w@]|[./-]\d)"

# Checked in this order; a later kind never claims text an earlier one matched.
_PATTERNS: list[tuple[PiiKind, re.Pattern[str], Callable[[str], bool] | None]] = [
    (
        PiiKind.EMAIL,
        re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
        None,
    ),
    (
        PiiKind.IBAN,
        # Compact, or in groups of four (paper format) split by spaces or dashes; any case.
        re.compile(
            _BOUNDARY_START
            + r"(?i:[A-Z]{2}\d{2}"
            + r"(?:[A-Z0-9]{11,30}|(?:[ -][A-Z0-9]{4}){2,7}(?:[ -][A-Z0-9]{1,4})?))"
            + _BOUNDARY_END
        ),
        iban_valid,
    ),
    (
        PiiKind.CARD,
        re.compile(_BOUNDARY_START + r"\d(?:[ -]?\d){12,18}" + _BOUNDARY_END),
        _card,
    ),
    (
        PiiKind.US_SSN,
        re.compile(_BOUNDARY_START + r"(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b"),
        None,
    ),
    (
        PiiKind.UK_NINO,
        re.compile(
            r"\b(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
            r" ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"
        ),
        None,
    ),
    (
        PiiKind.PHONE,
        re.compile(
            _BOUNDARY_START
            + r"(?:\+|00)?(?:\d{1,4}[ .-]?)?(?:\(\d{1,5}\)[ .-]?)?\d{2,5}(?:[ ./-]\d{2,8}){1,4}"
            + _BOUNDARY_END
            + r"|(?<![\w+])\(\d{1,5}\)[ .-]?\d{2,5}(?:[ .-]\d{2,5}){1,3}"
            + _BOUNDARY_END
        ),
        _phone,
    ),
]


def find_pii(text: str) -> list[PiiMatch]:
    """Every piece of personal data in `text`, in reading order, none overlapping."""
    found: list[PiiMatch] = []
    for kind, pattern, valid in _PATTERNS:
        for match in pattern.finditer(text):
            candidate = match.group().strip()
            start = match.start() + match.group().index(candidate)
            end = start + len(candidate)
            if any(start < other.end and other.start < end for other in found):
                continue
            if valid is None or valid(candidate):
                found.append(PiiMatch(kind, start, end, candidate))
    return sorted(found, key=lambda m: m.start)


def pii_kinds(text: str) -> list[str]:
    """The kinds of personal data in `text`, sorted, each once."""
    return sorted({match.kind.value for match in find_pii(text)})


def redact(text: str) -> str:
    """`text` with each piece of personal data replaced by its kind: `[EMAIL]`, `[IBAN]`..."""
    parts, position = [], 0
    for match in find_pii(text):
        parts.append(text[position : match.start])
        parts.append(f"[{match.kind.value.upper()}]")
        position = match.end
    parts.append(text[position:])
    return "".join(parts)
