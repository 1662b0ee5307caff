from pathlib import Path

import pytest

from core.models import EmbedBackend
from core.settings import Settings


class TestSettings:
    def test_reads_prefixed_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("REGULUS_DATA_DIR", "/srv/regulus")
        monkeypatch.setenv("REGULUS_LLM_BASE_URL", "http://vllm:8000/v1")
        monkeypatch.setenv("REGULUS_LLM_MODEL", "qwen")
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
        assert settings.data_dir == Path("/srv/regulus")
        assert settings.qdrant_path == Path("/srv/regulus/vectors")
        assert settings.llm_base_url == "http://vllm:8000/v1"
        assert settings.llm_model == "qwen"

    def test_blank_urls_mean_unset(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("REGULUS_LLM_BASE_URL", " ")
        monkeypatch.setenv("REGULUS_QDRANT_URL", "")
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
        assert settings.llm_base_url is None
        assert settings.qdrant_url is None

    def test_reads_dotenv_file(self, tmp_path: Path) -> None:
        env_file = tmp_path / ".env"
        env_file.write_text("REGULUS_EMBED_MODEL=/models/e5\nREGULUS_TOP_K=7\n")
        settings = Settings(_env_file=env_file)  # type: ignore[call-arg]
        assert settings.embed_model == "/models/e5"
        assert settings.top_k == 7

    def test_rejects_invalid_values(self) -> None:
        with pytest.raises(ValueError, match="top_k"):
            Settings(_env_file=None, top_k=0)  # type: ignore[call-arg]

    def test_support_backend_defaults_to_onnx_and_reads_the_environment(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        assert Settings(_env_file=None).support_backend is EmbedBackend.ONNX  # type: ignore[call-arg]
        monkeypatch.setenv("REGULUS_SUPPORT_BACKEND", "onnx-int8")
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
        assert settings.support_backend is EmbedBackend.ONNX_INT8
        monkeypatch.setenv("REGULUS_SUPPORT_BACKEND", "int4")
        with pytest.raises(ValueError, match="support_backend"):
            Settings(_env_file=None)  # type: ignore[call-arg]


def test_builtin_reranker_without_a_trained_model_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import retrieval.reranker

    monkeypatch.setattr(retrieval.reranker, "DEFAULT_RERANKER_PATH", tmp_path / "missing")
    with pytest.raises(ValueError, match="no project reranker"):
        retrieval.reranker.load_reranker(Settings(_env_file=None, reranker="builtin"))  # type: ignore[call-arg]
    assert retrieval.reranker.load_reranker(Settings(_env_file=None, reranker="none")) is None  # type: ignore[call-arg]
