"""PII detection: checksums decide for IBANs and cards; regulatory numbering is never flagged."""

import pytest

from core.pii import PiiKind, find_pii, iban_valid, luhn_valid, pii_kinds, redact


class TestChecksums:
    @pytest.mark.parametrize(
        "iban",
        ["GB82 WEST 1234 5698 7654 32", "DE89370400440532013000", "FR1420041010050500013M02606"],
    )
    def test_valid_ibans(self, iban: str) -> None:
        assert iban_valid(iban)

    @pytest.mark.parametrize(
        "iban", ["GB82 WEST 1234 5698 7654 33", "DE89370400440532013001", "GB82", "XX00"]
    )
    def test_invalid_ibans(self, iban: str) -> None:
        assert not iban_valid(iban)

    @pytest.mark.parametrize("number", ["4111111111111111", "5500005555555559", "378282246310005"])
    def test_luhn_valid(self, number: str) -> None:
        assert luhn_valid(number)

    @pytest.mark.parametrize("number", ["4111111111111112", "5500005555555558", "378282246310006"])
    def test_luhn_invalid(self, number: str) -> None:
        assert not luhn_valid(number)


class TestDetection:
    @pytest.mark.parametrize(
        ("text", "kind", "found"),
        [
            ("write to jane.doe@example.co.uk today", PiiKind.EMAIL, "jane.doe@example.co.uk"),
            ("IBAN GB82 WEST 1234 5698 7654 32.", PiiKind.IBAN, "GB82 WEST 1234 5698 7654 32"),
            ("card 4111 1111 1111 1111 expires", PiiKind.CARD, "4111 1111 1111 1111"),
            ("card 4111-1111-1111-1111", PiiKind.CARD, "4111-1111-1111-1111"),
            ("SSN 123-45-6789 on file", PiiKind.US_SSN, "123-45-6789"),
            ("NINO AB 12 34 56 C", PiiKind.UK_NINO, "AB 12 34 56 C"),
            ("NINO AB123456C", PiiKind.UK_NINO, "AB123456C"),
            ("call +44 20 7946 0958 now", PiiKind.PHONE, "+44 20 7946 0958"),
            ("call (555) 123-4567", PiiKind.PHONE, "(555) 123-4567"),
            ("call 555-123-4567", PiiKind.PHONE, "555-123-4567"),
            ("call 020 7946 0958", PiiKind.PHONE, "020 7946 0958"),
            ("call 0044 20 7946 0958", PiiKind.PHONE, "0044 20 7946 0958"),
        ],
    )
    def test_finds(self, text: str, kind: PiiKind, found: str) -> None:
        assert [(m.kind, m.text) for m in find_pii(text)] == [(kind, found)]

    @pytest.mark.parametrize(
        "text",
        [
            "card 4111 1111 1111 1112 (fails Luhn)",
            "IBAN GB82 WEST 1234 5698 7654 33 (fails mod 97)",
            "SSN 000-12-3456 and 666-12-3456 are never issued",
            "NINO GB 12 34 56 C uses a prefix never issued",
            "Regulation (EU) 2016/679 of 27 April 2016, Article 33(1), within 72 hours",
            "effective 2018-05-25; OJ L 119, 4.5.2016, p. 1–88; Directive 2002/58/EC",
            "Rule 3.2.1.4 and section 12.1.3; CELEX 32016R0679",
            "fines up to EUR 20 000 000 or 4 % of turnover; 1 000 000 records",
        ],
    )
    def test_ignores_invalid_numbers_and_regulatory_text(self, text: str) -> None:
        assert find_pii(text) == []

    def test_redact_and_kinds(self) -> None:
        text = "Mail jane@example.com, IBAN DE89370400440532013000, call +44 20 7946 0958."
        assert redact(text) == "Mail [EMAIL], IBAN [IBAN], call [PHONE]."
        assert pii_kinds(text) == ["email", "iban", "phone"]
        assert redact("nothing personal") == "nothing personal"


class TestReviewGaps:
    """Formats the adversarial review found in clear in the audit log (issue 20, item 10)."""

    @pytest.mark.parametrize(
        ("text", "kind", "found"),
        [
            ("iban de89 3704 0044 0532 0130 00 ok", PiiKind.IBAN, "de89 3704 0044 0532 0130 00"),
            ("IBAN DE89-3704-0044-0532-0130-00.", PiiKind.IBAN, "DE89-3704-0044-0532-0130-00"),
            ("iban gb82west12345698765432", PiiKind.IBAN, "gb82west12345698765432"),
            ("call 0171-1234567 today", PiiKind.PHONE, "0171-1234567"),
            ("call 030/1234567 today", PiiKind.PHONE, "030/1234567"),
            ("call 06.12.34.56.78 today", PiiKind.PHONE, "06.12.34.56.78"),
            ("ring 555-0134 after six", PiiKind.PHONE, "555-0134"),
        ],
    )
    def test_finds(self, text: str, kind: PiiKind, found: str) -> None:
        assert [(m.kind, m.text) for m in find_pii(text)] == [(kind, found)]

    @pytest.mark.parametrize(
        "text",
        [
            "iban gb82 west 1234 5698 7654 33 fails mod 97",
            "Articles 5-7 and 12-14 of Regulation 2016/679; Rule 3.19.6",
            "ISO/IEC 27001:2013 and ISO 8601; paragraphs 100-120",
            "dated 2018-05-25 and 25.05.2018; OJ L 119/1",
        ],
    )
    def test_still_ignores(self, text: str) -> None:
        assert find_pii(text) == []
