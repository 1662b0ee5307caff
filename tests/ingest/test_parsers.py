import datetime as dt
import json
import re
from pathlib import Path

import pytest
from unstructured.documents.elements import ElementMetadata, NarrativeText, Table, Text, Title

from ingest import parsers
from ingest.chunking import Chunker
from ingest.errors import EmptyDocumentError, IngestError, UnsupportedFormatError
from ingest.manifest import Manifest, ManifestEntry
from ingest.parsers import document_id_for, parse_document, sections_from_elements
from retrieval.embedder import Embedder
from tests.helpers import EPRIVACY, FIXTURES, NIST, ROOT


class TestStructureRules:
    def test_regulation_headings_become_the_section_path(self) -> None:
        sections = sections_from_elements(
            [
                Text("REGULATION (EU) 2016/679"),
                Text("CHAPTER IV"),
                Text("Controller and processor"),
                Text("Section 2"),
                Text("Security of personal data"),
                Text("Article 33"),
                Text("Notification of a personal data breach to the supervisory authority"),
                Text("1."),
                NarrativeText(
                    "In the case of a personal data breach, the controller shall notify."
                ),
                Text("Article 34"),
                Text("Communication of a personal data breach to the data subject"),
                NarrativeText("The controller shall communicate the breach."),
            ]
        )
        assert [s.path for s in sections] == [
            ["Preamble"],
            [
                "Chapter IV — Controller and processor",
                "Section 2 — Security of personal data",
                "Article 33 — Notification of a personal data breach to the supervisory authority",
            ],
            [
                "Chapter IV — Controller and processor",
                "Section 2 — Security of personal data",
                "Article 34 — Communication of a personal data breach to the data subject",
            ],
        ]
        assert (
            sections[1].text
            == "1. In the case of a personal data breach, the controller shall notify."
        )

    def test_a_new_chapter_closes_the_previous_section_and_article(self) -> None:
        sections = sections_from_elements(
            [
                Text("CHAPTER I"),
                Text("Section 1"),
                Text("Article 1"),
                NarrativeText("One applies."),
                Text("CHAPTER II"),
                Text("Article 2"),
                NarrativeText("Two applies."),
            ]
        )
        assert [s.path for s in sections] == [
            ["Chapter I", "Section 1", "Article 1"],
            ["Chapter II", "Article 2"],
        ]

    def test_recitals_are_numbered_sections(self) -> None:
        sections = sections_from_elements(
            [
                Text("Whereas:"),
                NarrativeText("(1) The purpose of this Regulation is to improve the market."),
                NarrativeText("(2) This Regulation should respect Union values."),
                Text("CHAPTER I"),
                Text("Article 1"),
                NarrativeText("This Regulation lays down rules."),
            ]
        )
        assert [s.path for s in sections] == [
            ["Preamble"],
            ["Recitals", "Recital 1"],
            ["Recitals", "Recital 2"],
            ["Chapter I", "Article 1"],
        ]

    def test_generic_titles_nest_by_depth(self) -> None:
        policy = Title("Retention policy")
        scope = Title("Scope")
        scope.metadata.category_depth = 1
        sections = sections_from_elements(
            [policy, NarrativeText("Keep records."), scope, NarrativeText("All staff.")]
        )
        assert [s.path for s in sections] == [["Retention policy"], ["Retention policy", "Scope"]]


class TestParseDocument:
    def test_consolidated_eurlex_html(self) -> None:
        entry = ManifestEntry(document_id="eprivacy", title="ePrivacy", jurisdiction="EU")
        document = parse_document(EPRIVACY, entry)
        assert (document.document_id, document.document_title) == ("eprivacy", "ePrivacy")
        assert document.jurisdiction == "EU"
        paths = [" > ".join(section.path) for section in document.sections]
        assert "Article 4 — Security of processing" in paths  # amendment markers removed
        article_4 = document.sections[paths.index("Article 4 — Security of processing")]
        assert article_4.text.startswith("1. The provider of a publicly available")
        assert len(document.content_hash) == 64

    def test_oscal_catalog_controls_and_enhancements(self) -> None:
        document = parse_document(NIST)
        by_path = {" > ".join(section.path): section for section in document.sections}
        account_management = by_path["Access Control (AC) > AC-2 Account Management"]
        assert "b. Assign account managers;" in account_management.text
        assert "[Assignment: organization-defined prerequisites and criteria]" in (
            account_management.text
        )
        assert "Discussion: Examples of system account types" in account_management.text
        assert (
            "Access Control (AC) > AC-2 Account Management > "
            "AC-2(1) Automated System Account Management" in by_path
        )

    def test_markdown_headings(self, tmp_path: Path) -> None:
        policy = tmp_path / "Records Policy.md"
        policy.write_text("# Records policy\n\n## Retention\n\nKeep records for ten years.\n")
        document = parse_document(policy)
        assert document.document_id == "records-policy"
        assert document.sections[-1].path == ["Records policy", "Retention"]
        assert "ten years" in document.sections[-1].text

    def test_unsupported_format_is_a_clear_error(self, tmp_path: Path) -> None:
        sheet = tmp_path / "rules.xlsx"
        sheet.write_bytes(b"PK\x03\x04")
        with pytest.raises(UnsupportedFormatError, match=r"rules.xlsx: unsupported format .xlsx"):
            parse_document(sheet)

    def test_empty_file_is_a_clear_error(self, tmp_path: Path) -> None:
        empty = tmp_path / "empty.txt"
        empty.write_text("  \n")
        with pytest.raises(EmptyDocumentError, match=r"empty\.txt: no text found"):
            parse_document(empty)

    def test_json_that_is_not_oscal_is_rejected(self, tmp_path: Path) -> None:
        data = tmp_path / "data.json"
        data.write_text('{"rows": []}')
        with pytest.raises(UnsupportedFormatError, match="OSCAL"):
            parse_document(data)

    def test_document_ids_are_stable_slugs(self) -> None:
        assert document_id_for(Path("/x/GDPR consolidated (2016).xhtml")) == (
            "gdpr-consolidated-2016"
        )


OBLIQA_DOCUMENTS = ROOT.parent / "shared" / "corpora" / "obliqa" / "documents"


class TestObliQAPassages:
    def test_synthetic_passages_keep_ids_refs_and_heading_path(self, tmp_path: Path) -> None:
        passages = [
            {"ID": "u1", "DocumentID": 9, "PassageID": "1.", "Passage": "INTRODUCTION"},
            {"ID": "u2", "DocumentID": 9, "PassageID": "1.1", "Passage": "Jurisdiction"},
            {"ID": "u3", "DocumentID": 9, "PassageID": "1.1.1", "Passage": ""},
            {
                "ID": "u4",
                "DocumentID": 9,
                "PassageID": "1.1.1.(1)",
                "Passage": "The Rulebook applies to every Relevant Person.",
            },
        ]
        source = tmp_path / "9.json"
        source.write_text(json.dumps(passages))
        document = parse_document(source)
        assert document.document_title == "Document 9"
        [section] = document.sections
        assert (section.chunk_id, section.ref) == ("u4", "1.1.1.(1)")
        assert section.path == ["1 INTRODUCTION", "1.1 Jurisdiction", "1.1.1.(1)"]

    @pytest.mark.skipif(not OBLIQA_DOCUMENTS.is_dir(), reason="needs ../shared/corpora/obliqa")
    def test_real_rulebook_passages_are_chunked_one_to_one(self, embedder: Embedder) -> None:
        source = OBLIQA_DOCUMENTS / "1.json"
        raw = json.loads(source.read_text())
        document = parse_document(source)
        chunker = Chunker(chunk_tokens=200, chunk_overlap=20, tokenizer=embedder.tokenize)
        chunks = chunker.run(document)
        by_id = {item["ID"]: item for item in raw}
        assert (
            document.document_title
            == "Anti-Money Laundering and Sanctions Rules and Guidance (AML)"
        )
        assert len(chunks) > 300
        for chunk in chunks:  # corpus ids and passage ids survive, so gold evidence matches 1:1
            assert chunk.text == by_id[chunk.chunk_id]["Passage"].strip()
            assert chunk.section_ref == by_id[chunk.chunk_id]["PassageID"]


class TestManifest:
    def test_defaults_apply_and_file_entries_override(self, tmp_path: Path) -> None:
        (tmp_path / "manifest.yml").write_text(
            '"*": {jurisdiction: EU, access_groups: [public]}\n'
            "a.md: {title: A, access_groups: [legal], effective_date: 2018-05-25}\n"
        )
        manifest = Manifest.for_folder(tmp_path)
        a, b = manifest.for_file("a.md"), manifest.for_file("b.md")
        assert (a.title, a.jurisdiction, a.access_groups) == ("A", "EU", ["legal"])
        assert a.effective_date == dt.date(2018, 5, 25)
        assert (b.title, b.jurisdiction, b.access_groups) == (None, "EU", ["public"])

    def test_unknown_fields_are_rejected_clearly(self, tmp_path: Path) -> None:
        (tmp_path / "manifest.json").write_text('{"a.md": {"titel": "typo"}}')
        with pytest.raises(IngestError, match="invalid metadata"):
            Manifest.for_folder(tmp_path)


class TestPdf:
    def test_headings_pages_and_page_furniture(self) -> None:
        document = parse_document(FIXTURES / "rulebook.pdf")
        paths = {" > ".join(s.path) for s in document.sections}
        assert "Chapter 1 — General provisions > Article 3 — Fees payable to the Authority" in paths
        fees = [s for s in document.sections if s.ref == "Article 3" and s.table_rows is None]
        assert [s.page for s in fees] == sorted({s.page for s in fees})  # one part per page
        assert len(fees) >= 2 and fees[0].page == 2
        text = "\n".join(s.text for s in document.sections)
        assert "MOCK FINANCIAL AUTHORITY" not in text  # running header dropped
        assert "Page 3" not in text  # footer dropped

    def test_a_ruled_table_is_one_section_of_rows_across_its_page_break(self) -> None:
        document = parse_document(FIXTURES / "rulebook.pdf")
        tables = [s for s in document.sections if s.table_rows is not None]
        assert len(tables) == 1
        fees = tables[0]
        assert fees.table_header == "No. | Category of firm | Annual fee (EUR) | Due date"
        assert fees.table_rows is not None and len(fees.table_rows) == 30  # header repeat dropped
        assert fees.table_rows[0] == "1 | Investment firm - tier 2 | 1,250 | 2024-02-15"
        assert fees.table_rows[-1] == "30 | Credit institution - tier 1 | 30,250 | 2024-07-15"
        assert fees.ref == "Article 3" and fees.page == 3
        prose = "\n".join(s.text for s in document.sections if s.table_rows is None)
        assert "30,250" not in prose and "Category of firm" not in prose  # no stray cells

    def test_page_batches_do_not_change_the_result(self, monkeypatch: pytest.MonkeyPatch) -> None:
        whole = parse_document(FIXTURES / "rulebook.pdf").sections
        monkeypatch.setattr(parsers, "PDF_PAGES_PER_BATCH", 3)  # the table straddles pages 3-4
        assert parse_document(FIXTURES / "rulebook.pdf").sections == whole

    @pytest.mark.parametrize(
        ("content", "message"),
        [
            (lambda pdf: pdf[: len(pdf) // 2], "not a readable PDF (EOF marker not found)"),
            (lambda pdf: b"This is text, not a PDF.", "not a readable PDF"),
            (lambda pdf: b"", "not a readable PDF (Cannot read an empty file)"),
        ],
    )
    def test_damaged_pdfs_fail_clearly(self, tmp_path: Path, content, message: str) -> None:  # type: ignore[no-untyped-def]
        broken = tmp_path / "broken.pdf"
        broken.write_bytes(content((FIXTURES / "rulebook.pdf").read_bytes()))
        with pytest.raises(IngestError, match=re.escape(f"broken.pdf: {message}")):
            parse_document(broken)


class TestUndecodableText:
    def test_binary_bytes_in_a_text_file_fail_clearly(self, tmp_path: Path) -> None:
        garbage = tmp_path / "notes.txt"
        garbage.write_bytes(bytes(range(256)) * 20)
        with pytest.raises(IngestError, match=r"notes\.txt: could not be parsed: .*encoding"):
            parse_document(garbage)


class TestTables:
    def test_html_tables_keep_their_rows_and_header(self, tmp_path: Path) -> None:
        rows = "".join(f"<tr><td>Firm type {n}</td><td>{n * 1000} USD</td></tr>" for n in range(40))
        page = tmp_path / "fees.html"
        page.write_text(
            "<html><body><h1>Fees</h1><p>Article 3</p><p>Annual fees</p>"
            f"<table><tr><th>Category</th><th>Fee</th></tr>{rows}</table></body></html>"
        )
        [table] = [s for s in parse_document(page).sections if s.table_rows]
        assert table.table_header == "Category | Fee"
        assert table.table_rows[0] == "Firm type 0 | 0 USD"
        assert len(table.table_rows) == 40

    def test_a_table_continued_over_a_page_break_is_merged_within_its_article(self) -> None:
        def table(rows: list[tuple[str, str]], page: int) -> Table:
            markup = "".join(f"<tr><td>{a}</td><td>{b}</td></tr>" for a, b in rows)
            metadata = ElementMetadata(text_as_html=f"<table>{markup}</table>", page_number=page)
            return Table(text=" ".join(a + " " + b for a, b in rows), metadata=metadata)

        header = ("Firm", "Fee")
        sections = sections_from_elements(
            [
                Text("Article 3"),
                table([header, ("Bank", "1,000"), ("Broker", "500")], page=1),
                table([header, ("Insurer", "700")], page=2),  # continued, header repeated
                Text("Article 4"),
                table([header, ("Bank", "2,000"), ("Broker", "900")], page=2),
            ],
            from_pdf=True,
        )
        assert [(s.ref, s.table_rows) for s in sections] == [
            ("Article 3", ["Bank | 1,000", "Broker | 500", "Insurer | 700"]),
            ("Article 4", ["Bank | 2,000", "Broker | 900"]),
        ]
        assert sections[0].text == "Firm | Fee\nBank | 1,000\nBroker | 500\nInsurer | 700"
