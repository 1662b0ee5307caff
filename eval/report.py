"""A run's HTML report (self-contained: tables and PNG plots inline) and run-to-run comparison."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a display

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from pydantic import BaseModel

from eval.run import QuestionRecord, RunFolder, summarize

# Headline figures, in reading order; keys missing from a summary are skipped.
HEADLINE = (
    "recall_at_{k}",
    "map_at_{k}",
    "ndcg_at_{k}",
    "mrr",
    "all_gold_at_{k}",
    "citation_precision",
    "citation_recall",
    "unsupported_sentence_rate",
    "fully_cited_multi_document",
    "correct_and_fully_cited",
    "judged_correct",
    "refusal_accuracy",
    "false_refusal_rate",
    "prompt_tokens_per_question",
    "completion_tokens_per_question",
    "cost_usd_per_question",
)
BREAKDOWN = (
    "n",
    "recall_at_{k}",
    "mrr",
    "citation_recall",
    "citation_precision",
    "fully_cited_multi_document",
    "refusal_accuracy",
    "false_refusal_rate",
    "ragas_semantic_similarity",
)
# Per-question scores compared between runs: higher is better for each.
COMPARED = ("recall_at_{k}", "mrr", "citation_recall", "fully_cited", "correct_and_fully_cited")


def _fmt(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return f'<img alt="plot" src="data:image/png;base64,{encoded}">'


def _table(headers: list[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _distributions(records: list[QuestionRecord], k: int) -> str:
    names = [
        name
        for name in (
            f"recall_at_{k}",
            "mrr",
            "citation_recall",
            "ragas_semantic_similarity",
            "ragas_rouge_l",
            "ragas_non_llm_context_recall",
            "ragas_faithfulness",
            "ragas_factual_correctness",
        )
        if any(r.metrics.get(name) is not None for r in records)
    ]
    if not names:
        return "<p>No per-question scores.</p>"
    columns = min(4, len(names))
    rows = (len(names) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.4 * rows), squeeze=False)
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names, strict=False):
        values = [v for r in records if (v := r.metrics.get(name)) is not None]
        ax.hist(values, bins=10, range=(0, 1), color="#3b6ea5")
        ax.set_title(f"{name} (n={len(values)})", fontsize=8)
        ax.tick_params(labelsize=7)
    figure.tight_layout()
    return _png(figure)


def _breakdown_plot(groups: dict[str, dict[str, Any]], k: int, title: str) -> str:
    names = [
        n
        for n in (f"recall_at_{k}", "citation_recall")
        if any(g.get(n) is not None for g in groups.values())
    ]
    if not groups or not names:
        return ""
    labels = list(groups)
    figure, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(labels) + 2), 2.8))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        ax.bar(
            [x + i * width for x in range(len(labels))],
            [groups[label].get(name) or 0.0 for label in labels],
            width=width,
            label=name,
        )
    ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(labels))])
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return _png(figure)


def _latency_plot(records: list[QuestionRecord]) -> str:
    stages = sorted({s for r in records for s in r.timings_ms})
    if not stages:
        return "<p>No timings recorded.</p>"
    figure, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(stages) + 2), 2.8))
    ax.boxplot(
        [[r.timings_ms[s] for r in records if s in r.timings_ms] for s in stages],
        tick_labels=stages,
    )
    ax.set_ylabel("ms")
    ax.set_yscale("log")
    ax.set_title("latency per stage", fontsize=9)
    return _png(figure)


def render_report(folder: RunFolder) -> str:
    """The report of the run in `folder` (its summary is recomputed from the records)."""
    info = folder.info()
    if info is None:
        raise FileNotFoundError(f"{folder.path} holds no evaluation run (no run.json)")
    records = list(folder.records().values())
    summary = summarize(records, info)
    k = info.k
    headline = [[name.format(k=k), summary.get(name.format(k=k))] for name in HEADLINE]
    ragas = [[key, value] for key, value in summary.items() if key.startswith("ragas_")]
    latency = [
        [stage, figures["p50"], figures["p95"]] for stage, figures in summary["latency_ms"].items()
    ]

    def breakdown(groups: dict[str, dict[str, Any]]) -> str:
        names = [n.format(k=k) for n in BREAKDOWN]
        rows = [[g, *(f.get(n) for n in names)] for g, f in groups.items()]
        return _table(["group", *names], rows)

    questions = [
        [
            r.question_id,
            ", ".join(r.tags),
            r.metrics.get(f"recall_at_{k}"),
            r.metrics.get("citation_recall"),
            r.metrics.get("ragas_semantic_similarity"),
            r.refused,
            r.error or (r.answer[:160] + ("…" if len(r.answer) > 160 else "")),
        ]
        for r in records
    ]
    meta: list[list[object]] = [
        ["dataset", info.dataset],
        ["format", info.format.value],
        ["corpus", info.corpus],
        ["status", f"{info.status.value}, {info.done}/{info.total}"],
        ["models", ", ".join(summary["models"])],
        ["judge", info.judge_model],
        ["k / top_k", f"{k} / {info.top_k or 'setting'}"],
        ["questions / errors", f"{summary['n_questions']} / {summary['n_errors']}"],
    ]
    sections = [
        f"<h1>Evaluation run {html.escape(info.run_id)}</h1>",
        _table(["", ""], meta),
        "<h2>Headline figures</h2>",
        "<p>— : not measurable in this run (e.g. no verifier verdicts, no judge, no usage).</p>",
        _table(["metric", "value"], headline),
        "<h2>RAGAS</h2>",
        _table(["metric", "mean"], ragas),
        "<h2>Score distributions</h2>",
        _distributions(records, k),
        "<h2>By tag</h2>",
        breakdown(summary["by_tag"]),
        _breakdown_plot(summary["by_tag"], k, "by tag"),
        "<h2>By document</h2>",
        breakdown(summary["by_document"]),
        _breakdown_plot(summary["by_document"], k, "by gold document"),
        "<h2>Latency (ms)</h2>",
        _table(["stage", "p50", "p95"], latency),
        _latency_plot(records),
        "<h2>Questions</h2>",
        _table(
            ["id", "tags", f"recall@{k}", "citation recall", "similarity", "refused", "answer"],
            questions,
        ),
    ]
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:1200px}"
        "table{border-collapse:collapse;margin:0.5em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}"
        "th{background:#eef}img{max-width:100%}"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Regulus evaluation {html.escape(info.run_id)}</title><style>{style}</style>"
        f"</head><body>{''.join(sections)}</body></html>"
    )


class QuestionChange(BaseModel):
    question_id: str
    metric: str
    before: float | None
    after: float | None

    @property
    def delta(self) -> float:
        return (self.after or 0.0) - (self.before or 0.0)


class Comparison(BaseModel):
    a: str
    b: str
    figures: dict[str, tuple[float | None, float | None]]
    improved: list[QuestionChange]
    regressed: list[QuestionChange]
    only_in_a: list[str]
    only_in_b: list[str]


def compare_runs(a: RunFolder, b: RunFolder) -> Comparison:
    """Summary figures side by side, and each question whose scores moved from run A to run B."""
    info_a, info_b = a.info(), b.info()
    if info_a is None or info_b is None:
        missing = a.path if info_a is None else b.path
        raise FileNotFoundError(f"{missing} holds no evaluation run (no run.json)")
    records_a, records_b = a.records(), b.records()
    summary_a = summarize(list(records_a.values()), info_a)
    summary_b = summarize(list(records_b.values()), info_b)
    numeric = [
        key
        for key in summary_a
        if key in summary_b
        and key not in ("k", "top_k")
        and isinstance(summary_a[key] or summary_b[key], int | float)
    ]
    improved, regressed = [], []
    for question_id in sorted(records_a.keys() & records_b.keys()):
        before, after = records_a[question_id], records_b[question_id]
        changes = [
            QuestionChange(
                question_id=question_id,
                metric=name,
                before=before.metrics.get(name),
                after=after.metrics.get(name),
            )
            for name in [n.format(k=info_a.k) for n in COMPARED]
        ]
        if before.refused is not None and after.refused is not None:
            # For an answerable question a refusal is worse; for an unanswerable one, better.
            good = (lambda r: float(not r)) if before.answerable else (lambda r: float(r))
            changes.append(
                QuestionChange(
                    question_id=question_id,
                    metric="refusal ok",
                    before=good(before.refused),
                    after=good(after.refused),
                )
            )
        for change in changes:
            if change.before is None and change.after is None:
                continue
            if change.delta > 1e-9:
                improved.append(change)
            elif change.delta < -1e-9:
                regressed.append(change)
    return Comparison(
        a=str(a.path),
        b=str(b.path),
        figures={key: (summary_a[key], summary_b[key]) for key in numeric},
        improved=improved,
        regressed=regressed,
        only_in_a=sorted(records_a.keys() - records_b.keys()),
        only_in_b=sorted(records_b.keys() - records_a.keys()),
    )
