"""CI regression gate: a fixed dev subset of the golden set must not fall below the baselines.

The subset (question ids in `eval/baselines/ci.json`) is answerable from GDPR and the ePrivacy
Directive, the documents of the session's test index. It runs twice: extractive (every id, no
model server), and through the CPU model server (SmolLM2 behind llama.cpp's OpenAI-compatible
API, the path vLLM serves in production) on the first `cpu_model.questions` ids, each against its
own baseline figures. A gated figure that is null in the baseline is not gated. After a deliberate
change of quality, refresh the figures with
`REGULUS_UPDATE_BASELINE=1 pytest tests/eval/test_eval_gate.py` and commit the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from core.model_files import file_sha256
from core.models import Principal, Role
from eval.gate import regressions
from eval.run import EvalRunner, RunFolder, RunInfo, load_eval_questions
from generation.local_server import LOCAL_MODEL_ALIAS
from retrieval.embedder import Embedder
from tests.helpers import ROOT, make_settings, services_for

BASELINE = ROOT / "eval" / "baselines" / "ci.json"


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["extractive", "cpu_model"])
def test_retrieval_and_citations_hold_their_baseline(
    mode: str,
    ingested_dir: Path,
    embedder: Embedder,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    baseline = json.loads(BASELINE.read_text())
    gate = baseline[mode]
    records = [
        json.loads(line)
        for line in (ROOT / baseline["dataset"]).read_text().splitlines()
        if line.strip()
    ]
    wanted = set(baseline["question_ids"][: gate.get("questions")])
    dataset = tmp_path / "dev.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in records if r["id"] in wanted))
    settings = make_settings(ingested_dir)
    if mode == "cpu_model":
        settings = make_settings(
            ingested_dir,
            llm_base_url=request.getfixturevalue("llm_server"),
            llm_model=LOCAL_MODEL_ALIAS,
            llm_max_tokens=gate["max_tokens"],
        )
    with services_for(settings, embedder) as services:
        fmt, questions, chunks, warnings = load_eval_questions(dataset, None, services.store)
        assert warnings == [] and len(questions) == len(wanted)
        runner = EvalRunner(
            services.query_pipeline(audited=False),
            Principal(subject="ci", groups=["public"], role=Role.EVALUATOR),
            chunks,
            k=baseline["k"],
            top_k=gate.get("top_k"),
        )
        info = RunInfo(
            run_id="ci",
            dataset=baseline["dataset"],
            dataset_sha256=file_sha256(dataset),
            format=fmt,
            k=baseline["k"],
        )
        summary = runner.run(questions, RunFolder(tmp_path / "run"), info)
    measured = {name: summary[name] for name in gate["figures"]}
    print(f"CI eval subset, {mode} ({len(questions)} questions): {json.dumps(measured)}")
    if os.environ.get("REGULUS_UPDATE_BASELINE"):
        gate["figures"] = measured
        BASELINE.write_text(json.dumps(baseline, indent=2) + "\n")
        return
    assert regressions(measured, gate["figures"], baseline["gated"], gate["margin"]) == []


def test_the_gate_fails_on_a_drop_beyond_the_margin_only() -> None:
    baseline = {"recall_at_10": 0.9, "citation_precision": None, "mrr": 0.8}
    gated = ["recall_at_10", "citation_precision", "mrr"]
    assert regressions({"recall_at_10": 0.86, "mrr": 0.8}, baseline, gated, 0.05) == []
    failures = regressions({"recall_at_10": 0.84, "mrr": None}, baseline, gated, 0.05)
    assert failures == [
        "recall_at_10 fell to 0.840, more than 0.05 below its baseline 0.900",
        "mrr is no longer measured (baseline 0.800)",
    ]
