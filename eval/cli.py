"""`regulus eval ...`: benchmarks that run the product's own pipeline components."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from core.models import SearchMode
from core.pipeline import Services
from core.settings import get_settings
from eval.datasets import DatasetFormat, PassageIndex, load_questions
from eval.index import prepare_index
from eval.retrieval import RetrievalScores, run_questions, score
from eval.splits import is_training_question
from ingest.pipeline import discover_files
from retrieval.embedder import Embedder
from retrieval.filters import Principal

app = typer.Typer(help="Benchmarks on question sets with gold evidence.", no_args_is_help=True)
console = Console(soft_wrap=True)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def _read_ids(files: list[Path]) -> set[str]:
    return {line.strip() for f in files for line in f.read_text().splitlines() if line.strip()}


@app.command()
def retrieval(
    questions: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="Question file.")],
    corpus: Annotated[Path, typer.Option(exists=True, help="Corpus folder (or file) to index.")],
    k: Annotated[int, typer.Option(min=1, max=100, help="Cut-off for the metrics.")] = 10,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N questions.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write figures here.")] = None,
    dataset_format: Annotated[
        DatasetFormat | None, typer.Option("--format", help="Default: detected.")
    ] = None,
    exclude_ids: Annotated[
        list[Path] | None,
        typer.Option(help="Files of question ids to leave out (e.g. a model's training ids)."),
    ] = None,
    groups: Annotated[
        str | None, typer.Option(help="Groups to search as (default: the documents' default).")
    ] = None,
    heldout_only: Annotated[
        bool,
        typer.Option(help="Leave out the ObliQA dev half the project's models train on."),
    ] = False,
) -> None:
    """Recall@k, MAP@k, nDCG@k, MRR and latency of the configured retriever, beside plain BM25."""
    settings = get_settings()
    embedder = Embedder.from_settings(settings)
    with _progress() as progress:
        task = progress.add_task("index", total=len(list(discover_files([corpus]))))
        index_settings, report = prepare_index(
            corpus, settings, embedder, on_document=lambda _: progress.advance(task)
        )
    console.print(
        f"index: {index_settings.data_dir}"
        + (" (reused)" if report is None else f" (built: {len(report.documents)} documents)")
    )
    passage_index = PassageIndex(discover_files([corpus]))
    fmt, loaded = load_questions(questions, dataset_format, passage_index)
    excluded = _read_ids(exclude_ids or [])
    selected = [
        q
        for q in loaded
        if q.question_id not in excluded
        and not (heldout_only and is_training_question(q.question_id))
    ][:limit]
    unresolved = sum(not q.gold_ids for q in selected)
    console.print(
        f"{len(selected)} {fmt.value} questions"
        + (f" ({len(loaded) - len(selected)} left out)" if len(selected) < len(loaded) else "")
        + (f"; {unresolved} without gold in this corpus, not scored" if unresolved else "")
    )
    principal = Principal(
        subject="evaluator",
        groups=groups.split(",") if groups else settings.default_access_groups,
    )
    services = Services(index_settings, embedder=embedder)
    services.serve_queries()  # measure latency as the API serves it
    scores: dict[str, RetrievalScores] = {}
    try:
        runs = {
            "regulus": services.retriever(),
            "bm25": services.retriever(SearchMode.SPARSE, rerank=False),
        }
        with _progress() as progress:
            for name, retriever in runs.items():
                task = progress.add_task(name, total=len(selected))
                results = run_questions(
                    lambda q, r=retriever: r.run(q, principal, top_k=k),  # type: ignore[misc]
                    selected,
                    on_question=lambda _, t=task: progress.advance(t),  # type: ignore[misc]
                )
                scores[name] = score(results, k)
    finally:
        services.close()
    label = settings.search_mode.value + (" + rerank" if settings.reranker else "")
    _print_scores(scores, label)
    if json_out:
        figures = scores["regulus"].model_dump() | {
            "mode": label,
            "reranker": settings.reranker,
            "format": fmt.value,
            "questions": str(questions),
            "corpus": str(corpus),
            "bm25": scores["bm25"].model_dump(),
        }
        json_out.write_text(json.dumps(figures, indent=2))
        console.print(f"figures written to {json_out}")


def _print_scores(scores: dict[str, RetrievalScores], label: str) -> None:
    ours, bm25 = scores["regulus"], scores["bm25"]
    table = Table(title=f"retrieval @ {ours.k} on {ours.n_questions} questions")
    table.add_column("metric")
    table.add_column(f"regulus ({label})", justify="right")
    table.add_column("bm25", justify="right")
    for field in ("recall_at_k", "map_at_k", "ndcg_at_k", "mrr", "all_gold_at_k"):
        table.add_row(field, f"{getattr(ours, field):.3f}", f"{getattr(bm25, field):.3f}")
    for field in ("latency_ms_p50", "latency_ms_p95"):
        table.add_row(field, f"{getattr(ours, field):.1f}", f"{getattr(bm25, field):.1f}")
    console.print(table)
