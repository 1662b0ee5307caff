"""Question sets with gold evidence, in the formats evaluators bring.

- `obliqa`: a JSON list of {QuestionID, Question, Passages: [{DocumentID, PassageID, Passage}]};
  gold passages are resolved to corpus chunk ids through the corpus's own passage files, matching
  the passage text where a (DocumentID, PassageID) key occurs twice.
- `obliqa-mp`: the same, with each gold passage's corpus `ID`.
- `xrefrag`: JSON lines with `question`, `answer`, `source_passage_id`, `target_passage_id`.
- `regulus`: JSON lines with `question` and gold evidence as `gold_chunk_ids` and/or
  `gold_sections` ([{"document_id": "gdpr", "section": "Article 33"}]: survive re-ingestion and
  re-chunking, resolved against the index by `resolve_gold_sections`), optional `id`, `answer`,
  `tags` (`multi-document`, `unanswerable`: the corpus does not answer it, so no gold).
"""

from __future__ import annotations

import enum
import json
import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from core.models import Chunk

# XRefRAG's inline evidence markers, [#SRC:uuid] / [#TGT:uuid]: not part of the answer's wording.
_XREF_MARKER = re.compile(r"\s*\[#(?:SRC|TGT):[^\]]*\]")
UNANSWERABLE = "unanswerable"
MULTI_DOCUMENT = "multi-document"


class DatasetFormat(enum.StrEnum):
    OBLIQA = "obliqa"
    OBLIQA_MP = "obliqa-mp"
    XREFRAG = "xrefrag"
    REGULUS = "regulus"


class GoldSection(BaseModel):
    """Gold evidence named by place rather than chunk id: every chunk of that section is gold."""

    document_id: str
    section: str = Field(description="A heading of the section path, e.g. 'Article 33', 'IR-6'.")


class EvalQuestion(BaseModel):
    question_id: str
    question: str
    gold_ids: list[str] = Field(description="Corpus chunk ids of the gold passages.")
    gold_sections: list[GoldSection] = Field(default_factory=list)
    gold_groups: list[list[str]] = Field(
        default_factory=list,
        description="Chunk ids per gold section: a section counts as found when any is found.",
    )
    reference_answer: str | None = None
    key_facts: list[str] = Field(
        default_factory=list, description="Phrases a correct answer contains (any case)."
    )
    tags: list[str] = Field(default_factory=list)

    @property
    def answerable(self) -> bool:
        return UNANSWERABLE not in self.tags

    def gold_units(self) -> dict[str, str]:
        """Chunk id -> the gold unit it belongs to: itself, or its gold section's first chunk.

        Ranking and citation metrics count units, so an article split into four chunks is one gold
        passage, found when any of its chunks is.
        """
        units = {chunk_id: chunk_id for chunk_id in self.gold_ids}
        for group in self.gold_groups:
            for chunk_id in group:
                units[chunk_id] = group[0]
        return units

    def to_units(self, chunk_ids: Iterable[str]) -> list[str]:
        """Chunk ids with gold chunks replaced by their unit, each unit kept once, order kept."""
        units = self.gold_units()
        seen: set[str] = set()
        ranked = []
        for chunk_id in chunk_ids:
            unit = units.get(chunk_id, chunk_id)
            if unit not in seen:
                seen.add(unit)
                ranked.append(unit)
        return ranked

    def gold_unit_ids(self) -> set[str]:
        return set(self.gold_units().values())


class DatasetError(ValueError):
    pass


def _read_records(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path}: not valid JSON: {error}") from error
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a list of questions")
    return data


def detect_format(records: list[dict[str, Any]]) -> DatasetFormat:
    if not records:
        raise DatasetError("the question file is empty")
    first = records[0]
    if "source_passage_id" in first and "target_passage_id" in first:
        return DatasetFormat.XREFRAG
    if "gold_chunk_ids" in first or "gold_sections" in first:
        return DatasetFormat.REGULUS
    passages = first.get("Passages")
    if isinstance(passages, list) and passages:
        return DatasetFormat.OBLIQA_MP if "ID" in passages[0] else DatasetFormat.OBLIQA
    raise DatasetError(f"unknown question format; keys: {sorted(first)}")


class PassageIndex:
    """(DocumentID, PassageID) -> corpus ids, from the ObliQA-format passage files of a corpus."""

    def __init__(self, corpus_files: Iterable[Path]) -> None:
        self._ids: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
        for path in corpus_files:
            if path.suffix != ".json":
                continue
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, list):
                continue
            for item in data:
                if isinstance(item, dict) and {"ID", "DocumentID", "PassageID"} <= item.keys():
                    key = (str(item["DocumentID"]), str(item["PassageID"]))
                    self._ids[key].append((str(item["ID"]), " ".join(str(item["Passage"]).split())))

    def resolve(self, document_id: object, passage_id: object, text: str) -> str | None:
        candidates = self._ids.get((str(document_id), str(passage_id)), [])
        if len(candidates) > 1:
            wanted = " ".join(text.split())
            candidates = [c for c in candidates if c[1] == wanted] or candidates
        return candidates[0][0] if candidates else None


def load_questions(
    path: Path,
    dataset_format: DatasetFormat | None = None,
    passage_index: PassageIndex | None = None,
) -> tuple[DatasetFormat, list[EvalQuestion]]:
    records = _read_records(path)
    dataset_format = dataset_format or detect_format(records)
    if dataset_format is DatasetFormat.OBLIQA and passage_index is None:
        raise DatasetError("ObliQA questions need the corpus's passage files to resolve gold ids")
    questions = [
        _question(record, dataset_format, passage_index, n) for n, record in enumerate(records)
    ]
    return dataset_format, questions


def _question(
    record: dict[str, Any], fmt: DatasetFormat, passages: PassageIndex | None, n: int
) -> EvalQuestion:
    try:
        if fmt is DatasetFormat.XREFRAG:
            return EvalQuestion(
                question_id=str(record.get("id") or n),
                question=record["question"],
                gold_ids=[record["source_passage_id"], record["target_passage_id"]],
                reference_answer=_XREF_MARKER.sub("", record.get("answer") or "") or None,
                tags=[str(record.get("reference_type") or "xref")],
            )
        if fmt is DatasetFormat.REGULUS:
            if "gold_chunk_ids" not in record and "gold_sections" not in record:
                raise KeyError("gold_chunk_ids or gold_sections")
            return EvalQuestion(
                question_id=str(record.get("id") or n),
                question=record["question"],
                gold_ids=list(record.get("gold_chunk_ids", [])),
                gold_sections=[
                    GoldSection.model_validate(g) for g in record.get("gold_sections", [])
                ],
                reference_answer=record.get("answer"),
                key_facts=[str(fact) for fact in record.get("key_facts", [])],
                tags=list(record.get("tags", [])),
            )
        gold: list[str] = []
        for passage in record["Passages"]:
            if fmt is DatasetFormat.OBLIQA_MP:
                chunk_id: str | None = str(passage["ID"])
            else:
                assert passages is not None
                chunk_id = passages.resolve(
                    passage["DocumentID"], passage["PassageID"], passage.get("Passage", "")
                )
            if chunk_id and chunk_id not in gold:
                gold.append(chunk_id)
        documents = {str(p["DocumentID"]) for p in record["Passages"]}
        return EvalQuestion(
            question_id=str(record["QuestionID"]),
            question=record["Question"],
            gold_ids=gold,
            tags=["multi-document"] if len(documents) > 1 else [],
        )
    except (KeyError, TypeError, ValueError) as error:
        raise DatasetError(f"question {n}: missing field {error} for format {fmt.value}") from error


def _heading_matches(heading: str, wanted: str) -> bool:
    """'Article 33 — Notification...' matches 'Article 33' but 'Article 330' does not."""
    heading, wanted = heading.strip().casefold(), wanted.strip().casefold()
    return heading == wanted or (heading.startswith(wanted) and not heading[len(wanted)].isalnum())


def section_chunk_ids(section: GoldSection, chunks: Iterable[Chunk]) -> list[str]:
    """Chunks of the document whose heading path has a heading starting with the section name."""
    return [
        chunk.chunk_id
        for chunk in chunks
        if chunk.document_id == section.document_id
        and any(_heading_matches(h, section.section) for h in chunk.section.split(" > "))
    ]


def resolve_gold_sections(questions: list[EvalQuestion], chunks: list[Chunk]) -> list[str]:
    """Add the chunk ids of each question's gold sections; returns the sections matching nothing."""
    unmatched = []
    for question in questions:
        for section in question.gold_sections:
            ids = section_chunk_ids(section, chunks)
            if not ids:
                unmatched.append(f"{question.question_id}: {section.document_id} {section.section}")
                continue
            question.gold_groups.append(ids)
            question.gold_ids.extend(i for i in ids if i not in question.gold_ids)
    return unmatched
