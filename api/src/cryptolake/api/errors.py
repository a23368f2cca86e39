"""One error body for every failure: ``{"error": {"status", "code", "message", "parameter"}}``."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

# What the guard (cryptolake.api.guard) may answer on any data route, for the OpenAPI document.
GUARD_RESPONSES: dict[int | str, dict[str, Any]] = {
    429: {"description": "Over the per-client rate limit (Retry-After)"},
    504: {"description": "No answer within the request timeout"},
}


class ApiError(Exception):
    """An error the client can act on (or a 503 it can retry)."""

    def __init__(self, status: int, code: str, message: str, parameter: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.parameter = status, code, message, parameter


def bad_parameter(parameter: str, message: str) -> ApiError:
    return ApiError(422, "invalid_parameter", f"{parameter}: {message}", parameter)


def error_response(
    status: int, code: str, message: str, parameter: str | None = None, headers: Any = None
) -> Response:
    body = {"status": status, "code": code, "message": message, "parameter": parameter}
    return Response(
        orjson.dumps({"error": body}),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _validation_message(error: dict[str, Any]) -> tuple[str | None, str]:
    location = [str(part) for part in error.get("loc", ()) if part not in ("query", "body")]
    parameter = location[0] if location else None
    message = str(error.get("msg", "invalid value"))
    return parameter, f"{parameter}: {message}" if parameter else message


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> Response:
        headers = {"Retry-After": "5"} if error.status == 503 else None
        return error_response(error.status, error.code, error.message, error.parameter, headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> Response:
        parameter, message = _validation_message(error.errors()[0])
        return error_response(422, "invalid_parameter", message, parameter)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}.get(
            error.status_code, "http_error"
        )
        return error_response(error.status_code, code, str(error.detail), None, error.headers)
