"""`regulus keys ...` and `regulus audit ...`: they touch only the SQL store, so they work while
the server holds the embedded vector store."""

from __future__ import annotations

import datetime as dt
import getpass
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from core.audit import AuditLog, Checkpoint
from core.auth import KeyStore
from core.db import make_engine, make_session_factory
from core.models import Role
from core.settings import Settings, get_settings

keys_app = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)
audit_app = typer.Typer(
    help="The audit trail: verify the keyed hash chain, checkpoint it, export.",
    no_args_is_help=True,
)
console = Console(soft_wrap=True)


def cli_actor() -> str:
    """Who runs the command, as audit rows name them."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


@contextmanager
def sql_stores(settings: Settings | None = None) -> Iterator[tuple[KeyStore, AuditLog]]:
    settings = settings or get_settings()
    engine = make_engine(settings)
    sessions = make_session_factory(engine)
    audit = AuditLog.from_settings(sessions, settings)
    try:
        yield KeyStore(sessions, audit), audit
    finally:
        engine.dispose()


def bootstrap_admin_key(settings: Settings) -> str | None:
    """The first start's admin key (None when an admin key exists or auth is off)."""
    if not settings.auth_enabled:
        return None
    with sql_stores(settings) as (keys, _):
        return keys.ensure_admin(settings.default_access_groups)


@keys_app.command("create")
def create_key(
    role: Annotated[Role, typer.Option(help="What the holder may do.")] = Role.ANALYST,
    groups: Annotated[str, typer.Option(help="Access groups, comma-separated.")] = "",
    name: Annotated[str, typer.Option(help="Who or what holds the key.")] = "",
) -> None:
    """Create a key and print its secret: this is the only time it is shown."""
    with sql_stores() as (keys, _):
        key, secret = keys.create(role, groups.split(","), name, created_by=cli_actor())
    console.print(f"key {key.key_id} ({key.role.value}; groups: {','.join(key.groups) or '-'})")
    print(secret)  # alone on its line, without markup, for scripts


@keys_app.command("list")
def list_keys() -> None:
    """Every key, revoked ones included; never the secrets."""
    with sql_stores() as (keys, _):
        found = keys.keys()
    table = Table("id", "name", "prefix", "role", "groups", "created", "revoked")
    for key in found:
        table.add_row(
            key.key_id,
            key.name,
            key.prefix + "…",
            key.role.value,
            ",".join(key.groups),
            key.created_at.strftime("%Y-%m-%d %H:%M"),
            key.revoked_at.strftime("%Y-%m-%d %H:%M") if key.revoked_at else "",
        )
    console.print(table)


@keys_app.command("revoke")
def revoke_key(key_id: Annotated[str, typer.Argument(help="The key's id.")]) -> None:
    """Revoke a key: every later request with it is refused."""
    with sql_stores() as (keys, _):
        key = keys.revoke(key_id, actor=cli_actor())
    if key is None:
        console.print(f"[red]error:[/red] no key {key_id!r}")
        raise typer.Exit(2)
    console.print(f"revoked {key.key_id} ({key.name})")


@audit_app.command("verify")
def verify(
    against: Annotated[
        Path | None,
        typer.Option(
            help="A checkpoint written by `regulus audit checkpoint`: the log must still hold "
            "its head row unchanged (catches a cut tail and any rewrite before it)."
        ),
    ] = None,
) -> None:
    """Check the hash chain; exit code 1 and the first bad row when a row was edited or deleted."""
    checkpoint = None
    if against is not None:
        try:
            checkpoint = Checkpoint.model_validate_json(against.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            console.print(f"[red]error:[/red] {against}: not a readable checkpoint ({error})")
            raise typer.Exit(2) from error
    with sql_stores() as (_, audit):
        report = audit.verify(against=checkpoint)
    if not report.ok:
        where = f" at row {report.first_bad_id}" if report.first_bad_id else ""
        console.print(f"[red]audit log BROKEN{where}:[/red] {report.problem}")
        raise typer.Exit(1)
    anchored = f", up to the checkpoint of row {checkpoint.last_id}" if checkpoint else ""
    console.print(f"audit log intact: {report.checked} rows{anchored}")


@audit_app.command("checkpoint")
def checkpoint(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
) -> None:
    """Write the verified head of the chain, signed with the audit key, as one JSON object: keep
    it outside the database (and the server) and check the log against it with `verify
    --against`."""
    with sql_stores() as (_, audit):
        try:
            head = audit.checkpoint()
        except ValueError as error:
            console.print(f"[red]error:[/red] {error}")
            raise typer.Exit(1) from error
    if output is None:
        print(head.model_dump_json())
        return
    output.write_text(head.model_dump_json() + "\n", encoding="utf-8")
    console.print(f"checkpoint of row {head.last_id} written to {output}")


@audit_app.command("rekey")
def rekey() -> None:
    """Adopt a chain written before the audit key existed: check it, then hash it again under the
    key (run once after upgrading; a chain that does not check is left alone, exit code 1)."""
    with sql_stores() as (_, audit):
        report = audit.rekey()
    if not report.ok:
        console.print(
            f"[red]not adopted: the log is broken at row {report.first_bad_id}:[/red] "
            f"{report.problem}"
        )
        raise typer.Exit(1)
    console.print(f"audit log keyed: {report.checked} rows")


def _moment(value: str | None, end: bool) -> dt.datetime | None:
    """An ISO date or time, UTC unless it names a zone; a bare --until date includes that day."""
    if value is None:
        return None
    try:
        if "T" not in value and " " not in value:
            day = dt.datetime.combine(dt.date.fromisoformat(value), dt.time(), dt.UTC)
            return day + dt.timedelta(days=1) if end else day
        moment = dt.datetime.fromisoformat(value)
    except ValueError as error:
        raise typer.BadParameter(f"{value!r} is not an ISO date or time") from error
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


@audit_app.command("export")
def export(
    since: Annotated[str | None, typer.Option(help="From this date/time (ISO, UTC).")] = None,
    until: Annotated[str | None, typer.Option(help="Up to this date (inclusive) or time.")] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
) -> None:
    """Write the rows in the range as JSON lines, oldest first."""
    start, stop = _moment(since, end=False), _moment(until, end=True)
    with sql_stores() as (_, audit):
        out = output.open("w", encoding="utf-8") if output else sys.stdout
        try:
            for entry in audit.export(start, stop):
                out.write(entry.model_dump_json() + "\n")
        finally:
            if output:
                out.close()
