"""Serving without a model: the circuit breaker, structured-output parsing, stream decoding, the
routing rule, prices, settings and the compose file."""

import json
from pathlib import Path

import httpx
import pytest
import yaml

from core.models import AnswerSentence, ModelChoice, RetrievedChunk, StructuredOutput
from core.settings import Settings
from generation.base import ModelUnavailableError
from generation.breaker import BreakerState, CircuitBreaker
from generation.llm import OpenAICompatibleGenerator
from generation.routing import ModelRouter, PriceTable
from generation.structured import StreamDecoder, parse_answer, render
from tests.helpers import ROOT, free_port, retrieved


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestCircuitBreaker:
    def test_opens_after_consecutive_failures_and_refuses_during_cooldown(self) -> None:
        clock = FakeClock()
        breaker = CircuitBreaker(failure_threshold=3, cooldown_s=30, clock=clock)
        for _ in range(2):
            assert breaker.allow()
            breaker.record_failure()
        assert breaker.state is BreakerState.CLOSED
        assert breaker.allow()
        breaker.record_failure()
        assert breaker.state is BreakerState.OPEN
        assert not breaker.allow()
        clock.now += 29
        assert not breaker.allow()
        assert breaker.retry_in_s() == pytest.approx(1)

    def test_a_success_resets_the_count(self) -> None:
        breaker = CircuitBreaker(failure_threshold=2, cooldown_s=30, clock=FakeClock())
        breaker.record_failure()
        breaker.record_success()
        breaker.record_failure()
        assert breaker.state is BreakerState.CLOSED

    def test_half_open_lets_one_trial_through_and_its_outcome_decides(self) -> None:
        clock = FakeClock()
        breaker = CircuitBreaker(failure_threshold=1, cooldown_s=10, clock=clock)
        breaker.record_failure()
        clock.now += 10
        assert breaker.state is BreakerState.HALF_OPEN
        assert breaker.allow()
        assert not breaker.allow(), "a second caller waits for the trial's outcome"
        breaker.record_failure()
        assert breaker.state is BreakerState.OPEN
        clock.now += 10
        assert breaker.allow()
        breaker.record_success()
        assert breaker.state is BreakerState.CLOSED
        assert breaker.allow() and breaker.allow()

    def test_rejects_invalid_configuration(self) -> None:
        with pytest.raises(ValueError):
            CircuitBreaker(failure_threshold=0)
        with pytest.raises(ValueError):
            CircuitBreaker(cooldown_s=0)

    def test_generator_fails_fast_once_the_circuit_is_open(self) -> None:
        """Against a real closed port: two failed calls open the circuit; the third is refused
        without a connection attempt, with a message saying so."""
        breaker = CircuitBreaker(failure_threshold=2, cooldown_s=60)
        generator = OpenAICompatibleGenerator(
            base_url=f"http://127.0.0.1:{free_port()}/v1",
            model="m",
            max_retries=0,
            breaker=breaker,
        )
        for _ in range(2):
            with pytest.raises(ModelUnavailableError, match="model server error"):
                generator.generate("q?", [passage(1, "d", "text")])
        assert breaker.state is BreakerState.OPEN
        with pytest.raises(ModelUnavailableError, match="circuit open"):
            generator.generate("q?", [passage(1, "d", "text")])


def sentences(*pairs: tuple[str, list[int]]) -> list[AnswerSentence]:
    return [AnswerSentence(text=text, citations=numbers) for text, numbers in pairs]


EXPECTED = sentences(
    ("The controller shall notify within 72 hours.", [1]),
    ("The processor informs the controller.", [1, 2]),
)
SCHEMA_JSON = json.dumps(
    {"sentences": [{"text": s.text, "citations": s.citations} for s in EXPECTED]}
)


class TestParseAnswer:
    def test_schema_json(self) -> None:
        assert parse_answer(SCHEMA_JSON) == EXPECTED

    def test_json_in_a_code_fence(self) -> None:
        assert parse_answer(f"```json\n{SCHEMA_JSON}\n```") == EXPECTED

    def test_json_cut_off_by_the_token_limit_keeps_what_was_written(self) -> None:
        cut = SCHEMA_JSON[: SCHEMA_JSON.index("informs") + len("informs")]
        parsed = parse_answer(cut)
        assert parsed[0] == EXPECTED[0]
        assert parsed[1].text == "The processor informs"

    def test_plain_text_with_markers(self) -> None:
        text = "The controller shall notify within 72 hours [1]. The processor informs [1][2]."
        assert parse_answer(text) == sentences(
            ("The controller shall notify within 72 hours.", [1]),
            ("The processor informs.", [1, 2]),
        )

    def test_plain_text_markers_after_the_full_stop(self) -> None:
        text = "The controller shall notify within 72 hours. [1] The processor informs. [1, 2]"
        assert parse_answer(text) == sentences(
            ("The controller shall notify within 72 hours.", [1]),
            ("The processor informs.", [1, 2]),
        )

    def test_markers_inside_json_text_and_string_numbers_are_merged(self) -> None:
        raw = json.dumps({"sentences": [{"text": "Notify in 72 hours [2].", "citations": ["1"]}]})
        assert parse_answer(raw) == sentences(("Notify in 72 hours.", [2, 1]))

    def test_other_json_shapes_fall_back_to_their_text(self) -> None:
        raw = json.dumps({"answer": "Notify in 72 hours. [1]"})
        assert parse_answer(raw) == sentences(("Notify in 72 hours.", [1]))

    def test_render_puts_markers_after_each_sentence(self) -> None:
        assert render(EXPECTED) == (
            "The controller shall notify within 72 hours. [1] "
            "The processor informs the controller. [1][2]"
        )


class TestStreamDecoder:
    @pytest.mark.parametrize("step", [1, 3, 17])
    def test_json_streamed_in_pieces_reads_as_the_final_answer(self, step: int) -> None:
        decoder = StreamDecoder(json_output=True)
        shown = ""
        for start in range(0, len(SCHEMA_JSON), step):
            delta = decoder.feed(SCHEMA_JSON[start : start + step])
            assert "{" not in delta and '"' not in delta, "no JSON syntax reaches the reader"
            shown += delta
        shown += decoder.finish()
        assert shown == render(parse_answer(decoder.raw))

    def test_markers_wait_until_the_citation_list_is_complete(self) -> None:
        decoder = StreamDecoder(json_output=True)
        shown = decoder.feed('{"sentences": [{"text": "Notify.", "citations": [1')
        shown += decoder.feed("2")
        assert shown == "Notify."
        shown += decoder.feed(']}, {"text": "Then')
        assert shown == "Notify. [12] Then"

    def test_text_mode_passes_deltas_through(self) -> None:
        decoder = StreamDecoder(json_output=False)
        assert decoder.feed("Notify [1]") == "Notify [1]"
        assert decoder.finish() == ""


def passage(number: int, document_id: str, text: str = "x") -> RetrievedChunk:
    return retrieved(f"c{number}", text, "s", document_id, score=1.0)


ONE_DOCUMENT = [passage(1, "gdpr"), passage(2, "gdpr")]


class TestModelRouter:
    router = ModelRouter(min_documents=3, long_question_words=40)

    @pytest.mark.parametrize(
        ("question", "reason"),
        [
            ("What is personal data? Who is a controller?", "multi-part question"),
            ("List (a) the deadline and (b) the recipient of a breach notice.", "enumerated parts"),
            ("State the deadline; name the recipient; give the legal basis.", "enumerated parts"),
            ("How does Article 33 interplay with Article 34 of the GDPR?", "cross-reference"),
            ("What is the difference between a controller and a processor?", "cross-reference"),
            (" ".join(["word"] * 40) + "?", "long question"),
        ],
    )
    def test_complex_questions_go_to_premium(self, question: str, reason: str) -> None:
        route = self.router.run(question, ONE_DOCUMENT)
        assert route.premium and route.reason.startswith(reason)

    def test_passages_from_many_documents_go_to_premium(self) -> None:
        passages = [passage(1, "gdpr"), passage(2, "eprivacy"), passage(3, "nist")]
        route = self.router.run("What must be notified?", passages)
        assert route.premium and route.reason == "passages span 3 documents"

    def test_routine_questions_go_to_cheap(self) -> None:
        route = self.router.run("Within how many hours must a breach be notified?", ONE_DOCUMENT)
        assert not route.premium and route.reason == "routine question"

    def test_the_caller_can_choose(self) -> None:
        hard = "Compare Article 33 and Article 34? And what else?"
        assert not self.router.run(hard, ONE_DOCUMENT, ModelChoice.CHEAP).premium
        assert self.router.run("Hours?", ONE_DOCUMENT, ModelChoice.PREMIUM).premium

    def test_rejects_invalid_configuration(self) -> None:
        with pytest.raises(ValueError):
            ModelRouter(min_documents=1)


class TestPrices:
    def test_cost_per_million_tokens(self) -> None:
        table = PriceTable({"small": (0.15, 0.60)})
        assert table.cost("small", 2_000_000, 500_000) == pytest.approx(0.6)
        assert table.cost("unlisted", 1000, 1000) == 0.0

    def test_settings_read_the_price_table_from_json(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("REGULUS_LLM_PRICES", '{"small": [0.15, 0.6], "big": [3, 15]}')
        monkeypatch.setenv("REGULUS_LLM_STRUCTURED", "json_object")
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
        assert settings.llm_prices == {"small": (0.15, 0.6), "big": (3.0, 15.0)}
        assert settings.llm_structured == "json_object"

    def test_negative_prices_are_refused(self) -> None:
        with pytest.raises(ValueError):
            PriceTable({"m": (-1.0, 0.0)})


class TestComposeFile:
    def test_vllm_service_serves_the_api_with_caching_chunked_prefill_and_guided_decoding(
        self,
    ) -> None:
        compose = yaml.safe_load(Path(ROOT / "docker-compose.yml").read_text())
        vllm = compose["services"]["vllm"]
        api = compose["services"]["api"]
        assert vllm["image"].startswith("vllm/vllm-openai:")
        flags = " ".join(vllm["command"])
        for flag in (
            "--model=${VLLM_MODEL",
            "--max-model-len=${VLLM_MAX_MODEL_LEN",
            "--enable-prefix-caching",
            "--enable-chunked-prefill",
            "--structured-outputs-config.backend=",
        ):
            assert flag in flags
        devices = vllm["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"]
        assert "http://localhost:8000/health" in vllm["healthcheck"]["test"]
        assert api["environment"]["REGULUS_LLM_BASE_URL"] == "http://vllm:8000/v1"
        assert api["depends_on"]["vllm"]["condition"] == "service_healthy"


def completion(content: str) -> dict[str, object]:
    return {
        "id": "c",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": content},
            }
        ],
        "usage": {"prompt_tokens": 120, "completion_tokens": 12, "total_tokens": 132},
    }


class TestClientRetries:
    """The openai client's own retries, seen from the generator (transport faked at the HTTP
    level; the server behaviour under test is the client's)."""

    def scripted(self, *steps: int | Exception) -> tuple[httpx.Client, list[int]]:
        calls: list[int] = []

        def handler(request: httpx.Request) -> httpx.Response:
            step = steps[len(calls)]
            calls.append(1)
            if isinstance(step, Exception):
                raise step
            if step != 200:
                return httpx.Response(step, headers={"retry-after-ms": "1"}, json={"error": {}})
            body = {"sentences": [{"text": "Notify within 72 hours.", "citations": [1]}]}
            return httpx.Response(200, json=completion(json.dumps(body)))

        return httpx.Client(transport=httpx.MockTransport(handler)), calls

    @pytest.mark.parametrize(
        "failure", [429, 500, 503, httpx.ConnectError("refused"), httpx.ReadTimeout("slow")]
    )
    def test_transient_failures_are_retried(self, failure: int | Exception) -> None:
        client, calls = self.scripted(failure, failure, 200)
        generator = OpenAICompatibleGenerator(
            base_url="http://model/v1",
            model="m",
            max_retries=2,
            structured=StructuredOutput.JSON_SCHEMA,
            prices=PriceTable({"m": (1.0, 2.0)}),
            http_client=client,
        )
        answer = generator.generate("q?", [passage(1, "gdpr", "Notify within 72 hours.")])
        assert len(calls) == 3
        assert answer.text == "Notify within 72 hours. [1]"
        assert answer.usage is not None
        assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (120, 12)
        assert answer.usage.cost_usd == pytest.approx((120 * 1 + 12 * 2) / 1e6)

    def test_client_errors_are_not_retried_and_do_not_open_the_circuit(self) -> None:
        client, calls = self.scripted(400, 200)
        breaker = CircuitBreaker(failure_threshold=1)
        generator = OpenAICompatibleGenerator(
            base_url="http://model/v1",
            model="m",
            structured=StructuredOutput.TEXT,
            breaker=breaker,
            http_client=client,
        )
        with pytest.raises(ModelUnavailableError):
            generator.generate("q?", [passage(1, "gdpr")])
        assert len(calls) == 1
        assert breaker.state is BreakerState.CLOSED

    def test_auto_moves_to_the_next_format_the_server_accepts_and_stays_there(self) -> None:
        formats: list[object] = []

        def handler(request: httpx.Request) -> httpx.Response:
            fmt = json.loads(request.content).get("response_format")
            formats.append(fmt["type"] if fmt else None)
            if fmt and fmt["type"] == "json_schema":
                return httpx.Response(400, json={"error": {"message": "unsupported"}})
            return httpx.Response(200, json=completion("Notify within 72 hours [1]."))

        generator = OpenAICompatibleGenerator(
            base_url="http://model/v1",
            model="m",
            http_client=httpx.Client(transport=httpx.MockTransport(handler)),
        )
        for _ in range(2):
            answer = generator.generate("q?", [passage(1, "gdpr")])
            assert answer.text == "Notify within 72 hours. [1]"
        assert formats == ["json_schema", "json_object", "json_object"]
        assert generator.structured is StructuredOutput.JSON_OBJECT
