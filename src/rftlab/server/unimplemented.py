"""Fireworks routes that `rftlab serve` does not implement answer 501 UNIMPLEMENTED naming the method and path,
not a 404 that reads like a missing resource or a 405. The catch-all router is included after every other one,
so each implemented route matches first."""

from __future__ import annotations

from fastapi import APIRouter, Request

from rftlab.server.errors import ApiError

router = APIRouter()
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def unimplemented(request: Request) -> ApiError:
    return ApiError(
        501,
        "UNIMPLEMENTED",
        f"{request.method} {request.url.path}: rftlab serve does not implement this Fireworks route",
    )


def refuse_custom_method(resource_id: str, request: Request) -> None:
    """`GET .../evaluators/e:getSourceCodeEndpoint` reaches the plain GET of `e` (ids have no ':'); such a custom
    method that no route implements is a 501, not a missing resource."""
    if ":" in resource_id:
        raise unimplemented(request)


@router.api_route("/v1/{path:path}", methods=METHODS, include_in_schema=False)
def not_implemented(path: str, request: Request) -> None:
    raise unimplemented(request)
