"""schemathesis against the live OpenAPI schema of `regulus serve` over a small real corpus:
no 5xx, and every response documented and matching its schema."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ingest.pipeline import discover_files
from retrieval.embedder import Embedder
from tests.conftest import free_port, make_settings, services_for, stop, wait_for_http
from tests.test_injection import CORPUS

ADMIN_TOKEN = "fuzz-admin-token"
EXAMPLES = int(os.environ.get("REGULUS_FUZZ_EXAMPLES", "30"))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Iterator[str]:
    root = tmp_path_factory.mktemp("fuzz")
    corpus = root / "corpus"
    shutil.copytree(CORPUS, corpus)
    with services_for(make_settings(root / "data"), embedder) as services:
        services.ingestor().run(list(discover_files([corpus])))
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("REGULUS_")},
        "REGULUS_DATA_DIR": str(root / "data"),
        "REGULUS_ADMIN_TOKEN": ADMIN_TOKEN,
        "REGULUS_RATE_LIMIT_PER_MINUTE": "0",  # the fuzzer is one client sending hundreds
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "core.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", server)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(server)


@pytest.fixture(scope="module")
def api_schema(served: str) -> schemathesis.schemas.BaseSchema:
    return schemathesis.openapi.from_url(f"{served}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.slow
@pytest.mark.integration
@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_conforms_to_its_schema(case: schemathesis.Case) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=120,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
