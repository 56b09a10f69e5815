"""The bot's judgment on text nobody here wrote: real letters and the held-out split, through the
live model and the live screening code (what `hotline eval-real` and `hotline eval-heldout` print)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from bot.evaluation import Outcome, classify, heldout_report, read_heldout, read_letters, real_report
from bot.screening import Verdict
from gateway.bot_client import RasaClient
from gateway.cli import REAL_DEV
from gateway.config import ROOT
from profiles import load
from tests.conftest import RASA_TOKEN

JIYUAN = load("jiyuan")
# CI's floor on the real letters; the target the bot is tuned to is 0.97.
MIN_ACCEPTED = 0.95


def run(items: list[tuple[str, str]], rasa_url: str) -> list[Outcome]:
    async def go() -> list[Outcome]:
        async with aiohttp.ClientSession() as http:
            return await classify(items, RasaClient(rasa_url, http, token=RASA_TOKEN).parse, JIYUAN)

    return asyncio.run(go())


@pytest.mark.rasa
def test_real_letters_are_accepted(rasa_url: str) -> None:
    if not REAL_DEV.exists():
        pytest.skip(f"{REAL_DEV} is not beside the repository")
    outcomes = run(read_letters(REAL_DEV), rasa_url)
    report = real_report(outcomes)
    print(f"\nreal letters: {report.accepted}/{report.total} accepted ({report.share:.1%}); refused {dict(report.reasons)}")
    assert report.total > 4000 and report.share >= MIN_ACCEPTED, dict(report.reasons)


@pytest.mark.rasa
def test_held_out_split_as_citizens_get_it(rasa_url: str) -> None:
    pairs = read_heldout(ROOT / "nlu_data" / "test")
    outcomes = run(list(pairs), rasa_url)
    report = heldout_report([intent for intent, _ in pairs], outcomes, JIYUAN)
    print(f"\nheld-out macro-F1 {report.macro_f1:.3f}, emergencies {report.emergencies_referred}/{report.emergencies}, "
          f"wrongful refusals {report.wrongly_refused}/{report.requests}")
    assert report.emergencies_referred == report.emergencies, [m for m in report.misses if m.startswith("emergency")]
    assert report.wrongful_refusal_rate <= 0.02
    assert report.macro_f1 >= 0.93  # the target is 0.95; CI keeps a margin for retraining noise


# ---- the arithmetic, without a model --------------------------------------------------------------

def outcome(accepted: bool, category: str | None, reason: str | None = None) -> Outcome:
    return Outcome("k", "text", Verdict(accepted, category, reason, False, 0.9), 0.01)


def test_heldout_report_counts_refusals_as_misses() -> None:
    expected = ["complaint", "complaint", "consult", "emergency", "emergency", "legal_procedure"]
    got = [
        outcome(True, "complaint"),
        outcome(False, None, "legal_procedure"),  # a wrongful refusal
        outcome(True, "consult"),
        outcome(False, None, "emergency"),
        outcome(True, "help"),  # a missed emergency
        outcome(False, None, "legal_procedure"),
    ]
    report = heldout_report(expected, got, JIYUAN)
    assert (report.emergencies, report.emergencies_referred) == (2, 1)
    assert (report.requests, report.wrongly_refused, report.refusals_right) == (3, 1, 1)
    # Over the request-kind examples: complaint tp 1, fn 1 -> 2/3; consult 1.0.
    assert report.per_kind == pytest.approx({"complaint": 2 / 3, "consult": 1.0})
    # Counting the missed emergency accepted as help: help fp 1 -> 0.0.
    assert report.macro_f1_with_screened == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)


def test_a_fixed_sample_of_letters_is_the_same_whatever_the_order(tmp_path: Path) -> None:
    rows = [f'{{"id": "{i}", "text": "第{i}封信"}}' for i in range(50)]
    forward, backward = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    forward.write_text("\n".join(rows), encoding="utf-8")
    backward.write_text("\n".join(reversed(rows)), encoding="utf-8")
    assert read_letters(forward, 10) == read_letters(backward, 10) and len(read_letters(forward, 10)) == 10
    assert real_report([outcome(True, "help"), outcome(False, None)]).reasons == {"no reason (not read as a request)": 1}
