import pytest

from core.models import Document, Section
from ingest.chunking import Chunker, paragraph_label
from retrieval.embedder import Embedder


def document(*sections: Section) -> Document:
    return Document(
        document_id="reg",
        document_title="Regulation",
        source="reg.html",
        content_hash="abc",
        sections=list(sections),
    )


LONG_ARTICLE = " ".join(
    f"Paragraph {i}: the controller shall keep a record of processing." for i in range(60)
)


class TestChunker:
    def test_chunks_fit_the_token_budget_and_keep_their_section(self, embedder: Embedder) -> None:
        chunker = Chunker(chunk_tokens=64, chunk_overlap=8, tokenizer=embedder.tokenize)
        chunks = chunker.run(
            document(
                Section(path=["Chapter I", "Article 1 — Scope"], text=LONG_ARTICLE),
                Section(path=["Chapter I", "Article 2 — Definitions"], text="Short definitions."),
            )
        )
        article_1 = [c for c in chunks if c.section == "Chapter I > Article 1 — Scope"]
        assert len(article_1) > 5
        assert all(len(embedder.tokenize(c.embedding_text())) <= 64 for c in chunks)
        assert chunks[-1].section == "Chapter I > Article 2 — Definitions"
        assert chunks[-1].text == "Short definitions."  # never merged with Article 1's tail
        assert {c.document_title for c in chunks} == {"Regulation"}
        assert chunks[0].embedding_text().startswith("Regulation\nChapter I > Article 1 — Scope\n")

    def test_ids_are_deterministic_and_unique(self, embedder: Embedder) -> None:
        chunker = Chunker(chunk_tokens=64, chunk_overlap=8, tokenizer=embedder.tokenize)
        doc = document(Section(path=["Article 1"], text=LONG_ARTICLE))
        first = [c.chunk_id for c in chunker.run(doc)]
        again = [c.chunk_id for c in chunker.run(doc)]
        assert first == again
        assert len(set(first)) == len(first)

    def test_rejects_overlap_not_smaller_than_budget(self, embedder: Embedder) -> None:
        with pytest.raises(ValueError, match="chunk_overlap"):
            Chunker(chunk_tokens=50, chunk_overlap=50, tokenizer=embedder.tokenize)


class TestParagraphLabels:
    def test_labels_follow_numbered_paragraphs_across_splits(self) -> None:
        assert paragraph_label("1. First.\n2. Second.", None) == ("(1)–(2)", "2")
        assert paragraph_label("continues the second paragraph.\n3. Third.", "2") == (
            "(2)–(3)",
            "3",
        )
        assert paragraph_label("still the third.", "3") == ("(3)", "3")
        assert paragraph_label("No numbering here.", None) == (None, None)

    def test_section_path_names_the_paragraphs(self, embedder: Embedder) -> None:
        text = "1. The controller shall notify.\n2. The processor shall inform the controller."
        chunker = Chunker(chunk_tokens=200, chunk_overlap=8, tokenizer=embedder.tokenize)
        [chunk] = chunker.run(document(Section(path=["Chapter IV", "Article 33"], text=text)))
        assert chunk.section_path == "Chapter IV > Article 33 > (1)–(2)"

    def test_parts_of_one_section_get_distinct_ids(self, embedder: Embedder) -> None:
        chunker = Chunker(chunk_tokens=64, chunk_overlap=8, tokenizer=embedder.tokenize)
        parts = [Section(path=["Article 3"], text=f"Text on page {n}.", page=n) for n in (2, 3)]
        chunks = chunker.run(document(*parts))
        assert len({c.chunk_id for c in chunks}) == 2
        assert [c.page for c in chunks] == [2, 3]


class TestTableChunks:
    def test_tables_split_between_rows_with_the_header_repeated(self, embedder: Embedder) -> None:
        rows = [f"Firm type {n} | {n * 1000} USD | due 2024-0{n % 9 + 1}-15" for n in range(60)]
        section = Section(
            path=["Article 3 — Fees"],
            text="\n".join(["Category | Fee | Due", *rows]),
            table_header="Category | Fee | Due",
            table_rows=rows,
        )
        chunker = Chunker(chunk_tokens=120, chunk_overlap=8, tokenizer=embedder.tokenize)
        chunks = chunker.run(document(section))
        assert len(chunks) > 2
        body_rows = []
        for chunk in chunks:
            lines = chunk.text.split("\n")
            assert lines[0] == "Category | Fee | Due"
            assert len(embedder.tokenize(chunk.embedding_text())) <= 120
            body_rows.extend(lines[1:])
        assert body_rows == rows  # every row whole, once, in order
