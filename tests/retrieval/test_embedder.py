"""ONNX backends of the embedder, the guard against mixing embedders in one index, and the
fine-tuning script's batching and loss."""

import json
import random
import shutil
import sys
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from sentence_transformers import SentenceTransformer

from core.catalog import JobStatus
from core.models import EmbedBackend
from eval.training.common import Question
from eval.training.train_embedder import Triple, batches, contrastive_loss
from retrieval.embedder import (
    Embedder,
    EmbedderMismatchError,
    TextRole,
    VectorCache,
    model_fingerprint,
    resolve_model_location,
)
from tests.helpers import make_settings, services_for

TEXTS = [
    "Within 72 hours the controller shall notify the personal data breach.",
    "Annual fee",
    "A regulated firm shall establish, implement and maintain adequate policies and procedures "
    "sufficient to ensure compliance with its obligations under this Rulebook. " * 3,
    "Article 17 Right to erasure ('right to be forgotten') " * 40,  # longer than the model reads
]


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-models")


@pytest.fixture(scope="module")
def int8_embedder(embedder: Embedder, onnx_cache: Path) -> Embedder:
    return Embedder(embedder.model_name, backend=EmbedBackend.ONNX_INT8, cache_dir=onnx_cache)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(axis=1))


class TestLengthBatching:
    def test_vectors_come_back_in_input_order_whatever_the_batches(
        self, embedder: Embedder
    ) -> None:
        """Texts are batched by word-piece count, not in input order; each vector must still be
        the one of its own text, as if embedded alone."""
        small_batches = Embedder(embedder.model_name, batch_size=2)
        together = small_batches.embed(TEXTS)
        alone = np.stack([embedder.embed_one(text) for text in TEXTS])
        assert together.shape == (len(TEXTS), embedder.dimension)
        assert cosines(together, alone).min() > 0.9999

    def test_nothing_to_embed_gives_no_vectors(self, embedder: Embedder) -> None:
        assert embedder.embed([]).shape == (0, embedder.dimension)


class TestVectorCache:
    def test_cached_vectors_are_the_embedded_ones_and_are_not_embedded_twice(
        self, embedder: Embedder
    ) -> None:
        cached = Embedder(embedder.model_name, cache_entries=100)
        first = cached.embed_cached([TEXTS[0], TEXTS[1], TEXTS[0]])
        assert cosines(first, embedder.embed([TEXTS[0], TEXTS[1], TEXTS[0]])).min() > 0.9999
        assert len(cached.cache) == 2
        hits = cached.cache.hits
        again = cached.embed_cached([TEXTS[1], TEXTS[0]])
        assert cached.cache.hits == hits + 2
        np.testing.assert_array_equal(again, first[[1, 0]])

    def test_the_least_recently_used_vector_goes_first(self) -> None:
        cache = VectorCache(max_entries=2)
        for text in ("a", "b"):
            cache.put(text, np.ones(3, dtype=np.float32))
        assert cache.get("a") is not None  # "b" is now the least recently used
        cache.put("c", np.zeros(3, dtype=np.float32))
        assert cache.get("b") is None
        assert cache.get("a") is not None and cache.get("c") is not None
        assert cache.nbytes == 2 * (3 * 4 + 1)

    def test_no_entries_keeps_nothing(self, embedder: Embedder) -> None:
        assert len(embedder.cache) == 0 and embedder.cache.max_entries == 0
        embedder.embed_cached([TEXTS[0]])
        assert len(embedder.cache) == 0

    def test_a_negative_size_is_refused(self, embedder: Embedder) -> None:
        with pytest.raises(ValueError, match="cache_entries"):
            Embedder(embedder.model_name, cache_entries=-1)


class TestTokenizeBesideEmbed:
    def test_counting_in_another_thread_leaves_embedding_intact(self, embedder: Embedder) -> None:
        """Ingestion chunks (counting word pieces) in a thread while it embeds: neither may change
        the other's tokenizer settings, such as the truncation that keeps texts within the model."""
        texts = TEXTS * 25
        small_batches = Embedder(embedder.model_name, batch_size=2)  # many tokenizer calls
        alone = small_batches.embed(texts)
        whole_length = len(small_batches.tokenize(TEXTS[3]))
        counts: list[int] = []
        errors: list[Exception] = []
        done = threading.Event()

        def count() -> None:
            while not done.is_set():
                try:
                    counts.append(len(small_batches.tokenize(TEXTS[3])))
                except Exception as error:  # reported below: a thread's errors are otherwise lost
                    errors.append(error)

        worker = threading.Thread(target=count)
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-5)  # the threads take turns often, torch between its ops too
        worker.start()
        try:
            beside = small_batches.embed(texts)
        finally:
            done.set()
            worker.join()
            sys.setswitchinterval(switch_interval)
        assert errors == []
        assert counts and set(counts) == {whole_length} and whole_length > embedder.max_tokens
        assert cosines(beside, alone).min() > 0.9999


@pytest.mark.slow
class TestOnnxBackends:
    def test_fp32_onnx_gives_the_torch_vectors(self, embedder: Embedder, onnx_cache: Path) -> None:
        fp32 = Embedder(embedder.model_name, backend=EmbedBackend.ONNX, cache_dir=onnx_cache)
        vectors = fp32.embed(TEXTS)
        assert vectors.shape == (len(TEXTS), embedder.dimension)
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
        assert cosines(vectors, embedder.embed(TEXTS)).min() > 0.999
        assert fp32.signature == f"{embedder.model_name} (onnx)"

    def test_the_export_runs_fused_attention_kernels(
        self, int8_embedder: Embedder, onnx_cache: Path
    ) -> None:
        for path in onnx_cache.rglob("*.onnx"):
            ops = Counter(node.op_type for node in onnx.load(path).graph.node)
            # MiniLM-L6: one fused attention op per layer (quantised: QAttention).
            assert ops["Attention"] + ops["QAttention"] == 6, (path.name, ops)

    def test_int8_stays_close_to_torch_and_reuses_its_export(
        self, embedder: Embedder, int8_embedder: Embedder, onnx_cache: Path
    ) -> None:
        agreement = cosines(int8_embedder.embed(TEXTS), embedder.embed(TEXTS))
        # Measured on 2,000 ObliQA passages: mean 0.993, min 0.98 (docs/benchmarks.md).
        assert agreement.min() > 0.95, agreement
        exports = sorted(onnx_cache.rglob("*.onnx"))
        stamps = [path.stat().st_mtime_ns for path in exports]
        Embedder(embedder.model_name, backend=EmbedBackend.ONNX_INT8, cache_dir=onnx_cache)
        assert [path.stat().st_mtime_ns for path in exports] == stamps
        assert not list(onnx_cache.rglob("*.tmp"))

    def test_onnx_needs_a_cache_folder(self, embedder: Embedder) -> None:
        with pytest.raises(ValueError, match="cache_dir"):
            Embedder(embedder.model_name, backend=EmbedBackend.ONNX)


def with_prompts(
    source: str, into: Path, prompts: dict[str, str], default: str | None = None
) -> Path:
    """A copy of the model at `source` whose configuration defines these prompts."""
    shutil.copytree(source, into)
    config_path = into / "config_sentence_transformers.json"
    config = json.loads(config_path.read_text())
    config |= {"prompts": prompts, "default_prompt_name": default}
    config_path.write_text(json.dumps(config))
    return into


@pytest.fixture(scope="module")
def prompted(embedder: Embedder, tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    """MiniLM told to read questions after "query: " and passages after "passage: " (the e5
    convention; EmbeddingGemma's are "task: search result | query: " and "title: none | text: ")."""
    folder = with_prompts(
        resolve_model_location(embedder.model_name),
        tmp_path_factory.mktemp("prompted") / "minilm-prompted",
        {"query": "query: ", "passage": "passage: ", "Clustering": "cluster: "},
    )
    return Embedder(str(folder), cache_entries=100)


class TestPrompts:
    def test_minilm_has_no_prompts_and_keeps_exactly_its_vectors(self, embedder: Embedder) -> None:
        """The default embedder's vectors are those of a plain sentence-transformers call, for
        questions and passages alike: an index built before roles existed stays valid."""
        assert embedder.prompt(TextRole.QUERY) == embedder.prompt(TextRole.DOCUMENT) == ""
        plain = SentenceTransformer(
            resolve_model_location(embedder.model_name),
            device="cpu",
            model_kwargs={"dtype": torch.float32},
        )
        for text in TEXTS:
            expected = plain.encode([text], normalize_embeddings=True, convert_to_numpy=True)
            for role in TextRole:
                np.testing.assert_array_equal(embedder.embed([text], role), expected)
        np.testing.assert_array_equal(
            embedder.embed(TEXTS, TextRole.QUERY), embedder.embed(TEXTS, TextRole.DOCUMENT)
        )

    def test_each_role_gets_its_prompt(self, embedder: Embedder, prompted: Embedder) -> None:
        assert prompted.prompt(TextRole.QUERY) == "query: "
        assert prompted.prompt(TextRole.DOCUMENT) == "passage: "  # "passage" stands for document
        question, passage = TEXTS[0], TEXTS[2]
        asked = prompted.embed_one(question, TextRole.QUERY)
        read = prompted.embed_one(passage, TextRole.DOCUMENT)
        # The same weights: the prompt is the only difference, put before the text.
        assert cosines(asked[None], embedder.embed(["query: " + question]))[0] > 0.9999
        assert cosines(read[None], embedder.embed(["passage: " + passage]))[0] > 0.9999
        assert cosines(asked[None], prompted.embed([question], TextRole.DOCUMENT))[0] < 0.999

    def test_the_cache_keeps_a_text_apart_per_prompt(self, prompted: Embedder) -> None:
        as_query = prompted.embed_cached([TEXTS[1]], TextRole.QUERY)
        as_document = prompted.embed_cached([TEXTS[1]], TextRole.DOCUMENT)
        assert cosines(as_query, as_document)[0] < 0.999
        np.testing.assert_array_equal(prompted.embed_cached([TEXTS[1]], TextRole.QUERY), as_query)
        np.testing.assert_array_equal(as_document, prompted.embed([TEXTS[1]], TextRole.DOCUMENT))

    def test_a_default_prompt_serves_both_roles(self, embedder: Embedder, tmp_path: Path) -> None:
        folder = with_prompts(
            resolve_model_location(embedder.model_name),
            tmp_path / "default-prompt",
            {"query": "", "document": "", "Retrieval": "search: "},
            default="Retrieval",
        )
        model = Embedder(str(folder))
        assert model.prompt(TextRole.QUERY) == model.prompt(TextRole.DOCUMENT) == "search: "

    @pytest.mark.slow
    def test_onnx_puts_the_prompt_before_the_text(
        self, prompted: Embedder, onnx_cache: Path
    ) -> None:
        onnx_model = Embedder(prompted.model_name, backend=EmbedBackend.ONNX, cache_dir=onnx_cache)
        for role in TextRole:
            assert cosines(onnx_model.embed(TEXTS, role), prompted.embed(TEXTS, role)).min() > 0.999

    def test_onnx_refuses_a_model_that_pools_without_its_prompt(
        self, prompted: Embedder, tmp_path: Path
    ) -> None:
        folder = tmp_path / "instructor-like"
        shutil.copytree(prompted.model_name, folder)
        pooling = folder / "1_Pooling" / "config.json"
        pooling.write_text(json.dumps(json.loads(pooling.read_text()) | {"include_prompt": False}))
        with pytest.raises(ValueError, match="REGULUS_EMBED_BACKEND=torch"):
            Embedder(str(folder), backend=EmbedBackend.ONNX, cache_dir=tmp_path / "onnx")


class TestModelFingerprint:
    def test_follows_the_weights_not_the_documentation(self, tmp_path: Path) -> None:
        (tmp_path / "model.safetensors").write_bytes(b"weights")
        (tmp_path / "MODEL_CARD.md").write_text("figures")
        before = model_fingerprint(str(tmp_path))
        (tmp_path / "MODEL_CARD.md").write_text("new figures")
        assert model_fingerprint(str(tmp_path)) == before
        (tmp_path / "model.safetensors").write_bytes(b"retrained")
        assert model_fingerprint(str(tmp_path)) != before

    def test_a_hub_id_is_fingerprinted_by_name(self) -> None:
        assert model_fingerprint("org/model-a") != model_fingerprint("org/model-b")


@pytest.mark.integration
@pytest.mark.slow
def test_an_index_serves_and_grows_only_with_the_embedder_that_built_it(
    tmp_path: Path, embedder: Embedder, int8_embedder: Embedder
) -> None:
    settings = make_settings(tmp_path / "data")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "policy.md").write_text("# Policy\n\n## Retention\n\nKeep records for five years.\n")
    with services_for(settings, embedder) as services:
        assert services.ingestor().run([docs / "policy.md"]).status is JobStatus.SUCCEEDED
        assert services.catalog.index_embedder() == embedder.signature

    (docs / "other.md").write_text("# Other\n\n## Scope\n\nThis applies to every firm.\n")
    with services_for(settings, int8_embedder) as services:
        with pytest.raises(EmbedderMismatchError, match="regulus reindex"):
            services.retriever()
        with pytest.raises(EmbedderMismatchError):
            services.ingestor().run([docs / "other.md"])
        job = services.catalog.jobs(limit=1)[0]
        assert job.status is JobStatus.FAILED
        assert job.error is not None and "REGULUS_EMBED_BACKEND" in job.error
        assert services.catalog.document("other") is None

        rebuilt = services.ingestor().reindex()
        assert rebuilt.status is JobStatus.SUCCEEDED
        assert services.catalog.index_embedder() == int8_embedder.signature
        principal = services.anonymous_principal()
        passages = services.retriever().run("how long are records kept?", principal)
        assert passages and passages[0].chunk.document_id == "policy"

    with services_for(settings, embedder) as services, pytest.raises(EmbedderMismatchError):
        services.retriever()


class TestEmbedderTraining:
    """The fine-tuning script's batching and loss, on a toy batch (no corpus needed)."""

    @staticmethod
    def triple(question_id: str, positive: str, gold: set[str]) -> Triple:
        question = Question(question_id, "obliqa", f"question {question_id}", frozenset())
        return Triple(question, positive, f"negative of {question_id}", frozenset(gold))

    def test_a_batch_never_holds_one_question_twice(self) -> None:
        triples = [self.triple(q, f"{q}-{n}", {f"{q}-0", f"{q}-1"}) for q in "abc" for n in (0, 1)]
        made = batches(triples, size=4, rng=random.Random(0))
        assert sorted(t.positive for b in made for t in b) == sorted(t.positive for t in triples)
        for batch in made:
            ids = [t.question.id for t in batch]
            assert len(ids) == len(set(ids)) and len(batch) <= 4

    def test_a_passage_gold_for_the_question_is_not_its_negative(self, embedder: Embedder) -> None:
        model = SentenceTransformer(
            resolve_model_location(embedder.model_name),
            device="cpu",
            model_kwargs={"dtype": torch.float32},
        )
        shared = "Article 33 (1): notify the supervisory authority within 72 hours."
        batch = [
            self.triple("a", shared, {shared, "Article 34: communicate the breach."}),
            self.triple("b", "Article 34: communicate the breach.", {shared, "Article 34: ..."}),
        ]
        with torch.no_grad():
            masked = contrastive_loss(model, batch, scale=20.0)
            unmasked = contrastive_loss(
                model, [self.triple(t.question.id, t.positive, {t.positive}) for t in batch], 20.0
            )
        assert torch.isfinite(masked) and masked < unmasked
