import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from core.models import Role
from generation.local_server import LOCAL_MODEL_ALIAS
from tests.helpers import (
    BREACH_QUESTION,
    bearer,
    client_for,
    free_port,
    make_settings,
    new_key,
    stop,
    wait_for_http,
)


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
        # The search's 2, then at most REGULUS_EXPAND_MAX_ADDED (3) passages that they cite.
        assert 2 <= len(body["passages"]) <= 2 + 3

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
        key = new_key(make_settings(ingested_dir))
        env = {
            "PATH": "/usr/bin:/bin",
            "HF_HUB_OFFLINE": "1",
            "REGULUS_DATA_DIR": str(ingested_dir),
            "REGULUS_LLM_BASE_URL": llm_server,
            "REGULUS_LLM_MODEL": LOCAL_MODEL_ALIAS,
            "REGULUS_LLM_MAX_TOKENS": "64",
            "REGULUS_TOP_K": "3",
            "REGULUS_LLM_TIMEOUT_S": "300",
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "api.cli.main", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_http(f"http://127.0.0.1:{port}/healthz", server)
            response = httpx.post(
                f"http://127.0.0.1:{port}/v1/query",
                json={"question": BREACH_QUESTION},
                headers=bearer(key),
                timeout=600,
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


def wait_for_job(client: TestClient, job_id: str, timeout_s: float = 120) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/v1/ingest/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job  # type: ignore[no-any-return]
        time.sleep(0.2)
    raise TimeoutError(f"job {job_id} still running")


@pytest.mark.integration
class TestIngestAndDocumentRoutes:
    def test_admin_uploads_a_job_and_documents_follow_access(self, tmp_path: Path) -> None:
        manifest = '"*": {jurisdiction: ADGM}\nboard.md: {access_groups: [board]}\n'
        files = [
            ("files", ("rules.md", b"# Rules\n\nA firm must keep records for six years.\n")),
            ("files", ("board.md", b"# Board\n\nThe board approved the Zephyr merger.\n")),
            ("files", ("empty.txt", b"")),
            ("manifest", ("manifest.yaml", manifest.encode())),
        ]
        analyst = bearer(new_key(make_settings(tmp_path)))
        with client_for(tmp_path, Role.ADMIN) as client:
            created = client.post("/v1/ingest/jobs", files=files)
            assert created.status_code == 202
            job = wait_for_job(client, created.json()["job_id"])
            listed = client.get("/v1/documents", headers=analyst).json()
            jobs = client.get("/v1/ingest/jobs", params={"limit": 1}).json()
            board = client.get("/v1/documents/board", headers=analyst)
            rules = client.get("/v1/documents/rules", headers=analyst).json()
            answer = client.post(
                "/v1/query", json={"question": "What did the board approve?"}, headers=analyst
            )
            deleted = client.delete("/v1/documents/rules")
            after = client.get("/v1/documents/rules", headers=analyst)
        assert job["status"] == "completed_with_errors"
        assert job["counts"] == {
            "pending": 0,
            "ingested": 2,
            "unchanged": 0,
            "updated": 0,
            "failed": 1,
            "deleted": 0,
        }
        failed = [d for d in job["documents"] if d["status"] == "failed"]  # type: ignore[attr-defined]
        assert failed[0]["error"] == "empty.txt: no text found"
        assert [d["document_id"] for d in listed["items"]] == ["rules"]  # board.md is restricted
        assert (listed["total"], listed["limit"], listed["offset"]) == (1, 50, 0)
        assert [j["job_id"] for j in jobs["items"]] == [job["job_id"]]
        assert (jobs["total"], jobs["limit"]) == (1, 1)
        assert board.status_code == 404
        assert rules["metadata"]["jurisdiction"] == "ADGM"
        assert "Zephyr" not in answer.text
        assert deleted.status_code == 204
        assert after.status_code == 404

    @pytest.mark.parametrize(
        ("headers", "status", "code"),
        [
            ("analyst", 403, "forbidden"),
            ("evaluator", 403, "forbidden"),
            ({"Authorization": ""}, 401, "unauthorized"),
            ({"Authorization": "Bearer rk_wrong"}, 401, "invalid_credentials"),
            ({"Authorization": "Bearer not.a.jwt"}, 401, "invalid_credentials"),
        ],
    )
    def test_admin_routes_refuse_everyone_else(
        self, tmp_path: Path, headers: str | dict[str, str], status: int, code: str
    ) -> None:
        if isinstance(headers, str):
            headers = bearer(new_key(make_settings(tmp_path), Role(headers)))
        with TestClient(create_app(make_settings(tmp_path))) as client:
            responses = [
                client.get("/v1/ingest/jobs", headers=headers),
                client.post(
                    "/v1/ingest/jobs", files=[("files", ("a.md", b"# A"))], headers=headers
                ),
                client.delete("/v1/documents/anything", headers=headers),
            ]
        for response in responses:
            assert response.status_code == status
            assert response.json()["error"]["code"] == code

    def test_unknown_job_and_invalid_manifest(self, tmp_path: Path) -> None:
        with client_for(tmp_path, Role.ADMIN) as client:
            missing = client.get("/v1/ingest/jobs/nope")
            bad = client.post(
                "/v1/ingest/jobs",
                files=[
                    ("files", ("a.md", b"# A\n\nText.\n")),
                    ("manifest", ("m.json", b'{"a.md": {"titel": "x"}}')),
                ],
            )
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        assert bad.status_code == 422 and "invalid metadata" in bad.json()["error"]["message"]
