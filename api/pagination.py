"""Pagination for list routes: `limit` (default 50, max 500) and `offset` in, a page out.

Every list answers `{"items": [...], "total": N, "limit", "offset"}` so that a client can tell how
far it has read without another request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel, Field

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_OFFSET = 2**31 - 1  # what every SQL backend's INTEGER holds; larger is a 422, not a 500


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int = Field(ge=0, description="Items matching the request, across all pages.")
    limit: int
    offset: int


class PageParams(BaseModel):
    limit: int = DEFAULT_LIMIT
    offset: int = 0

    def page(self, items: Sequence[T], total: int) -> Page[T]:
        """A page of items already cut to this window (e.g. by the SQL query)."""
        return Page[T](items=list(items), total=total, limit=self.limit, offset=self.offset)

    def slice(self, items: Sequence[T]) -> Page[T]:
        """A page cut from the whole list (when the list is filtered in Python)."""
        return self.page(items[self.offset : self.offset + self.limit], len(items))


def page_params(
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="Items per page (at most 500).")
    ] = DEFAULT_LIMIT,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Items to skip.")] = 0,
) -> PageParams:
    return PageParams(limit=limit, offset=offset)


Pagination = Annotated[PageParams, Depends(page_params)]
