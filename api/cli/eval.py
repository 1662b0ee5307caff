"""`regulus eval ...`: benchmarks that run the product's own pipeline components."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from api.services import Services, build_index
from core.model_files import file_sha256
from core.models import Chunk, Principal, Role, SearchMode
from core.settings import Settings, get_settings
from eval.datasets import DatasetError, DatasetFormat, EvalQuestion
from eval.index import prepare_index
from eval.jobs import judge_config
from eval.ragas_scores import JudgeConfig, RagasScorer
from eval.report import compare_runs, render_report
from eval.retrieval import RetrievalScores, run_questions, score
from eval.run import (
    EvalRunner,
    QuestionRecord,
    RunConflictError,
    RunFolder,
    RunInfo,
    load_eval_questions,
)
from eval.splits import is_training_question
from ingest.pipeline import discover_files
from retrieval.embedder import Embedder

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


def _principal(groups: str | None, default: list[str]) -> Principal:
    return Principal(
        subject="evaluator",
        groups=[g.strip() for g in groups.split(",") if g.strip()] if groups else default,
        role=Role.EVALUATOR,
    )


def _load(
    path: Path, fmt: DatasetFormat | None, services: Services, corpus: list[Path]
) -> tuple[DatasetFormat, list[EvalQuestion], dict[str, Chunk], list[str]]:
    try:
        loaded = load_eval_questions(path, fmt, services.store, discover_files(corpus))
    except DatasetError as error:
        services.close()
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    for warning in loaded[3]:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    return loaded


def _index(corpus: Path | None, settings: Settings, embedder: Embedder) -> Settings:
    """Settings of the benchmark index of `corpus` (built if needed), or the configured store."""
    if corpus is None:
        return settings
    with _progress() as progress:
        task = progress.add_task("index", total=len(list(discover_files([corpus]))))
        index_settings, report = prepare_index(
            corpus,
            settings,
            partial(build_index, embedder=embedder),
            on_document=lambda _: progress.advance(task),
        )
    console.print(
        f"index: {index_settings.data_dir}"
        + (" (reused)" if report is None else f" (built: {len(report.documents)} documents)")
    )
    return index_settings


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
    # Retrieval never answers: the index needs no sentence vectors (a third of its build time).
    settings = get_settings().model_copy(update={"sentence_vectors": False})
    embedder = Embedder.from_settings(settings)
    index_settings = _index(corpus, settings, embedder)
    services = Services(index_settings, embedder=embedder)
    fmt, loaded, _, _ = _load(questions, dataset_format, services, [corpus])
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
    principal = _principal(groups, settings.default_access_groups)
    services.serve_queries()  # measure latency as the API serves it
    scores: dict[str, RetrievalScores] = {}
    try:
        runs = {
            "regulus": services.retriever(),
            "bm25": services.retriever(SearchMode.SPARSE, rerank=False, expand=False),
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
    label = (
        settings.search_mode.value
        + (" + rerank" if settings.reranker else "")
        + (" + references" if settings.expand_references else "")
    )
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


@app.command()
def run(
    dataset: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="Question file.")],
    out: Annotated[Path, typer.Option(file_okay=False, help="Run folder (resumed if present).")],
    corpus: Annotated[
        Path | None,
        typer.Option(exists=True, help="Corpus to index (default: the configured store)."),
    ] = None,
    dataset_format: Annotated[
        DatasetFormat | None, typer.Option("--format", help="Default: detected.")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N questions.")] = None,
    k: Annotated[int, typer.Option(min=1, max=100, help="Cut-off for ranking metrics.")] = 10,
    top_k: Annotated[
        int | None, typer.Option(min=1, max=50, help="Passages the answer sees (default: setting).")
    ] = None,
    judge_url: Annotated[
        str | None,
        typer.Option(help="OpenAI-compatible judge (default: REGULUS_EVAL_JUDGE_URL, if set)."),
    ] = None,
    judge_model: Annotated[
        str | None, typer.Option(help="The judge's model (default: REGULUS_EVAL_JUDGE_MODEL).")
    ] = None,
    judge_metric_timeout: Annotated[
        float, typer.Option(min=1, help="Seconds one judged metric may take.")
    ] = 300.0,
    groups: Annotated[
        str | None, typer.Option(help="Evaluate as these groups (default: the documents' default).")
    ] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option(
            help="Only questions with this tag (repeat: all of them), e.g. split:heldout."
        ),
    ] = None,
    ragas: Annotated[bool, typer.Option(help="Compute RAGAS metrics.")] = True,
) -> None:
    """Answer every question with the query pipeline and score retrieval, citations, refusals."""
    settings = get_settings()
    embedder = Embedder.from_settings(settings)
    index_settings = _index(corpus, settings, embedder)
    services = Services(index_settings, embedder=embedder)
    try:
        fmt, questions, chunks, _ = _load(
            dataset, dataset_format, services, [corpus] if corpus else []
        )
        questions = [q for q in questions if set(tag or []) <= set(q.tags)][:limit]
        judge = judge_config(settings)
        if judge_url:
            judge = JudgeConfig(
                base_url=judge_url,
                model=judge_model or settings.eval_judge_model,
                api_key=settings.eval_judge_api_key.get_secret_value(),
            )
        if judge:
            judge = judge.model_copy(update={"metric_timeout_s": judge_metric_timeout})
        principal = _principal(groups, settings.default_access_groups)
        info = RunInfo(
            run_id=out.name,
            groups=principal.groups,
            dataset=str(dataset),
            dataset_sha256=file_sha256(dataset),
            format=fmt,
            corpus=str(corpus) if corpus else None,
            k=k,
            top_k=top_k,
            judge_model=judge.model if judge else None,
        )
        services.serve_queries()
        runner = EvalRunner(
            services.query_pipeline(audited=False),
            principal,
            chunks,
            RagasScorer(embedder, judge) if ragas else None,
            k=k,
            top_k=top_k,
        )
        folder = RunFolder(out)
        already = len(folder.records())
        console.print(
            f"{len(questions)} {fmt.value} questions"
            + (f"; {already} already recorded in {out}" if already else "")
        )
        with _progress() as progress:
            task = progress.add_task("questions", total=len(questions))
            done = sum(1 for r in folder.records().values() if r.error is None)
            progress.update(task, completed=min(done, len(questions)))

            def advance(record: QuestionRecord) -> None:
                if record.error:
                    progress.console.print(f"[red]{record.question_id}:[/red] {record.error}")
                progress.advance(task)

            summary = runner.run(questions, folder, info, on_question=advance)
    except RunConflictError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    finally:
        services.close()
    print_summary(summary)
    console.print(f"results: {out / 'results.jsonl'}, figures: {out / 'summary.json'}")


def _fmt(value: object) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def print_summary(summary: dict[str, object]) -> None:
    table = Table(title=f"{summary['dataset']}: {summary['n_questions']} questions")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if isinstance(value, float | int) or value is None:
            table.add_row(key, _fmt(value))
    latency = summary.get("latency_ms")
    if isinstance(latency, dict):
        for stage, figures in latency.items():
            table.add_row(
                f"latency_ms {stage} p50/p95", f"{_fmt(figures['p50'])} / {_fmt(figures['p95'])}"
            )
    console.print(table)
    by_tag = summary.get("by_tag")
    if isinstance(by_tag, dict) and by_tag:
        print_by_tag(by_tag)


BY_TAG_COLUMNS = (
    ("n", "n"),
    ("false_refusal_rate", "false refusals"),
    ("fully_cited", "every gold cited"),
    ("citation_recall", "gold cited"),
    ("key_fact_recall", "key facts"),
    ("refusal_accuracy", "unanswerable refused"),
)


def print_by_tag(by_tag: dict[str, dict[str, object]]) -> None:
    """The answer figures per question tag (question type, document, split)."""
    table = Table(title="by tag")
    table.add_column("tag")
    for _, title in BY_TAG_COLUMNS:
        table.add_column(title, justify="right")
    for name, figures in by_tag.items():
        table.add_row(name, *(_fmt(figures.get(key)) for key, _ in BY_TAG_COLUMNS))
    console.print(table)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="A run folder.")],
    out: Annotated[Path | None, typer.Option(help="Default: RUN_DIR/report.html.")] = None,
) -> None:
    """Render a run as a self-contained HTML report: tables, distributions, breakdowns, latency."""
    try:
        page = render_report(RunFolder(run_dir))
    except FileNotFoundError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    target = out or run_dir / "report.html"
    target.write_text(page, encoding="utf-8")
    console.print(f"report written to {target}")


@app.command()
def compare(
    a: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="The earlier run.")],
    b: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="The later run.")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write it here.")] = None,
) -> None:
    """What improved and what regressed from run A to run B, overall and question by question."""
    try:
        comparison = compare_runs(RunFolder(a), RunFolder(b))
    except FileNotFoundError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    figures = Table(title="figures")
    for column in ("metric", "A", "B", "change"):
        figures.add_column(column, justify="left" if column == "metric" else "right")
    for name, (old, new) in comparison.figures.items():
        delta = f"{new - old:+.3f}" if old is not None and new is not None else ""
        figures.add_row(name, _fmt(old), _fmt(new), delta)
    console.print(figures)
    for title, changes, style in (
        ("regressed", comparison.regressed, "red"),
        ("improved", comparison.improved, "green"),
    ):
        table = Table(title=f"{title}: {len(changes)} question metrics")
        for column in ("question", "metric", "A", "B"):
            table.add_column(column)
        for change in changes:
            moved = f"[{style}]{_fmt(change.after)}[/{style}]"
            table.add_row(change.question_id, change.metric, _fmt(change.before), moved)
        console.print(table)
    if comparison.only_in_a or comparison.only_in_b:
        console.print(
            f"only in A: {len(comparison.only_in_a)} questions; "
            f"only in B: {len(comparison.only_in_b)}"
        )
    if json_out:
        json_out.write_text(comparison.model_dump_json(indent=2))
        console.print(f"comparison written to {json_out}")
