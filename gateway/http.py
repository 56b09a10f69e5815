"""Request bodies and error responses shared by every endpoint that takes input from the internet."""

from __future__ import annotations

import json

from aiohttp import StreamReader, web


async def read_capped(stream: StreamReader, limit: int) -> bytes | None:
    """Everything up to end of stream, or None once more than `limit` bytes arrive.

    `StreamReader.read(n)` returns only what has arrived so far, so one call cuts a body sent in
    several TCP writes (or chunks) short; this keeps reading until the end or the cap.
    """
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = await stream.read(limit + 1 - size)
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            return None


async def read_limited(request: web.Request, limit: int) -> bytes:
    """The whole body, refused (413) when declared or found larger than `limit`, never reading past limit + 1."""
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    body = await read_capped(request.content, limit)
    if body is None:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=limit + 1)
    return body


def json_error(status: int, message: str) -> web.Response:
    """The one error shape of every JSON endpoint: {"error": message}."""
    return web.json_response({"error": message}, status=status)


def json_error_exception(cls: type[web.HTTPException], message: str) -> web.HTTPException:
    """The same body as an exception, for code that must raise out of a parser (SMS callbacks)."""
    return cls(text=json.dumps({"error": message}, ensure_ascii=False), content_type="application/json")
