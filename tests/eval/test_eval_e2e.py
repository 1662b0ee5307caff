"""The evaluation harness end to end: real index, real pipeline, CLI, API, report, judge."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.cli.main import app
from api.main import create_app
from core.model_files import file_sha256
from core.models import Principal, Role
from core.settings import get_settings
from eval.ragas_scores import JUDGE_METRICS, JudgeConfig, RagasScorer
from eval.run import EvalRunner, RunFolder, RunInfo, load_eval_questions
from generation.local_server import LOCAL_MODEL_ALIAS
from retrieval.embedder import Embedder
from tests.helpers import SAMPLE, bearer, make_settings, new_key, services_for

GOLDEN = SAMPLE / "golden.jsonl"
# The fixture index holds GDPR and the ePrivacy Directive only.
INDEXED = {"gdpr", "eprivacy"}


def subset(tmp_path: Path, ids: list[str] | None = None, n: int | None = None) -> Path:
    """Golden questions answerable from the fixture index (and the unanswerable ones)."""
    records = [json.loads(line) for line in GOLDEN.read_text().splitlines() if line.strip()]
    chosen = [
        r
        for r in records
        if {g["document_id"] for g in r["gold_sections"]} <= INDEXED
        and (ids is None or r["id"] in ids)
    ][:n]
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in chosen))
    return path


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, ingested_dir: Path) -> Iterator[CliRunner]:
    monkeypatch.setenv("REGULUS_DATA_DIR", str(ingested_dir))
    monkeypatch.delenv("REGULUS_LLM_BASE_URL", raising=False)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


@pytest.mark.integration
@pytest.mark.slow
class TestEvalCli:
    def test_run_resume_report_and_compare(self, runner: CliRunner, tmp_path: Path) -> None:
        questions = subset(
            tmp_path,
            [
                "gdpr-breach-authority",
                "x-breach-authority-gdpr-eprivacy",
                "ep-cookies",
                "u-ccpa-fine",
            ],
        )
        out = tmp_path / "run"
        env = {"COLUMNS": "200"}
        args = ["eval", "run", "--dataset", str(questions), "--out", str(out)]
        first = runner.invoke(app, [*args, "--limit", "2"], env=env)
        assert first.exit_code == 0, first.output
        assert len(RunFolder(out).records()) == 2
        # A larger run into the same folder continues: the first two are not asked again.
        second = runner.invoke(app, args, env=env)
        assert second.exit_code == 0, second.output
        assert "2 already recorded" in second.output
        lines = (out / "results.jsonl").read_text().splitlines()
        assert len(lines) == 4

        summary = json.loads((out / "summary.json").read_text())
        assert summary["n_questions"] == 4
        assert summary["models"] == ["extractive"]
        assert summary["recall_at_10"] > 0.5  # Article 33 and ePrivacy Article 5 are easy finds
        assert 0 < summary["citation_recall"] <= 1
        assert summary["n_unanswerable"] == 1 and summary["refusal_accuracy"] is not None
        assert summary["latency_ms"]["total"]["p50"] > 0
        assert summary["ragas_non_llm_context_recall"] is not None
        assert summary["ragas_semantic_similarity"] is not None
        assert summary["ragas_faithfulness"] is None  # no judge
        breach = RunFolder(out).records()["gdpr-breach-authority"]
        assert "72 hours" in breach.answer and breach.cited_ids

        report = runner.invoke(app, ["eval", "report", str(out)], env=env)
        assert report.exit_code == 0, report.output
        page = (out / "report.html").read_text()
        assert page.count("data:image/png;base64,") >= 3
        assert "recall_at_10" in page and "gdpr-breach-authority" in page

        other = tmp_path / "other"
        rerun = runner.invoke(app, [*args[:-1], str(other), "--top-k", "1", "--no-ragas"], env=env)
        assert rerun.exit_code == 0, rerun.output
        compared = runner.invoke(
            app,
            ["eval", "compare", str(out), str(other), "--json", str(tmp_path / "c.json")],
            env=env,
        )
        assert compared.exit_code == 0, compared.output
        comparison = json.loads((tmp_path / "c.json").read_text())
        assert "recall_at_10" in comparison["figures"]
        assert "regressed" in compared.output and "improved" in compared.output

    def test_a_different_dataset_into_the_same_folder_is_refused(
        self, runner: CliRunner, tmp_path: Path
    ) -> None:
        out = tmp_path / "run"
        one = subset(tmp_path, ["gdpr-dpia"])
        assert (
            runner.invoke(
                app, ["eval", "run", "--dataset", str(one), "--out", str(out), "--no-ragas"]
            ).exit_code
            == 0
        )
        other = tmp_path / "other.jsonl"
        other.write_text(json.dumps({"question": "q", "gold_chunk_ids": []}) + "\n")
        result = runner.invoke(app, ["eval", "run", "--dataset", str(other), "--out", str(out)])
        assert result.exit_code == 2 and "holds a run of" in result.output


@pytest.mark.integration
def test_a_run_sees_only_the_evaluators_documents(
    ingested_dir: Path, embedder: Embedder, tmp_path: Path
) -> None:
    questions_file = subset(tmp_path, ["gdpr-breach-authority"])
    with services_for(make_settings(ingested_dir), embedder) as services:
        fmt, questions, chunks, warnings = load_eval_questions(questions_file, None, services.store)
        assert warnings == []
        outsider = Principal(subject="eve", groups=["board"], role=Role.EVALUATOR)
        runner = EvalRunner(services.query_pipeline(audited=False), outsider, chunks)
        info = RunInfo(
            run_id="r", dataset="d", dataset_sha256=file_sha256(questions_file), format=fmt, k=10
        )
        summary = runner.run(questions, RunFolder(tmp_path / "run"), info)
    record = RunFolder(tmp_path / "run").records()["gdpr-breach-authority"]
    assert record.passage_ids == [] and record.ranked_ids == []
    assert summary["recall_at_10"] == 0.0 and summary["false_refusal_rate"] == 1.0


@pytest.mark.integration
@pytest.mark.slow
class TestEvalApi:
    def test_an_evaluator_runs_a_set_in_the_background(
        self, ingested_dir: Path, tmp_path: Path
    ) -> None:
        records = [json.loads(line) for line in subset(tmp_path, n=3).read_text().splitlines()]
        settings = make_settings(ingested_dir)
        auth = bearer(new_key(settings, Role.EVALUATOR))
        analyst = bearer(new_key(settings, Role.ANALYST))
        with TestClient(create_app(settings)) as client:
            body = {"name": "golden", "questions": records, "ragas": False}
            assert client.post("/v1/eval/runs", json=body).status_code == 401
            assert client.post("/v1/eval/runs", json=body, headers=analyst).status_code == 403
            created = client.post("/v1/eval/runs", json=body, headers=auth)
            assert created.status_code == 202, created.text
            run_id = created.json()["run_id"]
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                run = client.get(f"/v1/eval/runs/{run_id}", headers=auth).json()
                if run["status"] in ("succeeded", "failed"):
                    break
                time.sleep(0.5)
            assert run["status"] == "succeeded", run
            assert run["done"] == run["total"] == 3
            assert run["summary"]["n_questions"] == 3
            assert run["summary"]["recall_at_10"] is not None
            listed = client.get("/v1/eval/runs", headers=auth).json()
            assert listed["total"] >= 1 and run_id in [r["run_id"] for r in listed["items"]]
            assert client.get("/v1/eval/runs/nope", headers=auth).status_code == 404

            bad = client.post("/v1/eval/runs", json={"questions": [{"what": "?"}]}, headers=auth)
            assert bad.status_code == 422
            assert bad.json()["error"]["code"] == "invalid_dataset"
            no_judge = client.post("/v1/eval/runs", json=body | {"judge": True}, headers=auth)
            assert no_judge.status_code == 422 and "judge" in no_judge.json()["error"]["message"]


@pytest.mark.integration
@pytest.mark.slow
def test_judged_metrics_through_the_cpu_model_server(
    llm_server: str, ingested_dir: Path, embedder: Embedder, tmp_path: Path
) -> None:
    """The LLM-judged path against a real OpenAI-compatible server: SmolLM2 answers and judges.

    Its judgements are poor and often not valid JSON; what must hold is that every judged metric
    ends as a score in [0, 1] or a recorded failure, and the run completes.
    """
    questions_file = subset(tmp_path, ["gdpr-breach-authority"])
    judge = JudgeConfig(
        base_url=llm_server,
        model=LOCAL_MODEL_ALIAS,
        timeout_s=60,
        max_tokens=256,
        metric_timeout_s=20,  # the tiny model rambles; bound each metric, record the timeout
    )
    settings = make_settings(
        ingested_dir, llm_base_url=llm_server, llm_model=LOCAL_MODEL_ALIAS, llm_max_tokens=128
    )
    with services_for(settings, embedder) as services:
        fmt, questions, chunks, _ = load_eval_questions(questions_file, None, services.store)
        runner = EvalRunner(
            services.query_pipeline(audited=False),
            Principal(subject="e", groups=["public"], role=Role.EVALUATOR),
            chunks,
            RagasScorer(embedder, judge),
            top_k=2,
        )
        info = RunInfo(
            run_id="j",
            dataset="d",
            dataset_sha256=file_sha256(questions_file),
            format=fmt,
            k=10,
            top_k=2,
            judge_model=judge.model,
        )
        summary = runner.run(questions, RunFolder(tmp_path / "run"), info)
    assert summary["models"] == [LOCAL_MODEL_ALIAS]
    for record in RunFolder(tmp_path / "run").records().values():
        if record.refused:
            continue
        for name in JUDGE_METRICS:
            value = record.metrics.get(name)
            assert (value is not None and 0.0 <= value <= 1.0) or name in record.metric_errors
