"""Access-control sweep over the identity and audit routes: a document restricted to the `board`
group must never reach an analyst outside it, whatever route they try."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from core.models import Role
from retrieval.embedder import Embedder
from tests.helpers import bearer, make_settings, new_key, services_for

SECRET = "Zephyr"


@pytest.fixture(scope="module")
def restricted_dir(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Path:
    docs = tmp_path_factory.mktemp("docs")
    (docs / "rules.md").write_text(
        "# Record keeping\n\nA firm must keep records for six years. Questions about records go "
        "to the data protection officer at dpo@example.com.\n"
    )
    (docs / "board.md").write_text(
        "# Board minutes\n\nThe board approved the Zephyr merger at its March meeting.\n"
    )
    (docs / "manifest.yaml").write_text("board.md: {access_groups: [board]}\n")
    data_dir = tmp_path_factory.mktemp("restricted")
    with services_for(make_settings(data_dir), embedder) as services:
        job = services.ingestor().run(sorted(docs.glob("*.md")))
    assert [d.error for d in job.documents] == [None, None]
    return data_dir


@pytest.mark.integration
def test_restricted_document_never_reaches_an_outsider(restricted_dir: Path) -> None:
    settings = make_settings(restricted_dir)
    outsiders = {
        "analyst": bearer(new_key(settings, Role.ANALYST, ["public"])),
        "evaluator": bearer(new_key(settings, Role.EVALUATOR, ["public", "legal"])),
    }
    insider = bearer(new_key(settings, Role.ANALYST, ["public", "board"]))
    admin = bearer(new_key(settings, Role.ADMIN, ["public"]))
    question = {"question": "What did the board approve at its March meeting?"}
    seen: dict[str, list[str]] = {}
    with TestClient(create_app(settings)) as client:
        inside = client.post("/v1/query", json=question, headers=insider).json()
        for name, headers in outsiders.items():
            bodies = []
            answer = client.post("/v1/query", json=question, headers=headers)
            assert answer.status_code == 200
            bodies.append(answer.text)
            filtered = client.post(
                "/v1/query",
                json={**question, "filters": {"document_ids": ["board"]}},
                headers=headers,
            )
            bodies.append(filtered.text)
            assert filtered.json()["passages"] == []
            streamed = client.post("/v1/query", json={**question, "stream": True}, headers=headers)
            assert streamed.status_code == 200 and "event: final" in streamed.text
            bodies.append(streamed.text)
            history = client.get("/v1/query/history", headers=headers)
            assert history.status_code == 200 and history.json()["total"] == 3
            bodies.append(history.text)
            bodies.append(client.get("/v1/usage/me", headers=headers).text)
            for path in (
                "/v1/audit",
                "/v1/audit/export",
                "/v1/audit/verify",
                "/v1/keys",
                "/v1/usage",
            ):
                refused = client.get(path, headers=headers)
                assert refused.status_code == 403, path
                bodies.append(refused.text)
            bodies.append(client.post("/v1/keys", json={"role": "admin"}, headers=headers).text)
            bodies.append(client.delete("/v1/keys/anything", headers=headers).text)
            seen[name] = bodies
        inside_streamed = client.post(
            "/v1/query", json={**question, "stream": True}, headers=insider
        ).text
        insider_history = client.get("/v1/query/history", headers=insider).json()
        export = client.get("/v1/audit/export", headers=admin).text
    # The content is there for those allowed to read it, so its absence below means something.
    assert SECRET in inside["answer"] and inside["citations"][0]["document_id"] == "board"
    final = json.loads(inside_streamed.split("event: final\ndata: ")[1].split("\n")[0])
    assert SECRET in final["answer"] and final["query_id"] == insider_history["items"][0]["id"]
    assert SECRET in insider_history["items"][0]["answer"]
    for name, bodies in seen.items():
        leaked = [body for body in bodies if SECRET in body or "board.md" in body]
        assert leaked == [], f"{name} saw restricted content: {leaked}"
    # Only admins read the audit log, and it records who saw what.
    rows = [json.loads(line) for line in export.splitlines()]
    queries = [r for r in rows if r["event"] == "query"]
    assert len(queries) == 8
    assert any(SECRET in (r["answer"] or "") for r in queries)


@pytest.mark.integration
def test_answers_with_personal_data_are_flagged_and_redacted_in_the_log(
    restricted_dir: Path,
) -> None:
    # The one-line fixture passage scores under the relevance gate, which is calibrated on whole
    # regulatory passages; this test is about personal data, so the gate is off.
    settings = make_settings(restricted_dir, relevance_threshold=None)
    analyst = bearer(new_key(settings, Role.ANALYST, ["public"]))
    admin = bearer(new_key(settings, Role.ADMIN, ["public"]))
    with TestClient(create_app(settings)) as client:
        response = client.post(
            "/v1/query",
            json={"question": "Whom do questions about records go to? I am bob@example.org"},
            headers=analyst,
        ).json()
        row = client.get("/v1/audit", params={"event": "query", "limit": 1}, headers=admin).json()[
            "items"
        ][0]
    assert "dpo@example.com" in response["answer"]
    assert response["pii"] == ["email"]
    assert row["id"] == response["query_id"]
    assert "dpo@example.com" not in row["answer"] and "[EMAIL]" in row["answer"]
    assert row["question"] == "Whom do questions about records go to? I am [EMAIL]"
    assert row["detail"]["pii_answer"] == ["email"]
