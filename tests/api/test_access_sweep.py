"""Access-control sweep (issue 20) over the paths the review found or feared leaks on: a rulebook
made board-only by a re-ingest with a changed manifest (no re-embedding), cited by a public rule
so that reference expansion would pull it in, and named as gold by an evaluation run. Nothing of
it may reach a caller outside `board`, on any route; a board member does see it, so its absence
means something."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from core.catalog import DocumentStatus
from core.models import Role
from retrieval.embedder import Embedder
from tests.helpers import (
    OBLIQA_LIKE_CORPUS,
    OBLIQA_LIKE_MAP,
    bearer,
    make_settings,
    new_key,
    obliqa_ids,
    services_for,
)

SECRET = "recovery plan in person"  # the board-only rule's text (BRD 2.1.1)
TITLE = OBLIQA_LIKE_MAP["3"][2]  # "Board Rules (BRD)"
QUESTION = "What must a firm do when it fails to meet the Combined Buffer Requirement?"


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> tuple[Path, str]:
    """Three cross-referencing rulebooks, all public at first; then BRD made board-only."""
    docs = tmp_path_factory.mktemp("obliqa-like")
    for number, passages in OBLIQA_LIKE_CORPUS.items():
        (docs / f"{number}.json").write_text(json.dumps(passages))
    (docs / "document_map.json").write_text(json.dumps(OBLIQA_LIKE_MAP))
    files = sorted(docs.glob("[0-9].json"))
    data_dir = tmp_path_factory.mktemp("data")
    with services_for(make_settings(data_dir), embedder) as services:
        first = services.ingestor().run(files)
        assert [d.error for d in first.documents] == [None, None, None]
        (docs / "manifest.yaml").write_text('"3.json": {access_groups: [board]}\n')
        second = services.ingestor().run(files, requested_by="key:admin")
    assert [d.status for d in second.documents] == [
        DocumentStatus.UNCHANGED,
        DocumentStatus.UNCHANGED,
        DocumentStatus.UPDATED,
    ]
    brd = second.documents[2].document_id
    assert brd is not None
    return data_dir, brd


def _wait(client: TestClient, run_id: str, headers: dict[str, str]) -> dict[str, Any]:
    for _ in range(1200):
        run = client.get(f"/v1/eval/runs/{run_id}", headers=headers).json()
        if run["status"] not in ("queued", "running"):
            return run
        time.sleep(0.1)
    raise TimeoutError(run_id)


@pytest.mark.integration
def test_a_document_made_board_only_by_a_reingest_reaches_no_outsider(
    sweep_dir: tuple[Path, str],
) -> None:
    data_dir, brd = sweep_dir
    # The relevance gate is calibrated on whole regulatory passages, not one-line fixtures.
    settings = make_settings(
        data_dir, expand_references=True, rate_limit_per_minute=0, relevance_threshold=None
    )
    outsider = bearer(new_key(settings, Role.ANALYST, ["public"]))
    insider = bearer(new_key(settings, Role.ANALYST, ["public", "board"]))
    outside_evaluator = bearer(new_key(settings, Role.EVALUATOR, ["public", "legal"]))
    inside_evaluator = bearer(new_key(settings, Role.EVALUATOR, ["public", "board"]))
    waiver = obliqa_ids(3, "2.1.1")[0]
    gold = {
        "QuestionID": "waiver",
        "Question": QUESTION,
        "Passages": [{"ID": waiver, "DocumentID": 3, "PassageID": "2.1.1", "Passage": SECRET}],
    }
    run_body = {"name": "sweep", "format": "obliqa-mp", "questions": [gold], "ragas": False}
    seen: list[str] = []
    with TestClient(create_app(settings)) as client:
        inside = client.post("/v1/query", json={"question": QUESTION}, headers=insider)
        inside_run = client.post("/v1/eval/runs", json=run_body, headers=inside_evaluator)
        inside_summary = _wait(client, inside_run.json()["run_id"], inside_evaluator)["summary"]
        for headers in (outsider, outside_evaluator):
            for body in (
                {"question": QUESTION},
                {"question": QUESTION, "stream": True},
                {"question": QUESTION, "filters": {"document_ids": [brd]}},
            ):
                answer = client.post("/v1/query", json=body, headers=headers)
                assert answer.status_code == 200, answer.text
                seen.append(answer.text)
            listed = client.get("/v1/documents", headers=headers)
            assert listed.status_code == 200
            assert brd not in [d["document_id"] for d in listed.json()["items"]]
            assert client.get(f"/v1/documents/{brd}", headers=headers).status_code == 404
            seen += [listed.text, client.get("/v1/query/history", headers=headers).text]
        created = client.post("/v1/eval/runs", json=run_body, headers=outside_evaluator)
        assert created.status_code == 202, created.text
        run = _wait(client, created.json()["run_id"], outside_evaluator)
        seen += [created.text, json.dumps(run)]
        seen.append(client.get("/v1/eval/runs", headers=outside_evaluator).text)
    # A board member gets the rule through reference expansion, and finds it as gold.
    passages = inside.json()["passages"]
    assert waiver in [p["chunk_id"] for p in passages] and SECRET in inside.text
    assert inside_summary["recall_at_10"] == 1.0
    leaked = [body for body in seen if any(s in body for s in (SECRET, waiver, TITLE))]
    assert leaked == []
    # The outsider's run answers from what it may read: the gold is never retrieved.
    assert run["status"] == "succeeded", run
    assert run["summary"]["recall_at_10"] == 0.0
