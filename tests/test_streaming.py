"""POST /v1/query with "stream": true, the circuit breaker over HTTP, per-stage timings, and the
real OpenAI-compatible server: structured output, streaming and routing between two models."""

import json
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from core.models import ModelChoice
from core.pipeline import FinalEvent, PassagesEvent, TokenEvent
from generation.local_server import LOCAL_MODEL_ALIAS
from tests.conftest import (
    BREACH_QUESTION,
    free_port,
    make_settings,
    services_for,
    stop,
    wait_for_http,
)

STAGES = {"retrieval", "rerank", "generation", "verification"}


def read_events(lines: Iterable[str]) -> list[tuple[str, dict[str, object]]]:
    """Server-sent events as (name, decoded data), checking the wire format on the way."""
    events = []
    name: str | None = None
    for line in lines:
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            assert name is not None, "data before its event line"
            events.append((name, json.loads(line.removeprefix("data: "))))
            name = None
        else:
            assert line == "", f"unexpected line {line!r}"
    return events


def check_stream_shape(events: list[tuple[str, dict[str, object]]]) -> None:
    names = [name for name, _ in events]
    assert names[0] == "passages"
    assert names[-1] in ("final", "error")
    assert set(names[1:-1]) <= {"token"}
    assert names.count("final") + names.count("error") == 1


def streamed_text(events: list[tuple[str, dict[str, object]]]) -> str:
    return "".join(str(data["text"]) for name, data in events if name == "token")


@pytest.fixture
def client(ingested_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(ingested_dir))) as test_client:
        yield test_client


def stream_query(client: TestClient, **body: object) -> list[tuple[str, dict[str, object]]]:
    with client.stream("POST", "/v1/query", json={**body, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return read_events(response.iter_lines())


@pytest.mark.integration
class TestStreamingRoute:
    def test_extractive_stream_ends_with_the_same_response_as_the_plain_route(
        self, client: TestClient
    ) -> None:
        events = stream_query(client, question=BREACH_QUESTION)
        plain = client.post("/v1/query", json={"question": BREACH_QUESTION}).json()
        check_stream_shape(events)
        final = events[-1][1]
        assert events[-1][0] == "final"
        assert streamed_text(events) == final["answer"]
        assert "72 hours" in str(final["answer"])
        assert events[0][1]["passages"] == plain["passages"] == final["passages"]
        for key in ("answer", "citations", "model", "sentences", "refused", "usage"):
            assert final[key] == plain[key], key
        assert set(plain["timings"]) == STAGES

    def test_model_server_down_streams_passages_then_an_error_event(
        self, ingested_dir: Path
    ) -> None:
        down = f"http://127.0.0.1:{free_port()}/v1"
        settings = make_settings(ingested_dir, llm_base_url=down, llm_max_retries=0)
        with TestClient(create_app(settings)) as client:
            events = stream_query(client, question=BREACH_QUESTION)
        check_stream_shape(events)
        assert any("Article 33" in p["section"] for p in events[0][1]["passages"])  # type: ignore[attr-defined]
        name, data = events[-1]
        assert name == "error"
        assert data["error"]["code"] == "model_unavailable"  # type: ignore[index]

    def test_malformed_stream_request_is_a_plain_422(self, client: TestClient) -> None:
        response = client.post("/v1/query", json={"question": "", "stream": True})
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "invalid_request"

    def test_unknown_model_choice_is_refused(self, client: TestClient) -> None:
        response = client.post("/v1/query", json={"question": "q", "model": "gpt-9"})
        assert response.status_code == 422
        assert "model: Input should be 'auto', 'cheap' or 'premium'" in response.json()["error"][
            "message"
        ]


@pytest.mark.integration
class TestCircuitBreakerOverHttp:
    def test_after_consecutive_failures_requests_fail_fast_with_503(
        self, ingested_dir: Path
    ) -> None:
        down = f"http://127.0.0.1:{free_port()}/v1"
        settings = make_settings(
            ingested_dir,
            llm_base_url=down,
            llm_max_retries=0,
            llm_breaker_failures=2,
            llm_breaker_cooldown_s=300,
        )
        with TestClient(create_app(settings)) as client:
            responses = [
                client.post("/v1/query", json={"question": BREACH_QUESTION}) for _ in range(3)
            ]
        assert [r.status_code for r in responses] == [503, 503, 503]
        assert all(r.json()["error"]["code"] == "model_unavailable" for r in responses)
        assert "circuit open" not in responses[1].json()["error"]["message"]
        assert "circuit open" in responses[2].json()["error"]["message"]
        assert responses[2].json()["passages"], "the passages still come back"


@pytest.mark.integration
class TestPipelineTimings:
    def test_run_and_stream_record_every_stage(self, ingested_dir: Path, embedder: object) -> None:
        with services_for(make_settings(ingested_dir), embedder) as services:  # type: ignore[arg-type]
            pipeline = services.query_pipeline()
            principal = services.anonymous_principal()
            result = pipeline.run(BREACH_QUESTION, principal)
            events = list(pipeline.stream(BREACH_QUESTION, principal))
        assert set(result.timings) == STAGES
        assert all(ms >= 0 for ms in result.timings.values())
        assert isinstance(events[0], PassagesEvent) and isinstance(events[-1], FinalEvent)
        assert all(isinstance(event, TokenEvent) for event in events[1:-1])
        assert set(events[-1].result.timings) == STAGES
        assert events[-1].result.answer == result.answer
