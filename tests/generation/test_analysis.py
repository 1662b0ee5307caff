import datetime as dt

import pytest

from core.catalog import DocumentRecord
from generation.analysis import DocumentNames, QuestionAnalyzer, document_aliases


def record(document_id: str, title: str, **metadata: object) -> DocumentRecord:
    return DocumentRecord(
        document_id=document_id,
        title=title,
        source=f"{document_id}.html",
        content_hash="h",
        chunks=1,
        access_groups=["public"],
        metadata=metadata,
        ingested_at=dt.datetime.now(dt.UTC),
    )


SAMPLE = [
    record("gdpr", "GDPR — Regulation (EU) 2016/679 (General Data Protection Regulation)"),
    record("ai-act", "AI Act — Regulation (EU) 2024/1689 (Artificial Intelligence Act)"),
    record(
        "eprivacy",
        "ePrivacy Directive — Directive 2002/58/EC (privacy and electronic communications)",
        aliases=["cookie law"],
    ),
    record(
        "nist-sp800-53",
        "NIST SP 800-53 Rev. 5 — Security and Privacy Controls (moderate baseline)",
    ),
]
NAMES = DocumentNames.from_records(SAMPLE)


class TestDocumentNames:
    def test_names_come_from_the_titles_codes_and_aliases(self) -> None:
        assert {"GDPR", "2016/679", "General Data Protection Regulation"} <= set(
            document_aliases(SAMPLE[0])
        )
        assert {"ePrivacy", "2002/58/EC", "cookie law"} <= set(document_aliases(SAMPLE[2]))
        assert {"NIST", "SP 800-53", "800-53"} <= set(document_aliases(SAMPLE[3]))

    @pytest.mark.parametrize(
        ("text", "documents"),
        [
            ("Under the GDPR, who is a controller?", ("gdpr",)),
            ("What does Regulation (EU) 2016/679 say about consent?", ("gdpr",)),
            ("Does the AI Act ban emotion recognition?", ("ai-act",)),
            ("Is the cookie law stricter than ePrivacy?", ("eprivacy",)),
            (
                "Which 800-53 controls cover audit logs, and what does the GDPR say?",
                ("nist-sp800-53", "gdpr"),
            ),
            ("How long may we keep CCTV footage?", ()),
        ],
    )
    def test_finds_the_documents_a_question_names_in_order(
        self, text: str, documents: tuple[str, ...]
    ) -> None:
        assert NAMES.find(text) == documents

    def test_a_name_inside_a_word_is_no_name(self) -> None:
        assert NAMES.find("The ai-actor and the nistagmus") == ()


class TestQuestionAnalyzer:
    analyzer = QuestionAnalyzer(lambda: NAMES)

    def test_a_single_question_is_one_part_searched_as_asked(self) -> None:
        question = "Within how many hours must a personal data breach be notified?"
        analysis = self.analyzer.run(question)
        assert [(p.text, p.query) for p in analysis.parts] == [(question, question)]
        assert not analysis.multi_part

    def test_and_clauses_that_ask_different_things_are_parts_with_the_scenario_as_context(
        self,
    ) -> None:
        analysis = self.analyzer.run(
            "Our marketing team wants to profile website visitors for ad targeting. Do we need "
            "their consent for the tracking cookies, and what must our privacy notice say about "
            "profiling?"
        )
        assert [p.text for p in analysis.parts] == [
            "Do we need their consent for the tracking cookies?",
            "What must our privacy notice say about profiling?",
        ]
        assert analysis.context.startswith("Our marketing team")
        assert all(p.query.startswith("Our marketing team") for p in analysis.parts)

    def test_each_part_keeps_the_document_it_names(self) -> None:
        analysis = self.analyzer.run(
            "Which NIST SP 800-53 controls address incident reporting, and what must a "
            "controller report to the supervisory authority about a breach under the GDPR?"
        )
        assert [p.documents for p in analysis.parts] == [("nist-sp800-53",), ("gdpr",)]

    def test_under_a_and_under_b_and_comparisons_split(self) -> None:
        under = self.analyzer.run(
            "Under the AI Act, what is a high-risk system, and under the GDPR, when is a DPIA "
            "required?"
        )
        assert [p.documents for p in under.parts] == [("ai-act",), ("gdpr",)]
        compared = self.analyzer.run(
            "How does the GDPR's breach deadline compare with incident reporting under 800-53?"
        )
        assert [p.text for p in compared.parts] == [
            "The GDPR's breach deadline?",
            "Incident reporting under 800-53?",
        ]

    def test_one_ask_about_several_documents_is_a_part_per_document(self) -> None:
        analysis = self.analyzer.run(
            "A customer got auto-rejected by our AI underwriting engine. What rights do they have "
            "under the GDPR and the AI Act to challenge the decision?"
        )
        assert [(p.documents, p.named) for p in analysis.parts] == [
            (("gdpr",), ("gdpr",)),
            (("ai-act",), ("ai-act",)),
        ]
        ask = "What rights do they have under the GDPR and the AI Act to challenge the decision?"
        assert [p.text for p in analysis.parts] == [f"{ask} (GDPR)", f"{ask} (AI Act)"]
        assert all(p.query.startswith("A customer got auto-rejected") for p in analysis.parts)

    def test_two_names_of_one_document_and_inherited_names_stay_one_part(self) -> None:
        assert len(self.analyzer.run("Is the cookie law stricter than ePrivacy?").parts) == 1
        analysis = self.analyzer.run(
            "What's the GDPR deadline for a breach under 800-53 too, and what's the deadline "
            "under Singapore's PDPA?"
        )
        assert [(p.documents, p.named) for p in analysis.parts] == [
            (("gdpr",), ("gdpr",)),
            (("nist-sp800-53",), ("nist-sp800-53",)),
            (("gdpr", "nist-sp800-53"), ()),  # searched in both, checked for foreign names
        ]

    def test_several_questions_are_several_parts(self) -> None:
        analysis = self.analyzer.run("What is personal data? Who is a controller?")
        assert [p.text for p in analysis.parts] == [
            "What is personal data?",
            "Who is a controller?",
        ]

    def test_an_and_inside_one_ask_does_not_split(self) -> None:
        analysis = self.analyzer.run("What must the controller and the processor keep records of?")
        assert len(analysis.parts) == 1

    def test_a_part_that_names_no_document_inherits_its_sentences_documents(self) -> None:
        analysis = self.analyzer.run(
            "Under the GDPR, who must be told about a breach and when must the authority be told?"
        )
        assert len(analysis.parts) == 2
        assert all(p.documents == ("gdpr",) for p in analysis.parts)

    def test_a_part_takes_the_documents_named_before_it_never_after_it(self) -> None:
        analysis = self.analyzer.run(
            "Our SOC works to 800-53. Which control covers reporting incidents internally, and "
            "what extra does the GDPR make us tell the regulator about a breach?"
        )
        assert [p.documents for p in analysis.parts] == [("nist-sp800-53",), ("gdpr",)]
        unnamed = self.analyzer.run(
            "What fines apply to breaking the rules, and how high are the GDPR's top fines?"
        )
        assert [p.documents for p in unnamed.parts] == [(), ("gdpr",)]

    def test_a_part_that_refers_back_is_searched_with_the_part_before_it(self) -> None:
        analysis = self.analyzer.run(
            "We're a health app. Do we have to appoint a DPO, and what will that person be doing?"
        )
        first, second = analysis.parts
        assert second.text == "What will that person be doing?"
        assert second.standalone == "Do we have to appoint a DPO? What will that person be doing?"
        assert second.query == f"We're a health app. {second.standalone}"
        assert first.standalone == first.text  # stands alone: searched as it is

    def test_a_part_too_short_to_stand_alone_is_searched_with_the_part_before_it(self) -> None:
        analysis = self.analyzer.run(
            "What documentation must we keep for a high-risk AI system, and for how long?"
        )
        assert [p.standalone for p in analysis.parts] == [
            "What documentation must we keep for a high-risk AI system?",
            "What documentation must we keep for a high-risk AI system? For how long?",
        ]

    def test_a_part_naming_no_document_is_about_what_its_sentence_names_before_it(self) -> None:
        analysis = self.analyzer.run(
            "We sell in Virginia. What is the top fine under Virginia's privacy act, and is "
            "there a cure period before anyone can sue? Who enforces the GDPR?"
        )
        fine, cure, enforce = analysis.parts
        assert fine.about == "What is the top fine under Virginia's privacy act?"
        assert cure.about == f"{fine.about} Is there a cure period before anyone can sue?"
        assert enforce.about == enforce.text  # a sentence of its own; the scenario is not asked
        assert cure.standalone == cure.text  # stands alone: searched as it is

    def test_and_under_another_document_asks_the_same_of_each(self) -> None:
        analysis = self.analyzer.run(
            "An unhappy user thinks our AI product breaks the rules. Where can they complain "
            "under the AI Act and under the GDPR?"
        )
        ask = "Where can they complain under the AI Act and under the GDPR?"
        assert [(p.text, p.documents) for p in analysis.parts] == [
            (f"{ask} (AI Act)", ("ai-act",)),
            (f"{ask} (GDPR)", ("gdpr",)),
        ]

    def test_at_most_max_parts(self) -> None:
        analysis = QuestionAnalyzer(max_parts=2).run("What is A? What is B? What is C?")
        assert len(analysis.parts) == 2

    def test_rejects_invalid_configuration(self) -> None:
        with pytest.raises(ValueError):
            QuestionAnalyzer(max_parts=0)
