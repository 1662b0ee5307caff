from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.cli import app
from core.settings import get_settings
from tests.conftest import BREACH_QUESTION


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, ingested_dir: Path) -> CliRunner:
    monkeypatch.setenv("REGULUS_DATA_DIR", str(ingested_dir))
    monkeypatch.delenv("REGULUS_LLM_BASE_URL", raising=False)
    get_settings.cache_clear()
    return CliRunner()


@pytest.mark.integration
class TestCli:
    def test_ask_prints_a_cited_answer(self, runner: CliRunner) -> None:
        result = runner.invoke(app, ["ask", BREACH_QUESTION], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        assert "72 hours" in result.output
        assert "Article 33 — Notification of a personal data breach" in result.output
        assert "model: extractive" in result.output

    def test_ingest_skips_unchanged_documents(self, runner: CliRunner) -> None:
        from tests.conftest import EPRIVACY

        result = runner.invoke(app, ["ingest", str(EPRIVACY)], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        assert "0 ingested, 1 unchanged, 0 failed" in result.output
