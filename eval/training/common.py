"""What the three training scripts share: the ObliQA/XRefRAG corpus and question readers, a BM25
index for hard negatives, and the optimiser-step loop with its schedule and model saving."""

from __future__ import annotations

import collections
import json
import os
import random
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from scipy import sparse
from sentence_transformers import CrossEncoder

from retrieval.reranker import passage_text
from retrieval.sparse import terms

ROOT = Path(__file__).resolve().parents[2]


DEFAULT_CORPUS_DIR = ROOT.parent / "shared" / "corpora"


SECTION_SEPARATOR = " > "  # as ingest.chunking joins a section's heading path


KEEP_FILES = {
    "config.json",
    "config_sentence_transformers.json",
    "model.safetensors",
    "modules.json",
    "sentence_bert_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass(frozen=True)
class Passage:
    id: str
    document_id: int
    ref: str
    text: str
    document_title: str
    section: str

    @property
    def model_text(self) -> str:
        return passage_text(self.document_title, self.section, self.text)


def load_corpus(corpus_dir: Path) -> dict[str, Passage]:
    """Every non-empty ObliQA passage, with the title and heading path that ingestion gives it.

    Ingestion (ingest.parsers) keeps each passage whole under its corpus ID, titles it from
    `document_map.json` and sections it by its heading path; the reranker must see passages the
    way the service will hand them over. Short heading passages, which ingestion does not index,
    keep their PassageID as their section (they stay in the candidate pool, as the brief's corpus).
    """
    from ingest.parsers import parse_document  # heavy (unstructured); only needed here

    passages: dict[str, Passage] = {}
    documents = corpus_dir / "obliqa" / "documents"
    for path in sorted(documents.glob("*.json"), key=lambda p: int(p.stem)):
        document = parse_document(path)
        sections = {
            s.chunk_id: SECTION_SEPARATOR.join(s.path) for s in document.sections if s.chunk_id
        }
        for item in json.loads(path.read_text(encoding="utf-8")):
            text = str(item["Passage"] or "").strip()
            if not text:
                continue
            ref = str(item["PassageID"]).strip()
            passages[item["ID"]] = Passage(
                id=item["ID"],
                document_id=int(item["DocumentID"]),
                ref=ref,
                text=text,
                document_title=document.document_title,
                section=sections.get(item["ID"], ref),
            )
    return passages


class BM25Index:
    """Okapi BM25 over the project's own terms (stemmed, stop words out, rule numbers whole).

    Documents are indexed as the service indexes them (title, headings, text); query terms count
    once each and IDF is log(1 + (N - df + 0.5) / (df + 0.5)), as with Qdrant's IDF modifier.
    """

    def __init__(
        self, ids: Sequence[str], texts: Sequence[str], k1: float = 1.2, b: float = 0.75
    ) -> None:
        self.ids = list(ids)
        vocabulary: dict[int, int] = {}
        rows, cols, tfs = [], [], []
        lengths = np.zeros(len(texts))
        for row, text in enumerate(texts):
            counts = collections.Counter(terms(text))
            lengths[row] = sum(counts.values())
            for term, count in counts.items():
                rows.append(row)
                cols.append(vocabulary.setdefault(term, len(vocabulary)))
                tfs.append(count)
        tf = np.asarray(tfs, dtype=np.float64)
        norm = k1 * (1 - b + b * lengths[rows] / lengths.mean())
        weights = tf * (k1 + 1) / (tf + norm)
        self._matrix = sparse.csr_matrix(
            (weights, (rows, cols)), shape=(len(texts), len(vocabulary))
        ).tocsc()
        df = np.bincount(cols, minlength=len(vocabulary))
        self._idf = np.log(1 + (len(texts) - df + 0.5) / (df + 0.5))
        self._vocabulary = vocabulary

    def search(self, query: str, k: int) -> list[str]:
        columns = sorted({self._vocabulary[t] for t in terms(query) if t in self._vocabulary})
        if not columns:
            return []
        scores = self._matrix[:, columns] @ self._idf[columns]
        top = np.argpartition(-scores, min(k, len(scores) - 1))[:k]
        top = top[np.lexsort((top, -scores[top]))]  # score, then corpus order on ties
        return [self.ids[i] for i in top if scores[i] > 0]


def indexed_corpus(corpus_dir: Path) -> tuple[dict[str, Passage], BM25Index]:
    """The ObliQA passages as ingestion sees them, and a BM25 index over them."""
    corpus = load_corpus(corpus_dir)
    ids = sorted(corpus)
    return corpus, BM25Index(ids, [corpus[i].model_text for i in ids])


@dataclass(frozen=True)
class Question:
    id: str
    source: str  # "obliqa", "obliqa-mp" or "xrefrag"
    text: str
    gold: frozenset[str]


def obliqa_questions(path: Path, corpus_dir: Path) -> list[Question]:
    """Gold passages are (DocumentID, PassageID) pairs; 17 keys repeat, so the text decides."""
    by_key: dict[tuple[int, str], list[dict]] = collections.defaultdict(list)
    for document in (corpus_dir / "obliqa" / "documents").glob("*.json"):
        for item in json.loads(document.read_text(encoding="utf-8")):
            by_key[(int(item["DocumentID"]), str(item["PassageID"]))].append(item)
    questions = []
    for record in json.loads(path.read_text(encoding="utf-8")):
        gold: set[str] = set()
        for passage in record["Passages"]:
            items = by_key[(int(passage["DocumentID"]), str(passage["PassageID"]))]
            same_text = [
                i for i in items if (i["Passage"] or "").strip() == passage["Passage"].strip()
            ]
            gold.update(i["ID"] for i in (same_text or items))
        questions.append(
            Question(record["QuestionID"], "obliqa", record["Question"], frozenset(gold))
        )
    return questions


def obliqa_mp_questions(path: Path) -> list[Question]:
    return [
        Question(
            record["QuestionID"],
            "obliqa-mp",
            record["Question"],
            frozenset(p["ID"] for p in record["Passages"]),
        )
        for record in json.loads(path.read_text(encoding="utf-8"))
    ]


def xrefrag_questions(path: Path) -> list[Question]:
    questions = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            gold = frozenset({record["source_passage_id"], record["target_passage_id"]})
            questions.append(Question(record["id"], "xrefrag", record["question"], gold))
    return questions


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def warmup_then_linear_decay(
    parameters: list[torch.nn.Parameter], learning_rate: float, total: int, warmup_steps: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW whose rate rises linearly over `warmup_steps`, then falls linearly to 0 at `total`."""
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            (s + 1) / warmup_steps
            if s < warmup_steps
            else max(0.0, (total - s) / max(1, total - warmup_steps))
        ),
    )
    return optimizer, scheduler


T = TypeVar("T")


def train_steps(
    epoch: Callable[[], Iterable[T]],
    loss_of: Callable[[T], torch.Tensor],
    trainable: list[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    total: int,
    max_minutes: float | None,
    log_every: int,
) -> dict[str, float]:
    """`total` optimiser steps over batches from repeated `epoch()` passes, with gradient
    clipping, progress lines and a time limit that ends training early (a safety stop)."""
    started, step, losses = time.monotonic(), 0, []
    while step < total:
        for batch in epoch():
            if step >= total:
                break
            loss = loss_of(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            step += 1
            elapsed = time.monotonic() - started
            if step % log_every == 0 or step == total:
                log(
                    f"step {step}/{total} loss {statistics.fmean(losses[-log_every:]):.4f} "
                    f"lr {scheduler.get_last_lr()[0]:.2e} {elapsed / step:.2f} s/step "
                    f"eta {(total - step) * elapsed / step / 60:.1f} min"
                )
            if max_minutes is not None and elapsed > max_minutes * 60:
                log(f"stopping at step {step}: the {max_minutes} min time limit is reached")
                total = step
                break
    return {"steps": step, "seconds": time.monotonic() - started, "final_loss": losses[-1]}


def save_fp16(model: CrossEncoder, out: Path) -> None:
    """fp16 safetensors weights, tokenizer and configs; no model card, optimizer or checkpoint."""
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16)
    model.save(str(out), create_model_card=False, safe_serialization=True)
    model.to(torch.float32)
    written = {p.name for p in out.iterdir()}
    log(f"CrossEncoder.save wrote {sorted(written)}")
    for name in written - KEEP_FILES - {"training_question_ids.txt", "MODEL_CARD.md"}:
        path = out / name
        if path.is_file():
            path.unlink()


def folder_size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6
