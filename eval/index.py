"""Benchmark indexes: built once per (corpus files, index settings), reused only if both match."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from core.catalog import Job, JobStatus
from core.settings import Settings
from ingest.manifest import MANIFEST_NAMES
from ingest.parsers import content_hash
from ingest.pipeline import ProgressCallback, discover_files
from retrieval.embedder import model_fingerprint, resolve_model_location

# Settings that change what the index holds; anything else (top_k, LLM...) can vary freely.
INDEX_SETTINGS = (
    "embed_model",
    "embed_backend",
    "chunk_tokens",
    "chunk_overlap",
    "bm25_k1",
    "bm25_b",
    "bm25_average_length",
    "default_access_groups",
)
COMPLETE_MARKER = "index.json"
# Ingests the files into the index the settings point at; returns the job and the chunks stored.
IndexBuilder = Callable[[Settings, list[Path], ProgressCallback | None], tuple[Job, int]]
# Bumped whenever what an index holds or how it is stored changes.
INDEX_FORMAT = 3


def index_fingerprint(files: list[Path], settings: Settings) -> str:
    manifests = sorted(
        content_hash(folder / name)
        for folder in {path.parent for path in files}
        for name in MANIFEST_NAMES
        if (folder / name).is_file()
    )
    description: dict[str, object] = {
        "files": sorted((path.name, content_hash(path)) for path in files),
        "settings": {name: getattr(settings, name) for name in INDEX_SETTINGS},
        # A model retrained under the same name must not reuse the old vectors.
        "weights": model_fingerprint(resolve_model_location(settings.embed_model)),
        "format": INDEX_FORMAT,
    }
    if manifests:  # titles, groups and aliases come from the folders' manifests
        description["manifests"] = manifests
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:16]


def prepare_index(
    corpus: Path,
    settings: Settings,
    build: IndexBuilder,
    on_document: ProgressCallback | None = None,
) -> tuple[Settings, Job | None]:
    """Settings pointing at an index of `corpus`; ingests only when no complete match exists.

    An interrupted build has no completion marker, so the next run resumes it (documents already
    committed are skipped by content hash).
    """
    files = list(discover_files([corpus]))
    if not files:
        raise FileNotFoundError(f"no supported documents under {corpus}")
    fingerprint = index_fingerprint(files, settings)
    index_dir = settings.data_dir / "eval-indexes" / fingerprint
    index_settings = settings.model_copy(
        update={"data_dir": index_dir, "qdrant_url": None, "database_url": None}
    )
    marker = index_dir / COMPLETE_MARKER
    if marker.is_file():
        return index_settings, None
    job, chunks = build(index_settings, files, on_document)
    if job.status is not JobStatus.SUCCEEDED:
        failed = [d for d in job.documents if d.error]
        raise RuntimeError(f"{len(failed)} corpus documents failed: {failed[0].error}")
    marker.write_text(json.dumps({"corpus": str(corpus), "files": len(files), "chunks": chunks}))
    return index_settings, job
