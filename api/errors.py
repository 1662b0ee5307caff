"""One error body for every failure: {"error": {"code", "message"}}."""

from __future__ import annotations

from fastapi import HTTPException


class ApiError(HTTPException):
    def __init__(
        self, status_code: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status_code=status_code, detail=message, headers=headers)
        self.code = code
