"""Shared fixtures: real embedder, a real ingested store, a real OpenAI-compatible model server."""

from __future__ import annotations

import os

# Everything must work offline: a hub download attempt fails the test instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import sqlalchemy
from fastapi.testclient import TestClient

from api.main import create_app
from core.admin_cli import sql_stores
from core.models import Role
from core.pipeline import Services
from core.settings import Settings
from generation.local_server import server_command
from retrieval.embedder import Embedder

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "corpora" / "sample"
GDPR = SAMPLE / "gdpr_consolidated.xhtml"
EPRIVACY = SAMPLE / "eprivacy_consolidated.html"
NIST = SAMPLE / "sp800-53r5-moderate-catalog.json"
BREACH_QUESTION = (
    "Within how many hours must a personal data breach be notified to the supervisory authority?"
)


POSTGRES_URL = os.environ.get(
    "REGULUS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new empty database on the test server, dropped afterwards: runs in parallel never meet.

    Skips without a server, except under CI, which must test PostgreSQL.
    """
    server = sqlalchemy.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    name = f"regulus_test_{uuid.uuid4().hex[:12]}"
    try:
        with server.connect() as connection:
            connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    except sqlalchemy.exc.OperationalError:
        server.dispose()
        if os.environ.get("CI"):
            pytest.fail(f"CI must test PostgreSQL, but {POSTGRES_URL} is unreachable")
        pytest.skip(f"no PostgreSQL at {POSTGRES_URL}")
    try:
        url = sqlalchemy.make_url(POSTGRES_URL).set(database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        with server.connect() as connection:
            connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None (SQLite in the test's data folder) or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield None
    else:
        with fresh_postgres_database() as url:
            yield url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http(
    url: str,
    process: subprocess.Popen[bytes],
    timeout_s: float = 120,
    headers: dict[str, str] | None = None,
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode} before serving {url}")
        try:
            if httpx.get(url, timeout=2, headers=headers).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@contextmanager
def services_for(settings: Settings, embedder: Embedder) -> Iterator[Services]:
    services = Services(settings, embedder=embedder)
    try:
        yield services
    finally:
        services.close()


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return Embedder(Settings().embed_model)


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    """Settings for a test: its own data folder, no .env file or REGULUS_* variables leaking in."""
    return Settings(_env_file=None, data_dir=data_dir, **overrides)  # type: ignore[call-arg]


def new_key(
    settings: Settings, role: Role = Role.ANALYST, groups: Sequence[str] = ("public",)
) -> str:
    """A fresh API key in the settings' SQL store, as `regulus keys create` makes it."""
    with sql_stores(settings) as (keys, _):
        return keys.create(role, list(groups), name=f"test-{role.value}")[1]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def signed_in_client(settings: Settings, role: Role = Role.ANALYST) -> TestClient:
    """A client of the app that sends a fresh key of `role` with every request."""
    return TestClient(create_app(settings), headers=bearer(new_key(settings, role)))


@pytest.fixture(scope="session")
def ingested_dir(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Path:
    """A data folder holding GDPR and the ePrivacy Directive, ingested once for the session."""
    data_dir = tmp_path_factory.mktemp("ingested")
    with services_for(make_settings(data_dir), embedder) as services:
        job = services.ingestor().run([GDPR, EPRIVACY])
    assert [document.error for document in job.documents] == [None, None]
    return data_dir


@pytest.fixture(scope="session")
def llm_server() -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server with SmolLM2-135M: the CPU stand-in for vLLM."""
    port = free_port()
    process = subprocess.Popen(
        server_command("127.0.0.1", port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/v1/models", process)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop(process)
