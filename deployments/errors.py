"""Every error leaves the API as JSON `{"error": "...", "detail": ...}` with a fitting status."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from registry import Conflict, InvalidName, NotFound

logger = logging.getLogger("ray.serve")


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail=None, headers: dict | None = None):
        super().__init__(error)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers


class Overloaded(Exception):
    """A model's waiting queue is full: raised in a Generator replica, answered 503 here."""


def error_response(status: int, error: str, detail=None, headers=None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def _validation_detail(errors) -> list[dict]:
    # Pydantic errors may hold the raw input (bytes, exceptions): keep only what is JSON-safe,
    # in the shape the OpenAPI schema documents for 422 (loc, msg, type).
    return [{"loc": [p if isinstance(p, (str, int)) else str(p) for p in e.get("loc", ())],
             "msg": str(e.get("msg", "")), "type": str(e.get("type", "value_error"))}
            for e in errors]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return error_response(exc.status, exc.error, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        return error_response(422, "invalid request", _validation_detail(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail), None,
                              getattr(exc, "headers", None))

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound):
        return error_response(404, str(exc))

    @app.exception_handler(Conflict)
    async def conflict(request: Request, exc: Conflict):
        return error_response(409, str(exc))

    @app.exception_handler(InvalidName)
    async def invalid_name(request: Request, exc: InvalidName):
        return error_response(400, str(exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        # Anything else is a bug or an outage: the detail (exception, traceback, paths) goes
        # to the server log only, the client gets the documented error shape.
        logger.error("unhandled error in %s %s", request.method, request.url.path,
                     exc_info=exc)
        return error_response(500, "internal server error")
