"""schemathesis against the live OpenAPI schema of `regulus serve` over a small real corpus:
no 5xx, and every response documented and matching its schema."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.main import create_app
from ingest.pipeline import discover_files
from retrieval.embedder import Embedder
from tests.helpers import (
    INJECTION_CORPUS,
    free_port,
    make_settings,
    services_for,
    stop,
    wait_for_http,
)

ADMIN_TOKEN = "fuzz-admin-token"
EXAMPLES = int(os.environ.get("REGULUS_FUZZ_EXAMPLES", "30"))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Iterator[str]:
    root = tmp_path_factory.mktemp("fuzz")
    corpus = root / "corpus"
    shutil.copytree(INJECTION_CORPUS, corpus)
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
        [sys.executable, "-m", "api.cli.main", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", server)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(server)


def _operations() -> list[tuple[str, str]]:
    """Every (path, method) in the schema, read from the app without starting it."""
    paths = create_app(make_settings(Path("unused"))).openapi()["paths"]
    return [(path, method) for path, item in paths.items() for method in item]


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize(("path", "method"), _operations())
def test_operation_conforms_to_its_schema(served: str, path: str, method: str) -> None:
    operation = schemathesis.openapi.from_url(f"{served}/openapi.json")[path][method.upper()]

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    @given(case=operation.as_strategy())
    def conforms(case: schemathesis.Case) -> None:
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

    conforms()
