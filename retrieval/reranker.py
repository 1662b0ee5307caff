"""Cross-encoder reranking: score (question, passage) pairs jointly and re-sort the candidates.

`eval/training/train_reranker.py` trains the project's own from all-MiniLM-L6-v2 on the
training half of ObliQA dev and XRefRAG SCHEMA train into `retrieval/models/` ('builtin'); none
ships, since the candidate measured so far did not beat BM25's order on held-out ObliQA (the
script's notes have the figures).
"""

from __future__ import annotations

from pathlib import Path

import torch
from sentence_transformers import CrossEncoder
from transformers.utils import logging as transformers_logging

from core.models import Chunk, RetrievedChunk, embedding_header
from core.settings import BUILTIN_RERANKER, Settings
from retrieval.embedder import resolve_model_location

transformers_logging.set_verbosity_error()
transformers_logging.disable_progress_bar()

DEFAULT_RERANKER_PATH = Path(__file__).resolve().parent / "models" / "regulus-reranker-minilm-l6"


def passage_text(document_title: str, section: str, text: str) -> str:
    """What the cross-encoder reads for a passage: title and heading path, then the text.

    Training and inference must both use this function: the model learnt this layout.
    """
    return embedding_header(document_title, section) + text


def chunk_passage_text(chunk: Chunk) -> str:
    return passage_text(chunk.document_title, chunk.section, chunk.text)


class CrossEncoderReranker:
    """Re-sorts retrieved chunks by a cross-encoder's relevance score for the query."""

    def __init__(
        self,
        model: str,
        max_length: int = 256,
        batch_size: int = 32,
    ) -> None:
        if not model or not str(model).strip():
            raise ValueError("model must name a folder or a hub id")
        if max_length < 16 or max_length > 512:
            raise ValueError("max_length must be between 16 and 512 word pieces")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.model_name = str(model)
        self.max_length = max_length
        self.batch_size = batch_size
        location = resolve_model_location(self.model_name)
        # Weights are shipped in fp16 for size; CPUs run fp32 faster (and exactly), GPUs fp16.
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.float16 if device == "cuda" else torch.float32
        self._model = CrossEncoder(
            location,
            num_labels=1,
            max_length=max_length,
            device=device,
            model_kwargs={"dtype": dtype},
        )

    def score(self, query: str, passages: list[str]) -> list[float]:
        """Raw relevance logits, higher is more relevant; one per passage text."""
        if not passages:
            return []
        scores = self._model.predict(
            [(query, text) for text in passages],
            batch_size=self.batch_size,
            activation_fn=torch.nn.Identity(),
            show_progress_bar=False,
            convert_to_numpy=True,
        )
        return [float(value) for value in scores]

    def run(self, query: str, passages: list[RetrievedChunk], top_k: int) -> list[RetrievedChunk]:
        if not query.strip():
            raise ValueError("the query is empty")
        if top_k < 1:
            raise ValueError("top_k must be at least 1")
        scores = self.score(query, [chunk_passage_text(item.chunk) for item in passages])
        order = sorted(range(len(passages)), key=lambda i: scores[i], reverse=True)
        return [passages[i].model_copy(update={"score": scores[i]}) for i in order[:top_k]]


def load_reranker(settings: Settings) -> CrossEncoderReranker | None:
    """The configured cross-encoder: the project's own, a folder or a hub id; or none."""
    if settings.reranker is None:
        return None
    if settings.reranker != BUILTIN_RERANKER:
        return CrossEncoderReranker(settings.reranker)
    if not (DEFAULT_RERANKER_PATH / "config.json").is_file():
        raise ValueError(
            f"REGULUS_RERANKER=builtin, but no project reranker is at {DEFAULT_RERANKER_PATH}: "
            "train one with eval/training/train_reranker.py or name a folder or hub id"
        )
    return CrossEncoderReranker(str(DEFAULT_RERANKER_PATH))
