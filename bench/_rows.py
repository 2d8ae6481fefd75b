"""Generated instruction rows for bench/data_prep.py (realistic mix of alpaca and chat rows, with duplicates and PII)."""

from __future__ import annotations

import json
import random
from pathlib import Path

_WORDS = ("order refund invoice password login shipping parcel lamp mat account charge twice broken screen "
          "update delivery late address cancel subscription plan upgrade question feedback great slow error").split()
_LABELS = ("billing", "technical_issue", "account_access", "shipping", "refund", "cancellation", "product_question", "feedback")


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n)).capitalize() + "."


def generate_rows(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """Write ``n`` JSONL rows in two sources: ~70% alpaca tickets, ~30% two-turn chats.

    ~2% of rows repeat the row before (dropped as duplicates), ~1% carry an email (redacted).
    """
    rng = random.Random(seed)
    paths = [folder / "tickets.jsonl", folder / "chats.jsonl"]
    files = [open(p, "w", encoding="utf-8") for p in paths]
    previous = ["", ""]
    try:
        for i in range(n):
            kind = 0 if rng.random() < 0.7 else 1
            if previous[kind] and rng.random() < 0.02:
                files[kind].write(previous[kind])
                continue
            body = " ".join(_sentence(rng, rng.randint(6, 20)) for _ in range(rng.randint(1, 4)))
            if rng.random() < 0.01:
                body += f" Reach me at user{i}@example.com."
            if kind == 0:
                row: dict = {"instruction": "Classify this support ticket.", "input": f"#{i} {body}", "output": rng.choice(_LABELS)}
            else:
                row = {"messages": [
                    {"role": "user", "content": f"#{i} {body}"},
                    {"role": "assistant", "content": _sentence(rng, rng.randint(4, 30))},
                ]}
            previous[kind] = json.dumps(row) + "\n"
            files[kind].write(previous[kind])
    finally:
        for f in files:
            f.close()
    return paths
