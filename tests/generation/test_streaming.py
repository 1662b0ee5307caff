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
from core.models import Answer, RetrievedChunk, StructuredOutput
from generation.base import ModelUnavailableError
from generation.llm import OpenAICompatibleGenerator
from generation.local_server import LOCAL_MODEL_ALIAS, server_command
from generation.pipeline import FinalEvent, PassagesEvent, TokenEvent
from generation.routing import PriceTable
from generation.structured import render
from tests.helpers import (
    BREACH_QUESTION,
    bearer,
    free_port,
    make_settings,
    new_key,
    retrieved,
    services_for,
    stop,
    wait_for_http,
)

STAGES = {"analysis", "retrieval", "rerank", "expansion", "relevance", "generation", "verification"}


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
    settings = make_settings(ingested_dir)
    with TestClient(create_app(settings), headers=bearer(new_key(settings))) as test_client:
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
        with TestClient(create_app(settings), headers=bearer(new_key(settings))) as client:
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
        assert (
            "model: Input should be 'auto', 'cheap' or 'premium'"
            in response.json()["error"]["message"]
        )


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
        with TestClient(create_app(settings), headers=bearer(new_key(settings))) as client:
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


PREMIUM_ALIAS = "smollm2-premium"
PRICES = {LOCAL_MODEL_ALIAS: (0.1, 0.2), PREMIUM_ALIAS: (3.0, 15.0)}


def breach_passages() -> list[RetrievedChunk]:
    texts = [
        (
            "Article 33 — Notification of a personal data breach to the supervisory authority",
            "In the case of a personal data breach, the controller shall without undue delay and, "
            "where feasible, not later than 72 hours after having become aware of it, notify the "
            "personal data breach to the supervisory authority.",
        ),
        (
            "Article 34 — Communication of a personal data breach to the data subject",
            "When the personal data breach is likely to result in a high risk to the rights and "
            "freedoms of natural persons, the controller shall communicate the personal data "
            "breach to the data subject without undue delay.",
        ),
    ]
    return [
        retrieved(f"c{n}", text, section, score=1.0, page=n)
        for n, (section, text) in enumerate(texts, start=1)
    ]


def check_answer(answer: Answer, passages: list[RetrievedChunk], model: str) -> None:
    """What holds whatever the small model writes: numbers point at given passages, the text is
    the sentences with their markers, tokens are counted and priced."""
    assert answer.model == model
    assert answer.sentences, "at least one sentence"
    for sentence in answer.sentences:
        assert set(sentence.citations) <= set(range(1, len(passages) + 1))
    assert answer.text == render(answer.sentences)
    assert {c.n for c in answer.citations} == {n for s in answer.sentences for n in s.citations}
    assert answer.usage is not None and answer.usage.model == model
    usage = answer.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.cost_usd == pytest.approx(
        PriceTable(PRICES).cost(model, usage.prompt_tokens, usage.completion_tokens)
    )


def local_generator(url: str, structured: StructuredOutput) -> OpenAICompatibleGenerator:
    return OpenAICompatibleGenerator(
        base_url=url,
        model=LOCAL_MODEL_ALIAS,
        max_tokens=96,
        timeout_s=300,
        structured=structured,
        prices=PriceTable(PRICES),
    )


@pytest.mark.slow
@pytest.mark.integration
class TestStructuredOutputOnARealServer:
    """llama.cpp-python's server (SmolLM2): json_object with a schema is constrained by a grammar;
    json_schema is not supported there, which `auto` detects."""

    def test_json_object_output_is_parsed_into_cited_sentences(self, llm_server: str) -> None:
        passages = breach_passages()
        generator = local_generator(llm_server, StructuredOutput.JSON_OBJECT)
        check_answer(generator.generate(BREACH_QUESTION, passages), passages, LOCAL_MODEL_ALIAS)

    def test_auto_falls_back_from_json_schema_and_remembers(self, llm_server: str) -> None:
        passages = breach_passages()
        generator = local_generator(llm_server, StructuredOutput.AUTO)
        assert generator.structured is StructuredOutput.JSON_SCHEMA
        answer = generator.generate(BREACH_QUESTION, passages)
        assert generator.structured is StructuredOutput.JSON_OBJECT
        check_answer(answer, passages, LOCAL_MODEL_ALIAS)

    def test_json_schema_alone_is_refused_by_this_server(self, llm_server: str) -> None:
        generator = local_generator(llm_server, StructuredOutput.JSON_SCHEMA)
        with pytest.raises(ModelUnavailableError):
            generator.generate(BREACH_QUESTION, breach_passages())

    def test_streamed_json_yields_decoded_text_then_the_answer(self, llm_server: str) -> None:
        passages = breach_passages()
        generator = local_generator(llm_server, StructuredOutput.JSON_OBJECT)
        items = list(generator.stream(BREACH_QUESTION, passages))
        pieces, answer = items[:-1], items[-1]
        assert isinstance(answer, Answer) and all(isinstance(p, str) for p in pieces)
        assert len(pieces) >= 2, "text arrives in several pieces"
        assert not any('"sentences"' in str(p) for p in pieces), "no JSON reaches the reader"
        assert answer.usage is not None and answer.usage.completion_tokens > 0
        assert answer.sentences and answer.text == render(answer.sentences)


@pytest.fixture(scope="module")
def keyed_servers() -> Iterator[dict[str, str]]:
    """Two SmolLM2 servers, cheap and premium, each accepting only its own API key: a request
    routed to the wrong one fails instead of passing unnoticed."""
    processes, urls = [], {}
    try:
        for alias in (LOCAL_MODEL_ALIAS, PREMIUM_ALIAS):
            port = free_port()
            command = server_command("127.0.0.1", port, alias=alias)
            processes.append(
                subprocess.Popen(
                    [*command, "--api_key", f"{alias}-key"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            urls[alias] = f"http://127.0.0.1:{port}/v1"
        for process, (alias, url) in zip(processes, urls.items(), strict=True):
            auth = {"Authorization": f"Bearer {alias}-key"}
            wait_for_http(f"{url}/models", process, headers=auth)
        yield urls
    finally:
        for process in processes:
            stop(process)


@pytest.mark.slow
@pytest.mark.integration
class TestServedWithRealModels:
    def test_stream_over_http_while_the_server_keeps_answering(
        self, ingested_dir: Path, llm_server: str
    ) -> None:
        """`regulus serve` in its own process streams tokens from the model server; a health
        check answers mid-stream (the stream does not hold the event loop)."""
        port = free_port()
        env = {
            "PATH": "/usr/bin:/bin",
            "HF_HUB_OFFLINE": "1",
            "REGULUS_DATA_DIR": str(ingested_dir),
            "REGULUS_LLM_BASE_URL": llm_server,
            "REGULUS_LLM_MODEL": LOCAL_MODEL_ALIAS,
            "REGULUS_LLM_MAX_TOKENS": "96",
            "REGULUS_TOP_K": "3",
            "REGULUS_LLM_TIMEOUT_S": "300",
            "REGULUS_LLM_PRICES": json.dumps(PRICES),
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "api.cli.main", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        health_mid_stream = None
        try:
            wait_for_http(f"{base}/healthz", server)
            body = {"question": BREACH_QUESTION, "stream": True}
            headers = bearer(new_key(make_settings(ingested_dir)))
            with httpx.stream(
                "POST", f"{base}/v1/query", json=body, headers=headers, timeout=600
            ) as response:
                assert response.status_code == 200
                lines = []
                for line in response.iter_lines():
                    lines.append(line)
                    if line.startswith("event: token") and health_mid_stream is None:
                        health_mid_stream = httpx.get(f"{base}/healthz", timeout=10).status_code
            events = read_events(lines)
        finally:
            stop(server)
        check_stream_shape(events)
        assert health_mid_stream == 200
        name, final = events[-1]
        assert name == "final", final
        assert len([n for n, _ in events if n == "token"]) >= 2
        assert streamed_text(events).strip()
        assert final["model"] == LOCAL_MODEL_ALIAS
        assert final["passages"] == events[0][1]["passages"]
        assert final["usage"]["completion_tokens"] > 0  # type: ignore[index]
        assert set(final["timings"]) == STAGES  # type: ignore[arg-type]

    def test_routing_picks_the_cheap_or_premium_server_by_the_rule(
        self, ingested_dir: Path, keyed_servers: dict[str, str]
    ) -> None:
        settings = make_settings(
            ingested_dir,
            llm_base_url=keyed_servers[LOCAL_MODEL_ALIAS],
            llm_model=LOCAL_MODEL_ALIAS,
            llm_api_key=f"{LOCAL_MODEL_ALIAS}-key",
            llm_premium_base_url=keyed_servers[PREMIUM_ALIAS],
            llm_premium_model=PREMIUM_ALIAS,
            llm_premium_api_key=f"{PREMIUM_ALIAS}-key",
            llm_max_retries=0,
            llm_prices=PRICES,
            llm_max_tokens=48,
            llm_timeout_s=300,
            top_k=2,
        )
        routine = {"question": BREACH_QUESTION}
        multi_part = {
            "question": "Within how many hours must a breach be notified? And to whom must it be "
            "communicated?"
        }
        with TestClient(create_app(settings), headers=bearer(new_key(settings))) as client:
            answers = {
                "routine": client.post("/v1/query", json=routine).json(),
                "multi-part": client.post("/v1/query", json=multi_part).json(),
                "asked premium": client.post(
                    "/v1/query", json={**routine, "model": "premium"}
                ).json(),
                "asked cheap": client.post(
                    "/v1/query", json={**multi_part, "model": "cheap"}
                ).json(),
            }
        used = {
            case: body["usage"]["model"] if "usage" in body else body
            for case, body in answers.items()
        }
        assert used == {
            "routine": LOCAL_MODEL_ALIAS,
            "multi-part": PREMIUM_ALIAS,
            "asked premium": PREMIUM_ALIAS,
            "asked cheap": LOCAL_MODEL_ALIAS,
        }
        for body in answers.values():
            usage = body["usage"]
            assert body["model"] == usage["model"]
            assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
            assert usage["cost_usd"] == pytest.approx(
                PriceTable(PRICES).cost(
                    usage["model"], usage["prompt_tokens"], usage["completion_tokens"]
                )
            )
