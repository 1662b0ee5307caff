"""Split parsed sections into token-budgeted chunks that never cross a section boundary."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable

from llama_index.core.node_parser import SentenceSplitter

from core.models import Chunk, Document, embedding_header
from retrieval.store import chunk_point_id

SECTION_SEPARATOR = " > "


class Chunker:
    """Token-budgeted splitting inside each section, with llama-index's sentence-aware splitter.

    Budgets are counted with the embedder's own tokenizer and include the title and heading
    header embedded with each chunk: a longer text would be silently truncated by the model.
    """

    def __init__(
        self, chunk_tokens: int, chunk_overlap: int, tokenizer: Callable[[str], list[int]]
    ) -> None:
        if chunk_overlap >= chunk_tokens:
            raise ValueError("chunk_overlap must be smaller than chunk_tokens")
        self._chunk_tokens = chunk_tokens
        self._count = lambda text: len(tokenizer(text))
        self._splitter = SentenceSplitter(
            chunk_size=chunk_tokens, chunk_overlap=chunk_overlap, tokenizer=tokenizer
        )

    def _table_chunks(self, table_header: str, rows: list[str], header: str) -> list[str]:
        """Rows packed up to the budget, each chunk under the repeated header row."""
        budget = self._chunk_tokens - self._count(header) - self._count(table_header)
        chunks: list[list[str]] = [[]]
        used = 0
        for row in rows:
            size = self._count(row) + 1
            if chunks[-1] and used + size > budget:
                chunks.append([])
                used = 0
            chunks[-1].append(row)
            used += size
        return ["\n".join([table_header, *chunk]) for chunk in chunks if chunk]

    def run(self, document: Document) -> list[Chunk]:
        chunks: list[Chunk] = []
        fields = document.model_dump(exclude={"sections"})
        # A section can come in parts (one per PDF page, text around a table): ordinals continue
        # across the parts so that chunk ids stay unique.
        ordinals: dict[str, int] = defaultdict(int)
        for section in document.sections:
            section_name = SECTION_SEPARATOR.join(section.path)
            # The header is embedded with every chunk, so it takes its share of the budget.
            header = embedding_header(document.document_title, section_name)
            if section.chunk_id:  # pre-split sources keep their passages and ids
                texts, ids = [section.text], [section.chunk_id]
            else:
                if section.table_rows is not None and section.table_header is not None:
                    texts = self._table_chunks(section.table_header, section.table_rows, header)
                else:
                    texts = self._splitter.split_text_metadata_aware(
                        section.text, metadata_str=header
                    )
                texts = [text for text in texts if text.strip()]
                start = ordinals[section_name]
                ordinals[section_name] += len(texts)
                ids = [
                    chunk_point_id(document.document_id, section_name, start + n)
                    for n in range(len(texts))
                ]
            carried: str | None = None
            for chunk_id, text in zip(ids, texts, strict=True):
                label, carried = paragraph_label(text, carried)
                chunks.append(
                    Chunk(
                        **fields,
                        chunk_id=chunk_id,
                        section=section_name,
                        section_path=f"{section_name}{SECTION_SEPARATOR}{label}"
                        if label
                        else section_name,
                        section_ref=section.ref,
                        text=text,
                        page=section.page,
                    )
                )
        return chunks


_PARAGRAPH_START = re.compile(r"^\(?(\d{1,3})[.)]\s", re.MULTILINE)


def paragraph_label(text: str, carried: str | None) -> tuple[str | None, str | None]:
    """'(1)' or '(2)–(4)': the numbered paragraphs a chunk covers, and the last one for the next.

    A chunk that starts inside a paragraph (after a split) belongs to the one carried over.
    """
    numbers = _PARAGRAPH_START.findall(text)
    if carried and not _PARAGRAPH_START.match(text):
        numbers.insert(0, carried)
    if not numbers:
        return None, carried
    first, last = numbers[0], numbers[-1]
    return (f"({first})" if first == last else f"({first})–({last})"), last
