"""The `regulus` command line: ingest, ask, serve."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from core.pipeline import AnswerUnavailableError, Services
from core.settings import get_settings
from retrieval.filters import Principal, SearchFilters
from retrieval.store import StoreUnavailableError

app = typer.Typer(help="Regulus: cited answers from regulatory documents.", no_args_is_help=True)
console = Console(soft_wrap=True)  # quotes stay whole lines, easy to copy


def _services() -> Services:
    try:
        return Services(get_settings())
    except StoreUnavailableError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to ingest.", exists=True)],
) -> None:
    """Parse, chunk, embed and store documents; unchanged documents are skipped."""
    from ingest.pipeline import DocumentOutcome, DocumentStatus, Ingestor, discover_files

    files = list(discover_files(paths))
    services = _services()
    try:
        ingestor = Ingestor.from_settings(services.settings, services.store, services.embedder)
        with Progress(
            TextColumn("[bold]ingest"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=console,
        ) as progress:
            task = progress.add_task("", total=len(files))

            def advance(outcome: DocumentOutcome) -> None:
                progress.console.print(
                    f"{outcome.status.value:>9}  {outcome.document_id}"
                    + (f"  ({outcome.chunks} chunks)" if outcome.chunks else "")
                    + (f"  [red]{outcome.error}[/red]" if outcome.error else "")
                )
                progress.advance(task)

            report = ingestor.run(files, on_document=advance)
        console.print(
            f"{report.count(DocumentStatus.INGESTED)} ingested, "
            f"{report.count(DocumentStatus.UNCHANGED)} unchanged, "
            f"{report.count(DocumentStatus.FAILED)} failed; "
            f"{services.store.count()} chunks in the store"
        )
    finally:
        services.close()
    if report.count(DocumentStatus.FAILED):
        raise typer.Exit(1)


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
    principal = services.anonymous_principal()
    if groups is not None:
        principal = Principal(subject="cli", groups=[g.strip() for g in groups.split(",") if g])
    try:
        result = services.query_pipeline().run(question, principal, filters, top_k)
    except AnswerUnavailableError as error:
        console.print(f"[red]model unavailable:[/red] {error}")
        raise typer.Exit(3) from error
    finally:
        services.close()
    console.print(result.answer.text, highlight=False)
    console.print()
    for citation in result.answer.citations:
        console.print(
            f"[bold][{citation.n}][/bold] {citation.document_title} — {citation.section}",
            highlight=False,
        )
        console.print(f"    “{citation.quote}”", style="dim", highlight=False)
    console.print(f"[dim]model: {result.answer.model}[/dim]")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Serve the HTTP API and its OpenAPI docs."""
    import uvicorn

    from api.main import create_app

    console.print(f"Regulus API on http://{host}:{port}  (docs: http://{host}:{port}/docs)")
    uvicorn.run(create_app(get_settings()), host=host, port=port)


@app.command("local-llm")
def local_llm(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8081,
) -> None:
    """Serve the small packaged CPU model over the OpenAI-compatible API (a stand-in for vLLM)."""
    import os

    from generation.local_server import server_command

    try:
        command = server_command(host, port)
    except FileNotFoundError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    console.print(f"local model server on http://{host}:{port}/v1")
    os.execv(command[0], command)


if __name__ == "__main__":
    app()
