"""Saved answers end to end: real answers over the ePrivacy Directive saved through the API, then a
second version of the Directive (one cited paragraph changed, one moved, one deleted) ingested by
a real job; access to saved answers that cite a restricted document; the `regulus saved` CLI."""

from __future__ import annotations

import json
import re
import time
from html import escape
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.cli.main import app as cli
from api.main import create_app
from core.models import Role
from core.settings import get_settings
from retrieval.embedder import Embedder
from tests.helpers import EPRIVACY, SAMPLE, bearer, make_settings, new_key, services_for

BILLS = "Subscribers shall have the right to receive non-itemised bills."
BILLS_V2 = (
    "Subscribers shall have the right to receive non-itemised bills free of charge, on paper."
)
FORWARDING = (
    '<p class="norm">Member States shall ensure that any subscriber has the possibility, using a '
    "simple means and free of charge, of stopping automatic call forwarding by a third party to "
    "the subscriber's terminal.</p>"
)
ARTICLE_10_END = '         </div>\n         <div class="eli-subdivision" id="art_11">'
REPEAL = (
    '<p class="norm">Directive 97/66/EC is hereby repealed with effect from the date referred to '
    'in Article 17(1).</p>\n            <p class="norm">References made to the repealed Directive '
    "shall be construed as being made to this Directive.</p>"
)
# Each question cites the article its name says (asserted below); Article 5 stays as it was.
QUESTIONS = {
    "bills": "Do subscribers have the right to receive non-itemised bills?",
    "forwarding": "Can a subscriber stop automatic call forwarding by a third party?",
    "repeal": "Which directive is hereby repealed by this Directive?",
    "confidentiality": "How must Member States ensure the confidentiality of communications?",
}
CITED_ARTICLE = {"bills": "7", "forwarding": "11", "repeal": "19", "confidentiality": "5"}
# What the second version does to each article's cited text.
EXPECTED_CHECK = {"7": "changed", "11": "moved", "19": "gone"}


def _replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def second_version(folder: Path) -> Path:
    """The Directive with Article 7(1) amended, Article 11 moved into Article 10, Article 19
    deleted: a copy of the sample edited as an amending act would."""
    text = EPRIVACY.read_text(encoding="utf-8")
    text = _replace_once(text, BILLS, BILLS_V2)
    text = _replace_once(text, FORWARDING, "")
    text = _replace_once(text, ARTICLE_10_END, f"{FORWARDING}\n{ARTICLE_10_END}")
    text = _replace_once(text, REPEAL, "")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / EPRIVACY.name
    path.write_text(text, encoding="utf-8")
    return path


def _article(section: str) -> str:
    found = re.match(r"Article (\w+) ", section)
    return found.group(1) if found else ""


def _ingest_upload(client: httpx.Client, admin: dict[str, str], path: Path) -> dict[str, Any]:
    """Upload a file as an admin would, and wait for the job to finish."""
    manifest = json.loads((SAMPLE / "manifest.json").read_text())
    files = [
        ("files", (path.name, path.read_bytes(), "text/html")),
        ("manifest", ("manifest.json", json.dumps(manifest).encode(), "application/json")),
    ]
    created = client.post("/v1/ingest/jobs", files=files, headers=admin)
    assert created.status_code == 202, created.text
    job_id = created.json()["job_id"]
    for _ in range(1200):  # a hang guard, not a time limit
        job: dict[str, Any] = client.get(f"/v1/ingest/jobs/{job_id}", headers=admin).json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish")


def _ask_and_save(client: TestClient, name: str, headers: dict[str, str]) -> dict[str, Any]:
    answer = client.post(
        "/v1/query",
        json={"question": QUESTIONS[name], "filters": {"document_ids": ["eprivacy"]}},
        headers=headers,
    ).json()
    cited = {_article(c["section"]) for c in answer["citations"]}
    assert CITED_ARTICLE[name] in cited, (name, answer["citations"])
    saved = client.post(
        "/v1/saved",
        json={"query_id": answer["query_id"], "title": f"Memo: {name}", "notes": "for policy"},
        headers=headers,
    )
    assert saved.status_code == 201, saved.text
    body: dict[str, Any] = saved.json()
    return body


@pytest.mark.integration
@pytest.mark.slow
def test_saved_answers_are_flagged_exactly_where_the_new_version_changed_them(
    tmp_path: Path, embedder: Embedder, database_url: str | None
) -> None:
    settings = make_settings(tmp_path / "data", database_url=database_url)
    with services_for(settings, embedder) as services:
        first = services.ingestor().run([EPRIVACY])
    assert first.counts["ingested"] == 1
    alice = bearer(new_key(settings, Role.ANALYST, ["public", "legal"]))
    bob = bearer(new_key(settings, Role.ANALYST, ["public", "legal"]))
    admin = bearer(new_key(settings, Role.ADMIN, ["public"]))
    v2 = second_version(tmp_path / "v2")
    with TestClient(create_app(settings)) as client:
        saved = {name: _ask_and_save(client, name, alice) for name in QUESTIONS}
        for body in saved.values():
            assert body["status"] == "current" and body["owner"].startswith("key:")
            for citation in body["citations"]:
                assert len(citation["version"]) == 64  # the SHA-256 of the file
                assert citation["quote"] in citation["text"]
        version_1 = saved["bills"]["citations"][0]["version"]

        job = _ingest_upload(client, admin, v2)
        expected_review = {
            name
            for name, body in saved.items()
            if any(_article(c["section"]) in ("7", "19") for c in body["citations"])
        }
        assert expected_review >= {"bills", "repeal"} and "confidentiality" not in expected_review
        assert (job["status"], job["counts"]["ingested"]) == ("succeeded", 1)
        assert job["flagged_answers"] == len(expected_review)
        assert job["documents"][0]["flagged_answers"] == len(expected_review)

        now = {
            name: client.get(f"/v1/saved/{body['saved_id']}", headers=alice).json()
            for name, body in saved.items()
        }
        for name, body in now.items():
            assert body["status"] == ("needs_review" if name in expected_review else "current")
            for citation in body["citations"]:
                expected = EXPECTED_CHECK.get(_article(citation["section"]), "unchanged")
                check = citation["check"]
                assert check["status"] == expected, (name, citation["section"], check)
                assert check["checked_version"] != version_1
                assert citation["version"] == version_1  # the saved text stays as it was
            reasons = [r for r in body["reasons"] if "Article 7" in r or "Article 19" in r]
            assert len(reasons) == len(body["reasons"])
        bills = next(c for c in now["bills"]["citations"] if _article(c["section"]) == "7")
        assert BILLS_V2 in bills["check"]["text"] and BILLS in bills["text"]
        inserted = " ".join(s["text"] for s in bills["check"]["diff"] if s["op"] == "insert")
        deleted = " ".join(s["text"] for s in bills["check"]["diff"] if s["op"] == "delete")
        assert "free of charge, on paper." in inserted and deleted == "bills."
        moved = next(c for c in now["forwarding"]["citations"] if _article(c["section"]) == "11")
        assert moved["check"]["section"] == "Article 10 — Exceptions"
        listed = client.get("/v1/saved?status=needs_review", headers=alice).json()
        assert {item["saved_id"] for item in listed["items"]} == {
            saved[name]["saved_id"] for name in expected_review
        }

        # The same version again flags nothing and changes nothing.
        again = _ingest_upload(client, admin, v2)
        assert (again["counts"]["unchanged"], again["flagged_answers"]) == (1, 0)
        for name, body in saved.items():
            assert client.get(f"/v1/saved/{body['saved_id']}", headers=alice).json() == now[name]

        # Sharing, review and the owner's rights.
        bills_id = saved["bills"]["saved_id"]
        assert client.get(f"/v1/saved/{bills_id}", headers=bob).status_code == 404
        outside = client.patch(
            f"/v1/saved/{bills_id}", json={"shared_with": ["board"]}, headers=alice
        )
        assert outside.status_code == 403 and outside.json()["error"]["code"] == "forbidden"
        shared = client.patch(
            f"/v1/saved/{bills_id}", json={"shared_with": ["legal"]}, headers=alice
        )
        assert shared.json()["shared_with"] == ["legal"]
        assert client.delete(f"/v1/saved/{bills_id}", headers=bob).status_code == 403
        reviewed = client.post(f"/v1/saved/{bills_id}/review", headers=bob).json()
        assert reviewed["status"] == "reviewed"
        assert (
            reviewed["reviewed_by"].startswith("key:")
            and reviewed["reviewed_by"] != reviewed["owner"]
        )

        markdown = client.get(f"/v1/saved/{bills_id}/export", headers=bob)
        assert markdown.headers["content-type"].startswith("text/markdown")
        html = client.get(f"/v1/saved/{bills_id}/export?format=html", headers=alice)
        assert html.headers["content-type"].startswith("text/html")
        for memo, section_path in [
            (markdown.text, bills["section_path"]),
            (html.text, escape(bills["section_path"])),
        ]:
            assert QUESTIONS["bills"] in memo and version_1 in memo
            assert f"query #{saved['bills']['query_id']}" in memo
            assert section_path in memo
        assert "<script" not in html.text and "<del>bills.</del>" in html.text

        # Bad requests get the error body.
        other = client.post(
            "/v1/saved", json={"query_id": saved["bills"]["query_id"], "title": "x"}, headers=bob
        )
        assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"
        invalid = client.post("/v1/saved", json={"query_id": 1}, headers=alice)
        assert invalid.status_code == 422 and "title" in invalid.json()["error"]["message"]
        assert client.get("/v1/saved/nope/export?format=pdf", headers=alice).status_code == 422

        assert client.delete(f"/v1/saved/{bills_id}", headers=alice).status_code == 204
        assert client.get(f"/v1/saved/{bills_id}", headers=alice).status_code == 404
        audit = client.get("/v1/audit?limit=500", headers=admin).json()["items"]
    events = [row["event"] for row in audit if row["event"].startswith("saved.")]
    for event in ("created", "listed", "read", "updated", "reviewed", "exported", "deleted"):
        assert f"saved.{event}" in events
    assert events.count("saved.created") == len(QUESTIONS)
    replaced = next(row for row in audit if row["event"] == "document.replaced")
    assert sorted(replaced["detail"]["flagged_answers"]) == sorted(
        saved[name]["saved_id"] for name in expected_review
    )


SECRET = "Zephyr"
BOARD_QUESTION = "What did the board approve at its March meeting?"


@pytest.fixture(scope="module")
def restricted_dir(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Path:
    """Record-keeping rules for everyone, and board minutes for the `board` group only."""
    docs = tmp_path_factory.mktemp("docs")
    (docs / "rules.md").write_text("# Record keeping\n\nA firm must keep records for six years.\n")
    (docs / "board.md").write_text(
        "# Board minutes\n\nThe board approved the Zephyr merger at its March meeting.\n"
    )
    (docs / "manifest.yaml").write_text("board.md: {access_groups: [board]}\n")
    data_dir = tmp_path_factory.mktemp("saved-restricted")
    with services_for(make_settings(data_dir), embedder) as services:
        job = services.ingestor().run(sorted(docs.glob("*.md")))
    assert [d.error for d in job.documents] == [None, None]
    return data_dir


@pytest.mark.integration
def test_a_saved_answer_citing_a_restricted_document_never_reaches_an_outsider(
    restricted_dir: Path,
) -> None:
    settings = make_settings(restricted_dir)
    insider = bearer(new_key(settings, Role.ANALYST, ["public", "board"]))
    colleague = bearer(new_key(settings, Role.ANALYST, ["public", "board"]))
    outsider = bearer(new_key(settings, Role.ANALYST, ["public"]))
    admin = bearer(new_key(settings, Role.ADMIN, ["public"]))
    with TestClient(create_app(settings)) as client:
        answer = client.post("/v1/query", json={"question": BOARD_QUESTION}, headers=insider)
        assert any(c["document_id"] == "board" for c in answer.json()["citations"])
        query_id = answer.json()["query_id"]
        # Shared with a group the outsider is in: the cited document still keeps them out.
        saved = client.post(
            "/v1/saved",
            json={"query_id": query_id, "title": "Merger", "shared_with": ["public"]},
            headers=insider,
        )
        assert saved.status_code == 201 and SECRET in saved.text
        saved_id = saved.json()["saved_id"]
        shown = client.get(f"/v1/saved/{saved_id}", headers=colleague)
        assert shown.status_code == 200 and SECRET in shown.text  # the rule lets members in
        bodies = []
        listed = client.get("/v1/saved", headers=outsider)
        assert listed.status_code == 200 and listed.json()["total"] == 0
        bodies.append(listed.text)
        for path in (
            f"/v1/saved/{saved_id}",
            f"/v1/saved/{saved_id}/export",
            f"/v1/saved/{saved_id}/export?format=html",
        ):
            refused = client.get(path, headers=outsider)
            assert refused.status_code == 404, path
            bodies.append(refused.text)
        for refused in (
            client.post(f"/v1/saved/{saved_id}/review", headers=outsider),
            client.patch(f"/v1/saved/{saved_id}", json={"title": "x"}, headers=outsider),
            client.delete(f"/v1/saved/{saved_id}", headers=outsider),
            # Nor may they save someone else's answer.
            client.post("/v1/saved", json={"query_id": query_id, "title": "x"}, headers=outsider),
        ):
            assert refused.status_code == 404
            bodies.append(refused.text)
        # Once the document is deleted, the groups it had when saved still apply.
        client.delete("/v1/documents/board", headers=admin)
        after_delete = client.get(f"/v1/saved/{saved_id}", headers=outsider)
        bodies.append(after_delete.text)
        kept = client.get(f"/v1/saved/{saved_id}", headers=insider).json()
    leaked = [body for body in bodies if SECRET in body]
    assert leaked == []
    # Still hidden from the outsider; flagged for the insider.
    assert after_delete.status_code == 404
    assert kept["status"] == "needs_review"
    board = next(c for c in kept["citations"] if c["document_id"] == "board")
    assert board["check"]["status"] == "gone" and board["access_groups"] == ["board"]


@pytest.mark.integration
def test_the_cli_saves_lists_shows_exports_and_deletes(
    restricted_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("REGULUS_DATA_DIR", str(restricted_dir))
    get_settings.cache_clear()
    runner = CliRunner(env={"COLUMNS": "200"})
    try:
        asked = runner.invoke(cli, ["ask", "How long must a firm keep records?"])
        assert asked.exit_code == 0, asked.output
        query_id = re.search(r"query (\d+)", asked.output).group(1)  # type: ignore[union-attr]
        added = runner.invoke(cli, ["saved", "add", query_id, "--title", "Records", "--notes", "n"])
        assert added.exit_code == 0, added.output
        saved_id = added.output.split()[1].rstrip(":")
        listed = runner.invoke(cli, ["saved", "list"])
        assert saved_id in listed.output and "current" in listed.output
        shown = runner.invoke(cli, ["saved", "show", saved_id])
        assert "six years" in shown.output and "Record keeping" in shown.output
        memo = tmp_path / "memo.html"
        exported = runner.invoke(
            cli, ["saved", "export", saved_id, "--format", "html", "-o", str(memo)]
        )
        assert exported.exit_code == 0 and "six years" in memo.read_text()
        again = runner.invoke(cli, ["saved", "add", query_id, "--title", "x", "--groups", "x"])
        assert again.exit_code == 2 and "no answered query" in again.output
        assert runner.invoke(cli, ["saved", "delete", saved_id]).exit_code == 0
        missing = runner.invoke(cli, ["saved", "show", saved_id])
        assert missing.exit_code == 2 and "no saved answer" in missing.output
    finally:
        get_settings.cache_clear()
