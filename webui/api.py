"""The JSON API under ``/api/v1``: the same things the pages do, for scripts and the MSP.

Every API view is declared with ``@api_doc`` so ``/api/v1/openapi.json`` describes it; a
test checks that every ``/api/v1`` route is documented. Authentication: a bearer token
(``Authorization: Bearer egt_...``, made on the account page) or the browser session (then
the CSRF header ``X-CSRF-Token`` is needed for changes, like for forms).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flask import Blueprint, current_app, g, jsonify
from werkzeug.wrappers import Response

F = TypeVar("F", bound=Callable[..., Any])
PREFIX = "/api/v1"


@dataclass
class ApiOperation:
    summary: str
    params: dict[str, str] = field(default_factory=dict)  # query/form parameter -> meaning
    body: str | None = None  # what a JSON body holds
    roles: tuple[str, ...] = ("admin", "viewer", "msp")


def api_doc(summary: str, *, params: dict[str, str] | None = None, body: str | None = None,
            roles: tuple[str, ...] = ("admin", "viewer", "msp")) -> Callable[[F], F]:  # fmt: skip
    def wrap(view: F) -> F:
        view._api_doc = ApiOperation(summary, params or {}, body, roles)  # type: ignore[attr-defined]
        return view

    return wrap


bp = Blueprint("api", __name__, url_prefix=PREFIX)


@bp.route("/status")
@api_doc("Who is logged in, and the API version")
def status() -> Response:
    return jsonify(api="v1", user=g.user.name, role=g.user.role)


def openapi_document() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for rule in current_app.url_map.iter_rules():
        if not rule.rule.startswith(PREFIX):
            continue
        view = current_app.view_functions[rule.endpoint]
        doc: ApiOperation | None = getattr(view, "_api_doc", None)
        if doc is None:
            continue
        path = rule.rule[len(PREFIX) :].replace("<int:", "{").replace("<", "{").replace(">", "}")
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            op: dict[str, Any] = {
                "summary": doc.summary,
                "x-roles": list(doc.roles),
                "responses": {"200": {"description": "OK"}, "401": {"description": "no login"}},
                "parameters": [
                    {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                    for name in rule.arguments
                ]
                + [
                    {"name": n, "in": "query", "description": d, "schema": {"type": "string"}}
                    for n, d in doc.params.items()
                ],
            }
            if doc.body:
                op["requestBody"] = {
                    "description": doc.body,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "EdgeGuard appliance API", "version": "1"},
        "servers": [{"url": PREFIX}],
        "components": {
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"token": []}],
        "paths": dict(sorted(paths.items())),
    }


@bp.route("/openapi.json")
@api_doc("This document")
def openapi() -> Response:
    return jsonify(openapi_document())
