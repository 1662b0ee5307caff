"""Findings of the adversarial review (issue 20), API side: validation of odd input, bodies read
only after authentication, failed-authentication floods, prompt-injection rejections audited."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from core.models import Role
from retrieval.embedder import Embedder
from tests.helpers import bearer, make_settings, new_key, services_for


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Path:
    """A data folder with one short public rulebook."""
    docs = tmp_path_factory.mktemp("docs")
    (docs / "rules.md").write_text(
        "# Record keeping\n\nA firm must keep records of every transaction for six years.\n"
    )
    data_dir = tmp_path_factory.mktemp("small")
    with services_for(make_settings(data_dir), embedder) as services:
        job = services.ingestor().run([docs / "rules.md"])
    assert job.documents[0].error is None
    return data_dir


@pytest.fixture(scope="module")
def admin_client(small_dir: Path) -> Iterator[TestClient]:
    settings = make_settings(small_dir, rate_limit_per_minute=0)
    with TestClient(create_app(settings), headers=bearer(new_key(settings, Role.ADMIN))) as client:
        yield client


def _is_error_body(response: object) -> bool:
    body = response.json()  # type: ignore[attr-defined]
    return set(body) >= {"error"} and set(body["error"]) >= {"code", "message"}


@pytest.mark.integration
class TestValidation:
    @pytest.mark.parametrize("question", ["   ", "\n\t ", "\u00a0\u2003"])
    def test_a_blank_question_is_422_with_the_error_body(
        self, admin_client: TestClient, question: str
    ) -> None:
        response = admin_client.post("/v1/query", json={"question": question})
        assert response.status_code == 422, response.text
        assert _is_error_body(response) and response.json()["error"]["code"] == "invalid_request"

    @pytest.mark.parametrize(
        "path",
        [
            "/v1/documents",
            "/v1/ingest/jobs",
            "/v1/keys",
            "/v1/audit",
            "/v1/query/history",
            "/v1/eval/runs",
        ],
    )
    def test_a_huge_offset_is_422_not_500(self, admin_client: TestClient, path: str) -> None:
        response = admin_client.get(path, params={"offset": 10**20})
        assert response.status_code == 422, response.text
        assert _is_error_body(response)


@pytest.mark.integration
def test_documents_show_the_file_name_never_the_server_path(small_dir: Path) -> None:
    settings = make_settings(small_dir)
    with TestClient(create_app(settings), headers=bearer(new_key(settings))) as client:
        listed = client.get("/v1/documents").json()["items"]
        one = client.get("/v1/documents/rules").json()
    assert [d["source"] for d in listed] == ["rules.md"]
    assert one["source"] == "rules.md"
