"""The analyst web page: its routes, and a real headless Chromium asking a real server.

The browser is Debian's `chromium` (`apt-get install -y chromium`; `make test` installs it when run
as root) driven by Playwright; Playwright's own browser download is never used. Without it the
browser tests skip locally and fail in CI.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from tests.helpers import BREACH_QUESTION, ROOT, make_settings, served_regulus

CHROMIUM = Path(os.environ.get("REGULUS_TEST_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = ROOT / "test-artifacts"


class TestWebRoutes:
    """The page and its files, without starting the services (no lifespan needed)."""

    @pytest.fixture
    def client(self, tmp_path: Path) -> TestClient:
        return TestClient(create_app(make_settings(tmp_path)))

    def test_page_is_served_with_a_strict_content_security_policy(self, client: TestClient) -> None:
        response = client.get("/")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert '<textarea id="question"' in response.text
        for name, kind in [("app.js", "javascript"), ("sse.js", "javascript"), ("app.css", "css")]:
            asset = client.get(f"/static/{name}")
            assert asset.status_code == 200
            assert kind in asset.headers["content-type"]

    def test_unknown_files_are_404_with_the_error_body(self, client: TestClient) -> None:
        for path in ["/static/nope.js", "/static/..%2Fmain.py", "/static/%2E%2E%2Fmain.py"]:
            response = client.get(path)
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "not_found"

    def test_page_routes_stay_out_of_the_api_schema(self, client: TestClient) -> None:
        paths = client.get("/openapi.json").json()["paths"]
        assert "/" not in paths
        assert not any(path.startswith("/static") for path in paths)


# Session scope: checked before the session-wide corpus is ingested, so a skip costs nothing.
@pytest.fixture(scope="session")
def chromium_path() -> Path:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = "playwright is not installed (pip install -e '.[dev]')"
    else:
        if CHROMIUM.exists():
            return CHROMIUM
        missing = f"no browser at {CHROMIUM} (apt-get install -y chromium)"
    if os.environ.get("CI"):
        pytest.fail(f"the browser test cannot run: {missing}")
    pytest.skip(f"browser test skipped: {missing}")


@pytest.fixture(scope="module")
def served(ingested_dir: Path) -> Iterator[str]:
    """`regulus serve` in its own process over GDPR and the ePrivacy Directive."""
    with served_regulus(ingested_dir, REGULUS_AUTH_ENABLED="false") as url:
        yield url


@pytest.fixture(scope="module")
def page(chromium_path: Path, served: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium_path), args=["--headless", "--no-sandbox"]
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(120_000)
            page.goto(served)
            yield page
        finally:
            browser.close()


@pytest.mark.slow
@pytest.mark.integration
class TestAnalystPageInChromium:
    def test_ask_see_the_cited_answer_and_open_the_passage(self, page: Any, served: str) -> None:
        expected = httpx.post(
            f"{served}/v1/query", json={"question": BREACH_QUESTION}, timeout=120
        ).json()
        article_33 = next(c for c in expected["citations"] if "Article 33" in c["section_path"])

        page.fill("#api-key", "analyst-key")
        page.click("#signin-button")
        page.wait_for_selector("#signout-button:visible")
        assert page.text_content("#signin-status") == "Signed in"

        page.fill("#question", BREACH_QUESTION)
        page.click("#ask-button")
        page.wait_for_selector("#answer button.cite")
        assert page.get_attribute("#answer", "aria-busy") == "false"
        assert page.text_content("#answer-status") == "Answered"
        assert "72 hours" in page.inner_text("#answer")
        assert page.is_hidden("#refusal")
        assert "Model: extractive" in page.inner_text("#meta")

        page.click(f"#answer button.cite[data-n='{article_33['n']}'] >> nth=0")
        page.wait_for_selector("#passage:visible")
        assert page.inner_text("#passage-title") == article_33["document_title"]
        assert page.inner_text("#passage-section") == article_33["section_path"]
        assert page.inner_text("#passage-page") == str(article_33["page"] or "—")
        assert page.inner_text("#passage-text mark") == article_33["quote"]
        # Focus moves to the panel for keyboard and screen-reader users; Escape closes it.
        assert page.evaluate("document.activeElement.id") == "passage-heading"

        ARTIFACTS.mkdir(exist_ok=True)
        screenshot = ARTIFACTS / "web-answer.png"
        page.screenshot(path=str(screenshot), full_page=True)
        print(f"screenshot: {screenshot}")

        page.keyboard.press("Escape")
        assert page.is_hidden("#passage")
        assert page.evaluate("document.activeElement.dataset.n") == str(article_33["n"])

    def test_a_question_outside_the_filters_is_shown_as_refused(self, page: Any) -> None:
        page.fill("#question", BREACH_QUESTION)
        if not page.is_visible("#f-documents"):
            page.click("#filters summary")
        page.fill("#f-documents", "no-such-document")
        page.click("#ask-button")
        page.wait_for_selector("#refusal:visible")
        assert page.text_content("#answer-status") == "Not answered"
        assert page.inner_text("#sources-heading") == "Closest passages"
        assert page.inner_text("#answer") == ""
        page.fill("#f-documents", "")

    def test_errors_show_the_servers_message(self, page: Any) -> None:
        page.fill("#question", BREACH_QUESTION)
        # The browser's own checks would stop a top_k of 0; the server must explain it too.
        page.eval_on_selector("#f-top-k", "input => { input.min = ''; input.value = '0'; }")
        page.click("#ask-button")
        page.wait_for_selector("#error:visible")
        message = page.inner_text("#error")
        assert message.startswith("Error 422:")
        assert "top_k: Input should be greater than or equal to 1" in message
        page.fill("#f-top-k", "")

    def test_history_is_hidden_where_the_server_keeps_none(self, page: Any, served: str) -> None:
        history = httpx.get(f"{served}/v1/query/history")
        if history.status_code != 200 or not history.json()["items"]:
            assert page.is_hidden("#history")
        else:
            page.reload()
            page.wait_for_selector("#history-list button")
            page.click("#history-list button >> nth=0")
            assert page.input_value("#question")

    def test_verification_fields_are_rendered(self, page: Any) -> None:
        """The renderer alone, on a response with the fields verification and guards add."""
        passage = {
            "chunk_id": "gdpr-33",
            "document_id": "gdpr",
            "document_title": "GDPR",
            "section": "Article 33",
            "section_path": "Article 33 > (1)",
            "page": 52,
            "score": 0.9,
            "text": "The controller shall notify the breach not later than 72 hours after.",
        }
        response = {
            "answer": "Breaches are notified within 72 hours [1]. Fines are unlimited [2].",
            "citations": [{**passage, "n": 1, "quote": "not later than 72 hours"}],
            "passages": [{**passage, "n": 1}, {**passage, "n": 2, "chunk_id": "gdpr-83"}],
            "model": "smollm2-135m",
            "sentences": [
                {
                    "text": "Breaches are notified within 72 hours.",
                    "citations": [1],
                    "support": 0.93,
                    "supported": True,
                },
                {
                    "text": "Fines are unlimited.",
                    "citations": [2],
                    "support": 0.12,
                    "supported": False,
                    "check": "quantity",
                    "reason": "amount unlimited not in the cited passage (it says EUR 20 000 000)",
                },
            ],
            "support_score": 0.5,
            "refused": False,
            "usage": {
                "model": "smollm2-135m",
                "prompt_tokens": 812,
                "completion_tokens": 40,
                "cost_usd": 0.0,
            },
            "pii": ["email"],
        }
        page.evaluate("response => { resetResult(); renderAnswer(response); }", response)
        unsupported = page.locator("#answer .sentence.unsupported")
        assert unsupported.count() == 1
        assert "Fines are unlimited." in unsupported.inner_text()
        assert "Not supported by the cited passage (support 12%)" in unsupported.inner_text()
        reason = unsupported.locator(".reason")
        assert reason.inner_text().startswith("amount unlimited not in the cited passage")
        assert page.locator("#answer .sentence:not(.unsupported) .reason").count() == 0
        assert page.inner_text("#support").startswith("Verified support: 50%")
        assert "email" in page.inner_text("#pii")
        assert "812 prompt + 40 completion tokens" in page.inner_text("#meta")
        page.click("#answer button.cite[data-n='1']")
        assert page.inner_text("#passage-text mark") == "not later than 72 hours"
        assert page.inner_text("#passage-page") == "52"
        page.screenshot(path=str(ARTIFACTS / "web-verified.png"), full_page=True)

        page.evaluate(
            "response => renderAnswer(response)",
            {**response, "answer": "No.", "sentences": [], "citations": [], "refused": True},
        )
        assert page.is_visible("#refusal")
        assert page.inner_text("#sources-heading") == "Closest passages"
        assert page.locator("#sources button.source").count() == 2

    def test_event_stream_parser_handles_any_chunking(self, page: Any) -> None:
        """The SSE reader on chunks split inside CRLF, inside a UTF-8 character and mid-field."""
        events = page.evaluate(
            """async () => {
                const text = ': comment\\r\\nevent: passages\\r\\n'
                  + 'data: {"passages": []}\\r\\n\\r\\n'
                  + 'event: token\\ndata: {"text": "72 h€"}\\n\\n'
                  + 'event: final\\rdata: {"answer":\\rdata: "x"}\\r\\r'
                  + 'event: token\\ndata: unterminated';
                const bytes = new TextEncoder().encode(text);
                const at = (s) => new TextEncoder().encode(text.slice(0, text.indexOf(s))).length;
                // Between CR and LF, inside the 3-byte "€", after a lone CR, inside "data".
                const cuts = [at('\\nevent: passages'), at('€') + 1, at('data: {"answer"'),
                              at('ata: "x"'), bytes.length];
                const stream = new ReadableStream({
                    start(controller) {
                        let from = 0;
                        for (const cut of cuts) {
                            controller.enqueue(bytes.slice(from, cut));
                            from = cut;
                        }
                        controller.close();
                    },
                });
                const seen = [];
                await readServerSentEvents(stream, (type, data) => seen.push([type, data]));
                return seen;
            }"""
        )
        assert events == [
            ["passages", '{"passages": []}'],
            ["token", '{"text": "72 h€"}'],
            ["final", '{"answer":\n"x"}'],
        ]
