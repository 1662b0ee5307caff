"""The review flow of saved answers in a real headless Chromium against a real server: save an
answer, ingest an amended version of what it cites, see it flagged with the word-level diff,
re-ask it side by side, mark it reviewed, export it; and an outsider never sees a saved answer
that cites a document they may not read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.models import Role
from retrieval.embedder import Embedder
from tests.api.test_saved import (
    BILLS,
    BOARD_QUESTION,
    QUESTIONS,
    SECRET,
    _ingest_upload,
    second_version,
)
from tests.api.test_web import ARTIFACTS, chromium_path  # noqa: F401  (the browser fixture)
from tests.helpers import (
    EPRIVACY,
    bearer,
    make_settings,
    new_key,
    served_regulus,
    services_for,
)


@pytest.fixture(scope="module")
def keys(
    tmp_path_factory: pytest.TempPathFactory, embedder: Embedder
) -> tuple[Path, dict[str, str]]:
    """A data folder with the ePrivacy Directive and board minutes (board only), and keys."""
    docs = tmp_path_factory.mktemp("board-docs")
    (docs / "board.md").write_text(
        "# Board minutes\n\nThe board approved the Zephyr merger at its March meeting.\n"
    )
    (docs / "manifest.yaml").write_text("board.md: {access_groups: [board]}\n")
    data_dir = tmp_path_factory.mktemp("saved-web")
    settings = make_settings(data_dir)
    with services_for(settings, embedder) as services:
        job = services.ingestor().run([EPRIVACY, docs / "board.md"])
    assert [d.error for d in job.documents] == [None, None]
    return data_dir, {
        "analyst": new_key(settings, Role.ANALYST, ["public"]),
        "insider": new_key(settings, Role.ANALYST, ["public", "board"]),
        "admin": new_key(settings, Role.ADMIN, ["public"]),
    }


@pytest.fixture(scope="module")
def served(keys: tuple[Path, dict[str, str]]) -> Iterator[str]:
    """`regulus serve` in its own process, authentication on."""
    with served_regulus(keys[0]) as url:
        yield url


@pytest.mark.slow
@pytest.mark.integration
def test_review_a_flagged_saved_answer_in_chromium(
    chromium_path: Path,  # noqa: F811
    served: str,
    keys: tuple[Path, dict[str, str]],
    tmp_path: Path,
) -> None:
    from playwright.sync_api import sync_playwright

    key = keys[1]
    api = httpx.Client(base_url=served, timeout=300)
    # The insider saves an answer citing the board minutes and shares it with everyone (public).
    merger = api.post(
        "/v1/query", json={"question": BOARD_QUESTION}, headers=bearer(key["insider"])
    )
    shared = api.post(
        "/v1/saved",
        json={"query_id": merger.json()["query_id"], "title": "Merger", "shared_with": ["public"]},
        headers=bearer(key["insider"]),
    )
    assert shared.status_code == 201 and SECRET in shared.text

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium_path), args=["--headless", "--no-sandbox"]
        )
        try:
            page: Any = browser.new_page(
                viewport={"width": 1280, "height": 1000}, accept_downloads=True
            )
            page.set_default_timeout(300_000)
            page.goto(served)
            page.fill("#api-key", key["analyst"])
            page.click("#signin-button")
            page.wait_for_selector("#signout-button:visible")

            page.fill("#question", QUESTIONS["bills"])
            page.click("#ask-button")
            page.wait_for_selector("#save-answer:visible")
            page.fill("#save-title", "Itemised bills memo")
            page.click("#save-button")
            page.wait_for_selector("#saved-detail:visible")
            assert page.inner_text("#saved-title") == "Itemised bills memo"
            assert "current" in page.inner_text("#saved-meta")
            assert page.is_hidden("#review-button")

            job = _ingest_upload(api, bearer(key["admin"]), second_version(tmp_path / "v2"))
            assert job["flagged_answers"] == 1  # the analyst's memo; the merger cites no ePrivacy

            page.click("#saved-refresh")
            item = page.locator("#saved-list .saved-item", has_text="Itemised bills memo")
            item.locator(".saved-needs_review").wait_for()
            item.click()
            page.wait_for_selector("#saved-citations del")
            assert page.inner_text("#saved-reasons").count("the cited text changed") == 1
            changed = page.locator("#saved-citations .check-changed")
            assert changed.locator("del").first.inner_text() == "bills."
            assert "free of charge, on paper." in changed.locator("ins").first.inner_text()
            assert BILLS in changed.locator("blockquote").first.inner_text()

            page.click("#reask-button")
            page.wait_for_selector("#reask:visible")
            assert "non-itemised bills" in page.inner_text("#reask-old")
            assert "free of charge" in page.inner_text("#reask-new")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "web-saved-review.png"), full_page=True)

            page.click("#review-button")
            page.wait_for_selector("#saved-meta .saved-reviewed")
            assert page.inner_text("#saved-action-status") == "Marked reviewed"
            item.locator(".saved-reviewed").wait_for()

            with page.expect_download() as download:
                page.click("#export-html")
            memo = Path(download.value.path()).read_text(encoding="utf-8")
            assert QUESTIONS["bills"] in memo and "<del>bills.</del>" in memo

            # The saved answer citing the board minutes is shared with public, yet never shown.
            assert page.locator("#saved-list .saved-item").count() == 1
            assert SECRET not in page.content() and "Merger" not in page.inner_text("#saved")
        finally:
            browser.close()
