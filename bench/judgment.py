"""Which way of judging measures better: the shipped screening (model and rules together) against
keyword rules alone, the model alone, and title-plus-body, on the held-out split and the real letters.

    .venv/bin/python -m bench.judgment --rasa-url http://127.0.0.1:5005   # a running Rasa (make run)
    .venv/bin/python -m bench.judgment                                     # starts one for the run

Each variant reuses one parse per text (two for title-plus-body), so the whole table takes a few minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import re
import sys
from collections.abc import Callable
from typing import Any

from bot.evaluation import Outcome, heldout_report, read_heldout, read_letters, real_report
from bot.screening import screen
from gateway.cli import REAL_DEV, Parse, with_rasa
from gateway.config import ROOT
from profiles import Profile, load

Nlu = dict[str, Any]
# A web-form letter: a title sentence, then the body.
_TITLED = re.compile(r"^(.{6,40}?[。！？!?])(.{60,})$", re.S)


def without_emergency_intent(nlu: Nlu) -> Nlu:
    ranking = [r for r in nlu.get("intent_ranking") or [] if r.get("name") != "emergency"]
    return {"intent_ranking": ranking}


def without_keywords(profile: Profile) -> Profile:
    services = tuple(dataclasses.replace(s, keywords=()) for s in profile.emergency_services)
    return dataclasses.replace(profile, emergency_services=services)


def blend(whole: Nlu, title: Nlu, weight: float) -> Nlu:
    conf: dict[str, float] = {}
    for nlu, w in ((whole, 1 - weight), (title, weight)):
        for r in nlu.get("intent_ranking") or []:
            conf[r["name"]] = conf.get(r["name"], 0.0) + float(r.get("confidence") or 0.0) * w
    return {"intent_ranking": [{"name": n, "confidence": c} for n, c in sorted(conf.items(), key=lambda x: -x[1])]}


async def parses(texts: list[str], parse: Parse, titles: bool) -> list[tuple[Nlu, Nlu | None]]:
    gate = asyncio.Semaphore(8)

    async def one(text: str) -> tuple[Nlu, Nlu | None]:
        async with gate:
            whole = await parse(text[:2000])
            match = _TITLED.match(text) if titles else None
            return whole, (await parse(match.group(1)) if match else None)

    return list(await asyncio.gather(*(one(t) for t in texts)))


Variant = Callable[[str, Nlu, Nlu | None], Any]


def variants(profile: Profile) -> dict[str, Variant]:
    plain = without_keywords(profile)
    return {
        "shipped: model and rules": lambda t, n, _: screen(t, n, profile),
        "emergencies by keywords only": lambda t, n, _: screen(t, without_emergency_intent(n), profile),
        "emergencies by the model only": lambda t, n, _: screen(t, n, plain),
        "title + body (title weight 0.4)": lambda t, n, title: screen(t, blend(n, title, 0.4) if title else n, profile),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="jiyuan")
    parser.add_argument("--rasa-url", default=None)
    args = parser.parse_args(argv)
    profile = load(args.profile)
    heldout = read_heldout(ROOT / "nlu_data" / "test")
    letters = read_letters(REAL_DEV) if REAL_DEV.exists() else []

    async def work(parse: Parse) -> int:
        held = await parses([t for _, t in heldout], parse, titles=True)
        real = await parses([t for _, t in letters], parse, titles=True)
        print("| variant | held-out macro-F1 (request kinds) | with screened accepted | emergencies referred "
              "| wrongful refusals | real letters accepted |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, judge in variants(profile).items():
            outs = [Outcome(e, t, judge(t, n, title), 0.0) for (e, t), (n, title) in zip(heldout, held, strict=True)]
            report = heldout_report([e for e, _ in heldout], outs, profile)
            real_outs = [Outcome(k, t, judge(t, n, title), 0.0) for (k, t), (n, title) in zip(letters, real, strict=True)]
            share = real_report(real_outs).share if real_outs else float("nan")
            print(f"| {name} | {report.macro_f1:.3f} | {report.macro_f1_with_screened:.3f} | "
                  f"{report.emergencies_referred}/{report.emergencies} | "
                  f"{report.wrongly_refused}/{report.requests} ({report.wrongful_refusal_rate:.1%}) | {share:.1%} |")
        return 0

    return with_rasa(args.rasa_url, work)


if __name__ == "__main__":
    sys.exit(main())
