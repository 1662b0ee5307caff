"""Shared fixtures: real embedder, a real ingested store, a real OpenAI-compatible model server."""

from __future__ import annotations

import os

# Everything must work offline: a hub download attempt fails the test instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from core.db import make_engine
from core.settings import Settings
from generation.local_server import server_command
from retrieval.embedder import Embedder
from tests.helpers import (
    EPRIVACY,
    GDPR,
    free_port,
    fresh_postgres_database,
    make_settings,
    services_for,
    stop,
    wait_for_http,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None (SQLite in the test's data folder) or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield None
    else:
        with fresh_postgres_database() as url:
            yield url


@pytest.fixture
def engine(database_url: str | None, tmp_path: Path) -> Iterator[Engine]:
    """The SQL store on SQLite or a fresh PostgreSQL database, migrated."""
    engine = make_engine(make_settings(tmp_path, database_url=database_url))
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return Embedder(Settings().embed_model)


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
