"""Personal data never reaches the logs: numbers in every way citizens write them, tracebacks, and
the SQL parameters a database error would otherwise quote."""

from __future__ import annotations

import io
import logging

import pytest
from sqlalchemy.exc import IntegrityError

from gateway.logs import RedactingFilter, redact
from storage.conversations import Conversation
from storage.db import UnitOfWork


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        ("我的电话是138 0000 1234", "0000"),
        ("我的电话是138-0000-1234", "0000"),
        ("+86 138 0000 1234", "0000"),
        ("+8613800001234", "0000"),
        ("008613800001234", "0000"),
        ("手机１３８００００１２３４", "００００"),
        ("身份证410881 19900101 1234", "19900101"),
        ("身份证41088119900101123X", "19900101"),
        ("座机0391-6612345", "6612345"),
        # #14: written in ways a pattern of 3-4-4 digits missed; the phonenumbers matcher finds them.
        ("电话1380 000 1234", "000 "),
        ("座机(0391)6612345", "661"),
        ("+86 (138) 0000-1234", "0000"),
        ("电话 ＋８６ １３８ ００００ １２３４", "００００"),
        ("+86 391 661 2345", "661"),
    ],
)
def test_numbers_are_masked_however_written(text: str, hidden: str) -> None:
    masked = redact(text)
    assert hidden not in masked and hidden.translate(str.maketrans("０", "0")) not in masked
    assert any(part in masked for part in ("1234", "123X", "0391", "2345"))  # enough left to tell records apart


@pytest.mark.parametrize("text", ["工单号JY20261127000001", "2026-11-27 15:45:06", "took 1714037059 ms"])
def test_other_numbers_are_left_alone(text: str) -> None:
    assert redact(text) == text


def test_tracebacks_are_masked() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("test.masking")
    logger.addHandler(handler)
    try:
        try:
            raise ValueError("no order for +86 138 0000 1234 / 410881199001011234")
        except ValueError:
            logger.exception("lookup failed")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "ValueError" in out and "138****1234" in out
    assert "0000" not in out and "19900101" not in out


async def test_database_errors_do_not_quote_their_parameters(sessions) -> None:  # noqa: ANN001
    def twice(session) -> None:  # noqa: ANN001
        session.add(Conversation(channel="sms", sender_id="13800001234", profile="jiyuan", state="bot"))
        session.flush()
        session.add(Conversation(channel="sms", sender_id="13800001234", profile="jiyuan", state="bot"))
        session.flush()

    transact = UnitOfWork(sessions)
    try:
        with pytest.raises(IntegrityError) as raised:  # the SQLite file path: the sync engine
            await transact(twice)
        assert "13800001234" not in str(raised.value) and "hidden" in str(raised.value)
    finally:
        transact.close()
    async with sessions() as session:  # the async engine
        with pytest.raises(IntegrityError) as raised:
            await session.run_sync(twice)
        assert "13800001234" not in str(raised.value)
