"""Errors in A1111's shape (``{"error", "detail", "body", "errors"}``) and the one table that maps
each sdui error to its HTTP status. The server's 401 and the security middleware use it too."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ..types import redact_paths

# exception class name -> HTTP status; job errors are stored by class name (Job.error_kind)
STATUS = {
    "InvalidRequest": 422,
    "ValidationError": 422,
    "UnknownModelError": 404,
    "Cancelled": 409,
    "QueueFull": 503,
    "ModelLoadError": 500,
    "OutOfMemory": 507,
    "DiskFull": 507,
    "Unauthorized": 401,
    "Forbidden": 403,
}


def status_for(kind: str) -> int:
    """The HTTP status of an error kind (an exception class name); 500 for anything unexpected."""
    return STATUS.get(kind, 500)


def error_response(status: int, exc: BaseException | str, kind: str | None = None, headers: dict | None = None) -> JSONResponse:
    """An A1111-shaped error. Server paths in the text are cut to file names: the client is remote."""
    text = redact_paths(str(exc))
    return JSONResponse(status_code=status, headers=headers, content={
        "error": kind or (type(exc).__name__ if isinstance(exc, BaseException) else "Error"),
        "detail": text, "body": "", "errors": text})


def unauthorized() -> JSONResponse:
    return error_response(status_for("Unauthorized"), "Incorrect username or password", "Unauthorized",
                          headers={"WWW-Authenticate": 'Basic realm="sdui"'})


def install_error_handlers(app: FastAPI) -> None:
    """sdui's errors raised by a route become their status from STATUS, in A1111's shape."""
    from ..types import SduiError

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        if not request.url.path.startswith("/sdapi/"):
            return JSONResponse(status_code=422, content={"detail": exc.errors()})
        parts = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
            parts.append(f"{loc}: {err.get('msg')}")
        return error_response(422, "; ".join(parts), "ValidationError")

    @app.exception_handler(SduiError)
    async def _sdui_error(request: Request, exc: SduiError):
        kind = type(exc).__name__
        return error_response(status_for(kind), exc, kind)
