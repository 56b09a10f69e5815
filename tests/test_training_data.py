"""The training data is ours: nothing copied from the real letters, nothing shared with the held-out split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from gateway.cli import REAL_DEV
from gateway.config import ROOT

# A run this long shared with a real letter is a copy, not a coincidence of stock phrases
# (尊敬的领导：您好！我是 is 10 characters).
COPY_CHARS = 15


def examples(directory: Path) -> list[tuple[str, str]]:
    out = []
    for path in sorted(directory.rglob("*.yml")):
        for block in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("nlu") or []:
            for line in str(block.get("examples") or "").splitlines():
                text = line.strip().removeprefix("- ").strip()
                if text:
                    out.append((f"{path.name}:{block.get('intent')}", text))
    return out


def windows(text: str) -> set[str]:
    return {text[i : i + COPY_CHARS] for i in range(len(text) - COPY_CHARS + 1)}


def test_no_example_is_copied_from_the_real_letters() -> None:
    if not REAL_DEV.exists():
        pytest.skip(f"{REAL_DEV} is not beside the repository")
    seen: set[str] = set()
    for line in REAL_DEV.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        for field in ("detail", "theme", "text"):
            seen |= windows(str(row.get(field) or ""))
    ours = examples(ROOT / "nlu_data") + examples(ROOT / "bot" / "data")
    copied = [(where, text[:40]) for where, text in ours if windows(text) & seen]
    assert len(ours) > 1000 and copied == []


def test_the_held_out_split_shares_no_example_with_training() -> None:
    train = {text for _, text in examples(ROOT / "nlu_data" / "train")}
    test = examples(ROOT / "nlu_data" / "test")
    assert len(test) > 300 and [text for _, text in test if text in train] == []
