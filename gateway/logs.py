"""Logging that cannot leak personal data: the access log never prints a query string (a WeChat
push URL carries the openid and signatures there), and phone and ID numbers and openids are masked
in every record as a last line of defence."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

_FULLWIDTH_DIGITS = str.maketrans("０１２３４５６７８９＋－", "0123456789+-")
_SEP = r"[\s.\-]?"  # 138 0000 1234, 138-0000-1234, 138.0000.1234
_ID_NUMBER = re.compile(rf"(?<!\d)(\d{{6}}){_SEP}\d{{8}}{_SEP}(\d{{3}}[\dXx])(?!\d)")
# A mobile number, with +86 / 0086 / 86 in front or not, written in groups or not.
_PHONE = re.compile(rf"(?<![\d+])(?:(?:\+|00)?86[\s\-]*)?(1[3-9]\d){_SEP}\d{{4}}{_SEP}(\d{{4}})(?!\d)")
_LANDLINE = re.compile(r"(?<!\d)(0\d{2,3})[\s\-]?\d{7,8}(?!\d)")
_OPENID = re.compile(r"(openid=)[^&\s\"]+", re.IGNORECASE)


def redact(text: str) -> str:
    """Mask ID, mobile and landline numbers and openids. Full-width digits are folded first: a
    citizen's "１３８…" is the same number."""
    text = text.translate(_FULLWIDTH_DIGITS)
    text = _ID_NUMBER.sub(r"\1********\2", text)
    text = _PHONE.sub(r"\1****\2", text)
    text = _OPENID.sub(r"\1***", text)
    return _LANDLINE.sub(r"\1-********", text)


class RedactingFilter(logging.Filter):
    """A last line of defence; the code itself logs ids and counts, not what citizens wrote. The
    traceback is masked too: an exception's text may quote what it was given."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = _TRACEBACKS.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_TRACEBACKS = logging.Formatter()


class AccessLogger(AbstractAccessLogger):
    """`remote "METHOD /path" status bytes ms`: the path without its query. aiohttp's default line
    prints the query (openid, signatures), which then had to be masked on every push; this one has
    nothing to mask. Lines are written just after the responses that are ready in the same pass of
    the event loop, so a burst of WeChat pushes is acknowledged first and logged right after."""

    def __init__(self, logger: logging.Logger, log_format: str) -> None:
        super().__init__(logger, log_format)
        self._pending: list[tuple[str | None, str, str, int, int, float]] = []

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._write)
        self._pending.append((request.remote, request.method, request.path, response.status,
                              response.body_length, time * 1000))

    def _write(self) -> None:
        pending, self._pending = self._pending, []
        for line in pending:
            self.logger.info('%s "%s %s" %d %d %.1fms', *line)


RUNNER_OPTIONS: dict[str, Any] = {"access_log_class": AccessLogger}  # for web.run_app and AppRunner


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
