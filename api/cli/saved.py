"""`regulus saved ...`: keep an answer of `regulus ask` (by its query id) as a memo, list, show,
review, export and delete saved answers, as the CLI user (`cli:<login>`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from api.cli.admin import cli_actor
from api.memo import MemoFormat
from api.saved_answers import SavedResearch
from api.services import Services
from core.models import Principal
from core.saved import CitationStatus, SavedAnswerError, SavedStatus
from core.settings import get_settings

app = typer.Typer(
    help="Saved answers: memos re-checked when what they cite changes.", no_args_is_help=True
)
console = Console(soft_wrap=True)
T = TypeVar("T")

GroupsOption = Annotated[
    str | None, typer.Option(help="Act as a member of these groups (comma-separated).")
]


@contextmanager
def _research(groups: str | None) -> Iterator[tuple[SavedResearch, Principal]]:
    services = Services(get_settings())
    principal = Principal(
        subject=cli_actor(),
        groups=services.settings.anonymous_groups if groups is None else _split(groups),
    )
    try:
        yield SavedResearch.of(services), principal
    finally:
        services.close()


def _split(groups: str) -> list[str]:
    return [g.strip() for g in groups.split(",") if g.strip()]


def _run(action: Callable[[], T]) -> T:
    try:
        return action()
    except SavedAnswerError as error:
        console.print(f"[red]error:[/red] {error.message}")
        raise typer.Exit(2) from error


@app.command("add")
def add(
    query_id: Annotated[int, typer.Argument(help="The query id `regulus ask` printed.")],
    title: Annotated[str, typer.Option(help="What the memo is about.")],
    notes: Annotated[str, typer.Option(help="Your notes.")] = "",
    share: Annotated[
        str | None, typer.Option(help="Share with these groups (comma-separated).")
    ] = None,
    groups: GroupsOption = None,
) -> None:
    """Save one of your answers with the exact text and version of everything it cites."""
    with _research(groups) as (research, principal):
        answer = _run(lambda: research.save(principal, query_id, title, notes, _split(share or "")))
    console.print(f"saved {answer.saved_id}: {len(answer.citations)} citations", highlight=False)


@app.command("list")
def list_saved(
    status: Annotated[SavedStatus | None, typer.Option(help="Only these.")] = None,
    groups: GroupsOption = None,
) -> None:
    """Your saved answers and those shared with your groups, newest first."""
    with _research(groups) as (research, principal):
        answers = research.visible(principal, status)
    table = Table("saved answer", "title", "status", "owner", "saved", "documents")
    for answer in answers:
        table.add_row(
            answer.saved_id,
            answer.title,
            answer.status.value,
            answer.owner,
            answer.created_at.strftime("%Y-%m-%d %H:%M"),
            ", ".join(sorted(answer.document_ids)),
        )
    console.print(table)


@app.command("show")
def show(saved_id: str, groups: GroupsOption = None) -> None:
    """One saved answer: its citations and how each reads now."""
    with _research(groups) as (research, principal):
        answer = _run(lambda: research.get(principal, saved_id))
    console.print(f"[bold]{answer.title}[/bold]  ({answer.status.value})", highlight=False)
    console.print(f"Q: {answer.question}", highlight=False)
    console.print(answer.answer, highlight=False)
    for reason in answer.reasons:
        console.print(f"[yellow]needs review:[/yellow] {reason}", highlight=False)
    for c in answer.citations:
        console.print(
            f"[bold][{c.n}][/bold] {c.document_title} — {c.section_path} "
            f"[dim](version {c.version[:12]}, {c.check.status.value})[/dim]",
            highlight=False,
        )
        if c.check.status is CitationStatus.MOVED:
            console.print(f"    now under {c.check.section}", highlight=False)
        if c.check.diff:
            words = {"delete": "[red]-{}[/red]", "insert": "[green]+{}[/green]", "equal": "{}"}
            diff = " ".join(words[s.op].format(s.text) for s in c.check.diff)
            console.print(f"    {diff}", highlight=False)


@app.command("review")
def review(saved_id: str, groups: GroupsOption = None) -> None:
    """Mark the changes to what it cites as reviewed."""
    with _research(groups) as (research, principal):
        answer = _run(lambda: research.review(principal, saved_id))
    console.print(f"{answer.saved_id}: {answer.status.value}")


@app.command("export")
def export(
    saved_id: str,
    format: Annotated[MemoFormat, typer.Option(help="markdown or html.")] = MemoFormat.MARKDOWN,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write here (default: stdout).")
    ] = None,
    groups: GroupsOption = None,
) -> None:
    """The saved answer as a Markdown or self-contained HTML memo."""
    with _research(groups) as (research, principal):
        text = _run(lambda: research.export(principal, saved_id, format))
    if output is None:
        print(text, end="")
    else:
        output.write_text(text, encoding="utf-8")


@app.command("delete")
def delete(saved_id: str, groups: GroupsOption = None) -> None:
    """Delete one of your saved answers."""
    with _research(groups) as (research, principal):
        _run(lambda: research.delete(principal, saved_id))
    console.print(f"deleted {saved_id}")
