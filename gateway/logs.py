"""Logging that cannot leak personal data: the access log never prints a query string (a WeChat
push URL carries the openid and signatures there), and phone and ID numbers and openids are masked
in every record as a last line of defence."""

from __future__ import annotations

import asyncio
import logging
import re
import unicodedata
from typing import Any

import phonenumbers
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

_SEP = r"[\s.\-]?"
_ID_NUMBER = re.compile(rf"(?<!\d)(\d{{6}}){_SEP}\d{{8}}{_SEP}(\d{{3}}[\dXx])(?!\d)")  # 18 digits, X last
_DIGIT_RUN = re.compile(r"\+?[(]?\d[\d\s\-.()]*\d")
ACCESS_LOGGER = "aiohttp.access"  # aiohttp's access log; its lines are masked where they are built
_OPENID = re.compile(r"(openid=)[^&\s\"]+", re.IGNORECASE)


def _masked(match: phonenumbers.PhoneNumberMatch) -> str:
    """138****1234 / 0391****2345: the area or network prefix and the last four, to tell records apart."""
    national = str(match.number.national_number)
    mobile = len(national) == 11 and national.startswith("1")
    prefix = national[:3] if mobile else "0" + national[:2 if national[:1] in "12" else 3]
    return f"{prefix}****{national[-4:]}"


def redact(text: str) -> str:
    """Mask ID numbers (18 digits, X last), phone numbers as the phonenumbers library finds them in
    Chinese text (mobile and landline, grouped, bracketed, +86/0086) and openids. NFKC first: a
    citizen's full-width "１３８…" is the same number."""
    text = _ID_NUMBER.sub(r"\1********\2", unicodedata.normalize("NFKC", text))
    # The matcher (~50-150 µs a line, on the event loop) runs only where a number could be: 7+ digits.
    if any(sum(c.isdigit() for c in m.group()) >= 7 for m in _DIGIT_RUN.finditer(text)):
        for match in reversed(list(phonenumbers.PhoneNumberMatcher(text, "CN"))):
            text = text[:match.start] + _masked(match) + text[match.end:]
    return _OPENID.sub(r"\1***", text)


class RedactingFilter(logging.Filter):
    """A last line of defence; the code itself logs ids and counts, not what citizens wrote. The
    traceback is masked too: an exception's text may quote what it was given."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == ACCESS_LOGGER:  # AccessLogger below masks the only free text, the path
            return True
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
        self._pending.append((request.remote, request.method, redact(request.path), response.status,
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
