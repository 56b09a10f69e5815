"""Which NLU pipeline measures better: train each config on nlu_data/train, score it on the held-out
nlu_data/test, and print macro-F1, accuracy and training time side by side with the shipped config.

    .venv/bin/python -m bench.nlu_pipelines            # bot/config.yml vs bench/pipelines/*.yml
    .venv/bin/python -m bench.nlu_pipelines --only baseline

Each run trains from scratch (about 3-5 minutes per config on two cores).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

from gateway import botproc
from gateway.config import ROOT

PIPELINES = ROOT / "bench" / "pipelines"


def score(config: Path, workdir: Path) -> dict[str, float]:
    model_dir, results = workdir / "models", workdir / "results"
    rasa = str(botproc.bot_bin("rasa"))
    started = time.monotonic()
    subprocess.run(
        [rasa, "train", "nlu", "--config", str(config), "--nlu", "nlu_data/train", "--out", str(model_dir),
         "--fixed-model-name", config.stem],
        cwd=ROOT, env=botproc.bot_env(), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    trained = time.monotonic() - started
    subprocess.run(
        [rasa, "test", "nlu", "--model", str(model_dir / f"{config.stem}.tar.gz"), "--nlu", "nlu_data/test",
         "--out", str(results), "--no-plot"],
        cwd=ROOT, env=botproc.bot_env(), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    report = json.loads((results / "intent_report.json").read_text(encoding="utf-8"))
    return {"macro_f1": report["macro avg"]["f1-score"], "accuracy": report["accuracy"], "train_s": trained}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", help="config stems under bench/pipelines (default: all)")
    args = parser.parse_args()
    configs = [ROOT / "bot" / "config.yml"]
    configs += [p for p in sorted(PIPELINES.glob("*.yml")) if not args.only or p.stem in args.only]
    rows = []
    for config in configs:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append((config.relative_to(ROOT), score(config, Path(tmp))))
        print(f"{rows[-1][0]}: {rows[-1][1]}", flush=True)
    shipped = rows[0][1]["macro_f1"]
    print("\n| config | macro-F1 | accuracy | vs shipped | train s |\n|---|---:|---:|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r['macro_f1']:.3f} | {r['accuracy']:.3f} | {r['macro_f1'] - shipped:+.3f} | {r['train_s']:.0f} |")


if __name__ == "__main__":
    main()
