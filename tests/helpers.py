"""Helpers the tests share: paths of the sample corpus, settings, keys, clients, servers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import sqlalchemy
from fastapi.testclient import TestClient

from api.cli.admin import sql_stores
from api.main import create_app
from api.services import Services
from core.models import Chunk, RetrievedChunk, Role
from core.settings import Settings
from retrieval.embedder import Embedder

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
INJECTION_CORPUS = FIXTURES / "injection" / "corpus"
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
def served_regulus(data_dir: Path, **env: str) -> Iterator[str]:
    """`regulus serve` in its own process over `data_dir`, until the block ends: its base URL."""
    port = free_port()
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "REGULUS_DATA_DIR": str(data_dir),
        **env,
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "api.cli.main", "serve", "--port", str(port)],
        env=environment,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Loading the models takes minutes on a busy 2-core machine; this only guards a hang.
        wait_for_http(f"http://127.0.0.1:{port}/healthz", server, timeout_s=600)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(server)


@contextmanager
def services_for(settings: Settings, embedder: Embedder) -> Iterator[Services]:
    services = Services(settings, embedder=embedder)
    try:
        yield services
    finally:
        services.close()


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


def signed_in_client(
    settings: Settings, role: Role = Role.ANALYST, groups: Sequence[str] = ("public",)
) -> TestClient:
    """A client of the app that sends a fresh key of `role` and `groups` with every request."""
    return TestClient(create_app(settings), headers=bearer(new_key(settings, role, groups)))


def client_for(
    data_dir: Path,
    role: Role = Role.ANALYST,
    groups: tuple[str, ...] = ("public",),
    **settings: object,
) -> TestClient:
    """A signed-in client of an app on its own data folder, with these settings."""
    return signed_in_client(make_settings(data_dir, **settings), role, groups)


def retrieved(
    chunk_id: str,
    text: str = "text",
    section: str = "Article 1",
    document_id: str = "gdpr",
    score: float = 0.5,
    joins: str | None = None,
    **fields: object,
) -> RetrievedChunk:
    """A retrieved passage built in memory (titled after its document id unless given);
    `joins`: the passage a cross-reference brought it in for."""
    chunk = Chunk.model_validate(
        {
            "chunk_id": chunk_id,
            "document_id": document_id,
            "document_title": document_id.upper(),
            "section": section,
            "text": text,
            "source": f"{document_id}.txt",
            "content_hash": "h",
            **fields,
        }
    )
    return RetrievedChunk(chunk=chunk, score=score, joins=joins)


# GDPR Articles 33 and 5, as two retrieved passages.
BREACH_PASSAGES = [
    retrieved(
        "art-33",
        section="Article 33 — Notification of a personal data breach",
        score=0.6,
        text=(
            "1. In the case of a personal data breach, the controller shall without undue delay "
            "and, where feasible, not later than 72 hours after having become aware of it, notify "
            "the personal data breach to the supervisory authority.\n"
            "2. The processor shall notify the controller without undue delay after becoming "
            "aware of a personal data breach."
        ),
    ),
    retrieved(
        "art-5",
        section="Article 5 — Principles relating to processing of personal data",
        score=0.6,
        text=(
            "Personal data shall be processed lawfully, fairly and in a transparent manner in "
            "relation to the data subject."
        ),
    ),
]


# A small ObliQA-like corpus with cross-references between its rulebooks.
def passage(document: int, passage_id: str, text: str) -> dict[str, object]:
    key = f"{document}/{passage_id}"
    return {
        "ID": str(uuid.uuid5(uuid.NAMESPACE_URL, key)),
        "DocumentID": document,
        "PassageID": passage_id,
        "Passage": text,
    }


OBLIQA_LIKE_CORPUS = {
    1: [
        passage(
            1,
            "3.19.3",
            "Restrictions on distributions. Where an Authorised Person fails to meet the "
            "Combined Buffer Requirement, it must calculate the maximum distributable amount in "
            "accordance with Rule 3.19.6 and must apply for a waiver under BRD Rule 2.1.1.",
        ),
        passage(
            1,
            "3.19.6",
            "The figure is the sum of interim profits not included in Common Equity Tier 1, "
            "multiplied by the factor in the table below.",
        ),
        passage(
            1,
            "5.1.1",
            "An Authorised Person must notify the Regulator of any change to its auditor. "
            "Pursuant to section 117 of FSMR, the Regulator may direct a change of name.",
        ),
    ],
    2: [
        passage(
            2,
            "Part 11.Chapter 4.117.",
            "Power to make a Direction. If, in the opinion of the Regulator, the name of a Fund "
            "is undesirable or misleading, it may direct that it be changed.",
        ),
        passage(
            2,
            "Part 11.Chapter 4.118.",
            "Any person may appeal a decision of the Regulator to the Appeals Panel.",
        ),
    ],
    3: [
        passage(
            3,
            "2.1.1",
            "Board waivers. The board grants waivers of the Combined Buffer Requirement only to "
            "firms that present a recovery plan in person to the board.",
        ),
    ],
}
OBLIQA_LIKE_MAP = {
    "1": ["PRU_V1", "PRU", "Prudential Rules (PRU)"],
    "2": ["FSMR_V1", "FSMR", "FINANCIAL SERVICES AND MARKETS REGULATIONS 2015"],
    "3": ["BRD_V1", "BRD", "Board Rules (BRD)"],
}


def obliqa_ids(document: int, *passage_ids: str) -> list[str]:
    return [str(uuid.uuid5(uuid.NAMESPACE_URL, f"{document}/{p}")) for p in passage_ids]
