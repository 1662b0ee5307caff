"""Models assembled outside the repository (embedders, GGUF weights): where they live, and what
every installer of them shares: pip, checksums, one error type."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

MODELS_DIR_ENV = "REGULUS_MODELS_DIR"
DEFAULT_MODELS_DIR = Path("~/.cache/regulus/models")


class InstallError(RuntimeError):
    """A model could not be installed; nothing half-made was left in the models folder."""


def models_dir() -> Path:
    """Where installed models live: `REGULUS_MODELS_DIR`, default `~/.cache/regulus/models`."""
    return Path(os.environ.get(MODELS_DIR_ENV) or DEFAULT_MODELS_DIR).expanduser()


def file_sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def run_pip(arguments: Sequence[str], what: str) -> None:
    """`python -m pip ARGUMENTS`; an InstallError with pip's last lines when it fails."""
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", *arguments]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise InstallError(f"pip could not install {what}:\n{tail}")
