"""Request bodies and error responses shared by every endpoint that takes input from the internet."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import StreamReader, web


class BadJson(ValueError):
    """A body that is not JSON we can keep; the message says why (answered 400 by every caller)."""


def load_json(raw: bytes | str) -> Any:
    """JSON from the internet. Deep nesting (Python's parser recurses) and escapes such as "\\ud800",
    which no database can store as text, are the sender's error, not a 503 and a retry forever."""
    try:
        data = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadJson(f"body is not valid UTF-8 JSON: {exc}") from exc
    except RecursionError as exc:
        raise BadJson("body is not valid UTF-8 JSON: nested too deeply") from exc
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadJson("body contains a lone surrogate (\\ud800-\\udfff), which is not text") from exc
    return data


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
