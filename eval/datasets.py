"""Question sets with gold evidence, in the formats evaluators bring.

- `obliqa`: a JSON list of {QuestionID, Question, Passages: [{DocumentID, PassageID, Passage}]};
  gold passages are resolved to corpus chunk ids through the corpus's own passage files, matching
  the passage text where a (DocumentID, PassageID) key occurs twice.
- `obliqa-mp`: the same, with each gold passage's corpus `ID`.
- `xrefrag`: JSON lines with `question`, `answer`, `source_passage_id`, `target_passage_id`.
- `regulus`: JSON lines with `question`, `gold_chunk_ids` and optional `id`, `answer`, `tags`.
"""

from __future__ import annotations

import enum
import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field


class DatasetFormat(enum.StrEnum):
    OBLIQA = "obliqa"
    OBLIQA_MP = "obliqa-mp"
    XREFRAG = "xrefrag"
    REGULUS = "regulus"


class EvalQuestion(BaseModel):
    question_id: str
    question: str
    gold_ids: list[str] = Field(description="Corpus chunk ids of the gold passages.")
    reference_answer: str | None = None
    tags: list[str] = Field(default_factory=list)


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
    if "gold_chunk_ids" in first:
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
                reference_answer=record.get("answer"),
                tags=[str(record.get("reference_type") or "xref")],
            )
        if fmt is DatasetFormat.REGULUS:
            return EvalQuestion(
                question_id=str(record.get("id") or n),
                question=record["question"],
                gold_ids=list(record["gold_chunk_ids"]),
                reference_answer=record.get("answer"),
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
    except (KeyError, TypeError) as error:
        raise DatasetError(f"question {n}: missing field {error} for format {fmt.value}") from error
