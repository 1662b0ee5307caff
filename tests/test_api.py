import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from generation.local_server import LOCAL_MODEL_ALIAS
from tests.conftest import BREACH_QUESTION, free_port, make_settings, stop, wait_for_http


def client_for(data_dir: Path, **settings: object) -> TestClient:
    return TestClient(create_app(make_settings(data_dir, **settings)))


@pytest.fixture
def client(ingested_dir: Path) -> Iterator[TestClient]:
    with client_for(ingested_dir) as test_client:
        yield test_client


@pytest.mark.integration
class TestQueryRoute:
    def test_breach_question_cites_article_33(self, client: TestClient) -> None:
        response = client.post("/v1/query", json={"question": BREACH_QUESTION})
        assert response.status_code == 200
        body = response.json()
        assert body["model"] == "extractive"
        assert "72 hours" in body["answer"]
        cited_sections = [c["section"] for c in body["citations"]]
        assert any(
            "Article 33 — Notification of a personal data breach" in s for s in cited_sections
        )
        passages = {p["n"]: p for p in body["passages"]}
        for citation in body["citations"]:
            cited = passages[citation["n"]]
            assert citation["chunk_id"] == cited["chunk_id"]
            assert citation["quote"] in cited["text"]
            assert citation["document_id"] == cited["document_id"]

    def test_top_k_limits_passages(self, client: TestClient) -> None:
        body = client.post("/v1/query", json={"question": BREACH_QUESTION, "top_k": 2}).json()
        assert len(body["passages"]) == 2

    @pytest.mark.parametrize(
        ("payload", "message"),
        [
            ({}, "question: Field required"),
            ({"question": ""}, "question: String should have at least 1 character"),
            ({"question": "q", "top_k": 0}, "top_k: Input should be greater than or equal to 1"),
            ({"question": "q", "top_k": "many"}, "top_k: Input should be a valid integer"),
        ],
    )
    def test_malformed_requests_get_422_with_a_clear_message(
        self, client: TestClient, payload: dict[str, object], message: str
    ) -> None:
        response = client.post("/v1/query", json=payload)
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["code"] == "invalid_request"
        assert message in error["message"]

    def test_healthz_and_docs(self, client: TestClient) -> None:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/docs").status_code == 200
        assert "/v1/query" in client.get("/openapi.json").json()["paths"]

    def test_unreachable_model_server_gives_503_with_passages(self, ingested_dir: Path) -> None:
        down = f"http://127.0.0.1:{free_port()}/v1"
        with client_for(ingested_dir, llm_base_url=down, llm_max_retries=0) as client:
            response = client.post("/v1/query", json={"question": BREACH_QUESTION})
        assert response.status_code == 503
        body = response.json()
        assert body["error"]["code"] == "model_unavailable"
        assert any("Article 33" in p["section"] for p in body["passages"])


@pytest.mark.slow
@pytest.mark.integration
class TestServedOverHttp:
    def test_llm_answer_over_a_real_http_server(self, ingested_dir: Path, llm_server: str) -> None:
        """`regulus serve` in its own process, answering through the OpenAI-compatible server."""
        port = free_port()
        env = {
            "PATH": "/usr/bin:/bin",
            "HF_HUB_OFFLINE": "1",
            "REGULUS_DATA_DIR": str(ingested_dir),
            "REGULUS_LLM_BASE_URL": llm_server,
            "REGULUS_LLM_MODEL": LOCAL_MODEL_ALIAS,
            "REGULUS_LLM_MAX_TOKENS": "96",
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "core.cli", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_http(f"http://127.0.0.1:{port}/healthz", server)
            response = httpx.post(
                f"http://127.0.0.1:{port}/v1/query", json={"question": BREACH_QUESTION}, timeout=120
            )
        finally:
            stop(server)
        assert response.status_code == 200
        body = response.json()
        assert body["model"] == LOCAL_MODEL_ALIAS
        assert body["answer"]
        assert any("Article 33" in p["section"] for p in body["passages"])
        passage_ids = {p["chunk_id"] for p in body["passages"]}
        assert {c["chunk_id"] for c in body["citations"]} <= passage_ids
