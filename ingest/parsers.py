"""Turn a source file into a `Document` whose sections follow the regulation's own structure.

Text formats go through `unstructured` (fast strategy, offline). `unstructured` does not recognise
regulatory headings ("CHAPTER IV", "Article 33", "ANNEX III" come out as plain text), so the
structure is recovered here by heading rules. PDFs are read in page batches (memory bounded by the
batch, not the file) and their ruled tables come from pdfplumber, row by row, where unstructured's
fast strategy would give one element per cell. OSCAL control catalogs (NIST SP 800-53) are already
structured JSON and are read directly.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lxml.html
import pdfplumber
import pypdf
from pdfplumber.page import Page
from unstructured.documents.elements import Element, ElementMetadata, Table, Title

from core.models import Document, Section
from ingest.errors import EmptyDocumentError, IngestError, UnsupportedFormatError
from ingest.manifest import ManifestEntry

# Structural headings of EU/UK-style regulations and rulebooks, outermost first.
_HEADING_RULES: list[tuple[int, re.Pattern[str]]] = [
    (0, re.compile(r"^(PART|TITLE|ANNEX|SCHEDULE|APPENDIX)\s+[IVXLC\d]+[A-Z]?$", re.IGNORECASE)),
    (1, re.compile(r"^CHAPTER\s+[IVXLC\d]+[A-Z]?$", re.IGNORECASE)),
    (2, re.compile(r"^SECTION\s+\d+[A-Z]?$", re.IGNORECASE)),
    (3, re.compile(r"^(Article|Rule|Regulation)\s+\d+[a-z]?$")),
]
# PDFs often put a heading and its title in one element: "Article 3 Fees payable to the Authority".
_HEADING_WITH_TITLE = re.compile(r"^((?:Article|Rule)\s+\d+[a-z]?)\s+([A-Z][^.;:]{2,150})$")
_GENERIC_TITLE_LEVEL = 4
_PARAGRAPH_MARKER = re.compile(r"^(\(?[0-9]{1,3}[a-z]?\.?\)?|\([a-z]{1,4}\)|[a-z]\))$")
# Consolidated EUR-Lex texts mark amendments inline: "►M2 Security of processing ◄", "▼B".
_CONSOLIDATION_MARKER = re.compile(r"[▼►][A-Z]\d*|◄")
_RECITAL = re.compile(r"^\((\d{1,3})\)\s+\S")
_SUBTITLE_MAX_CHARS = 200
_MIN_TABLE_ROWS = 3  # a header and two rows; smaller "tables" are layout, read as text
_PAGE_FURNITURE = frozenset({"Header", "Footer", "PageBreak", "PageNumber"})
_RECITALS = "Recitals"
# Pages parsed together: unstructured holds a batch's layout objects at once, so this bounds memory.
PDF_PAGES_PER_BATCH = 20


def content_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def document_id_for(path: Path) -> str:
    """A stable id from the file name, so that re-ingesting a file addresses the same document.

    Letters, marks and digits of any script are kept (lower case, NFC: a name typed on macOS and
    on Linux gives one id); every run of anything else becomes one dash. ASCII names get the ids
    they always had.
    """
    stem = unicodedata.normalize("NFC", path.stem).lower()
    kept = "".join(c if unicodedata.category(c)[0] in "LMN" else "-" for c in stem)
    return re.sub(r"-+", "-", kept).strip("-") or "document"


@dataclass
class _StructureBuilder:
    """Folds a flat element stream into sections keyed by their heading path."""

    sections: list[Section] = field(default_factory=list)
    headings: list[tuple[int, str]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    page: int | None = None
    pending_marker: str | None = None
    expecting_subtitle: bool = False
    in_recitals: bool = False
    # PDF text layers mark table cells and bold lines as titles; only regulation headings count.
    from_pdf: bool = False

    def add(self, element: Element) -> None:
        text = " ".join(_CONSOLIDATION_MARKER.sub(" ", element.text).split())
        if not text:
            return
        if element.category in _PAGE_FURNITURE:
            return
        if (
            isinstance(element, Table)
            and (rows := _table_rows(element))
            and (len(rows) >= _MIN_TABLE_ROWS or self._continues_table(rows))
        ):
            self._add_table(rows, getattr(element.metadata, "page_number", None))
            return
        if self.from_pdf and (combined := _HEADING_WITH_TITLE.match(text)):
            self._open_section(3, f"{combined.group(1)} — {combined.group(2)}")
            self.expecting_subtitle = False
            return
        level = _heading_level(element, text, generic_titles=not self.from_pdf)
        if level is not None:
            self._open_section(level, _heading_case(text))
            self.expecting_subtitle = level < _GENERIC_TITLE_LEVEL
            self.in_recitals = False
            return
        if self.expecting_subtitle:
            self.expecting_subtitle = False
            if _is_subtitle(text):
                level, heading = self.headings[-1]
                self.headings[-1] = (level, f"{heading} — {_sentence_case(text)}")
                return
        if text == "Whereas:":
            self.in_recitals = True
        elif self.in_recitals and (recital := _RECITAL.match(text)):
            self._open_section(1, f"Recital {recital.group(1)}", path_prefix=[_RECITALS])
        if _PARAGRAPH_MARKER.match(text):
            self.pending_marker = text
            return
        if self.pending_marker:
            text = f"{self.pending_marker} {text}"
            self.pending_marker = None
        page = getattr(element.metadata, "page_number", None)
        if self.lines and page is not None and self.page is not None and page != self.page:
            self._flush()  # a section part per page, so every chunk knows its page
        if self.page is None:
            self.page = page
        self.lines.append(text)

    def _path(self) -> list[str]:
        return [name for _, name in self.headings] or ["Preamble"]

    def _continues_table(self, rows: list[str]) -> bool:
        """A table that goes on over a page break with its header repeated, nothing in between."""
        last = self.sections[-1] if self.sections and not self.lines else None
        return (
            last is not None
            and last.table_rows is not None
            and last.table_header == rows[0]
            and last.path == self._path()
        )

    def _add_table(self, rows: list[str], page: int | None) -> None:
        if self._continues_table(rows):
            last = self.sections[-1]
            assert last.table_rows is not None
            last.table_rows.extend(rows[1:])
            last.text = "\n".join([rows[0], *last.table_rows])
            return
        self._flush()
        path = self._path()
        self.sections.append(
            Section(
                path=path,
                text="\n".join(rows),
                page=page,
                ref=path[-1].split(" — ")[0] if self.headings else None,
                table_header=rows[0],
                table_rows=rows[1:],
            )
        )

    def finish(self) -> list[Section]:
        self._flush()
        return self.sections

    def _open_section(self, level: int, heading: str, path_prefix: list[str] | None = None) -> None:
        self._flush()
        if path_prefix:
            self.headings = [(level - 1, name) for name in path_prefix]
        elif self.headings and self.headings[0][1] == _RECITALS:
            self.headings = []  # a structural heading after the recitals: the enacting terms
        else:
            self.headings = [(lvl, name) for lvl, name in self.headings if lvl < level]
        self.headings.append((level, heading))

    def _flush(self) -> None:
        if self.lines:
            path = self._path()
            ref = path[-1].split(" — ")[0] if self.headings else None
            self.sections.append(
                Section(path=path, text="\n".join(self.lines), page=self.page, ref=ref)
            )
        self.lines = []
        self.page = None
        self.pending_marker = None


def _table_rows(table: Element) -> list[str]:
    """Rows as 'cell | cell' lines; EUR-Lex lays out one-row list items as tables too."""
    markup = getattr(table.metadata, "text_as_html", None)
    if not markup:
        return []
    rows = []
    for row in lxml.html.fromstring(markup).iter("tr"):
        cells = [" ".join(cell.text_content().split()) for cell in row if cell.tag in ("td", "th")]
        if any(cells):
            rows.append(" | ".join(cells))
    return rows


def _heading_level(element: Element, text: str, generic_titles: bool) -> int | None:
    for level, rule in _HEADING_RULES:
        if rule.match(text):
            return level
    if generic_titles and isinstance(element, Title) and len(text) <= _SUBTITLE_MAX_CHARS:
        depth = getattr(element.metadata, "category_depth", None) or 0
        return _GENERIC_TITLE_LEVEL + int(depth)
    return None


def _is_subtitle(text: str) -> bool:
    return (
        len(text) <= _SUBTITLE_MAX_CHARS
        and not _PARAGRAPH_MARKER.match(text)
        and not text.endswith((".", ";", ":", ","))
    )


def _heading_case(text: str) -> str:
    """'CHAPTER IV' -> 'Chapter IV': the keyword capitalised, the number kept."""
    keyword, _, number = text.partition(" ")
    return f"{keyword.capitalize()} {number}".strip()


def _sentence_case(text: str) -> str:
    return text.capitalize() if text.isupper() else text


def sections_from_elements(elements: Iterable[Element], from_pdf: bool = False) -> list[Section]:
    builder = _StructureBuilder(from_pdf=from_pdf)
    for element in elements:
        builder.add(element)
    return builder.finish()


def _elements(path: Path, suffix: str) -> Iterable[Element]:
    """unstructured's elements of a non-JSON file (a PDF's lazily, page batch by page batch)."""
    if suffix == ".pdf":
        return _pdf_elements(path)
    partition = _partitioner(suffix)
    assert partition is not None  # every supported non-JSON suffix has one
    return partition(filename=str(path))


def _partitioner(suffix: str) -> Callable[..., list[Element]] | None:
    # Imported lazily: each partitioner pulls in its own format's dependencies.
    if suffix in {".html", ".htm", ".xhtml"}:
        from unstructured.partition.html import partition_html

        return partition_html
    if suffix in {".md", ".markdown"}:
        from unstructured.partition.md import partition_md

        return partition_md
    if suffix == ".docx":
        from unstructured.partition.docx import partition_docx

        return partition_docx
    if suffix == ".txt":
        from unstructured.partition.text import partition_text

        return partition_text
    return None


def _pdf_elements(path: Path) -> Iterator[Element]:
    """The PDF's elements, parsed a batch of pages at a time, ruled tables as whole `Table`s."""
    from unstructured.partition.pdf import partition_pdf

    reader = pypdf.PdfReader(path)
    with pdfplumber.open(path) as pdf:
        for first in range(0, len(reader.pages), PDF_PAGES_PER_BATCH):
            last = min(first + PDF_PAGES_PER_BATCH, len(reader.pages))
            writer = pypdf.PdfWriter()
            for number in range(first, last):
                writer.add_page(reader.pages[number])
            batch = io.BytesIO()
            writer.write(batch)
            batch.seek(0)
            # "fast" reads the text layer (pdfminer); other strategies need OCR models from a hub.
            elements = partition_pdf(
                file=batch, strategy="fast", languages=["eng"], starting_page_number=first + 1
            )
            for number in range(first + 1, last + 1):
                page = pdf.pages[number - 1]
                on_page = [e for e in elements if e.metadata.page_number == number]
                yield from _with_tables(on_page, page, number)
                page.close()  # pdfplumber caches each page's layout objects until closed


def _with_tables(elements: list[Element], page: Page, number: int) -> Iterator[Element]:
    """The page's elements with each ruled table (pdfplumber) in place of the cells inside it."""
    tables: list[tuple[tuple[float, float, float, float], Table]] = []
    for found in page.find_tables():
        rows = [[" ".join((cell or "").split()) for cell in row] for row in found.extract()]
        rows = [row for row in rows if any(row)]
        if len(rows) >= 2 and max(len(row) for row in rows) >= 2:  # a framed box is no table
            markup = "".join(
                "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
                for row in rows
            )
            table = Table(
                text="\n".join(" ".join(row) for row in rows),
                metadata=ElementMetadata(
                    text_as_html=f"<table>{markup}</table>", page_number=number
                ),
            )
            tables.append((found.bbox, table))
    if not tables:
        yield from elements
        return
    emitted: set[int] = set()
    for element in elements:
        inside = _table_around(element, page, tables)
        if inside is None:
            yield element
        elif inside not in emitted:  # the table goes where its first cell was
            emitted.add(inside)
            yield tables[inside][1]
    yield from (table for n, (_, table) in enumerate(tables) if n not in emitted)


def _table_around(
    element: Element, page: Page, tables: list[tuple[tuple[float, float, float, float], Table]]
) -> int | None:
    coordinates = element.metadata.coordinates
    if coordinates is None or not coordinates.points or coordinates.system is None:
        return None
    xs = [point[0] for point in coordinates.points]
    ys = [point[1] for point in coordinates.points]
    # unstructured's fast strategy measures in points from the top left, as pdfplumber does.
    x = (min(xs) + max(xs)) / 2 * float(page.width) / coordinates.system.width
    y = (min(ys) + max(ys)) / 2 * float(page.height) / coordinates.system.height
    for n, ((x0, top, x1, bottom), _) in enumerate(tables):
        if x0 <= x <= x1 and top <= y <= bottom:
            return n
    return None


SUPPORTED_SUFFIXES = frozenset(
    {".pdf", ".html", ".htm", ".xhtml", ".md", ".markdown", ".docx", ".txt", ".json"}
)


def _title_from_sections(sections: list[Section], fallback: str) -> str:
    for line in sections[0].text.splitlines() if sections else []:
        if re.match(r"^(REGULATION|DIRECTIVE|DECISION)\b", line):
            return line
    return fallback


def parse_document(path: Path, metadata: ManifestEntry | None = None) -> Document:
    """Parse one file; raises `IngestError` subclasses with a message an admin can act on."""
    metadata = metadata or ManifestEntry()
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise UnsupportedFormatError(
            f"{path.name}: unsupported format {suffix or '(none)'}; supported: "
            + ", ".join(sorted(SUPPORTED_SUFFIXES))
        )
    if suffix == ".json":
        title, sections = _parse_json(path)
    else:
        if suffix == ".pdf":
            _check_pdf(path)
        try:
            sections = sections_from_elements(_elements(path, suffix), from_pdf=suffix == ".pdf")
        except Exception as error:  # unstructured raises many types for unreadable input
            raise IngestError(f"{path.name}: could not be parsed: {error}") from error
        title = _title_from_sections(sections, fallback=path.stem)
    if not any(section.text.strip() for section in sections):
        hint = " (scanned without a text layer, or damaged)" if suffix == ".pdf" else ""
        raise EmptyDocumentError(f"{path.name}: no text found{hint}")
    fields = metadata.model_dump(exclude={"document_id", "title"}, exclude_none=True)
    return Document(
        document_id=metadata.document_id or document_id_for(path),
        document_title=metadata.title or title,
        source=str(path),
        content_hash=content_hash(path),
        sections=sections,
        **fields,
    )


def _check_pdf(path: Path) -> None:
    """unstructured returns no elements for a broken PDF; pypdf says what is wrong with it."""
    try:
        reader = pypdf.PdfReader(path, strict=True)
        if reader.is_encrypted:
            raise IngestError(f"{path.name}: the PDF is encrypted; upload a decrypted copy")
        if len(reader.pages) == 0:
            raise IngestError(f"{path.name}: the PDF has no pages")
    except pypdf.errors.PyPdfError as error:
        raise IngestError(f"{path.name}: not a readable PDF ({error})") from error


def _parse_json(path: Path) -> tuple[str, list[Section]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise IngestError(f"{path.name}: not valid JSON: {error}") from error
    if isinstance(data, dict) and isinstance(data.get("catalog"), dict):
        return _parse_oscal(path, data["catalog"])
    if isinstance(data, list) and data and all(_is_obliqa_passage(item) for item in data):
        return _parse_obliqa(path, data)
    raise UnsupportedFormatError(
        f"{path.name}: JSON files must be OSCAL catalogs (a top-level 'catalog' object) or "
        "ObliQA passage lists (objects with ID, DocumentID, PassageID, Passage)"
    )


# --- ObliQA passage lists (ADGM rulebooks, pre-split) ------------------------------------------

_OBLIQA_KEYS = frozenset({"ID", "DocumentID", "PassageID", "Passage"})
_OBLIQA_HEADING_MAX_CHARS = 120


def _is_obliqa_passage(item: object) -> bool:
    return isinstance(item, dict) and item.keys() >= _OBLIQA_KEYS


def _obliqa_title(path: Path, document_number: int) -> str:
    """The short and full names from the corpus's `document_map.json`, when it is there."""
    for folder in (path.parent, path.parent.parent):
        mapping = folder / "document_map.json"
        if mapping.is_file():
            names = json.loads(mapping.read_text(encoding="utf-8")).get(str(document_number))
            if names and len(names) >= 3:
                return f"{names[1]} — {names[-1]}" if names[1] not in names[-1] else names[-1]
    return f"Document {document_number}"


def _parse_obliqa(path: Path, passages: list[dict[str, Any]]) -> tuple[str, list[Section]]:
    """One section per passage, kept whole with its corpus `ID` so gold ids match 1:1.

    Short passages with no sentence end are headings ("1.1 Jurisdiction"); they name the path of
    the passages under them and are not indexed themselves.
    """
    headings: dict[str, str] = {}
    sections: list[Section] = []
    for item in passages:
        ref = str(item["PassageID"]).strip()
        text = str(item["Passage"] or "").strip()
        key = ref.rstrip(".")
        if len(text) <= _OBLIQA_HEADING_MAX_CHARS and not text.endswith((".", ":", ";")):
            if text:
                headings[key] = f"{key} {text}"
            continue
        parts = key.split(".")
        path_names = [
            headings[p] for i in range(1, len(parts)) if (p := ".".join(parts[:i])) in headings
        ]
        sections.append(
            Section(path=[*path_names, ref], text=text, ref=ref, chunk_id=str(item["ID"]))
        )
    return _obliqa_title(path, int(passages[0]["DocumentID"])), sections


# --- OSCAL catalogs (NIST SP 800-53) ---------------------------------------------------------

_OSCAL_INSERT = re.compile(r"\{\{\s*insert:\s*param,\s*([^}\s]+)\s*\}\}")


def _parse_oscal(path: Path, catalog: dict[str, Any]) -> tuple[str, list[Section]]:
    sections: list[Section] = []
    for group in catalog.get("groups", []):
        group_name = f"{group.get('title', '')} ({str(group.get('id', '')).upper()})"
        for control in group.get("controls", []):
            sections.extend(_oscal_control_sections(control, [group_name]))
    return str(catalog.get("metadata", {}).get("title") or path.stem), sections


def _oscal_control_sections(control: dict[str, Any], parents: list[str]) -> list[Section]:
    params = {param["id"]: _oscal_param_text(param) for param in control.get("params", [])}
    label = next(
        (
            p["value"]
            for p in control.get("props", [])
            if p.get("name") == "label" and not p.get("class")
        ),
        str(control.get("id", "")).upper(),
    )
    path = [*parents, f"{label} {control.get('title', '')}".strip()]
    lines: list[str] = []
    for part in control.get("parts", []):
        if part.get("name") == "statement":
            lines.extend(_oscal_part_lines(part, params))
        elif part.get("name") == "guidance" and part.get("prose"):
            lines.append(f"Discussion: {part['prose']}")
    sections = [Section(path=path, text="\n".join(lines), ref=label)] if lines else []
    for enhancement in control.get("controls", []):
        sections.extend(_oscal_control_sections(enhancement, path))
    return sections


def _oscal_param_text(param: dict[str, Any]) -> str:
    if "select" in param:
        choices = "; ".join(param["select"].get("choice", []))
        return f"[Selection: {choices}]"
    label = str(param.get("label", "value"))
    if not label.startswith("organization-defined"):
        label = f"organization-defined {label}"
    return f"[Assignment: {label}]"


def _oscal_part_lines(part: dict[str, Any], params: dict[str, str]) -> list[str]:
    label = next((p["value"] for p in part.get("props", []) if p.get("name") == "label"), "")
    prose = _OSCAL_INSERT.sub(
        lambda match: params.get(match.group(1), "[Assignment: organization-defined value]"),
        part.get("prose", ""),
    )
    lines = [f"{label} {prose}".strip()] if prose or label else []
    for child in part.get("parts", []):
        lines.extend(_oscal_part_lines(child, params))
    return lines
