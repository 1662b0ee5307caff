import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.cli.main import app
from core.settings import get_settings
from tests.helpers import OBLIQA_LIKE_CORPUS, OBLIQA_LIKE_MAP, obliqa_ids

FIELDS = {
    "k",
    "n_questions",
    "recall_at_k",
    "map_at_k",
    "ndcg_at_k",
    "mrr",
    "all_gold_at_k",
    "latency_ms_p50",
    "latency_ms_p95",
}
QUESTION = "What must a firm do when it fails to meet the Combined Buffer Requirement?"


def gold(document: int, passage_id: str, with_id: bool) -> dict[str, object]:
    item = next(p for p in OBLIQA_LIKE_CORPUS[document] if p["PassageID"] == passage_id)
    return {k: v for k, v in item.items() if with_id or k != "ID"}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval")
    documents = root / "corpus" / "documents"
    documents.mkdir(parents=True)
    for number, passages in OBLIQA_LIKE_CORPUS.items():
        (documents / f"{number}.json").write_text(json.dumps(passages))
    (root / "corpus" / "document_map.json").write_text(json.dumps(OBLIQA_LIKE_MAP))
    obliqa = [
        {
            "QuestionID": "q1",
            "Question": QUESTION,
            "Passages": [gold(1, "3.19.3", False), gold(1, "3.19.6", False)],
            "Group": 1,
        }
    ]
    mp = [{**obliqa[0], "Passages": [gold(1, "3.19.3", True), gold(1, "3.19.6", True)]}]
    source, target = obliqa_ids(1, "5.1.1")[0], obliqa_ids(2, "Part 11.Chapter 4.117.")[0]
    xrefrag = {
        "question": "Who must be notified of a change of auditor, and who may direct a change?",
        "answer": f"The Regulator [#SRC:{source}] [#TGT:{target}].",
        "source_passage_id": source,
        "target_passage_id": target,
        "reference_type": "External",
    }
    (root / "obliqa.json").write_text(json.dumps(obliqa))
    (root / "mp.json").write_text(json.dumps(mp))
    (root / "xrefrag.jsonl").write_text(json.dumps(xrefrag) + "\n")
    return {"root": root, "corpus": documents}


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, files: dict[str, Path]) -> CliRunner:
    monkeypatch.setenv("REGULUS_DATA_DIR", str(files["root"] / "data"))
    monkeypatch.delenv("REGULUS_RERANKER", raising=False)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


@pytest.mark.integration
class TestEvalRetrieval:
    @pytest.mark.parametrize(
        ("questions", "fmt"),
        [("obliqa.json", "obliqa"), ("mp.json", "obliqa-mp"), ("xrefrag.jsonl", "xrefrag")],
    )
    def test_every_format_is_detected_scored_and_written(
        self, runner: CliRunner, files: dict[str, Path], questions: str, fmt: str
    ) -> None:
        out = files["root"] / f"{fmt}.json"
        arguments = ["eval", "retrieval", "--questions", str(files["root"] / questions)]
        arguments += ["--corpus", str(files["corpus"]), "--k", "3", "--json", str(out)]
        result = runner.invoke(app, arguments, env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        figures = json.loads(out.read_text())
        assert figures["format"] == fmt
        assert figures.keys() >= FIELDS and figures["bm25"].keys() >= FIELDS
        assert figures["k"] == 3 and figures["n_questions"] == 1
        assert 0 < figures["recall_at_k"] <= 1 and 0 <= figures["bm25"]["all_gold_at_k"] <= 1

    def test_reference_expansion_brings_the_cited_rule(
        self, runner: CliRunner, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def all_gold(expand: str) -> float:
            monkeypatch.setenv("REGULUS_EXPAND_REFERENCES", expand)
            monkeypatch.setenv("REGULUS_EXPAND_FROM_TOP", "1")
            get_settings.cache_clear()
            out = files["root"] / f"expand-{expand}.json"
            arguments = ["eval", "retrieval", "--questions", str(files["root"] / "xrefrag.jsonl")]
            arguments += ["--corpus", str(files["corpus"]), "--k", "2", "--json", str(out)]
            result = runner.invoke(app, arguments, env={"COLUMNS": "200"})
            assert result.exit_code == 0, result.output
            figures = json.loads(out.read_text())
            assert ("references" in figures["mode"]) == (expand == "true")
            return float(figures["all_gold_at_k"])

        # The cited FSMR section shares few words with the question: expansion guarantees it.
        assert all_gold("true") == 1.0
        assert all_gold("false") <= 1.0
