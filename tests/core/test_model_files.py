"""The models folder and the pieces the model installers share."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from core.model_files import MODELS_DIR_ENV, InstallError, file_sha256, models_dir, run_pip


class TestModelFiles:
    def test_the_models_folder_comes_from_the_environment(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path))
        assert models_dir() == tmp_path
        monkeypatch.delenv(MODELS_DIR_ENV)
        assert models_dir() == Path.home() / ".cache/regulus/models"

    def test_checksum_of_a_file(self, tmp_path: Path) -> None:
        path = tmp_path / "weights.bin"
        path.write_bytes(b"weights" * 1000)
        assert file_sha256(path) == hashlib.sha256(b"weights" * 1000).hexdigest()

    def test_a_failing_pip_says_what_it_could_not_install(self) -> None:
        with pytest.raises(InstallError, match=r"pip could not install the parts:\n"):
            run_pip(["install", "--no-index", "--quiet", "no-such-package-regulus"], "the parts")
