"""Every error leaves the API as JSON `{"error": "...", "detail": ...}` with a fitting status
(on the protocols' routes, in the shape of their clients)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

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


# The protocols (deployments/protocols/) answer errors in the shape their clients parse: each
# registers the paths it owns and how it words an error there (it may also pick another status,
# as OpenAI answers 400 where the native API says 422).
ErrorShape = Callable[[int, str, Any], tuple[int, dict]]
_SHAPES: list[tuple[Callable[[str], bool], ErrorShape]] = []


def register_error_shape(owns: Callable[[str], bool], shape: ErrorShape) -> None:
    _SHAPES.append((owns, shape))


def error_body(path: str, status: int, error: str, detail=None) -> tuple[int, dict]:
    """(status, JSON body) of an error answered at `path`."""
    for owns, shape in _SHAPES:
        if owns(path):
            return shape(status, error, detail)
    return status, {"error": error, "detail": detail}


def message_only_shape(status: int, message: str, detail) -> tuple[int, dict]:
    """`{"error": "..."}`, how TF Serving and KServe (Triton) write errors: no detail, and a
    malformed path parameter (the native API's 422, e.g. a version that is not a number) is a
    400 naming it."""
    if status == 422:
        param, problem = first_problem(detail)
        return 400, {"error": f"{param}: {problem}" if param and problem else message}
    return status, {"error": message}


def first_problem(detail) -> tuple[str | None, str | None]:
    """(the field, the message) of the first schema error of a 422's detail, if any."""
    if not isinstance(detail, list) or not detail or not isinstance(detail[0], dict):
        return None, None
    loc = [str(part) for part in detail[0].get("loc", ()) if part not in ("body", "path")]
    return ".".join(loc) or None, detail[0].get("msg")


def error_response(status: int, error: str, detail=None, headers=None,
                   path: str = "") -> JSONResponse:
    status, body = error_body(path, status, error, detail)
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_detail(errors) -> list[dict]:
    # Pydantic errors may hold the raw input (bytes, exceptions): keep only what is JSON-safe,
    # in the shape the OpenAPI schema documents for 422 (loc, msg, type).
    return [{"loc": [p if isinstance(p, (str, int)) else str(p) for p in e.get("loc", ())],
             "msg": str(e.get("msg", "")), "type": str(e.get("type", "value_error"))}
            for e in errors]


def _path(request: Request) -> str:
    return request.scope.get("path", "")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return error_response(exc.status, exc.error, exc.detail, exc.headers, _path(request))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        return error_response(422, "invalid request", _validation_detail(exc.errors()),
                              path=_path(request))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail), None,
                              getattr(exc, "headers", None), _path(request))

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound):
        return error_response(404, str(exc), path=_path(request))

    @app.exception_handler(Conflict)
    async def conflict(request: Request, exc: Conflict):
        return error_response(409, str(exc), path=_path(request))

    @app.exception_handler(InvalidName)
    async def invalid_name(request: Request, exc: InvalidName):
        return error_response(400, str(exc), path=_path(request))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        # Anything else is a bug or an outage: the detail (exception, traceback, paths) goes
        # to the server log only, the client gets the documented error shape.
        logger.error("unhandled error in %s %s", request.method, request.url.path,
                     exc_info=exc)
        return error_response(500, "internal server error", path=_path(request))
