"""schemathesis against the live OpenAPI schema of `regulus serve` over a small real corpus, as an
admin (every route lets admins in): no 5xx, every response documented and matching its schema,
and every error a JSON error body."""

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
from core.models import Role
from ingest.pipeline import discover_files
from retrieval.embedder import Embedder
from tests.helpers import (
    INJECTION_CORPUS,
    free_port,
    make_settings,
    new_key,
    services_for,
    stop,
    wait_for_http,
)

EXAMPLES = int(os.environ.get("REGULUS_FUZZ_EXAMPLES", "30"))


def error_body_is_json(ctx: object, response: schemathesis.Response, case: object) -> None:
    """Every 4xx and 5xx carries `{"error": {"code", "message"}}`, never a plain-text page."""
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError as error:
        raise AssertionError(f"{response.status_code} with a body that is not JSON") from error
    detail = body.get("error") if isinstance(body, dict) else None
    assert isinstance(detail, dict) and {"code", "message"} <= detail.keys(), (
        f"{response.status_code} without the error body: {body!r}"
    )


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder
) -> Iterator[tuple[str, str]]:
    """The server's URL and an admin key for it."""
    root = tmp_path_factory.mktemp("fuzz")
    corpus = root / "corpus"
    shutil.copytree(INJECTION_CORPUS, corpus)
    settings = make_settings(root / "data")
    with services_for(settings, embedder) as services:
        services.ingestor().run(list(discover_files([corpus])))
    admin_key = new_key(settings, Role.ADMIN)
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("REGULUS_")},
        "REGULUS_DATA_DIR": str(root / "data"),
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
        yield f"http://127.0.0.1:{port}", admin_key
    finally:
        stop(server)


def _operations() -> list[tuple[str, str]]:
    """Every (path, method) in the schema, read from the app without starting it."""
    paths = create_app(make_settings(Path("unused"))).openapi()["paths"]
    return [(path, method) for path, item in paths.items() for method in item]


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize(("path", "method"), _operations())
def test_operation_conforms_to_its_schema(served: tuple[str, str], path: str, method: str) -> None:
    url, admin_key = served
    operation = schemathesis.openapi.from_url(f"{url}/openapi.json")[path][method.upper()]

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
            headers={"Authorization": f"Bearer {admin_key}"},
            timeout=120,
            checks=[
                not_a_server_error,
                status_code_conformance,
                content_type_conformance,
                response_schema_conformance,
                error_body_is_json,
            ],
        )

    conforms()
