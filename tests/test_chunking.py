import pytest

from core.models import Document, Section
from ingest.chunking import Chunker
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
