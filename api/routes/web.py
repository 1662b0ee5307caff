"""The analyst web page: static files served at `/`, outside the OpenAPI schema.

Plain HTML, CSS and JavaScript, no build step: what is in `api/static/` is what the browser gets.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from api.errors import ApiError

STATIC = Path(__file__).resolve().parent.parent / "static"
# Only what ships in the folder is served; a name from the URL never becomes a path.
_ASSETS = {path.name: path for path in STATIC.iterdir() if path.is_file()}
# The page loads nothing but its own files and talks to nothing but this API.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get("/")
def index() -> FileResponse:
    return FileResponse(_ASSETS["index.html"], media_type="text/html", headers=_PAGE_HEADERS)


@router.get("/static/{name}")
def asset(name: str) -> FileResponse:
    path = _ASSETS.get(name)
    if path is None:
        raise ApiError(404, "not_found", f"no file {name!r}")
    return FileResponse(
        path, headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    )
