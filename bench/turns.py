"""A bot turn against a default-style Rasa bot's, side by side in one run.

    .venv/bin/python -m bench.turns [--levels 1 10 50] [--conversations 60] [--rasa 1]
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from gateway import botproc
from gateway.config import ROOT

REFERENCE = ROOT / "bench" / "reference_bot"


def reference_model() -> Path:
    """The reference bot's model, trained once per content of bench/reference_bot (cached beside ours)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in REFERENCE.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(REFERENCE)).encode())
        digest.update(path.read_bytes())
    target = botproc.CACHE / f"reference-{digest.hexdigest()[:16]}.tar.gz"
    if not target.exists():
        print(f"reference bot: training {target.name} (a few minutes)", file=sys.stderr, flush=True)
        cmd = [
            str(botproc.bot_bin("rasa")), "train", "--config", "config.yml", "--domain", "domain.yml",
            "--data", "data", "--out", str(botproc.CACHE), "--fixed-model-name", target.name.removesuffix(".tar.gz"),
        ]
        if subprocess.run(cmd, cwd=REFERENCE, env=botproc.bot_env(), stdout=sys.stderr).returncode or not target.exists():
            raise botproc.BotSetupError("training the reference bot failed")
    return target
