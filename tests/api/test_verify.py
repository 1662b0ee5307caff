"""`POST /v1/verify` over GDPR and ePrivacy in the embedded store, the shipped support model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.helpers import bearer, client_for, make_settings, new_key

SUPPORTED = (
    "The controller must notify a personal data breach to the supervisory authority "
    "within 72 hours."
)


@pytest.fixture(scope="module")
def client(ingested_dir: Path) -> Iterator[TestClient]:
    with client_for(ingested_dir) as test_client:
        yield test_client


@pytest.mark.integration
class TestVerifyRoute:
    def test_each_sentence_gets_a_verdict_and_its_passages(self, client: TestClient) -> None:
        wrong = SUPPORTED.replace("72 hours", "48 hours")
        response = client.post(
            "/v1/verify",
            json={
                "sentences": [
                    {"text": SUPPORTED, "document_id": "gdpr", "section": "Article 33"},
                    {"text": wrong, "document_id": "gdpr", "section": "Article 33"},
                    {"text": SUPPORTED},
                ]
            },
        )
        assert response.status_code == 200
        body = response.json()
        right, changed, retrieved = body["sentences"]
        assert right["supported"] is True and right["reason"] is None
        assert 0 < right["support"] <= 1 and right["check"] in ("model", "quoted")
        assert all("Article 33" in p["section"] for p in right["passages"])
        assert changed["supported"] is False and changed["check"] == "quantity"
        assert changed["reason"] == "duration 48 hours not in the cited passage (it says 72 hours)"
        assert retrieved["supported"] is True
        (n,) = retrieved["citations"]
        assert "Article 33" in retrieved["passages"][n - 1]["section"]
        assert body["support_score"] == pytest.approx(2 / 3)

    @pytest.mark.parametrize(
        ("sentence", "status", "message"),
        [
            ({"text": SUPPORTED, "document_id": "nope"}, 404, "no document 'nope'"),
            (
                {"text": SUPPORTED, "document_id": "gdpr", "section": "Article 330"},
                404,
                "no section 'Article 330' in document 'gdpr'",
            ),
            ({"text": SUPPORTED, "section": "Article 33"}, 422, "a section needs its document_id"),
            ({"text": ""}, 422, "String should have at least 1 character"),
        ],
    )
    def test_bad_sentences_get_a_clear_error(
        self, client: TestClient, sentence: dict[str, str], status: int, message: str
    ) -> None:
        response = client.post("/v1/verify", json={"sentences": [sentence]})
        assert response.status_code == status
        assert message in response.json()["error"]["message"]

    def test_an_empty_draft_is_rejected(self, client: TestClient) -> None:
        response = client.post("/v1/verify", json={"sentences": []})
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "invalid_request"

    def test_a_document_the_caller_may_not_read_does_not_exist(
        self, client: TestClient, ingested_dir: Path
    ) -> None:
        outsider = bearer(new_key(make_settings(ingested_dir), groups=("board",)))
        for sentence in (
            {"text": SUPPORTED, "document_id": "gdpr", "section": "Article 33"},
            {"text": SUPPORTED, "document_id": "gdpr"},
        ):
            response = client.post("/v1/verify", json={"sentences": [sentence]}, headers=outsider)
            assert response.status_code == 404
            assert response.json()["error"] == {
                "code": "not_found",
                "message": "no document 'gdpr'",
            }

    def test_unknown_credentials_get_401(self, client: TestClient) -> None:
        response = client.post(
            "/v1/verify", json={"sentences": [{"text": SUPPORTED}]}, headers=bearer("rk_unknown")
        )
        assert response.status_code == 401
