"""Optional API-key auth: on when CRYPTOLAKE_API_KEYS or CRYPTOLAKE_API_KEYS_FILE gives keys.

A key is sent as the ``X-API-Key`` header, ``Authorization: Bearer <key>``, or the ``api_key``
query parameter (browsers' EventSource cannot set headers). Keys are compared in constant
time, against every configured key, so timing tells nothing about which one nearly matched.
"""

from __future__ import annotations

import hmac
from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import Request, Security
from fastapi.security import APIKeyHeader, APIKeyQuery
from starlette.types import Scope

from cryptolake.api.errors import ApiError

_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key (when enabled)")
_query = APIKeyQuery(name="api_key", auto_error=False, description="API key, for EventSource")


def key_matches(presented: str, keys: list[bytes]) -> bool:
    candidate = presented.encode()
    matched = False
    for key in keys:
        # No short-circuit: every key is compared whatever the outcome.
        matched |= hmac.compare_digest(candidate, key)
    return matched


def presented_key(header: str | None, authorization: str | None, query: str | None) -> str | None:
    """The key a request sends: ``X-API-Key``, else ``Authorization: Bearer``, else
    ``?api_key=`` (the routes' dependency and the response cache both ask this)."""
    if header:
        return header
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return query or None


def scope_key(scope: Scope) -> str | None:
    """``presented_key`` of a raw ASGI request (for the middlewares)."""
    headers = {k: v for k, v in scope["headers"] if k in (b"x-api-key", b"authorization")}
    query = dict(parse_qsl(scope["query_string"].decode("latin-1"))).get("api_key")
    header, authorization = headers.get(b"x-api-key"), headers.get(b"authorization")
    return presented_key(
        header.decode("latin-1") if header else None,
        authorization.decode("latin-1") if authorization else None,
        query,
    )


def is_exempt(path: str, exempt: list[str]) -> bool:
    return any(
        path == entry or (entry.endswith("/") and path.startswith(entry)) for entry in exempt
    )


async def require_api_key(
    request: Request,
    header_key: Annotated[str | None, Security(_header)],
    query_key: Annotated[str | None, Security(_query)],
) -> None:
    keys: list[bytes] = request.app.state.api_keys
    if not keys or is_exempt(request.url.path, request.app.state.settings.auth_exempt_paths):
        return
    presented = presented_key(header_key, request.headers.get("authorization"), query_key)
    if presented is None:
        raise ApiError(
            401, "unauthorized", "an API key is required: send the X-API-Key header", "X-API-Key"
        )
    if not key_matches(presented, keys):
        raise ApiError(401, "unauthorized", "the API key is not valid", "X-API-Key")
