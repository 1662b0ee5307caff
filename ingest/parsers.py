"""Turn a source file into a `Document` whose sections follow the regulation's own structure.

Text formats go through `unstructured` (fast strategy, offline). `unstructured` does not recognise
regulatory headings ("CHAPTER IV", "Article 33", "ANNEX III" come out as plain text), so the
structure is recovered here by heading rules. OSCAL control catalogs (NIST SP 800-53) are already
structured JSON and are read directly.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lxml.html
import pypdf
from unstructured.documents.elements import Element, Table, Title

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


def content_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def document_id_for(path: Path) -> str:
    """A stable id from the file name, so that re-ingesting a file addresses the same document."""
    return re.sub(r"[^a-z0-9]+", "-", path.stem.lower()).strip("-") or "document"


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
        if isinstance(element, Table) and len(rows := _table_rows(element)) >= _MIN_TABLE_ROWS:
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

    def _add_table(self, rows: list[str], page: int | None) -> None:
        self._flush()
        path = [name for _, name in self.headings] or ["Preamble"]
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
            path = [name for _, name in self.headings] or ["Preamble"]
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
    if suffix == ".pdf":
        from unstructured.partition.pdf import partition_pdf

        # "fast" reads the text layer (pdfminer); other strategies need OCR models from a hub.
        return functools.partial(partition_pdf, strategy="fast", languages=["eng"])
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
        partition = _partitioner(suffix)
        assert partition is not None  # every supported non-JSON suffix has one
        if suffix == ".pdf":
            _check_pdf(path)
        try:
            elements = partition(filename=str(path))
        except Exception as error:  # unstructured raises many types for unreadable input
            raise IngestError(f"{path.name}: could not be parsed: {error}") from error
        sections = sections_from_elements(elements, from_pdf=suffix == ".pdf")
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
