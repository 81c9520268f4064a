"""API errors in the Google (AIP-193) shape Fireworks answers with: `{"error": {"code", "message", "status"}}`.

The fireworks-ai SDK raises BadRequestError, NotFoundError, ConflictError... from the HTTP status and keeps the
decoded body as `err.body`, so the message reaches the user either way.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse


class ApiError(Exception):
    def __init__(self, http_status: int, status: str, message: str) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.status = status
        self.message = message

    def response(self) -> JSONResponse:
        return error_response(self.http_status, self.status, self.message)


def error_response(http_status: int, status: str, message: str) -> JSONResponse:
    return JSONResponse(
        status_code=http_status,
        content={"error": {"code": http_status, "message": message, "status": status}},
    )


def invalid(message: str) -> ApiError:
    return ApiError(400, "INVALID_ARGUMENT", message)


def failed_precondition(message: str) -> ApiError:
    return ApiError(400, "FAILED_PRECONDITION", message)


def not_found(name: str) -> ApiError:
    return ApiError(404, "NOT_FOUND", f"{name} not found")


def already_exists(name: str) -> ApiError:
    return ApiError(409, "ALREADY_EXISTS", f"{name} already exists")


def resource_exhausted(message: str) -> ApiError:
    return ApiError(429, "RESOURCE_EXHAUSTED", message)


def unauthenticated(message: str) -> ApiError:
    return ApiError(401, "UNAUTHENTICATED", message)


def describe_validation_errors(errors: list[dict[str, Any]]) -> str:
    """pydantic/FastAPI errors as one line per field: `trainingConfig.loraRank: <what is wrong>`."""
    parts = []
    for error in errors:
        loc = [str(p) for p in error.get("loc", ()) if p not in ("body",)]
        field = ".".join(loc) or "request"
        if error.get("type") == "json_invalid":
            field = "request body"
            message = f"invalid JSON at character {loc[-1] if loc else 0}"
        elif error.get("type") == "extra_forbidden":
            message = "unknown field"
        else:
            message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        if (
            "input" in error
            and error.get("type") not in ("missing", "extra_forbidden")
            and _short(error["input"])
        ):
            message += f" (got {error['input']!r})"
        parts.append(f"{field}: {message}")
    return "; ".join(parts)


def _short(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool)) and len(repr(value)) <= 80
