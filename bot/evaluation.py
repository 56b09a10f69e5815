"""Measure the bot's judgment on text nobody here wrote, the way citizens meet it.

Both measures run the live model and the live screening function (`bot.screening.screen`), so a
number printed here is what a citizen would get. Real letters are read from a JSON-lines file that
is evaluation data, never training data; the held-out split is the project's own `nlu_data/test`.
The caller supplies `parse` (Rasa's `/model/parse`), which keeps this module free of HTTP.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bot.screening import Verdict, screen
from profiles import REQUEST_KINDS, Profile

Parse = Callable[[str], Awaitable[dict[str, Any]]]
# Rasa parses at most this much; a letter longer than this is screened on its first part.
MAX_PARSE_CHARS = 2000


@dataclass(frozen=True)
class Outcome:
    key: str
    text: str
    verdict: Verdict
    seconds: float


async def classify(items: Iterable[tuple[str, str]], parse: Parse, profile: Profile, concurrency: int = 8) -> list[Outcome]:
    """Screen each (key, text) as a first message; `seconds` is parse plus screening for that text."""
    gate = asyncio.Semaphore(concurrency)

    async def one(key: str, text: str) -> Outcome:
        async with gate:
            started = time.perf_counter()
            nlu = await parse(text[:MAX_PARSE_CHARS])
            verdict = screen(text, nlu, profile)
            return Outcome(key, text, verdict, time.perf_counter() - started)

    return list(await asyncio.gather(*(one(k, t) for k, t in items)))


# ---- real letters -------------------------------------------------------------------------------

def read_letters(path: Path, sample: int | None = None) -> list[tuple[str, str]]:
    """(id, text) of each letter; `sample` keeps a fixed subset chosen by a hash of the id, so CI
    always measures the same letters whatever order the file is in."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    letters = [(str(r["id"]), str(r["text"])) for r in rows]
    if sample is not None and sample < len(letters):
        letters = sorted(letters, key=lambda item: hashlib.sha256(item[0].encode()).hexdigest())[:sample]
    return letters


@dataclass
class RealReport:
    total: int
    accepted: int
    reasons: Counter[str] = field(default_factory=Counter)
    categories: Counter[str] = field(default_factory=Counter)
    asked: int = 0
    doubted: int = 0

    @property
    def share(self) -> float:
        return self.accepted / self.total if self.total else 0.0


def real_report(outcomes: list[Outcome]) -> RealReport:
    report = RealReport(total=len(outcomes), accepted=0)
    for o in outcomes:
        v = o.verdict
        if v.accepted:
            report.accepted += 1
            report.categories[v.category or "?"] += 1
        else:
            report.reasons[v.reason or "no reason (not read as a request)"] += 1
        report.asked += v.ask is not None
        report.doubted += v.doubt is not None
    return report


def format_real(report: RealReport, outcomes: list[Outcome], slowest: int = 5, refused: int = 0) -> str:
    lines = [
        f"real letters: {report.total}, accepted {report.accepted} ({report.share:.1%}), "
        f"flagged for the dispatcher {report.doubted}, asked back {report.asked}",
        "  accepted as: " + ", ".join(f"{k} {n}" for k, n in report.categories.most_common()),
    ]
    if report.reasons:
        lines.append("  refused: " + ", ".join(f"{k} {n}" for k, n in report.reasons.most_common()))
    for o in sorted(outcomes, key=lambda o: o.seconds, reverse=True)[:slowest]:
        lines.append(f"  slow: {o.seconds * 1000:7.1f} ms  id {o.key}  {len(o.text)} chars")
    for o in [o for o in outcomes if not o.verdict.accepted][:refused]:
        lines.append(f"  refused {o.verdict.reason} ({o.verdict.confidence:.2f}) id {o.key}: {o.text[:90]}")
    return "\n".join(lines)


# ---- the held-out split ---------------------------------------------------------------------------

# What the screening must do with each held-out intent; dialogue intents are not first messages.
EXPECTED_REFUSALS = ("emergency", "legal_procedure", "outside_authority", "confidential", "civil_dispute", "no_substance")


def read_heldout(directory: Path) -> list[tuple[str, str]]:
    """(intent, text) for every request-kind and screened-kind example in the held-out files."""
    pairs: list[tuple[str, str]] = []
    for path in sorted(directory.glob("*.yml")):
        for block in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("nlu") or []:
            intent = block.get("intent")
            if intent not in REQUEST_KINDS and intent not in EXPECTED_REFUSALS:
                continue
            for line in str(block.get("examples") or "").splitlines():
                text = line.strip().removeprefix("- ").strip()
                if text:
                    pairs.append((intent, text))
    return pairs


@dataclass(frozen=True)
class HeldoutReport:
    macro_f1: float  # over the request-kind examples: how well a request's kind is told
    macro_f1_with_screened: float  # also counting screened-kind examples accepted as a kind
    per_kind: dict[str, float]
    emergencies: int
    emergencies_referred: int
    requests: int
    wrongly_refused: int
    refusals_right: int
    refusals: int
    misses: tuple[str, ...]

    @property
    def wrongful_refusal_rate(self) -> float:
        return self.wrongly_refused / self.requests if self.requests else 0.0


def _f1(expected: list[str], predicted: list[str], kinds: list[str], among: list[str] | None) -> dict[str, float]:
    pairs = [(e, p) for e, p in zip(expected, predicted, strict=True) if among is None or e in among]
    out: dict[str, float] = {}
    for kind in kinds:
        tp = sum(1 for e, p in pairs if e == kind and p == kind)
        fp = sum(1 for e, p in pairs if e != kind and p == kind)
        fn = sum(1 for e, p in pairs if e == kind and p != kind)
        if tp + fp + fn:
            out[kind] = 2 * tp / (2 * tp + fp + fn)
    return out


def heldout_report(expected: list[str], outcomes: list[Outcome], profile: Profile) -> HeldoutReport:
    """Request-kind macro-F1 over what citizens get (a refusal counts as a miss of the kind)."""
    kinds = [k for k in REQUEST_KINDS if profile.accepts(k)]
    predicted = [o.verdict.category if o.verdict.accepted else (o.verdict.reason or "none") for o in outcomes]
    per_kind = _f1(expected, predicted, kinds, among=kinds)
    # Screened-kind examples the bot accepted (a doubt it flags for the dispatcher) count against precision.
    with_screened = _f1(expected, predicted, kinds, among=None)
    emergencies = [o for e, o in zip(expected, outcomes, strict=True) if e == "emergency"]
    referred = [o for o in emergencies if o.verdict.reason == "emergency"]
    requests = [(e, o) for e, o in zip(expected, outcomes, strict=True) if e in kinds]
    wrong = [o for _, o in requests if not o.verdict.accepted]
    screened = [(e, o) for e, o in zip(expected, outcomes, strict=True) if e in EXPECTED_REFUSALS and e != "emergency"]
    right = [o for e, o in screened if o.verdict.reason == e]
    misses = tuple(
        f"{e} -> {p}: {o.text[:60]}"
        for e, p, o in zip(expected, predicted, outcomes, strict=True)
        if (e in kinds or e == "emergency") and p != e
    )
    return HeldoutReport(
        macro_f1=sum(per_kind.values()) / len(per_kind) if per_kind else 0.0,
        macro_f1_with_screened=sum(with_screened.values()) / len(with_screened) if with_screened else 0.0,
        per_kind=per_kind,
        emergencies=len(emergencies),
        emergencies_referred=len(referred),
        requests=len(requests),
        wrongly_refused=len(wrong),
        refusals_right=len(right),
        refusals=len(screened),
        misses=misses,
    )


def format_heldout(report: HeldoutReport, show_misses: int = 20) -> str:
    lines = [
        f"held-out: request-kind macro-F1 {report.macro_f1:.3f} "
        f"({', '.join(f'{k} {v:.2f}' for k, v in report.per_kind.items())}); "
        f"{report.macro_f1_with_screened:.3f} counting screened examples accepted as a kind",
        f"  emergencies referred {report.emergencies_referred}/{report.emergencies}; "
        f"wrongful refusals {report.wrongly_refused}/{report.requests} ({report.wrongful_refusal_rate:.1%}); "
        f"screened kinds refused with the right reason {report.refusals_right}/{report.refusals}",
    ]
    lines += [f"  miss: {m}" for m in report.misses[:show_misses]]
    return "\n".join(lines)
