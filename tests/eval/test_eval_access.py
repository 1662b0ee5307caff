"""Findings of the adversarial review (issue 20) in evaluation runs: gold matched only within what
the evaluator may read, runs visible to their owner (and admins), cancellable, and stopped
cooperatively at shutdown, then resumed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from core.model_files import file_sha256
from core.models import Principal, Role
from eval.run import EvalRunner, RunFolder, RunInfo, load_eval_questions
from retrieval.embedder import Embedder
from tests.helpers import bearer, make_settings, new_key, services_for


@pytest.fixture(scope="module")
def board_dir(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Path:
    """A public rulebook and a board-only memo with a heading of its own."""
    docs = tmp_path_factory.mktemp("docs")
    (docs / "rules.md").write_text(
        "# Rules\n\n## Record keeping\n\nA firm must keep records of transactions for six years.\n"
    )
    (docs / "memo.md").write_text(
        "# Memo\n\n## Project Zephyr\n\nThe board approved the Zephyr merger in March.\n"
    )
    (docs / "manifest.yaml").write_text("memo.md: {access_groups: [board]}\n")
    data_dir = tmp_path_factory.mktemp("board")
    with services_for(make_settings(data_dir), embedder) as services:
        job = services.ingestor().run(sorted(docs.glob("*.md")))
    assert [d.error for d in job.documents] == [None, None]
    return data_dir


def _question(qid: str, document_id: str, section: str) -> dict[str, object]:
    return {
        "id": qid,
        "question": "What did the board approve?",
        "gold_sections": [{"document_id": document_id, "section": section}],
        "tags": [qid],
    }


@pytest.mark.integration
def test_gold_in_a_document_the_evaluator_cannot_read_looks_like_no_gold(
    board_dir: Path, embedder: Embedder, tmp_path: Path
) -> None:
    dataset = tmp_path / "probe.jsonl"
    dataset.write_text(
        json.dumps(_question("exists", "memo", "Project Zephyr"))
        + "\n"
        + json.dumps(_question("invented", "memo", "Project Nonesuch"))
        + "\n"
    )
    outsider = Principal(subject="eve", groups=["public"], role=Role.EVALUATOR)
    with services_for(make_settings(board_dir), embedder) as services:
        fmt, questions, chunks, warnings = load_eval_questions(
            dataset, None, services.store, groups=outsider.groups
        )
        runner = EvalRunner(services.query_pipeline(audited=False), outsider, chunks)
        info = RunInfo(
            run_id="probe", dataset="d", dataset_sha256=file_sha256(dataset), format=fmt, k=10
        )
        summary = runner.run(questions, RunFolder(tmp_path / "run"), info)
    assert all(c.document_id != "memo" for c in chunks.values())
    assert len(warnings) == 3  # both sections unmatched, alike; no gold passage
    records = RunFolder(tmp_path / "run").records()
    exists, invented = records["exists"], records["invented"]
    assert (exists.gold_units, exists.metrics) == (invented.gold_units, invented.metrics)
    exists_figures, invented_figures = (
        {k: v for k, v in summary["by_tag"][tag].items() if k != "latency_ms"}
        for tag in ("exists", "invented")
    )
    assert exists_figures == invented_figures


def _records(n: int) -> list[dict[str, object]]:
    return [
        {
            "id": f"q{i}",
            "question": f"How long must a firm keep its records? ({i})",
            "gold_sections": [{"document_id": "rules", "section": "Record keeping"}],
        }
        for i in range(n)
    ]


def _wait_for(client: TestClient, run_id: str, statuses: set[str], headers: dict[str, str]) -> dict:  # type: ignore[type-arg]
    for _ in range(1200):
        run = client.get(f"/v1/eval/runs/{run_id}", headers=headers).json()
        if run["status"] in statuses:
            return run  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise TimeoutError(run_id)


@pytest.mark.integration
@pytest.mark.slow
def test_runs_are_their_owners_cancellable_and_stop_at_shutdown(board_dir: Path) -> None:
    settings = make_settings(board_dir, rate_limit_per_minute=0)
    alice = bearer(new_key(settings, Role.EVALUATOR, ["public"]))
    bob = bearer(new_key(settings, Role.EVALUATOR, ["public", "board"]))
    admin = bearer(new_key(settings, Role.ADMIN, ["public"]))
    body = {"name": "long", "questions": _records(200), "ragas": False}
    with TestClient(create_app(settings)) as client:
        created = client.post("/v1/eval/runs", json=body, headers=alice)
        assert created.status_code == 202, created.text
        run_id = created.json()["run_id"]
        _wait_for(client, run_id, {"running"}, alice)
        others = client.get("/v1/eval/runs", headers=bob).json()
        assert run_id not in [r["run_id"] for r in others["items"]]
        assert client.get(f"/v1/eval/runs/{run_id}", headers=bob).status_code == 404
        assert client.delete(f"/v1/eval/runs/{run_id}", headers=bob).status_code == 404
        listed = client.get("/v1/eval/runs", headers=admin).json()
        assert run_id in [r["run_id"] for r in listed["items"]]
    # The lifespan ended (shutdown) while the run was running: it stopped between two questions.
    between = RunFolder(board_dir / "eval-runs" / run_id).info()
    assert between is not None and between.status.value == "interrupted", between
    assert between.done < 200
    with TestClient(create_app(settings)) as client:
        stopped = client.get(f"/v1/eval/runs/{run_id}", headers=admin).json()
        resumed = _wait_for(client, run_id, {"running", "succeeded"}, alice)
        cancelled = client.delete(f"/v1/eval/runs/{run_id}", headers=alice)
        assert cancelled.status_code == 200, cancelled.text
        final = _wait_for(client, run_id, {"cancelled", "succeeded"}, alice)
        again = client.delete(f"/v1/eval/runs/{run_id}", headers=alice)
    assert stopped["done"] >= between.done  # resumed where it stopped
    assert resumed["status"] == "running"
    assert final["status"] == "cancelled" and final["done"] < 200
    assert again.status_code == 409 and again.json()["error"]["code"] == "run_finished"
