"""Unknown query parameters are refused (422 naming each), not ignored; so is a parameter that
takes one value given more than once.

FastAPI ignores a query parameter no route declares. For this API that is a wrong answer, not
a harmless one: `?agencies=in-moe` (for `agency`) or `?form=2026-01-01` (for `from`) would be
answered with the national total or the default range, as if the filter had been applied.
Likewise it answers `?basis=tokens&basis=requests` with the last one, silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

_MAX_NAMED = 20  # unknown names listed in one answer; a caller controls how many it sends

# A route's declared query names, worked out on its first request and kept on the route (an
# app built and dropped, as tests do, takes them along; APIRoute is not hashable).
_NAMES = "_tracker_query_names"


def _repeatable(annotation: Any) -> bool:
    """Whether a parameter of this type takes a list of values (`?agency=a&agency=b`)."""
    origin = get_origin(annotation)
    if origin in (Union, UnionType, Annotated):
        return any(_repeatable(arg) for arg in get_args(annotation))
    return origin in (list, tuple, set, frozenset, Sequence)


def _query_names(dependant: Dependant) -> dict[str, bool]:
    """The route's own query parameters and those of every dependency it uses (Filters), each
    with whether it takes several values."""
    names = {
        param.alias: _repeatable(param.field_info.annotation) for param in dependant.query_params
    }
    for sub in dependant.dependencies:
        names.update(_query_names(sub))
    return names


def _names(route: APIRoute) -> dict[str, bool]:
    names: dict[str, bool] | None = getattr(route, _NAMES, None)
    if names is None:
        names = _query_names(route.dependant)
        setattr(route, _NAMES, names)
    return names


def known_query_only(request: Request) -> None:
    """A router dependency: 422 for any query parameter the matched route does not declare."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    declared = _names(route)
    unknown = sorted({name for name in request.query_params if name not in declared})
    if unknown:
        raise RequestValidationError(
            [
                {
                    "type": "extra_forbidden",
                    "loc": ("query", name[:100]),
                    "msg": "unknown query parameter; this endpoint takes "
                    + (", ".join(sorted(declared)) or "none"),
                    "input": request.query_params.get(name, "")[:100],
                }
                for name in unknown[:_MAX_NAMED]
            ]
        )
    repeated = sorted(
        name for name, several in declared.items()
        if not several and len(request.query_params.getlist(name)) > 1
    )  # fmt: skip
    if repeated:
        raise RequestValidationError(
            [
                {
                    "type": "too_long",
                    "loc": ("query", name),
                    "msg": "given more than once; this parameter takes one value",
                    "input": request.query_params.getlist(name)[:5],
                }
                for name in repeated
            ]
        )
