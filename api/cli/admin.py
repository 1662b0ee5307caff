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

from core.audit import AuditLog
from core.auth import KeyStore
from core.db import make_engine, make_session_factory
from core.models import Role
from core.settings import Settings, get_settings

keys_app = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)
audit_app = typer.Typer(
    help="The audit trail: verify the hash chain, export.", no_args_is_help=True
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
    audit = AuditLog(sessions, redact_pii=settings.audit_redact_pii)
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
def verify() -> None:
    """Check the hash chain; exit code 1 and the first bad row when a row was edited or deleted."""
    with sql_stores() as (_, audit):
        report = audit.verify()
    if not report.ok:
        console.print(f"[red]audit log BROKEN at row {report.first_bad_id}:[/red] {report.problem}")
        raise typer.Exit(1)
    console.print(f"audit log intact: {report.checked} rows")


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
