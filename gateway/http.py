"""Request bodies and error responses shared by every endpoint that takes input from the internet."""

from __future__ import annotations

import json

from aiohttp import web


async def read_limited(request: web.Request, limit: int) -> bytes:
    """The body, refused (413) when declared or found larger than `limit`, never reading past limit + 1."""
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(body))
    return body


def json_error(status: int, message: str) -> web.Response:
    """The one error shape of every JSON endpoint: {"error": message}."""
    return web.json_response({"error": message}, status=status)


def json_error_exception(cls: type[web.HTTPException], message: str) -> web.HTTPException:
    """The same body as an exception, for code that must raise out of a parser (SMS callbacks)."""
    return cls(text=json.dumps({"error": message}, ensure_ascii=False), content_type="application/json")
